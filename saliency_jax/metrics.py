"""Evaluation metrics for saliency maps (METHODS §5).

Causal (RISE protocol): :func:`deletion` (lower is better), :func:`insertion`
(higher is better), both ``-> Curve(scores, auc)``. Localisation:
:func:`pointing_game` (C-EBP protocol, 15 px tolerance), :func:`iou`, :func:`f1` (Dice),
:func:`precision`, :func:`recall`, :func:`iassa_micro_f1` (= pixel accuracy), :func:`binarize`.
Dataset summaries: :func:`mean_std`, :func:`pointing_game_accuracy`.
"""

from saliency_jax._src.metrics.aggregate import PointingGameResult, mean_std, pointing_game_accuracy
from saliency_jax._src.metrics.causal import (
    GKERN_TAPS,
    Curve,
    auc,
    blur,
    deletion,
    insertion,
    pixel_rank,
)
from saliency_jax._src.metrics.localization import (
    Overlap,
    binarize,
    boxes_to_mask,
    f1,
    iassa_micro_f1,
    iou,
    overlap,
    pointing_game,
    precision,
    recall,
)

__all__ = [
    "GKERN_TAPS",
    "Curve",
    "Overlap",
    "PointingGameResult",
    "auc",
    "binarize",
    "blur",
    "boxes_to_mask",
    "deletion",
    "f1",
    "iassa_micro_f1",
    "insertion",
    "iou",
    "mean_std",
    "overlap",
    "pixel_rank",
    "pointing_game",
    "pointing_game_accuracy",
    "precision",
    "recall",
]
