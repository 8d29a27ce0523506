"""RISE random masks and the mirror-boundary bilinear up-sampling they are built with.

A RISE mask (Petsiuk et al., BMVC 2018, §3.2; reference code ``eclique/RISE``
``explanations.py`` ``generate_masks``; METHODS §1.2) is made from

1. a binary ``s_h x s_w`` grid, each cell 1 (= keep) with probability ``p_keep``;
2. bilinear up-sampling to ``((s_h + 1) C_h, (s_w + 1) C_w)`` with cell ``C = ceil(H / s)``
   per axis, exactly as
   ``skimage.transform.resize(grid, up, order=1, mode='reflect', anti_aliasing=False)``;
3. a random shift ``(dy, dx)``, ``dy`` uniform in ``[0, C_h)`` and ``dx`` in ``[0, C_w)``, and
   a crop ``up[dy:dy + H, dx:dx + W]``.

Mask ``i`` draws its grid and shift from ``jax.random.fold_in(key, i)`` only, so any range of
masks can be made on its own (a chunk, a device's share) and the mask set never depends on how
it is chunked. Up-sampling and crop are one product ``R_h[dy:dy+H] @ grid @ R_w[dx:dx+W]^T`` of
row slices of the separable up-sampling matrices (:func:`upsample_matrix`): the full
``(s + 1) C`` image is never formed.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax._src import validation

_HIGHEST = jax.lax.Precision.HIGHEST


@functools.lru_cache(maxsize=64)
def _upsample_matrix_cached(size_in: int, size_out: int) -> np.ndarray:
    if size_in == 1:
        # Mirror padding of a single sample is that sample: a constant resize.
        weights = np.ones((size_out, 1), np.float64)
    else:
        u = (np.arange(size_out, dtype=np.float64) + 0.5) * size_in / size_out - 0.5
        i0 = np.floor(u).astype(np.int64)
        frac = u - i0
        i1 = i0 + 1

        def mirror(i):
            # Reflection about the edge sample, without repeating it (ndimage 'mirror').
            i = np.where(i < 0, -i, i)
            return np.where(i > size_in - 1, 2 * (size_in - 1) - i, i)

        weights = np.zeros((size_out, size_in), np.float64)
        rows = np.arange(size_out)
        np.add.at(weights, (rows, mirror(i0)), 1.0 - frac)
        np.add.at(weights, (rows, mirror(i1)), frac)
    out = weights.astype(np.float32)
    out.flags.writeable = False
    return out


def upsample_matrix(size_in: int, size_out: int) -> np.ndarray:
    """The ``f32[size_out, size_in]`` matrix of 1-D bilinear resizing with a mirror boundary.

    Half-pixel centres: output ``x`` samples input coordinate
    ``u = (x + 0.5) size_in / size_out - 0.5`` with weights ``1 - (u - floor u)`` and
    ``u - floor u`` on samples ``floor u`` and ``floor u + 1``; an index outside
    ``[0, size_in)`` is mirrored about the edge sample (``-1 -> 1``, ``size_in -> size_in - 2``).
    Each row sums to 1. Applied on both axes,
    ``R_h @ x @ R_w^T`` equals ``skimage.transform.resize(x, (H, W), order=1, mode='reflect',
    anti_aliasing=False)`` and ``scipy.ndimage.zoom(x, order=1, mode='mirror', grid_mode=True)``
    (METHODS §1.2). ``jax.image.resize(..., 'linear')`` clamps at the edge instead and differs
    within half an input cell of the border.

    Args:
      size_in: number of input samples (static, >= 1).
      size_out: number of output samples (static, >= 1).

    Returns:
      A read-only numpy ``float32`` array (a compile-time constant under ``jit``).
    """
    validation.check_positive_int(size_in, "size_in")
    validation.check_positive_int(size_out, "size_out")
    return _upsample_matrix_cached(int(size_in), int(size_out))


def mirror_bilinear_resize(x, size_hw) -> jax.Array:
    """Resize ``x`` ``f32[..., s_h, s_w]`` to ``f32[..., H, W]`` (bilinear, mirror boundary).

    ``R_h @ x @ R_w^T`` with the matrices of :func:`upsample_matrix`: the same numbers as
    ``skimage.transform.resize(x, (H, W), order=1, mode='reflect', anti_aliasing=False)``
    (without skimage's clip to the input range, which is a no-op for this convex resampling
    up to float rounding).
    """
    h, w = (int(s) for s in size_hw)
    x = jnp.asarray(x, jnp.float32)
    r_h = upsample_matrix(x.shape[-2], h)
    r_w = upsample_matrix(x.shape[-1], w)
    return jnp.einsum("ys,...st,xt->...yx", r_h, x, r_w, precision=_HIGHEST)


def grid_pair(grid, name: str = "grid") -> tuple[int, int]:
    """``grid`` as ``(s_h, s_w)``: an int ``s`` means ``(s, s)``; each must be an int >= 1."""
    pair = (grid, grid) if isinstance(grid, int | np.integer) else tuple(grid)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a pair (s_h, s_w), got {grid!r}")
    for s in pair:
        if not isinstance(s, int | np.integer) or isinstance(s, bool) or s < 1:
            raise ValueError(f"{name} must be an int >= 1 or a pair of them, got {grid!r}")
    return int(pair[0]), int(pair[1])


def check_grid_fits(grid, image_hw, name: str = "grid") -> tuple[int, int]:
    """Validate ``grid`` against an image of size ``image_hw``; returns ``(s_h, s_w)``."""
    s_h, s_w = grid_pair(grid, name)
    h, w = image_hw
    if s_h > h or s_w > w:
        raise ValueError(
            f"{name}={grid!r} is larger than the image {h}x{w}: at most one grid cell per pixel"
        )
    return s_h, s_w


def cell_size(grid, image_hw) -> tuple[int, int]:
    """The reference cell size ``(ceil(H / s_h), ceil(W / s_w))``."""
    s_h, s_w = grid_pair(grid)
    return math.ceil(image_hw[0] / s_h), math.ceil(image_hw[1] / s_w)


def mask_from_grid(grid_values, shift, *, image_hw) -> jax.Array:
    """One RISE mask ``f32[H, W]`` from its grid ``f32[s_h, s_w]`` and shift ``i32[2]`` = (dy, dx).

    ``up = R_h @ grid @ R_w^T`` of size ``((s_h + 1) C_h, (s_w + 1) C_w)``, then
    ``up[dy:dy + H, dx:dx + W]``, computed as ``R_h[dy:dy+H] @ grid @ R_w[dx:dx+W]^T``.
    ``shift`` must lie in ``[0, C)`` per axis (traced; not checked).

    The exact result is a convex combination of grid values, so it lies in ``[0, 1]`` for a grid
    in ``[0, 1]``; float32 rounding can leave it up to about 1 ulp outside. It is clipped to
    ``[0, 1]``, which changes values by at most that rounding error and is what the reference does
    (``skimage.transform.resize`` clips to the input range by default, ``clip=True``).
    """
    h, w = (int(s) for s in image_hw)
    grid_values = jnp.asarray(grid_values, jnp.float32)
    s_h, s_w = grid_values.shape
    c_h, c_w = cell_size((s_h, s_w), (h, w))
    r_h = jnp.asarray(upsample_matrix(s_h, (s_h + 1) * c_h))
    r_w = jnp.asarray(upsample_matrix(s_w, (s_w + 1) * c_w))
    rows = jax.lax.dynamic_slice_in_dim(r_h, shift[0], h, axis=0)  # f32[H, s_h]
    cols = jax.lax.dynamic_slice_in_dim(r_w, shift[1], w, axis=0)  # f32[W, s_w]
    mask = jnp.einsum("ys,st,xt->yx", rows, grid_values, cols, precision=_HIGHEST)
    return jnp.clip(mask, 0.0, 1.0)


def rise_mask(key, index, *, grid, p_keep, image_hw) -> jax.Array:
    """RISE mask number ``index`` of the set drawn from ``key``: ``f32[H, W]`` in [0, 1].

    Its randomness is ``s_h s_w + 2`` uniforms ``u`` from ``fold_in(key, index)`` only: the grid
    cells are ``u < p_keep`` (1 = keep: Bernoulli(``p_keep``), as ``jax.random.bernoulli``) and the
    shift is ``floor(u C)`` per axis, uniform on ``[0, C)`` (to within ``2^-23`` in probability,
    the float32 uniform's resolution). One draw per mask keeps the compiled generator small.
    ``index`` and ``p_keep`` may be traced; ``grid`` and ``image_hw`` are static. No validation
    (see :func:`generate_rise_masks`).
    """
    s_h, s_w = grid_pair(grid)
    c_h, c_w = cell_size((s_h, s_w), image_hw)
    u = jax.random.uniform(jax.random.fold_in(key, index), (s_h * s_w + 2,))
    cells = (u[: s_h * s_w] < p_keep).astype(jnp.float32).reshape(s_h, s_w)
    cells_per_axis = jnp.array([c_h, c_w], jnp.int32)
    shift = jnp.minimum(jnp.floor(u[s_h * s_w :] * cells_per_axis).astype(jnp.int32),
                        cells_per_axis - 1)
    return mask_from_grid(cells, shift, image_hw=image_hw)


def rise_masks_at(key, indices, *, grid, p_keep, image_hw) -> jax.Array:
    """Masks ``f32[n, H, W]`` number ``indices`` (``i32[n]``) of the set drawn from ``key``."""
    return jax.vmap(
        lambda i: rise_mask(key, i, grid=grid, p_keep=p_keep, image_hw=image_hw)
    )(indices)


def generate_rise_masks(key, num_masks, *, grid, p_keep, image_hw, start=0) -> jax.Array:
    """RISE masks ``start, ..., start + num_masks - 1`` of the set drawn from ``key``.

    Args:
      key: a PRNG key (``jax.random.key``).
      num_masks: how many masks (static int >= 1).
      grid: ``s`` or ``(s_h, s_w)``: grid cells per axis (static, at most the image size).
      p_keep: probability that a grid cell is kept (1), in (0, 1].
      image_hw: ``(H, W)`` of the masks (static).
      start: index of the first mask (may be traced): ``generate_rise_masks(key, n, start=a)``
        equals rows ``a:a+n`` of any longer set from the same key.

    Returns:
      ``f32[num_masks, H, W]`` with values in [0, 1] and ``E[M(pixel)] = p_keep`` at every pixel.

    This materialises ``num_masks`` masks; :func:`saliency_jax.rise` never does (it makes them
    a chunk at a time inside its compiled loop).
    """
    validation.check_positive_int(num_masks, "num_masks")
    h, w = (int(s) for s in image_hw)
    validation.check_positive_int(h, "image_hw")
    validation.check_positive_int(w, "image_hw")
    grid = check_grid_fits(grid, (h, w))
    if not isinstance(p_keep, jax.core.Tracer):
        validation.check_probability(float(p_keep), "p_keep")
    return _generate_rise_masks(key, start, p_keep, num_masks=int(num_masks), grid=grid,
                                image_hw=(h, w))


@functools.partial(jax.jit, static_argnames=("num_masks", "grid", "image_hw"))
def _generate_rise_masks(key, start, p_keep, *, num_masks, grid, image_hw):
    indices = start + jnp.arange(num_masks, dtype=jnp.int32)
    return rise_masks_at(key, indices, grid=grid, p_keep=p_keep, image_hw=image_hw)
