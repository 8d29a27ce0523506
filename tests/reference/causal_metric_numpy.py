"""A numpy port of the reference deletion/insertion metric (eclique/RISE ``evaluation.py``).

Written from METHODS §5.1, step by step as the reference ``CausalMetric.single_run``: a Python
loop over steps, in-place pixel replacement, in the model's *normalised* space (NHWC here instead
of NCHW; the layout does not change any value). Used only by the tests, as an independent check.

* ``gkern(klen, nsig)``: ``scipy.ndimage.gaussian_filter`` of a centred delta, as the reference.
* ``blur``: ``conv2d(x, gkern, padding=klen // 2)`` with zero padding, channels independent.
* order: ``np.flip(np.argsort(sal.ravel()))`` (the reference's; ties implementation-defined, so
  parity tests use tie-free maps).
* substrates: ``zeros_like`` (RISE deletion), ``rand - 0.5`` (RExL deletion; pass the draw),
  ``blur`` (insertion).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter


def gkern(klen: int, nsig: float) -> np.ndarray:
    """The reference 2-D kernel: a Gaussian-smoothed Dirac delta, ``f64[klen, klen]``."""
    inp = np.zeros((klen, klen))
    inp[klen // 2, klen // 2] = 1
    return gaussian_filter(inp, nsig)


def blur(x: np.ndarray, klen: int = 11, nsig: float = 5) -> np.ndarray:
    """``conv2d(x, diag(gkern), padding=klen // 2)`` for a normalised ``x`` ``[h, w, c]``."""
    k = gkern(klen, nsig)
    r = klen // 2
    h, w, _ = x.shape
    padded = np.pad(x.astype(np.float64), ((r, r), (r, r), (0, 0)))  # zero padding
    out = np.zeros(x.shape, np.float64)
    for dy in range(klen):
        for dx in range(klen):
            out += k[dy, dx] * padded[dy : dy + h, dx : dx + w]
    return out


def auc(arr: np.ndarray) -> float:
    """Reference ``auc``: ``(arr.sum() - arr[0] / 2 - arr[-1] / 2) / (arr.shape[0] - 1)``."""
    return float((arr.sum() - arr[0] / 2 - arr[-1] / 2) / (arr.shape[0] - 1))


def causal_metric(model, img_norm, explanation, mode: str, step: int, substrate_fn):
    """Reference ``CausalMetric(model, mode, step, substrate_fn).single_run(img, explanation)``.

    Args:
      model: ``f64[1, h, w, c] (normalised) -> probabilities [1, k]``.
      img_norm: the normalised image ``[h, w, c]``.
      explanation: ``[h, w]`` saliency map.
      mode: ``'del'`` or ``'ins'``.
      step: pixels per iteration.
      substrate_fn: ``normalised image -> normalised substrate``.

    Returns:
      scores ``f64[n_steps + 1]``.
    """
    assert mode in ("del", "ins")
    h, w, c = img_norm.shape
    hw = h * w
    pred = model(img_norm[None])
    cls = int(np.argmax(pred, 1)[0])
    n_steps = (hw + step - 1) // step
    if mode == "del":
        start = img_norm.copy()
        finish = substrate_fn(img_norm)
    else:
        start = substrate_fn(img_norm)
        finish = img_norm.copy()
    start = np.array(start, np.float64)
    finish = np.array(finish, np.float64)
    scores = np.empty(n_steps + 1)
    salient_order = np.flip(np.argsort(explanation.reshape(-1, hw), axis=1), axis=-1)
    for i in range(n_steps + 1):
        pred = model(start[None])
        scores[i] = pred[0, cls]
        if i < n_steps:
            coords = salient_order[:, step * i : step * (i + 1)]
            start.reshape(hw, c)[coords[0], :] = finish.reshape(hw, c)[coords[0], :]
    return scores
