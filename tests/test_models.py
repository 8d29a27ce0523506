"""models/: torchvision parity, registry, input validation, weight import and checkpoints.

Parity: ``fixtures/torchvision_parity.npz`` holds torchvision 0.29.1 (torch 2.14.1) outputs for
seeded weights (``fixtures/record_torchvision.py``); here the same weights are rebuilt with numpy
and converted without torch.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from saliency_jax.models import vgg, weights

from saliency_jax import models, testing

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
_spec = importlib.util.spec_from_file_location("seeded_weights", FIXTURES / "seeded_weights.py")
seeded_weights = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(seeded_weights)

PARITY_MODELS = ("resnet50", "resnet18", "vgg16", "vgg16_bn")
ATOL = 1e-4


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="session")
def recorded():
    with np.load(FIXTURES / "torchvision_parity.npz") as f:
        return {k: f[k] for k in f.files}


def _recorded_layout(recorded, name):
    return [(k, tuple(s)) for k, s in json.loads(str(recorded[f"{name}/layout"]))]


def _images(recorded, key):
    return recorded[key].astype(np.float32) / np.float32(255)


@pytest.fixture(scope="session")
def seeded(recorded):
    """name -> (torch state_dict, converted variables); built once per session."""
    cache = {}

    def get(name):
        if name not in cache:
            sd = seeded_weights.seeded_state_dict(
                _recorded_layout(recorded, name), int(recorded[f"{name}/seed"])
            )
            cache[name] = (sd, weights.convert_state_dict(name, sd))
        return cache[name]

    return get


@jax.jit
def _logits_and_features(logits_fn, features_fn, images):
    return logits_fn(images), features_fn(images)


@jax.jit
def _logits(logits_fn, images):
    return logits_fn(images)


@pytest.fixture(scope="session")
def small_variables():
    """resnet_small / vgg_small, 6 classes, two random inits each."""
    return {
        name: [models.init(name, jax.random.key(i), num_classes=6) for i in range(2)]
        for name in ("resnet_small", "vgg_small")
    }


def _assert_close(got, want, what):
    got = np.asarray(got)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    err = float(np.max(np.abs(got - want)))
    assert err <= ATOL, f"{what}: max abs diff {err:.3g} > {ATOL} (scale {np.abs(want).max():.3g})"


# ---------------------------------------------------------------------------------------------
# torchvision parity


@pytest.mark.parametrize("name", PARITY_MODELS)
def test_torch_layout_is_torchvisions_state_dict(recorded, name):
    # keys, order and shapes of torchvision's model.state_dict(), num_batches_tracked included
    assert weights.torch_layout(name) == _recorded_layout(recorded, name)


@pytest.mark.parametrize(
    "name",
    [n if n != "vgg16_bn" else pytest.param(n, marks=pytest.mark.slow) for n in PARITY_MODELS],
)
def test_parity_with_torchvision(recorded, seeded, name):
    _, variables = seeded(name)
    spec = models.get(name)
    stages = tuple(k.split("/")[-1] for k in recorded if k.startswith(f"{name}/features/"))
    assert stages and set(stages) <= set(spec.feature_names)
    logits, feats = _logits_and_features(
        models.logits_fn(name, variables),
        models.features_fn(name, variables, names=stages),
        _images(recorded, "images"),
    )
    want = recorded[f"{name}/logits"]
    assert np.abs(want).max() > 0.5  # the recorded outputs are not degenerate
    _assert_close(logits, want, f"{name} logits")
    for stage in stages:
        channels = recorded[f"{name}/channels/{stage}"]
        _assert_close(
            np.asarray(feats[stage])[..., channels],
            recorded[f"{name}/features/{stage}"],
            f"{name} {stage}",
        )
    # non-square input; VGG's last map is 2 x 4, so the adaptive 7 x 7 pool repeats bins
    wide = _logits(models.logits_fn(name, variables), _images(recorded, "images_wide"))
    _assert_close(wide, recorded[f"{name}/logits_wide"], f"{name} logits (80 x 144)")


def test_resnet50_parity_through_safetensors_and_orbax(recorded, seeded, tmp_path):
    state_dict, direct = seeded("resnet50")
    path = tmp_path / "resnet50.safetensors"
    safetensors.numpy.save_file(state_dict, str(path))
    read = weights.read_state_dict(path)
    assert sorted(read) == sorted(state_dict)  # safetensors stores keys sorted
    ckpt = tmp_path / "ckpt"
    converted = weights.convert_file(path, ckpt, name="resnet50")
    loaded = weights.load_variables(ckpt, name="resnet50")
    assert weights.checkpoint_info(ckpt)["num_classes"] == 1000
    for a, b, c in zip(
        jax.tree.leaves(direct), jax.tree.leaves(converted), jax.tree.leaves(loaded), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
    assert jax.tree.structure(loaded) == jax.tree.structure(direct)
    logits = _logits(models.logits_fn("resnet50", loaded), _images(recorded, "images_wide"))
    _assert_close(logits, recorded["resnet50/logits_wide"], "resnet50 logits after round trip")


def test_classifier_is_softmax_of_logits(recorded, seeded):
    _, variables = seeded("resnet18")
    images = _images(recorded, "images_wide")
    probs = jax.jit(lambda f, x: f(x))(models.classifier("resnet18", variables), images)
    want = recorded["resnet18/logits_wide"].astype(np.float64)
    want = np.exp(want - want.max(-1, keepdims=True))
    np.testing.assert_allclose(probs, want / want.sum(-1, keepdims=True), atol=1e-6)


@pytest.mark.parametrize(("length", "bins"), [(3, 7), (2, 7), (1, 7), (10, 7), (7, 7), (5, 1)])
def test_adaptive_avg_pool_matches_a_loop_port_of_torch(length, bins):
    # torch AdaptiveAvgPool2d: bin i over [floor(i L / n), ceil((i + 1) L / n))
    x = np.random.default_rng(0).normal(size=(2, length, length + 2, 3)).astype(np.float32)

    def bounds(i, n, size):
        return int(np.floor(i * size / n)), int(np.ceil((i + 1) * size / n))

    want = np.zeros((2, bins, bins, 3), np.float32)
    for i in range(bins):
        for j in range(bins):
            (h0, h1), (w0, w1) = bounds(i, bins, length), bounds(j, bins, length + 2)
            want[:, i, j] = x[:, h0:h1, w0:w1].mean(axis=(1, 2))
    got = vgg.adaptive_avg_pool(jnp.asarray(x), (bins, bins))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# parameter counts (torchvision's, counted from shapes only)


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("resnet50", 25_557_032),
        ("resnet18", 11_689_512),
        ("vgg16", 138_357_544),
        ("vgg16_bn", 138_365_992),
    ],
)
def test_parameter_counts(name, count):
    shapes = jax.eval_shape(lambda key: models.init(name, key), jax.random.key(0))
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"])) == count


# ---------------------------------------------------------------------------------------------
# registry


def test_available_and_get():
    names = models.available()
    for name in ("resnet50", "resnet18", "resnet_small", "vgg16", "vgg16_bn", "vgg_small"):
        assert name in names
        spec = models.get(name)
        assert spec.name == name
        assert spec.mean_rgb == (0.485, 0.456, 0.406)
        assert spec.std_rgb == (0.229, 0.224, 0.225)
    assert models.get("resnet_small", num_classes=6).num_classes == 6
    assert models.get("resnet_small", num_classes=6) is models.get("resnet_small", num_classes=6)
    assert models.get("resnet50", num_classes=1000) is models.get("resnet50")


def test_unknown_model_name_lists_accepted_names():
    with pytest.raises(ValueError, match=r"unknown model 'resnet51'.*resnet50.*vgg16"):
        models.get("resnet51")
    with pytest.raises(ValueError, match="accepted names"):
        models.init("vgg19", jax.random.key(0))
    with pytest.raises(ValueError, match="accepted names"):
        models.classifier("nope", {})
    with pytest.raises(ValueError, match="accepted names"):
        models.get(["resnet50"])


@pytest.mark.parametrize("bad", [0, -3, True, 2.5])
def test_bad_num_classes(bad):
    with pytest.raises(ValueError, match="num_classes"):
        models.get("resnet_small", num_classes=bad)


def test_bad_input_hw():
    with pytest.raises(ValueError, match="input_hw"):
        models.init("resnet_small", jax.random.key(0), input_hw=(112,))


# ---------------------------------------------------------------------------------------------
# small variants


RESNET_SMALL_FEATURES = {
    "conv1": (2, 56, 56, 16),
    "stem": (2, 56, 56, 16),
    "pool1": (2, 28, 28, 16),
    "layer1": (2, 28, 28, 16),
    "layer2": (2, 14, 14, 32),
    "layer3": (2, 7, 7, 64),
    "layer4": (2, 4, 4, 128),
}
VGG_SMALL_FEATURES = {
    "block1": (2, 112, 112, 16),
    "block2": (2, 56, 56, 32),
    "block3": (2, 28, 28, 64),
    "block4": (2, 14, 14, 128),
    "block5": (2, 7, 7, 128),
}


@pytest.mark.parametrize(
    ("name", "expected"),
    [("resnet_small", RESNET_SMALL_FEATURES), ("vgg_small", VGG_SMALL_FEATURES)],
)
def test_small_variants_at_112(small_variables, name, expected):
    variables = small_variables[name][0]
    spec = models.get(name, num_classes=6)
    assert spec.input_hw == (112, 112)
    assert spec.feature_names == tuple(expected)
    images = jax.random.uniform(jax.random.key(3), (2, 112, 112, 3))
    # the class count is read off the variables
    probs, feats = jax.jit(lambda f, g, x: (f(x), g(x)))(
        models.classifier(name, variables), models.features_fn(name, variables), images
    )
    assert probs.shape == (2, 6)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    assert {k: v.shape for k, v in feats.items()} == expected
    assert all(np.isfinite(np.asarray(v)).all() for v in feats.values())
    last = spec.feature_names[-1]
    only = jax.jit(lambda g, x: g(x))(models.features_fn(name, variables, names=(last,)), images)
    assert list(only) == [last]
    np.testing.assert_allclose(only[last], feats[last], rtol=1e-5, atol=1e-5)


def test_resnet_features_relations(small_variables):
    # conv1 is pre-BN, stem = relu(bn1(conv1)), pool1 = 3x3/2 max-pool of stem (pad with -inf)
    variables = small_variables["resnet_small"][0]
    images = jax.random.uniform(jax.random.key(4), (1, 112, 112, 3))
    f = jax.jit(lambda g, x: g(x))(
        models.features_fn("resnet_small", variables, names=("conv1", "stem", "pool1")), images
    )
    bn = jax.tree.map(np.asarray, (variables["batch_stats"]["bn1"], variables["params"]["bn1"]))
    stem = np.maximum(
        (np.asarray(f["conv1"]) - bn[0]["mean"]) / np.sqrt(bn[0]["var"] + 1e-5) * bn[1]["scale"]
        + bn[1]["bias"],
        0,
    )
    np.testing.assert_allclose(f["stem"], stem, rtol=1e-4, atol=1e-5)
    padded = np.pad(stem, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    pool = np.stack(
        [
            np.stack(
                [
                    padded[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3].max(axis=(1, 2))
                    for j in range(28)
                ],
                1,
            )
            for i in range(28)
        ],
        1,
    )
    np.testing.assert_allclose(f["pool1"], pool, rtol=1e-4, atol=1e-5)


def test_vgg_small_train_mode_runs_dropout_and_updates_batch_stats(small_variables):
    variables = small_variables["vgg_small"][0]
    module = models.get("vgg_small", num_classes=6).build()
    x = jax.random.normal(jax.random.key(5), (4, 112, 112, 3))

    @jax.jit
    def run(variables, x, key):
        train = module.apply(
            variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": key}
        )
        return train, module.apply(variables, x, train=False)

    (logits, updates), eval_a = run(variables, x, jax.random.key(6))
    (logits_b, _), eval_b = run(variables, x, jax.random.key(7))
    assert logits.shape == (4, 6)
    assert not np.allclose(logits, logits_b)  # dropout masks differ with the key
    before = variables["batch_stats"]["features_1"]["mean"]
    assert not np.allclose(updates["batch_stats"]["features_1"]["mean"], before)
    np.testing.assert_array_equal(eval_a, eval_b)  # no dropout at train=False


def test_new_weights_reuse_the_compiled_executable(small_variables):
    v0, v1 = small_variables["resnet_small"]
    images = jax.random.uniform(jax.random.key(7), (2, 112, 112, 3))

    @jax.jit
    def top_score(model_fn, x):
        return model_fn(x).max(axis=-1)

    first = top_score(models.classifier("resnet_small", v0), images)
    second_fn = models.classifier("resnet_small", v1)  # built outside the block
    assert second_fn.func is models.classifier("resnet_small", v0).func
    with testing.log_compilations() as log:
        second = top_score(second_fn, images)
        jax.block_until_ready(second)
    assert log == []
    assert not np.allclose(first, second)


# ---------------------------------------------------------------------------------------------
# bad inputs


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (np.zeros((112, 112, 3), np.float32), "shape"),
        (np.zeros((1, 112, 112, 4), np.float32), "shape"),
        (np.zeros((1, 3, 112, 112), np.float32), "NHWC"),
        (np.zeros((1, 112, 112, 3), np.uint8), "float"),
        (np.zeros((1, 112, 112, 3), np.int32), "float"),
    ],
)
def test_bad_images(small_variables, images, match):
    model_fn = models.classifier("resnet_small", small_variables["resnet_small"][0])
    with pytest.raises(ValueError, match=match):
        model_fn(images)
    with pytest.raises(ValueError, match=match):  # also at trace time under jit
        jax.jit(lambda f, x: f(x))(model_fn, images)
    with pytest.raises(ValueError, match=match):
        models.features_fn("resnet_small", small_variables["resnet_small"][0])(images)


def test_bad_feature_names(small_variables):
    with pytest.raises(ValueError, match=r"layer4.*got \['layer5'\]"):
        models.features_fn("resnet_small", small_variables["resnet_small"][0], names=["layer5"])


def test_variables_of_another_model_are_rejected(small_variables):
    with pytest.raises(ValueError, match="do not match model 'resnet_small'"):
        models.classifier("resnet_small", small_variables["vgg_small"][0])
    with pytest.raises(ValueError, match="expected shape"):
        models.logits_fn("resnet_small", small_variables["resnet_small"][0], num_classes=7)
    with pytest.raises(ValueError, match="mapping"):
        models.classifier("resnet_small", [1, 2])


# ---------------------------------------------------------------------------------------------
# weight import


def _small_state_dict(seed=0):
    layout = weights.torch_layout("resnet_small", num_classes=6)
    return seeded_weights.seeded_state_dict(layout, seed)


def test_bad_state_dict_lists_missing_unexpected_and_misshaped_keys():
    sd = _small_state_dict()
    del sd["fc.bias"]
    sd["fc.extra"] = np.zeros(3, np.float32)
    sd["layer2.0.conv2.weight"] = np.zeros((32, 32, 1, 1), np.float32)
    with pytest.raises(ValueError) as err:
        weights.convert_state_dict("resnet_small", sd, num_classes=6)
    msg = str(err.value)
    assert "1 missing keys: fc.bias" in msg
    assert "1 unexpected keys: fc.extra" in msg
    assert "layer2.0.conv2.weight: expected (32, 32, 3, 3), got (32, 32, 1, 1)" in msg


def test_state_dict_of_another_model_is_rejected():
    sd = _small_state_dict()
    with pytest.raises(ValueError, match=r"fc.weight: expected \(1000, 128\), got \(6, 128\)"):
        weights.convert_state_dict("resnet_small", sd)  # 1000-class head expected
    with pytest.raises(ValueError, match="missing keys: features.0.weight"):
        weights.convert_state_dict("vgg_small", sd, num_classes=6)


def test_converted_weights_are_transposed_torch_weights():
    sd = _small_state_dict()
    v = weights.convert_state_dict("resnet_small", sd, num_classes=6)
    np.testing.assert_array_equal(
        v["params"]["conv1"]["kernel"], sd["conv1.weight"].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(v["params"]["fc"]["kernel"], sd["fc.weight"].T)
    np.testing.assert_array_equal(
        v["params"]["layer2_0"]["downsample_1"]["scale"], sd["layer2.0.downsample.1.weight"]
    )
    np.testing.assert_array_equal(
        v["batch_stats"]["layer2_0"]["downsample_1"]["var"],
        sd["layer2.0.downsample.1.running_var"],
    )
    initialised = models.init("resnet_small", jax.random.key(0), num_classes=6)
    assert jax.tree.structure(v) == jax.tree.structure(initialised)
    assert jax.tree.map(np.shape, v) == jax.tree.map(np.shape, initialised)


def test_read_state_dict_errors(tmp_path):
    with pytest.raises(ValueError, match="nope.safetensors"):
        weights.read_state_dict(tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError):
        weights.read_state_dict(tmp_path / "nope.pth")
    (tmp_path / "w.npz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"\.safetensors, \.pth"):
        weights.read_state_dict(tmp_path / "w.npz")


def test_pth_without_torch_says_how_to_install(tmp_path, monkeypatch):
    (tmp_path / "w.pth").write_bytes(b"not a pickle")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(ValueError, match=r"w\.pth.*without PyTorch.*pip install 'saliency-jax\[torch\]'"):
        weights.read_state_dict(tmp_path / "w.pth")


@pytest.mark.torch
def test_read_pth_state_dict(tmp_path):
    import torch

    sd = _small_state_dict()
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, tmp_path / "w.pth")
    read = weights.read_state_dict(tmp_path / "w.pth")
    assert list(read) == list(sd)
    for k in sd:
        np.testing.assert_array_equal(read[k], sd[k])
        assert read[k].dtype == sd[k].dtype
    # wrapped {"state_dict": ...} (training checkpoints), half precision read as float32
    torch.save(
        {
            "state_dict": {
                k: torch.from_numpy(v).half() if v.dtype == np.float32 else torch.from_numpy(v)
                for k, v in sd.items()
            }
        },
        tmp_path / "wrapped.pt",
    )
    wrapped = weights.read_state_dict(tmp_path / "wrapped.pt")
    assert wrapped["conv1.weight"].dtype == np.float32
    np.testing.assert_allclose(wrapped["conv1.weight"], sd["conv1.weight"], rtol=1e-3, atol=1e-3)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="state_dict"):
        weights.read_state_dict(tmp_path / "list.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.pth"):
        weights.read_state_dict(tmp_path / "junk.pth")


# ---------------------------------------------------------------------------------------------
# checkpoints


def test_checkpoint_round_trip_and_checks(small_variables, tmp_path):
    variables = small_variables["resnet_small"][0]
    path = tmp_path / "ckpt"
    weights.save_variables(path, variables, name="resnet_small")
    info = weights.checkpoint_info(path)
    assert (info["model"], info["num_classes"]) == ("resnet_small", 6)
    loaded = weights.load_variables(path, name="resnet_small")
    assert jax.tree.structure(loaded) == jax.tree.structure(variables)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(variables), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"'resnet_small' \(6 classes\), not 'vgg_small'"):
        weights.load_variables(path, name="vgg_small")
    with pytest.raises(ValueError, match="already exists"):
        weights.save_variables(path, variables, name="resnet_small")
    weights.save_variables(
        path, small_variables["resnet_small"][1], name="resnet_small", overwrite=True
    )
    np.testing.assert_array_equal(
        weights.load_variables(path)["params"]["fc"]["bias"],
        small_variables["resnet_small"][1]["params"]["fc"]["bias"],
    )


def test_checkpoint_errors(small_variables, tmp_path):
    with pytest.raises(ValueError, match="checkpoint not found.*missing"):
        weights.load_variables(tmp_path / "missing", name="resnet_small")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a saliency-jax model checkpoint"):
        weights.load_variables(tmp_path / "empty")
    with pytest.raises(ValueError, match="do not match model 'vgg_small'"):
        weights.save_variables(tmp_path / "x", small_variables["resnet_small"][0], name="vgg_small")
