"""Dataset-level summaries of per-image metric values (plain numpy, after the compiled work).

* :func:`mean_std`: mean ± std of every metric over a dataset, optionally per class.
* :func:`pointing_game_accuracy`: the pointing game's dataset score, the mean over categories
  of per-category hit rates ``hits_c / (hits_c + misses_c)`` (Zhang et al., ECCV 2016; C-EBP
  ``eval_coco.py``; RISE §4.1), on all pairs or on the "difficult" subset where the dataset
  marks one (EBP's difficult flags, as TorchRay's ``PointingGameBenchmark(difficult=True)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np


def _values(values, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of per-image values, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return arr


def _labels(labels, n: int, name: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have one entry per value, shape ({n},), got {arr.shape}")
    return arr


def _stats(arr: np.ndarray, ddof: int) -> dict:
    std = float(np.std(arr, ddof=ddof)) if arr.size > ddof else float("nan")
    return {"mean": float(np.mean(arr)), "std": std, "n": int(arr.size)}


def mean_std(table: Mapping[str, object], *, classes=None, ddof: int = 0) -> dict:
    """Mean and standard deviation of each metric column.

    Args:
      table: ``{metric name: per-image values}`` (numbers or bools; bools count as 0/1, so the
        mean of pointing-game hits is the image-level hit rate).
      classes: optional per-image class labels (one per row); adds ``"per_class"``.
      ddof: delta degrees of freedom of the std (0: population std, numpy's default; 1: sample).

    Returns:
      ``{metric: {"mean", "std", "n"[, "per_class": {class: {"mean", "std", "n"}}]}}``; ``std`` is
      NaN where a group has ``n <= ddof``. Class keys are the labels as Python scalars, sorted.
    """
    if ddof not in (0, 1):
        raise ValueError(f"ddof must be 0 or 1, got {ddof!r}")
    out = {}
    for name, values in table.items():
        arr = _values(values, f"table[{name!r}]")
        entry = _stats(arr, ddof)
        if classes is not None:
            labels = _labels(classes, arr.size, "classes")
            entry["per_class"] = {
                c.item(): _stats(arr[labels == c], ddof) for c in np.unique(labels)
            }
        out[name] = entry
    return out


class PointingGameResult(NamedTuple):
    """``accuracy``: mean of ``per_category`` rates; ``hits``/``totals`` per category."""

    accuracy: float
    per_category: dict
    hits: dict
    totals: dict


def pointing_game_accuracy(hits, categories, *, difficult=None, subset: str = "all"):
    """Per-category pointing-game accuracy and its mean over categories.

    Args:
      hits: per (image, category) pair, whether the pointing game hit (bool).
      categories: the category of each pair (any hashable label). A pair is evaluated with the
        map for its GT category, not the top-1 class (C-EBP). Pairs the protocol skips (e.g.
        VOC objects all marked PASCAL-difficult) are the caller's to leave out.
      difficult: per pair, whether the dataset marks it "difficult" (EBP's subset: images with
        a small object and a distractor category); needed for ``subset="difficult"``.
      subset: ``"all"`` (every pair; what RISE's table compares with) or ``"difficult"``.

    Returns:
      :class:`PointingGameResult`. Categories with no evaluated pair are absent (C-EBP averages
      over the categories it evaluates; TorchRay would count an absent category as 0).
    """
    if subset not in ("all", "difficult"):
        raise ValueError(f"subset must be 'all' or 'difficult', got {subset!r}")
    hit = np.asarray(hits)
    if hit.ndim != 1 or hit.size == 0:
        raise ValueError(f"hits must be a non-empty 1-D sequence, got shape {hit.shape}")
    if hit.dtype != np.bool_:
        if not np.all(np.isin(hit, (0, 1))):
            raise ValueError("hits must be booleans (or 0/1)")
        hit = hit.astype(bool)
    cats = _labels(categories, hit.size, "categories")
    keep = np.ones(hit.size, bool)
    if subset == "difficult":
        if difficult is None:
            raise ValueError("difficult flags are required for subset='difficult'")
        keep = _labels(difficult, hit.size, "difficult").astype(bool)
        if not keep.any():
            raise ValueError("no pair is marked difficult: the difficult subset is empty")
    elif difficult is not None:
        _labels(difficult, hit.size, "difficult")
    hit, cats = hit[keep], cats[keep]
    per_cat, hit_counts, totals = {}, {}, {}
    for c in np.unique(cats):
        sel = cats == c
        hit_counts[c.item()] = int(hit[sel].sum())
        totals[c.item()] = int(sel.sum())
        per_cat[c.item()] = hit_counts[c.item()] / totals[c.item()]
    accuracy = float(np.mean(list(per_cat.values())))
    return PointingGameResult(accuracy, per_cat, hit_counts, totals)
