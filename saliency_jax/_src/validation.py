"""Argument checks run once, outside ``jit``, by every public explainer and metric.

Each raises ``ValueError`` naming the argument and what is accepted. They accept concrete
arrays; when called with tracers (an explainer used inside the caller's own ``jit`` or
``vmap``) the value checks that need concrete data are skipped and only shapes are checked.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _dtype(x):
    return x.dtype if hasattr(x, "dtype") else np.result_type(x)


def check_image(image, name: str = "image") -> tuple[int, int]:
    """``image`` must be float ``[h, w, 3]`` with finite values in [0, 1]; returns ``(h, w)``."""
    shape = np.shape(image)
    if len(shape) != 3:
        raise ValueError(
            f"{name} must have rank 3 (h, w, 3), got shape {shape}; batch with jax.vmap"
        )
    if shape[-1] != 3:
        raise ValueError(f"{name} must have 3 channels (RGB, last axis), got shape {shape}")
    dtype = _dtype(image)
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(
            f"{name} must be a float array in [0, 1], got dtype {dtype}; "
            "convert uint8 images with image.astype(np.float32) / 255"
        )
    if _is_concrete(image):
        arr = np.asarray(image)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains non-finite values (NaN or inf)")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"{name} values must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    return int(shape[0]), int(shape[1])


def check_image_batch(images, name: str = "images"):
    """``images`` ``f32[n, h, w, 3]`` (or one image ``[h, w, 3]``, taken as ``n = 1``) with finite
    values in [0, 1]; returns them as a float32 batch."""
    images = jnp.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4:
        raise ValueError(f"{name} must be f32[n, h, w, 3], got shape {images.shape}")
    check_image(np.asarray(images[0]), name=f"{name}[0]")
    values = np.asarray(images)
    if not (np.all(np.isfinite(values)) and values.min() >= 0 and values.max() <= 1):
        raise ValueError(f"{name} must be finite and lie in [0, 1]")
    return images.astype(jnp.float32)


def check_target(target, num_classes: int, name: str = "target") -> None:
    """``target`` must be an integer scalar in ``[0, num_classes)``."""
    if np.ndim(target) != 0:
        raise ValueError(f"{name} must be a scalar class index, got shape {np.shape(target)}")
    if not np.issubdtype(_dtype(target), np.integer):
        raise ValueError(f"{name} must be an integer class index, got {_dtype(target)}")
    if _is_concrete(target):
        t = int(target)
        if not 0 <= t < num_classes:
            raise ValueError(f"{name}={t} is out of range: the model has {num_classes} classes")


def check_saliency(saliency, hw: tuple[int, int], name: str = "saliency") -> None:
    """``saliency`` must be a finite float ``[h, w]`` map matching the image."""
    shape = tuple(np.shape(saliency))
    if shape != tuple(hw):
        raise ValueError(f"{name} must have shape {tuple(hw)} (the image's h, w), got {shape}")
    if _is_concrete(saliency) and not np.all(np.isfinite(np.asarray(saliency))):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")


def check_baseline(baseline, image_shape, name: str = "baseline") -> None:
    """``baseline`` must broadcast to the image: ``[3]``, ``[h, w, 3]`` or a scalar."""
    shape = tuple(np.shape(baseline))
    if shape not in ((), (3,), tuple(image_shape)):
        raise ValueError(
            f"{name} must be a scalar, an RGB colour of shape (3,) or an array of the image's "
            f"shape {tuple(image_shape)}, got shape {shape}"
        )
    if _is_concrete(baseline) and not np.all(np.isfinite(np.asarray(baseline))):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")


def check_positive_int(value, name: str) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def check_probability(value, name: str, *, allow_zero: bool = False) -> None:
    """``value`` must lie in (0, 1] (or [0, 1] when ``allow_zero``)."""
    lo_ok = value >= 0.0 if allow_zero else value > 0.0
    if not (lo_ok and value <= 1.0):
        interval = "[0, 1]" if allow_zero else "(0, 1]"
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")


def num_classes_of(model_fn, image) -> int:
    """The number of scores ``model_fn`` returns, from its abstract output shape (no compute)."""
    out = jax.eval_shape(model_fn, jax.ShapeDtypeStruct((1, *np.shape(image)), np.float32))
    if len(out.shape) != 2 or out.shape[0] != 1:
        raise ValueError(
            f"model_fn must map f32[b, h, w, 3] to scores f32[b, k], got output shape {out.shape}"
        )
    return int(out.shape[1])
