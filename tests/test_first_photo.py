"""A photo explained on a fresh install: torch's state-dict files read with numpy alone, and the
packaged EfficientNet-Lite0 weights converted at first use with an empty cache and no torch."""

import os
import pathlib
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from saliency_jax.models import efficientnet, torch_pickle

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.torch
def test_the_packaged_weights_read_without_torch_equal_torch_load():
    import torch

    path = efficientnet.packaged_checkpoint_path()
    ours = torch_pickle.load(path)
    theirs = torch.load(path, map_location="cpu", weights_only=True)
    assert list(ours) == list(theirs) and len(ours) == 296
    for name, tensor in theirs.items():
        expected = tensor.numpy()
        assert ours[name].dtype == expected.dtype, name
        np.testing.assert_array_equal(ours[name], expected, err_msg=name)


@pytest.mark.torch
@pytest.mark.parametrize("legacy", [True, False])
def test_both_torch_formats_with_views_offsets_and_dtypes(tmp_path, legacy):
    import torch

    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    state = {
        "weight": base,
        "transposed": base.t(),                   # non-contiguous view of the same storage
        "slice": base[2:5, 3:9:2],                # storage offset and strides
        "counts": torch.tensor([3, -1, 2 ** 40], dtype=torch.int64),
        "half": torch.linspace(-1, 1, 7, dtype=torch.float16),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "flag": torch.tensor([True, False]),
    }
    path = tmp_path / "state.pth"
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    ours = torch_pickle.load(path)
    assert list(ours) == list(state)
    for name, tensor in state.items():
        assert ours[name].dtype == tensor.numpy().dtype, name
        np.testing.assert_array_equal(ours[name], tensor.numpy(), err_msg=name)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_file_naming_another_global_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:  # the legacy layout: magic, protocol, sys info, then the object
        for obj in (torch_pickle.LEGACY_MAGIC, 1001, {"little_endian": True}, {"w": _Evil()}):
            pickle.dump(obj, f, protocol=2)
    with pytest.raises(ValueError, match=r"names the global (posix|os)\.system"):
        torch_pickle.load(path)


def test_a_file_that_is_no_torch_file_is_refused(tmp_path):
    path = tmp_path / "notes.pth"
    with open(path, "wb") as f:
        pickle.dump("hello", f, protocol=2)
    with pytest.raises(ValueError, match="not a torch file"):
        torch_pickle.load(path)


BLOCK_TORCH = textwrap.dedent("""
    import sys

    class _NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "torch":
                raise ModuleNotFoundError("No module named 'torch' (blocked)", name=name)
            return None

    sys.meta_path.insert(0, _NoTorch())
""")


def _explain(photo, out, home, site):
    env = dict(os.environ, JAX_PLATFORMS="cpu", SALIENCY_JAX_HOME=str(home))
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "saliency_jax.app.cli", "explain", str(photo),
                           "--method", "gradcam", "--out", str(out), "--no-progress"],
                          env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_explain_a_photo_with_an_empty_cache_and_no_torch(tmp_path):
    from PIL import Image
    from skimage import data

    photo = tmp_path / "cat.jpg"
    Image.fromarray(data.chelsea()).save(photo)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK_TORCH)
    home = tmp_path / "empty-cache"
    first = _explain(photo, tmp_path / "maps", home, site)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "converting efficientnet_lite0's weights at first use" in first.stderr
    assert (tmp_path / "maps" / "cat_gradcam.npy").exists()
    assert "cat" in first.stdout.lower() or "tabby" in first.stdout.lower(), first.stdout
    second = _explain(photo, tmp_path / "maps2", home, site)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "converting" not in second.stderr  # the cache is used
    np.testing.assert_array_equal(np.load(tmp_path / "maps" / "cat_gradcam.npy"),
                                  np.load(tmp_path / "maps2" / "cat_gradcam.npy"))


@pytest.mark.torch
def test_first_use_conversion_without_torch_equals_the_torch_path(tmp_path, monkeypatch):
    """In process, an empty cache: the first resolve converts (with the numpy reader, torch
    made unimportable) and the second finds the cache; the numpy reader's state dict is
    torch.load's."""
    import torch

    from saliency_jax.app import classifiers
    from saliency_jax.models import weights

    src = str(efficientnet.packaged_checkpoint_path())
    monkeypatch.setenv("SALIENCY_JAX_HOME", str(tmp_path / "cache"))
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    path = classifiers.resolve_checkpoint("efficientnet_lite0", None)
    assert path == tmp_path / "cache" / "efficientnet_lite0" and path.exists()
    assert classifiers.resolve_checkpoint("efficientnet_lite0", None) == path
    without = weights.read_state_dict(src)
    monkeypatch.setitem(sys.modules, "torch", torch)
    with_torch = weights.read_state_dict(src)
    assert without.keys() == with_torch.keys()
    for k in without:
        assert without[k].dtype == with_torch[k].dtype, k
        np.testing.assert_array_equal(without[k], with_torch[k], err_msg=k)
