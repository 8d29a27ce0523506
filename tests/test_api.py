"""The public API: one namespace, its conventions on every explainer, plain callables accepted
everywhere, no import collision with a user's ``models`` package, and the docstring examples.
"""

from __future__ import annotations

import ast
import dataclasses
import doctest
import importlib
import inspect
import json
import pkgutil
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import saliency_jax as sj

# The explainers: pure functions of one image, ``(key, model_fn, image, target, *, config, ...)``
# (the all-class variant has no target).
EXPLAINERS = {
    "rise": sj.rise,
    "rise_all_classes": sj.rise_all_classes,
    "rise_anytime": sj.rise_anytime,
    "iassa": sj.iassa,
    "occlusion": sj.occlusion,
    "lime": sj.lime,
    "gradcam": sj.gradcam,
    "rexl": sj.rexl,
    "rlcam": sj.rlcam,
    "rlcam_explain": sj.rlcam_explain,
    "rlcam_mask": sj.rlcam_mask,
    "rlcam_greedy": sj.rlcam_greedy,
    "rlcam_greedy_explain": sj.rlcam_greedy_explain,
}
NO_TARGET = {"rise_all_classes"}


NAMESPACES = ("saliency_jax", "saliency_jax.metrics", "saliency_jax.masks", "saliency_jax.rl",
              "saliency_jax.sharding")


@pytest.fixture(scope="module")
def fresh_public_names():
    """``{module: public names in its namespace}``, ``vars`` (what the module holds, not its
    ``__dir__``, which lists ``__all__``), each taken right after its import in a fresh
    interpreter (the top level first, before importing a submodule sets its attribute)."""
    code = ("import importlib, json; print(json.dumps({m: sorted(n for n in "
            "vars(importlib.import_module(m)) if not n.startswith('_')) "
            f"for m in {NAMESPACES!r}}}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=180, check=True)
    return json.loads(out.stdout)


def _lazy_table(mod):
    """``{name: (module, attribute or None for a submodule)}`` a PEP 562 module resolves on
    first use (``_SUBMODULES`` and ``_WHERE``); empty for an eager one."""
    table = {n: (f"{mod.__name__}.{n}", None) for n in getattr(mod, "_SUBMODULES", ())}
    table.update(getattr(mod, "_WHERE", {}))
    return table


def _resolve(module, attr):
    mod = importlib.import_module(module)
    return mod if attr is None else getattr(mod, attr)


@pytest.mark.parametrize("module", NAMESPACES)
def test_every_public_name_is_exported_and_nothing_else(module, fresh_public_names):
    mod = importlib.import_module(module)
    assert len(set(mod.__all__)) == len(mod.__all__)
    # What the module really provides: what it holds, and what its lazy table resolves.
    table = _lazy_table(mod)
    public, listed = set(fresh_public_names[module]) | set(table), set(mod.__all__)
    listed -= {"__version__"}
    assert public == listed, (f"public but not in __all__: {sorted(public - listed)}; "
                              f"in __all__ but not public: {sorted(listed - public)}")
    for name in sorted(listed):  # each resolves (which object: the next test)
        expected = _resolve(*table[name]) if name in table else vars(mod)[name]
        assert getattr(mod, name) is expected, f"{module}.{name} is not {table.get(name)}"


def test_the_type_checking_imports_are_the_lazy_table():
    """The eager imports type checkers read (an independent list) name the objects
    ``__getattr__`` resolves, and the same names."""
    tree = ast.parse(inspect.getsource(sj))
    (block,) = [node for node in tree.body if isinstance(node, ast.If)
                and isinstance(node.test, ast.Name) and node.test.id == "_TYPE_CHECKING"]
    eager = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom), ast.dump(node)
        for alias in node.names:
            submodule = node.module == "saliency_jax"
            eager[alias.asname or alias.name] = (
                f"saliency_jax.{alias.name}" if submodule else node.module,
                None if submodule else alias.name)
    wrong = [n for n in sorted(set(eager) & set(sj.__all__)) if getattr(sj, n)
             is not _resolve(*eager[n])]
    assert not wrong, f"sj.NAME is not what the TYPE_CHECKING import names: {wrong}"
    assert eager == _lazy_table(sj)


