"""Numpy port of the reference RISE (``eclique/RISE`` @ d91ea00, ``explanations.py``).

Written from METHODS §1.2 and §1.5 (the code's behaviour), not from ``saliency_jax``:

* ``generate_masks``: ``grid = rand(N, s, s) < p1``; ``cell = ceil(input_size / s)``;
  ``up = (s + 1) * cell``; per mask a shift ``x, y = randint(0, cell)`` per axis and
  ``resize(grid[i], up, order=1, mode='reflect', anti_aliasing=False)[x:x + H, y:y + W]``
  (skimage, float64). The reference draws both shifts with ``np.random.randint`` in a Python
  loop; here the generator is an explicit ``numpy.random.Generator``.
* ``forward``: masked stack, scores in batches of ``gpu_batch``, ``sal = P^T @ masks.view(N, H*W)``,
  reshaped to ``(CL, H, W)``, divided by ``N`` and by ``p1``.

The reference multiplies the *normalised* tensor by the masks (``stack = masks * x``), so a
masked pixel is 0 in normalised space, i.e. the mean colour in pixel space. This port works in
pixel space with that baseline made explicit: ``stack = m * image + (1 - m) * baseline``
(``baseline = 0`` is the reference applied to an un-normalised input).
"""

from __future__ import annotations

import numpy as np
from skimage.transform import resize


def masks_from_grids(grids, shifts, input_size):
    """Reference masks ``float64[N, H, W]`` from given grids ``[N, s, s]`` and shifts ``[N, 2]``."""
    grids = np.asarray(grids, np.float32)  # the reference casts the boolean grid to float32
    n, s = grids.shape[0], grids.shape[1]
    h, w = input_size
    cell_size = np.ceil(np.array(input_size) / s).astype(int)
    up_size = tuple((s + 1) * cell_size)
    masks = np.empty((n, h, w))
    for i in range(n):
        x, y = shifts[i]
        masks[i] = resize(grids[i], up_size, order=1, mode="reflect", anti_aliasing=False)[
            x : x + h, y : y + w
        ]
    return masks


def generate_masks(n, s, p1, input_size, rng):
    """``RISE.generate_masks(N, s, p1)``: returns ``(masks float64[N, H, W], grids, shifts)``."""
    cell_size = np.ceil(np.array(input_size) / s).astype(int)
    grids = rng.random((n, s, s)) < p1
    shifts = np.stack(
        [rng.integers(0, cell_size[0], size=n), rng.integers(0, cell_size[1], size=n)], axis=1
    )
    return masks_from_grids(grids, shifts, input_size), grids, shifts


def forward(model, image, masks, p1, *, baseline=0.0, gpu_batch=100):
    """``RISE.forward``: saliency of every class ``float32[CL, H, W]``.

    ``model``: numpy callable ``float32[b, H, W, 3] -> float32[b, CL]`` (probabilities).
    ``image``: ``[H, W, 3]``; ``masks``: ``[N, H, W]``.
    """
    masks = np.asarray(masks, np.float32)  # the reference moves the masks to the GPU as float32
    n, h, w = masks.shape
    m = masks[..., None]
    stack = m * np.asarray(image, np.float32) + (1.0 - m) * np.asarray(baseline, np.float32)
    p = []
    for i in range(0, n, gpu_batch):
        p.append(np.asarray(model(stack[i : min(i + gpu_batch, n)]), np.float32))
    p = np.concatenate(p)
    cl = p.shape[1]
    sal = np.matmul(p.T, masks.reshape(n, h * w))
    sal = sal.reshape(cl, h, w)
    return sal / n / p1
