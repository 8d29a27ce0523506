"""A loop-level numpy port of the released IASSA code (``vbhavank/IASSA-Saliency`` @ ``a3f55d7``).

Written from METHODS §2.2 and the code's structure (``blackboxscore.py`` ``generate_b_masks`` and
``forward``, ``utils.py`` ``find_intersection``, ``LRPF_SA.py`` ``forward``, ``iassa.py``
``forward``), in float64, with the image-size-dependent constants made arguments. Used only as
the expected values of ``tests/test_iassa.py``; never imported by the library.

Differences from the released code, all shared with ``saliency_jax._src.iassa`` variant
``"reference"`` and stated there: the model is any numpy callable on ``[b, h, w, 3]`` images in
[0, 1] masked towards ``baseline`` (the code masks the normalised tensor, i.e. towards the mean
colour), the class is given, features are given as arrays, an empty HAR keeps every mask
(the code crashes), and the last map ``S_k`` is adjusted too.
"""

from __future__ import annotations

import numpy as np


def generate_b_masks(window_size, stride, image_size):
    """Occlusion masks ``[N, H, W]``: 0 inside each window, origins ``arange(S - W, H, S)``."""
    rows = np.arange(0 + stride - window_size, image_size[0], stride)
    cols = np.arange(0 + stride - window_size, image_size[1], stride)
    masks = np.ones((len(rows) * len(cols), image_size[0], image_size[1]), dtype=np.float64)
    i = 0
    for r in rows:
        for c in cols:
            r1 = 0 if r < 0 else r
            r2 = image_size[0] if r + window_size > image_size[0] else r + window_size
            c1 = 0 if c < 0 else c
            c2 = image_size[1] if c + window_size > image_size[1] else c + window_size
            masks[i, r1:r2, c1:c2] = 0
            i += 1
    return masks


def find_intersection(masks, region):
    """Keep a mask iff ``max(mask * region) > 0``."""
    return [m for m in masks if np.max(m * region) > 0]


def saliency(model, image, target, masks, baseline):
    """``sal = P^T M / N`` for the target class (``BlackBoxScore.forward``)."""
    masked = masks[..., None] * image[None] + (1.0 - masks[..., None]) * baseline
    p = np.asarray(model(masked), np.float64)[:, target]
    n = masks.shape[0]
    return (p @ masks.reshape(n, -1)).reshape(image.shape[:2]) / n


def nearest_resize(x, out_hw):
    """``nn.Upsample(size)`` / ``cv2.INTER_NEAREST``: ``out[i, j] = x[floor(i in/out), ...]``."""
    h, w = x.shape[:2]
    out = np.empty((out_hw[0], out_hw[1], *x.shape[2:]), np.float64)
    for i in range(out_hw[0]):
        for j in range(out_hw[1]):
            out[i, j] = x[(i * h) // out_hw[0], (j * w) // out_hw[1]]
    return out


def grid_sample_zeros(x, out_hw):
    """``F.grid_sample(x, grid)`` with ``grid = linspace(-1, 1, out)`` on both axes, bilinear,
    zero padding, ``align_corners=False``."""
    h, w = x.shape

    def tap(i, j):
        return x[i, j] if 0 <= i < h and 0 <= j < w else 0.0

    gy = np.linspace(-1.0, 1.0, out_hw[0])
    gx = np.linspace(-1.0, 1.0, out_hw[1])
    out = np.zeros(out_hw, np.float64)
    for a in range(out_hw[0]):
        y = ((gy[a] + 1) * h - 1) / 2
        y0 = int(np.floor(y))
        fy = y - y0
        for b in range(out_hw[1]):
            xx = ((gx[b] + 1) * w - 1) / 2
            x0 = int(np.floor(xx))
            fx = xx - x0
            out[a, b] = ((1 - fy) * (1 - fx) * tap(y0, x0) + (1 - fy) * fx * tap(y0, x0 + 1)
                         + fy * (1 - fx) * tap(y0 + 1, x0) + fy * fx * tap(y0 + 1, x0 + 1))
    return out


def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def lrpf_forward(levels, ini_sal, lambda_fac, thresh, grid):
    """``LRPFSA.forward``: returns ``(adj_sal_map, HAR mask)``."""
    feat = np.concatenate([nearest_resize(np.asarray(f, np.float64), grid) for f in levels], -1)
    f_hw_c = feat.reshape(grid[0] * grid[1], -1)
    aff = f_hw_c @ f_hw_c.T
    attn = softmax(softmax(aff, axis=0), axis=1)
    s = nearest_resize(ini_sal, grid).reshape(1, -1)
    new = (s @ attn).reshape(grid)
    up = grid_sample_zeros(new, ini_sal.shape)
    adj = lambda_fac * ini_sal + (1 - lambda_fac) * up
    thre = thresh * (np.max(adj) - np.min(adj)) + np.min(adj)
    return adj, adj > thre


def iassa_reference(model, image, target, levels, *, baseline, window=45, stride=8,
                    window_step=1.5, stride_step=0.2, iteration_k=5, lambda_fac=0.5,
                    t_thresh=0.3):
    """``IASSA.forward`` for one image: the adjusted maps ``[k + 1, H, W]`` of ``S_0..S_k``."""
    hw = image.shape[:2]
    grid = max((f.shape[:2] for f in levels), key=lambda s: s[0] * s[1])
    masks = generate_b_masks(window, stride, hw)
    sal = saliency(model, image, target, masks, baseline)
    adjs = []
    for n in range(iteration_k):
        adj, har = lrpf_forward(levels, sal, lambda_fac, t_thresh, grid)
        adjs.append(adj)
        masks = generate_b_masks(int(window - (n + 1) * window_step),
                                 int(stride - stride_step * n), hw)
        kept = find_intersection(masks, har) if har.any() else list(masks)
        sal = saliency(model, image, target, np.stack(kept), baseline)
    adjs.append(lrpf_forward(levels, sal, lambda_fac, t_thresh, grid)[0])
    return np.stack(adjs)