def test_version_is_the_distributions():
    from importlib.metadata import version

    assert re.fullmatch(r"\d+\.\d+\.\d+", sj.__version__)
    assert version("saliency-jax") == sj.__version__


@pytest.mark.parametrize("name", sorted(EXPLAINERS))
def test_explainer_signature_follows_the_convention(name):
    fn = EXPLAINERS[name]
    params = list(inspect.signature(fn).parameters.values())
    positional = ["key", "model_fn", "image"] + ([] if name in NO_TARGET else ["target"])
    assert [p.name for p in params[:len(positional)]] == positional
    for p in params[:len(positional)]:
        assert p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty, p
    rest = params[len(positional):]
    assert rest and all(p.kind is p.KEYWORD_ONLY for p in rest), "options must be keyword-only"
    assert inspect.signature(fn).parameters["model_fn"].annotation in (sj.ModelFn, "ModelFn")
    config = inspect.signature(fn).parameters["config"]
    assert config.kind is config.KEYWORD_ONLY
    config_type = type(config.default)
    assert dataclasses.is_dataclass(config_type), config_type
    assert config_type.__dataclass_params__.frozen, f"{config_type.__name__} must be frozen"
    assert getattr(sj, config_type.__name__) is config_type, "the config must be exported"


def _documented_args(doc: str) -> list[str]:
    section = doc.split("Args:", 1)[1]
    section = re.split(r"\n\s*(Returns|Raises|Examples|References):", section)[0]
    indent = min(len(m) for m in re.findall(r"\n( +)\w+(?:, \w+)*:", section))
    names = re.findall(rf"\n {{{indent}}}(\w+(?:, \w+)*):", section)
    return [n for group in names for n in group.split(", ")]


@pytest.mark.parametrize("name", sorted(EXPLAINERS))
def test_explainer_docstring_has_args_returns_examples_and_the_paper(name):
    fn = EXPLAINERS[name]
    doc = inspect.getdoc(fn)
    assert doc, name
    for section in ("Args:", "Returns:", "Examples:", "References:"):
        assert section in doc, f"{name}'s docstring has no {section} section"
    assert re.search(r"(19|20)\d\d", doc.split("References:", 1)[1]), "the paper and its year"
    assert f"sj.{name}(" in doc.split("Examples:", 1)[1], "the example calls the public name"
    assert _documented_args(doc) == list(inspect.signature(fn).parameters)


# A plain function and a Partial of the same model give the same result everywhere (with the
# same baseline: a plain function declares no mean colour, so its default baseline is black).
GREY = jnp.full((3,), 0.45)

def _plain_and_partial():
    model_fn, _ = sj.testing.tiny_cnn(jax.random.key(1), (32, 32))
    return (lambda images: model_fn(images)), model_fn


