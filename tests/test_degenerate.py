"""Degenerate results say why (issue 19, item 3): constant maps, and figures of them."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import saliency_jax as sj
from saliency_jax.app import plots


@pytest.mark.slow  # ~10 s: keeps the default suite's time (issue 19)
def test_lime_on_a_tiny_image_warns_that_its_map_is_constant():
    model_fn, _ = sj.testing.tiny_cnn(jax.random.key(0), (8, 8))
    image = jnp.zeros((8, 8, 3)).at[2:6, 2:6].set(1.0)
    config = sj.LimeConfig(num_samples=32, batch_size=32)
    with pytest.warns(UserWarning, match="single superpixel on this 8 x 8 image"):
        saliency = sj.lime(jax.random.key(0), model_fn, image, 0, config=config)
    assert np.ptp(np.asarray(saliency)) == 0  # the warning is right: one weight everywhere
    with pytest.warns(UserWarning, match="the segments given have a single label"):
        sj.lime(jax.random.key(0), model_fn, image, 0, config=config,
                segments=jnp.zeros((8, 8), jnp.int32))
    # Several superpixels: no warning.
    segments = (jnp.arange(8)[:, None] // 4) * 2 + jnp.arange(8)[None, :] // 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sj.lime(jax.random.key(0), model_fn, image, 0, config=config, segments=segments)


def test_overlay_states_a_constant_map_and_refuses_a_wrong_shape(tmp_path):
    from PIL import Image

    image = np.zeros((30, 60, 3), np.uint8)
    plots.overlay(tmp_path / "c.png", image, np.full((30, 60), 0.7), title="t")
    with Image.open(tmp_path / "c.png") as im:
        assert im.width > im.height  # 2:1 kept
    with pytest.raises(ValueError, match=r"saliency must have the image's shape \(30, 60\)"):
        plots.overlay(tmp_path / "d.png", image, np.zeros((60, 60)))
