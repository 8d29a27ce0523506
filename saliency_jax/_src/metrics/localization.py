"""Localisation metrics against a ground-truth object: pointing game, IoU, F1, precision, recall.

**Pointing game** (Zhang et al., ECCV 2016; RISE §4.1; METHODS §5.2, the C-EBP protocol): the
map is resized (bilinear) to the ground truth's resolution, its argmax taken (first in row-major
order on ties), and the point is a hit when the closed disk of radius ``tolerance`` pixels
around it touches the object: some GT pixel ``(r, c)`` has ``(r − r0)² + (c − c0)² ≤ tolerance²``
(distances between pixel indices). Higher is better. Datasets report the mean over categories
of per-category hit rates (:func:`saliency_jax.metrics.pointing_game_accuracy`).

**Overlap metrics** (IASSA, Vasu & Long, WACV 2020; METHODS §5.3): the map is binarised by
:func:`binarize` (or given already binary, as a bool array) and compared with the GT mask, any
nonzero GT value counting as foreground (resized masks have fractional edges). With ``TP, FP,
FN, TN`` pixel counts: ``iou = TP/(TP+FP+FN)``, ``precision = TP/(TP+FP)`` (0 when nothing is
predicted), ``recall = TP/(TP+FN)``, ``f1 = 2TP/(2TP+FP+FN)`` (foreground F1 = Dice). All higher
is better. :func:`iassa_micro_f1` is what the IASSA code reports as "F1": sklearn's micro-F1 of the
rounded labels, which for binary labels is pixel accuracy.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax._src.metrics.causal import pixel_rank

MODES = ("relative", "absolute", "top_k")


def _concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _dtype(x) -> np.dtype:
    return np.dtype(x.dtype) if hasattr(x, "dtype") else np.result_type(x)


def _check_map(saliency, name: str = "saliency") -> tuple[int, int]:
    shape = tuple(np.shape(saliency))
    if len(shape) != 2:
        raise ValueError(f"{name} must be a 2-D map [h, w], got shape {shape}; batch with jax.vmap")
    dtype = _dtype(saliency)
    if not (dtype == np.bool_ or np.issubdtype(dtype, np.number)):
        raise ValueError(f"{name} must be a numeric or bool array, got dtype {dtype}")
    if _concrete(saliency) and dtype != np.bool_ and not np.all(np.isfinite(saliency)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return shape


def _check_gt_mask(gt_mask, hw, name: str = "gt_mask") -> None:
    shape = tuple(np.shape(gt_mask))
    if shape != tuple(hw):
        raise ValueError(f"{name} must have shape {tuple(hw)} (the saliency map's), got {shape}")
    dtype = _dtype(gt_mask)
    if not (dtype == np.bool_ or np.issubdtype(dtype, np.number)):
        raise ValueError(f"{name} must be a bool or numeric mask, got dtype {dtype}")
    if _concrete(gt_mask):
        arr = np.asarray(gt_mask)
        if dtype != np.bool_ and not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains non-finite values (NaN or inf)")
        if not np.any(arr != 0):
            raise ValueError(f"{name} is empty (no foreground pixel): the metric is undefined")


def _check_threshold(threshold, mode) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if np.ndim(threshold) != 0:
        raise ValueError(f"threshold must be a scalar, got shape {np.shape(threshold)}")
    if not _concrete(threshold):
        return
    t = float(threshold)
    if not np.isfinite(t):
        raise ValueError(f"threshold must be finite, got {threshold!r}")
    if mode in ("relative", "top_k") and not 0.0 <= t <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1] for mode={mode!r}, got {threshold!r}")


def _binarize(saliency, threshold, mode):
    s = jnp.asarray(saliency, jnp.float32)
    t = jnp.asarray(threshold, jnp.float32)
    if mode == "absolute":
        return s > t
    if mode == "relative":
        lo, hi = jnp.min(s), jnp.max(s)
        return s > lo + t * (hi - lo)
    k = jnp.round(t * s.size).astype(jnp.int32)
    return pixel_rank(s) < k


def binarize(saliency, *, threshold, mode: str = "relative") -> jax.Array:
    """``bool[h, w]``: the pixels a thresholded map marks as object.

    Modes (``threshold`` traced, ``mode`` static):
      ``"relative"``: ``s > min + threshold·(max − min)``, threshold in [0, 1] (IASSA code: 0.3;
        a constant map gives an empty mask);
      ``"absolute"``: ``s > threshold``;
      ``"top_k"``: the ``round(threshold·h·w)`` most salient pixels, threshold in [0, 1] (a
        fraction: 0.3 keeps 30 %); ties by increasing flat index, so exactly that many pixels.
    """
    _check_map(saliency)
    _check_threshold(threshold, mode)
    return _binarize_jit(saliency, threshold, mode=mode)


_binarize_jit = jax.jit(_binarize, static_argnames=("mode",))


class Overlap(NamedTuple):
    """All overlap scores of one binarised map against one GT mask (``f32[]`` each)."""

    iou: jax.Array
    precision: jax.Array
    recall: jax.Array
    f1: jax.Array
    micro_f1: jax.Array


@functools.partial(jax.jit, static_argnames=("mode",))
def _overlap(saliency, gt_mask, threshold, *, mode):
    pred = saliency if mode is None else _binarize(saliency, threshold, mode)
    gt = gt_mask != 0
    tp = jnp.sum(pred & gt, dtype=jnp.float32)
    fp = jnp.sum(pred & ~gt, dtype=jnp.float32)
    fn = jnp.sum(~pred & gt, dtype=jnp.float32)
    gt_rounded = jnp.round(jnp.asarray(gt_mask, jnp.float32))  # the IASSA code's HAR.round()
    micro = jnp.mean(pred.astype(jnp.float32) == gt_rounded)
    pred_pos = tp + fp
    return Overlap(
        iou=tp / (tp + fp + fn),
        precision=jnp.where(pred_pos > 0, tp / jnp.maximum(pred_pos, 1.0), 0.0),
        recall=tp / (tp + fn),
        f1=2 * tp / (2 * tp + fp + fn),
        micro_f1=micro,
    )


def overlap(saliency, gt_mask, *, threshold=None, mode: str = "relative") -> Overlap:
    """IoU, precision, recall, F1 and the IASSA micro-F1 of one map against ``gt_mask``.

    Args:
      saliency: ``f32[h, w]`` map, binarised with ``threshold``/``mode`` (see :func:`binarize`);
        or ``bool[h, w]``, an already binary mask (then ``threshold`` must be ``None``).
      gt_mask: ``[h, w]`` bool or float (fractional edges of a resized mask): any nonzero value
        is foreground. Must not be empty.
      threshold, mode: as :func:`binarize`; ``threshold`` is required for a float map.
    """
    hw = _check_map(saliency)
    _check_gt_mask(gt_mask, hw)
    if _dtype(saliency) == np.bool_:
        if threshold is not None:
            raise ValueError("threshold must be None when saliency is already a bool mask")
        return _overlap(saliency, gt_mask, 0.0, mode=None)
    if threshold is None:
        raise ValueError(
            "threshold is required for a float saliency map (e.g. threshold=0.3, mode='relative' "
            "as the IASSA code), or pass a bool mask"
        )
    _check_threshold(threshold, mode)
    return _overlap(saliency, gt_mask, threshold, mode=mode)


def iou(saliency, gt_mask, *, threshold=None, mode: str = "relative") -> jax.Array:
    """``|pred ∧ gt| / |pred ∨ gt|`` (IASSA): see :func:`overlap` for the arguments."""
    return overlap(saliency, gt_mask, threshold=threshold, mode=mode).iou


def precision(saliency, gt_mask, *, threshold=None, mode: str = "relative") -> jax.Array:
    """``TP / (TP + FP)``, 0 for an empty prediction: see :func:`overlap`."""
    return overlap(saliency, gt_mask, threshold=threshold, mode=mode).precision


def recall(saliency, gt_mask, *, threshold=None, mode: str = "relative") -> jax.Array:
    """``TP / (TP + FN)``: see :func:`overlap`."""
    return overlap(saliency, gt_mask, threshold=threshold, mode=mode).recall


def f1(saliency, gt_mask, *, threshold=None, mode: str = "relative") -> jax.Array:
    """Foreground F1 = Dice ``2TP / (2TP + FP + FN)``: see :func:`overlap`."""
    return overlap(saliency, gt_mask, threshold=threshold, mode=mode).f1


def iassa_micro_f1(saliency, gt_mask, *, threshold=None, mode: str = "relative") -> jax.Array:
    """The IASSA code's "F1": ``f1_score(m.round(), HAR.round(), average='micro')``.

    For binary labels micro-F1 is pixel accuracy ``(TP + TN) / (h·w)``. Faithful to the code,
    the GT here is *rounded* (a fractional edge pixel counts as object only above 0.5), unlike
    the nonzero rule of the other overlap metrics. See :func:`overlap` for the arguments.
    """
    return overlap(saliency, gt_mask, threshold=threshold, mode=mode).micro_f1


@functools.partial(jax.jit, static_argnames=("gt_hw",))
def boxes_to_mask(boxes, gt_hw) -> jax.Array:
    """``bool[H, W]``: the union of ``boxes`` ``f32[n, 4]`` = ``(ymin, xmin, ymax, xmax)``.

    Coordinates are continuous pixel units of the ``gt_hw = (H, W)`` image, which spans
    ``[0, H] × [0, W]``; pixel ``(r, c)`` covers ``[r, r+1) × [c, c+1)`` and belongs to a box when
    its centre ``(r + 0.5, c + 0.5)`` lies in the closed box. Integer boxes are therefore
    half-open in indices (rows ``ymin … ymax − 1``), as TFDS's normalised boxes scaled by
    ``(H, W)`` (TFDS's VOC reader already subtracts 1 from the 1-based ``xmin``/``ymin``). An
    all-zero row is empty, so boxes may be zero-padded to a fixed ``n``.
    """
    boxes = jnp.asarray(boxes, jnp.float32)
    yc = jnp.arange(gt_hw[0], dtype=jnp.float32)[None, :, None] + 0.5
    xc = jnp.arange(gt_hw[1], dtype=jnp.float32)[None, None, :] + 0.5
    ymin, xmin, ymax, xmax = (boxes[:, i, None, None] for i in range(4))
    inside = (yc >= ymin) & (yc <= ymax) & (xc >= xmin) & (xc <= xmax)
    return jnp.any(inside, axis=0)


@jax.jit
def _pointing(saliency, gt_mask, tolerance):
    h, w = gt_mask.shape
    s = jnp.asarray(saliency, jnp.float32)
    if s.shape != (h, w):
        s = jax.image.resize(s, (h, w), "bilinear")
    r0, c0 = jnp.divmod(jnp.argmax(s.reshape(-1)), w)
    rr = (jnp.arange(h) - r0).astype(jnp.float32)[:, None]
    cc = (jnp.arange(w) - c0).astype(jnp.float32)[None, :]
    tol = jnp.asarray(tolerance, jnp.float32)
    return jnp.any((rr * rr + cc * cc <= tol * tol) & (gt_mask != 0))


def pointing_game(saliency, gt, *, tolerance=15.0, gt_hw=None) -> jax.Array:
    """Pointing-game hit ``bool[]`` for one map and one object class (C-EBP protocol).

    Args:
      saliency: ``f32[h, w]`` map for the GT class; resized (bilinear) to the GT resolution.
      gt: either a bool mask ``[H, W]`` at the GT (original image) resolution (then ``gt_hw``
        must be ``None``; binarise a fractional mask yourself, e.g. ``mask > 0``); or boxes ``f32[n, 4]`` in pixel units,
        ``(ymin, xmin, ymax, xmax)`` with the convention of :func:`boxes_to_mask`, together
        with ``gt_hw = (H, W)``, the GT image size.
      tolerance: disk radius in pixels (15 in C-EBP and TorchRay; a hit at distance exactly
        ``tolerance``: the closed disk, as C-EBP's shapely ``intersects``).
      gt_hw: the GT image size, for boxes only (static).
    """
    _check_map(saliency)
    if np.ndim(tolerance) != 0 or (_concrete(tolerance) and not 0.0 <= float(tolerance) < np.inf):
        raise ValueError(f"tolerance must be a finite scalar >= 0 (pixels), got {tolerance!r}")
    if gt_hw is None:
        if np.ndim(gt) != 2 or _dtype(gt) != np.bool_:
            raise ValueError(
                f"gt must be a bool mask [H, W], or float boxes [n, 4] with gt_hw=(H, W), got "
                f"shape {np.shape(gt)} dtype {_dtype(gt)} without gt_hw"
            )
        _check_gt_mask(gt, np.shape(gt), name="gt")
        mask = gt
    else:
        if not (isinstance(gt_hw, (tuple, list)) and len(gt_hw) == 2
                and all(isinstance(v, (int, np.integer)) and v >= 1 for v in gt_hw)):
            raise ValueError(f"gt_hw must be a pair of positive ints (H, W), got {gt_hw!r}")
        if np.ndim(gt) != 2 or np.shape(gt)[1] != 4 or _dtype(gt) == np.bool_:
            raise ValueError(
                f"with gt_hw, gt must be float boxes [n, 4] (ymin, xmin, ymax, xmax), got "
                f"shape {np.shape(gt)} dtype {_dtype(gt)}"
            )
        if _concrete(gt) and not np.all(np.isfinite(gt)):
            raise ValueError("gt boxes contain non-finite values (NaN or inf)")
        mask = boxes_to_mask(gt, tuple(int(v) for v in gt_hw))
        if _concrete(mask) and not bool(jnp.any(mask)):
            raise ValueError("gt boxes cover no pixel (empty ground truth)")
    return _pointing(saliency, mask, tolerance)
