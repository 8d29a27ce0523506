"""What a masked pixel becomes: ``x = m * image + (1 - m) * baseline``.

The reference codes mask the *normalised* tensor, so their masked pixels are the model's mean
colour (METHODS §1.4). The default baseline is therefore the model's mean colour, read from the
``mean_rgb`` keyword that :func:`models.classifier` puts on its ``jax.tree_util.Partial``.
A model function that declares none gets black (zeros), the paper's "intensities down to zero".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from saliency_jax._src import validation


def model_mean_rgb(model_fn):
    """The ``f32[3]`` mean colour a ``ModelFn`` declares, or ``None``."""
    if isinstance(model_fn, jax.tree_util.Partial):
        return model_fn.keywords.get("mean_rgb")
    return None


def resolve_baseline(model_fn, image, baseline=None) -> jax.Array:
    """The baseline broadcast to ``image``'s shape ``f32[h, w, 3]`` (validated)."""
    if baseline is None:
        baseline = model_mean_rgb(model_fn)
        if baseline is None:
            baseline = jnp.zeros((3,), jnp.float32)
    validation.check_baseline(baseline, jnp.shape(image))
    return jnp.broadcast_to(jnp.asarray(baseline, jnp.float32), jnp.shape(image))


def apply_mask(image, mask, baseline):
    """``m * image + (1 - m) * baseline`` for ``mask`` ``[..., h, w]`` and image ``[h, w, 3]``."""
    m = mask[..., None]
    return m * image + (1.0 - m) * baseline