def _calls():
    key = jax.random.key(0)
    image = jax.random.uniform(jax.random.key(2), (32, 32, 3))
    saliency = jax.random.uniform(jax.random.key(3), (32, 32))
    segments = jnp.asarray((np.arange(32)[:, None] // 8) * 4 + np.arange(32)[None, :] // 8)
    feats = lambda x: {"a": x[:, ::2, ::2], "b": x[:, ::4, ::4]}  # noqa: E731
    rexl_cfg = sj.RexlConfig(grid=4, substrate="baseline", pi_layers=(8,), vf_layers=(8,))
    rexl_agent = sj.init_rexl_agent(jax.random.key(4), rexl_cfg, sj.patch_features(4), (32, 32))
    rlcam_cfg = sj.RlcamConfig(grid=4, horizon=2, pi_layers=(8,), vf_layers=(8,))
    rlcam_agent = sj.init_rlcam_agent(jax.random.key(5), rlcam_cfg)
    rise_cfg = sj.RiseConfig(num_masks=32, grid=4)
    anytime_cfg = sj.RiseAnytimeConfig(max_masks=96, grid=4, batch_size=16, check_every=32,
                                       min_masks=32, tolerance=0.3)
    iassa_cfg = sj.IassaConfig(window=12, stride=8, window_step=2, stride_step=1, iterations=1,
                               feature_names=None)
    g = {"baseline": GREY}
    return {
        "rise": lambda m: sj.rise(key, m, image, 1, config=rise_cfg, **g),
        "rise_all_classes": lambda m: sj.rise_all_classes(key, m, image, config=rise_cfg, **g),
        "rise_anytime": lambda m: sj.rise_anytime(key, m, image, 1, config=anytime_cfg,
                                                  **g).saliency,
        "occlusion": lambda m: sj.occlusion(
            key, m, image, 1, config=sj.OcclusionConfig(window=8, stride=8), **g),
        "lime": lambda m: sj.lime(key, m, image, 1, segments=segments,
                                  config=sj.LimeConfig(num_samples=32, max_segments=16), **g),
        "iassa": lambda m: sj.iassa(key, m, image, 1, features_fn=feats, config=iassa_cfg, **g),
        "rexl": lambda m: sj.rexl(key, m, image, 1, config=rexl_cfg, agent_params=rexl_agent,
                                  features_fn=sj.patch_features(4), **g),
        "rlcam": lambda m: sj.rlcam(key, m, image, 1, config=rlcam_cfg, agent_params=rlcam_agent,
                                    **g),
        "rlcam_greedy": lambda m: sj.rlcam_greedy(key, m, image, 1, config=rlcam_cfg, **g),
        "deletion": lambda m: sj.metrics.deletion(m, image, saliency, 1, step=64, **g).scores,
        "insertion": lambda m: sj.metrics.insertion(m, image, saliency, 1, step=64, **g).scores,
        "deletion_top1": lambda m: sj.metrics.deletion(m, image, saliency, step=64, **g).scores,
    }


CALLS = _calls()


@pytest.mark.parametrize("name", sorted(CALLS))
def test_a_plain_callable_works_like_a_partial(name):
    plain, partial = _plain_and_partial()
    np.testing.assert_allclose(np.asarray(CALLS[name](plain)), np.asarray(CALLS[name](partial)),
                               rtol=1e-6, atol=1e-7)


def test_a_non_callable_model_fn_is_a_value_error():
    image = jnp.ones((32, 32, 3))
    with pytest.raises(ValueError, match="model_fn must be callable"):
        sj.rise(jax.random.key(0), "resnet50", image, 0)
    with pytest.raises(ValueError, match="model_fn must be callable"):
        sj.metrics.deletion(np.zeros(3), image, jnp.ones((32, 32)), 0)


def test_a_users_models_package_does_not_collide(tmp_path):
    # A research repository with its own top-level ``models`` package, run from its root.
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("USERS = True\n")
    code = textwrap.dedent("""
        import models
        import saliency_jax as sj
        from saliency_jax.app import classifiers
        assert models.USERS and sj.models.__name__ == "saliency_jax.models"
        model_fn, variables = classifiers.load_classifier("resnet_small")
        print(*model_fn(__import__("jax").numpy.ones((1, 112, 112, 3))).shape)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["1", "6"]


def test_no_top_level_models_package_is_installed(tmp_path):
    out = subprocess.run([sys.executable, "-c", "import models"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "No module named 'models'" in out.stderr


def _all_modules():
    names = []
    for info in pkgutil.walk_packages(sj.__path__, prefix="saliency_jax."):
        if info.name.endswith("__main__"):
            continue
        names.append(info.name)
    names.append("saliency_jax")
    names += [f"saliency_jax.models.{m.name}" for m in pkgutil.iter_modules(sj.models.__path__)]
    return sorted(set(names))


MODULES_WITH_EXAMPLES = [
    name for name in _all_modules()
    if doctest.DocTestFinder().find(importlib.import_module(name))
    and any(t.examples for t in doctest.DocTestFinder().find(importlib.import_module(name)))
]


def test_the_doctests_are_found():
    # Every explainer has an example; a finder that found none would make the test below vacuous.
    assert {"saliency_jax._src.rise", "saliency_jax._src.rise_anytime", "saliency_jax._src.rlcam",
            "saliency_jax._src.rexl", "saliency_jax._src.lime", "saliency_jax._src.occlusion",
            "saliency_jax._src.gradcam"} <= set(MODULES_WITH_EXAMPLES)


@pytest.mark.parametrize("module", MODULES_WITH_EXAMPLES)
def test_docstring_examples_run(module):
    mod = importlib.import_module(module)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in doctest.DocTestFinder().find(mod) if t.examples]
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {module}"
