"""Mixed precision: ``dtype="bfloat16"`` model functions against float32, on the packaged
classifier and synthetic images, bounded on scores, RISE maps and deletion/insertion AUCs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import saliency_jax as sj
from saliency_jax import models
from saliency_jax.app import classifiers
from saliency_jax.data import shapes


@pytest.fixture(scope="module")
def packaged():
    model_fn, variables = classifiers.load_classifier("resnet_small")
    data = shapes.generate_arrays("test", 4)
    return model_fn, variables, jnp.asarray(data["image"], jnp.float32) / 255, data["label"]


@pytest.mark.slow
def test_bfloat16_computes_in_bfloat16_and_returns_float32(packaged):
    f32, variables, images, labels = packaged
    bf16 = sj.classifier("resnet_small", variables, dtype="bfloat16")
    jaxpr = str(jax.make_jaxpr(bf16)(images[:1]))
    assert "bf16" in jaxpr and "bf16" not in str(jax.make_jaxpr(f32)(images[:1]))
    p32, p16 = np.asarray(f32(images)), np.asarray(bf16(images))
    assert p16.dtype == np.float32
    np.testing.assert_allclose(p16.sum(-1), 1.0, atol=1e-5)  # the softmax is float32
    assert np.abs(p16 - p32).max() < 0.02
    assert (p16.argmax(-1) == p32.argmax(-1)).all()
    # float32 by name compiles exactly the default program.
    f32_named = sj.classifier("resnet_small", variables, dtype=jnp.float32)
    np.testing.assert_array_equal(np.asarray(f32_named(images)), p32)
    logits16 = models.logits_fn("resnet_small", variables, dtype="bfloat16")(images[:1])
    assert logits16.dtype == jnp.float32


@pytest.mark.slow
def test_bfloat16_rise_maps_and_aucs_agree_with_float32(packaged):
    f32, variables, images, labels = packaged
    bf16 = sj.classifier("resnet_small", variables, dtype="bfloat16")
    cfg = sj.RiseConfig(num_masks=256, grid=7, batch_size=64)
    key = jax.random.key(0)
    for image, label in zip(images[:2], labels[:2], strict=True):
        s32 = sj.rise(key, f32, image, int(label), config=cfg)
        s16 = sj.rise(key, bf16, image, int(label), config=cfg)
        assert s16.dtype == jnp.float32
        r = np.corrcoef(np.ravel(s32), np.ravel(s16))[0, 1]
        assert r > 0.99, r
        for metric in (sj.metrics.deletion, sj.metrics.insertion):
            a32 = float(metric(f32, image, s32, int(label), step=448).auc)
            a16 = float(metric(bf16, image, s32, int(label), step=448).auc)
            assert abs(a32 - a16) < 0.02, (metric.__name__, a32, a16)


@pytest.mark.parametrize("bad", ["int8", "float64", "bf16x", 3])
def test_bad_dtype_is_rejected(packaged, bad):
    _, variables, _, _ = packaged
    with pytest.raises(ValueError, match="dtype"):
        sj.classifier("resnet_small", variables, dtype=bad)
