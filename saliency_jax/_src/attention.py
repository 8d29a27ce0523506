"""LRPF-SA: the long-range parameter-free spatial attention of IASSA (Vasu & Long, WACV 2020).

Multi-level features ``Φ_1..Φ_L`` of a pretrained network are resized to one grid ``g_h x g_w``
and concatenated (P-IASSA eq. 9), giving ``Φ' ∈ R^{n x C}`` with ``n = g_h g_w`` and
``C = Σ C_l``. The affinity ``Φ'Φ'ᵀ`` (``n x n``) is normalised into an attention ``A``
(eq. 10), which moves saliency between pixels with similar features. The adjusted map is
(eq. 6 with the sign of the released code; the paper's ``(β − 1)`` is a typo, METHODS §2.2)

    S' = β S + (1 − β) · up(attention(down(S))).

Two variants (METHODS §2.2):

* ``"paper"`` (the paper's intent; the normalisation is **ours**). Each level is resized
  **bilinearly** (``jax.image.resize``, half-pixel centres: no blocky nearest copies of the
  coarse levels, so the affinity has no block edges) and, with ``normalize=True`` (default),
  **L2-normalised per pixel and level**, then divided by ``√L``: ``<φ_i, φ_j>`` is the cosine
  similarity averaged over levels, in ``[−1, 1]``, and no level dominates by its magnitude or
  channel count (raw ReLU features are non-negative, so their dot products rank pixels by
  feature norm rather than similarity: see the test). ``A = softmax_row(Φ'Φ'ᵀ / τ)`` with the
  temperature ``τ`` (default 0.1), and ``attention(s) = A s``: each pixel receives the
  ``A``-weighted mean saliency of the pixels that look like it. ``normalize=False`` uses
  the raw features with the transformer scaling ``Φ'Φ'ᵀ / (τ √C)``. ``down``/``up`` are
  bilinear (``jax.image.resize``, antialiased when shrinking).
* ``"reference"`` (the released ``LRPF_SA.py``, faithful): raw features, each level resized
  with **nearest** (``nn.Upsample(size)``, source index ``floor(i · in / out)``),
  ``A = softmax_dim1(softmax_dim0(Φ'Φ'ᵀ))``, ``attention(s) = sᵀA`` (column aggregation),
  ``down`` = ``cv2.resize(INTER_NEAREST)`` (source ``floor(i · in / out)``: even indices
  for 224 -> 112), ``up`` = ``F.grid_sample`` bilinear, zero padding, ``align_corners=False``,
  on the grid ``linspace(−1, 1, out)`` (the outer 1-px ring is about halved, the corners
  quartered). As METHODS §2.2 proves, every entry of this ``A`` lies in
  ``[1/(e n), e/n]``: ``sᵀA = c + δ`` with ``0 ≤ δ_j ≤ (e − 1) max(s) / n``, a constant
  up to ``1.4e−4 · max(s)`` at ``n = 112²``. The reference attention does almost nothing.

Code: the two variants are two pytree classes, :class:`PaperAttention` and
:class:`ReferenceAttention`, each with its own ``features`` / ``apply`` / ``matrix`` / ``attend``
built from the shared primitives below (resizing, chunked affinity blocks); the module-level
:func:`lrpf_attention`, :func:`apply_attention`, :func:`attention_matrix` and :func:`attend`
only dispatch to them.

Memory and time: ``A`` is the same at every IASSA iteration. Up to ``dense_max`` grid cells
(default ``DENSE_MAX = 4096``, ``A`` in 64 MB) it is formed once by :func:`lrpf_attention`
and each :func:`attend` is one ``n x n`` product (recomputing the ``n x n x C`` affinity at
every iteration cost IASSA 5-9 % of its time at 112² with a 56² grid). Larger grids never form
it (``12544² x 4 B = 0.63 GB`` at a 112² grid): the products are computed ``chunk`` rows at a
time in a ``lax.map``; the row softmax of the paper variant needs one pass; the double
softmax needs the column log-sum-exps and the row sums of the first softmax first, two passes
made once and stored (``f32[n]`` each), so that every :func:`attend` is one pass. ``Φ'Φ'ᵀ``
is symmetric, so column sums are row sums.
Matrix products use ``Precision.HIGHEST`` (the reference logits reach ``1e4``–``1e5``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

VARIANTS = ("paper", "reference")
#: Grid cells up to which the attention matrix is formed once (``n² x 4 B``, 64 MB at 4096).
DENSE_MAX = 4096
_HIGHEST = jax.lax.Precision.HIGHEST


# --------------------------------------------------------------------------- resampling


def nearest_indices(size_in: int, size_out: int) -> np.ndarray:
    """Source indices ``floor(i · size_in / size_out)`` of nearest resizing (``i32[size_out]``).

    The rule of ``nn.Upsample(mode="nearest")`` and ``cv2.INTER_NEAREST`` (computed exactly in
    integers; both libraries use a float scale, which can differ for ratios that are not
    powers of two).
    """
    return (np.arange(size_out, dtype=np.int64) * size_in // size_out).astype(np.int32)


def grid_sample_matrix(size_in: int, size_out: int) -> np.ndarray:
    """``f32[size_out, size_in]``: 1-D ``F.grid_sample`` (bilinear, zeros, align_corners=False).

    Output ``i`` reads grid coordinate ``g_i = linspace(−1, 1, size_out)[i]``, i.e. input
    position ``x_i = ((g_i + 1) size_in − 1) / 2``, with weights ``1 − (x − ⌊x⌋)`` and
    ``x − ⌊x⌋`` on samples ``⌊x⌋`` and ``⌊x⌋ + 1``; a sample outside ``[0, size_in)`` is zero.
    Applied on both axes it is the reference's 2-D up-sampling (bilinear weights and the
    zero-padding indicator are both separable).
    """
    g = np.linspace(-1.0, 1.0, size_out) if size_out > 1 else np.array([-1.0])
    x = ((g + 1.0) * size_in - 1.0) / 2.0
    x0 = np.floor(x).astype(np.int64)
    frac = x - x0
    out = np.zeros((size_out, size_in), np.float64)
    for idx, weight in ((x0, 1.0 - frac), (x0 + 1, frac)):
        ok = (idx >= 0) & (idx < size_in)
        out[np.arange(size_out)[ok], idx[ok]] += weight[ok]
    return out.astype(np.float32)


def _resize_nearest(x, out_hw):
    rows = nearest_indices(x.shape[0], out_hw[0])
    cols = nearest_indices(x.shape[1], out_hw[1])
    return x[rows][:, cols]


def _resize_linear(x, out_hw):
    return jax.image.resize(x, (*out_hw, *x.shape[2:]), "linear")


# --------------------------------------------------------------------------- chunked products


def _blocks(x, chunk):
    """``x`` ``[n, ...]`` zero-padded to whole blocks: ``[ceil(n / chunk), chunk, ...]``."""
    n = x.shape[0]
    padded = -(-n // chunk) * chunk
    x = jnp.pad(x, ((0, padded - n),) + ((0, 0),) * (x.ndim - 1))
    return x.reshape(padded // chunk, chunk, *x.shape[1:])


def _unblock(y, n):
    return y.reshape(-1, *y.shape[2:])[:n]


def _affinity(rows, features):
    return jnp.matmul(rows, features.T, precision=_HIGHEST)


def _flat_levels(levels, out_hw):
    return jnp.concatenate([lv.reshape(out_hw[0] * out_hw[1], -1) for lv in levels], axis=-1)


# --------------------------------------------------------------------------- paper variant


def paper_features(features: Sequence[jax.Array], *, out_hw, normalize: bool = True):
    """``Φ'`` of the paper variant: bilinear resizing; with ``normalize`` each level
    L2-normalised per pixel and divided by ``√L`` (``f32[g_h g_w, C]``)."""
    out_hw = (int(out_hw[0]), int(out_hw[1]))
    levels = []
    for level in features:
        level = _resize_linear(jnp.asarray(level, jnp.float32), out_hw)
        if normalize:
            norm = jnp.sqrt(jnp.sum(level * level, axis=-1, keepdims=True))
            level = level / jnp.maximum(norm, 1e-12) / math.sqrt(len(features))
        levels.append(level)
    return _flat_levels(levels, out_hw)


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["features", "temperature", "weights"],
    meta_fields=["grid_hw", "chunk"],
)
@dataclasses.dataclass(frozen=True)
class PaperAttention:
    """``A = softmax_row(Φ'Φ'ᵀ / τ)``, implicit (a pytree: usable under ``jit``/``vmap``).

    Attributes:
      features: ``f32[n, C]``, ``Φ'`` (:func:`paper_features`).
      temperature: ``f32[]``, ``τ`` (times ``√C`` without normalisation).
      weights: ``f32[n, n]``, ``A`` formed once (``n <= dense_max``), or ``None``.
      grid_hw: ``(g_h, g_w)`` (static). chunk: rows per block (static).
    """

    features: jax.Array
    temperature: jax.Array
    weights: jax.Array | None
    grid_hw: tuple[int, int]
    chunk: int
    variant = "paper"

    def apply(self, s_grid):
        """``(A s)_i = Σ_j A_ij s_j`` on the grid, ``chunk`` rows at a time."""
        phi = self.features
        s = jnp.asarray(s_grid, jnp.float32).reshape(phi.shape[0])
        if self.weights is not None:
            return jnp.matmul(self.weights, s, precision=_HIGHEST).reshape(self.grid_hw)

        def block(rows):
            weights = jax.nn.softmax(_affinity(rows, phi) / self.temperature, axis=1)
            return jnp.matmul(weights, s, precision=_HIGHEST)

        out = jax.lax.map(block, _blocks(phi, self.chunk))
        return _unblock(out, phi.shape[0]).reshape(self.grid_hw)

    def matrix(self):
        if self.weights is not None:
            return self.weights
        return jax.nn.softmax(_affinity(self.features, self.features) / self.temperature, axis=1)

    def attend(self, saliency, beta):
        """``β S + (1 − β) up(A down(S))`` with bilinear ``down``/``up``."""
        h, w = saliency.shape
        moved = self.apply(_resize_linear(saliency, self.grid_hw))
        return beta * saliency + (1.0 - beta) * _resize_linear(moved, (h, w))


@functools.partial(jax.jit, static_argnames=("out_hw", "normalize", "chunk", "dense_max"))
def _build_paper(features, *, out_hw, temperature, normalize, chunk,
                 dense_max=DENSE_MAX) -> PaperAttention:
    phi = paper_features(features, out_hw=out_hw, normalize=normalize)
    n, c = phi.shape
    tau = jnp.asarray(temperature, jnp.float32) * (1.0 if normalize else math.sqrt(c))
    attention = PaperAttention(phi, tau, None, out_hw, min(chunk, n))
    if n <= dense_max:
        attention = dataclasses.replace(attention, weights=attention.matrix())
    return attention


# --------------------------------------------------------------------------- reference variant


def reference_features(features: Sequence[jax.Array], *, out_hw):
    """``Φ'`` of the released code: raw levels, nearest resizing (``f32[g_h g_w, C]``)."""
    out_hw = (int(out_hw[0]), int(out_hw[1]))
    levels = [_resize_nearest(jnp.asarray(lv, jnp.float32), out_hw) for lv in features]
    return _flat_levels(levels, out_hw)


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["features", "log_col", "row_norm", "weights"],
    meta_fields=["grid_hw", "chunk"],
)
@dataclasses.dataclass(frozen=True)
class ReferenceAttention:
    """``A = softmax_dim1(softmax_dim0(Φ'Φ'ᵀ))``, implicit (a pytree).

    Attributes:
      features: ``f32[n, C]``, ``Φ'`` (:func:`reference_features`).
      log_col: ``f32[n]``, ``log Σ_i exp(Φ'Φ'ᵀ)_ij`` (the first softmax).
      row_norm: ``f32[n]``, ``R_i = Σ_j exp(a_ij)`` (the second softmax).
      weights: ``f32[n, n]``, ``A`` formed once (``n <= dense_max``), or ``None``.
      grid_hw: ``(g_h, g_w)`` (static). chunk: rows per block (static).
    """

    features: jax.Array
    log_col: jax.Array
    row_norm: jax.Array
    weights: jax.Array | None
    grid_hw: tuple[int, int]
    chunk: int
    variant = "reference"

    def apply(self, s_grid):
        """``(sᵀA)_j = Σ_i s_i A_ij``, per block of ``j`` from ``A_ij = exp(a_ij) / R_i``,
        ``a_ij = exp((Φ'Φ'ᵀ)_ij − log_col_j)``."""
        phi = self.features
        n = phi.shape[0]
        if self.weights is not None:
            s = jnp.asarray(s_grid, jnp.float32).reshape(n)
            return jnp.matmul(s, self.weights, precision=_HIGHEST).reshape(self.grid_hw)
        s_over_r = jnp.asarray(s_grid, jnp.float32).reshape(n) / self.row_norm

        def block(args):
            rows, log_col_rows = args  # block J of columns j; Φ'Φ'ᵀ[J, :] = (Φ'Φ'ᵀ[:, J])ᵀ
            a = jnp.exp(_affinity(rows, phi) - log_col_rows[:, None])  # a[j, i] = a_ij
            return jnp.matmul(jnp.exp(a), s_over_r, precision=_HIGHEST)

        out = jax.lax.map(block, (_blocks(phi, self.chunk), _blocks(self.log_col, self.chunk)))
        return _unblock(out, n).reshape(self.grid_hw)

    def matrix(self):
        if self.weights is not None:
            return self.weights
        aff = _affinity(self.features, self.features)
        return jax.nn.softmax(jax.nn.softmax(aff, axis=0), axis=1)

    def attend(self, saliency, beta):
        """``β S + (1 − β) grid_sample(sᵀA)`` of ``INTER_NEAREST``-downsampled ``S``."""
        h, w = saliency.shape
        grid = self.grid_hw
        moved = self.apply(_resize_nearest(saliency, grid))
        up = jnp.einsum("yg,gk,xk->yx", grid_sample_matrix(grid[0], h), moved,
                        grid_sample_matrix(grid[1], w), precision=_HIGHEST)
        return beta * saliency + (1.0 - beta) * up


def _reference_norms(features, chunk):
    """Column log-sum-exps of ``Φ'Φ'ᵀ`` and the row sums of ``exp(softmax_dim0(Φ'Φ'ᵀ))``."""
    n = features.shape[0]
    blocks = _blocks(features, chunk)
    log_col = _unblock(
        jax.lax.map(lambda rows: jax.nn.logsumexp(_affinity(rows, features), axis=1), blocks), n
    )

    def row_sum(rows):
        a = jnp.exp(_affinity(rows, features) - log_col[None, :])  # first softmax (dim 0)
        return jnp.sum(jnp.exp(a), axis=1)

    return log_col, _unblock(jax.lax.map(row_sum, blocks), n)


@functools.partial(jax.jit, static_argnames=("out_hw", "chunk", "dense_max"))
def _build_reference(features, *, out_hw, chunk, dense_max=DENSE_MAX) -> ReferenceAttention:
    phi = reference_features(features, out_hw=out_hw)
    n = phi.shape[0]
    chunk = min(chunk, n)
    if n <= dense_max:
        aff = _affinity(phi, phi)
        log_col = jax.nn.logsumexp(aff, axis=0)
        e = jnp.exp(jnp.exp(aff - log_col[None, :]))
        row_norm = jnp.sum(e, axis=1)
        return ReferenceAttention(phi, log_col, row_norm, e / row_norm[:, None], out_hw, chunk)
    log_col, row_norm = _reference_norms(phi, chunk)
    return ReferenceAttention(phi, log_col, row_norm, None, out_hw, chunk)


#: Either attention (the two variants' kernels).
LrpfAttention = PaperAttention | ReferenceAttention


# --------------------------------------------------------------------------- public API


def feature_matrix(features: Sequence[jax.Array], *, out_hw, variant: str = "paper",
                   normalize: bool = True) -> jax.Array:
    """``Φ'`` ``f32[g_h g_w, C]``: the levels resized to ``out_hw`` and concatenated (eq. 9)."""
    if variant == "reference":
        return reference_features(features, out_hw=out_hw)
    return paper_features(features, out_hw=out_hw, normalize=normalize)


def lrpf_attention(features: Sequence[jax.Array], *, out_hw, variant: str = "paper",
                   temperature: float = 0.1, normalize: bool = True,
                   chunk: int = 256, dense_max: int = DENSE_MAX) -> LrpfAttention:
    """The LRPF-SA attention of one image's features (P-IASSA eqs. 9–10; METHODS §2.2).

    Args:
      features: the levels ``Φ_l``, a sequence of ``f32[h_l, w_l, c_l]`` (one image, no batch
        axis), e.g. ResNet-50's ``conv1, pool1, layer2, layer3, layer4`` as in the reference.
      out_hw: ``(g_h, g_w)``, the grid the levels are resized to (static; the reference uses
        the finest level, 112² for 224² images).
      variant: ``"paper"`` (:class:`PaperAttention`) or ``"reference"``
        (:class:`ReferenceAttention`).
      temperature: ``τ > 0`` of the paper variant (ignored by the reference variant).
      normalize: paper variant only: per-level L2 normalisation (see the module docstring).
      chunk: rows per block of the chunked affinity products (static; memory
        ``chunk x n`` floats).
      dense_max: form ``A`` once when ``n = g_h g_w <= dense_max`` (memory ``n²`` floats);
        ``0`` never forms it (static).

    Returns:
      A :class:`PaperAttention` or :class:`ReferenceAttention`; apply it with :func:`attend`
      or :func:`apply_attention`.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if isinstance(features, dict) or not isinstance(features, Sequence) or not features:
        raise ValueError("features must be a non-empty list of f32[h, w, c] arrays (one image)")
    for i, level in enumerate(features):
        if jnp.ndim(level) != 3 or min(jnp.shape(level)) < 1:
            raise ValueError(
                f"features[{i}] must have shape (h, w, c) with h, w, c >= 1 (one image, no batch "
                f"axis), got {jnp.shape(level)}"
            )
    out_hw = tuple(int(s) for s in out_hw)
    if len(out_hw) != 2 or min(out_hw) < 1:
        raise ValueError(f"out_hw must be a pair of ints >= 1, got {out_hw}")
    if not isinstance(temperature, jax.core.Tracer) and not float(temperature) > 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk must be an int >= 1, got {chunk!r}")
    if not isinstance(dense_max, (int, np.integer)) or dense_max < 0:
        raise ValueError(f"dense_max must be an int >= 0, got {dense_max!r}")
    if variant == "reference":
        return _build_reference(list(features), out_hw=out_hw, chunk=int(chunk),
                                dense_max=int(dense_max))
    return _build_paper(list(features), out_hw=out_hw, temperature=temperature,
                        normalize=bool(normalize), chunk=int(chunk), dense_max=int(dense_max))


@jax.jit
def apply_attention(s_grid: jax.Array, attention: LrpfAttention) -> jax.Array:
    """The attention product on the grid: ``f32[g_h, g_w] -> f32[g_h, g_w]``.

    Paper: ``(A s)_i = Σ_j A_ij s_j``. Reference: ``(sᵀA)_j = Σ_i s_i A_ij``.
    """
    return attention.apply(s_grid)


@jax.jit
def attention_matrix(attention: LrpfAttention) -> jax.Array:
    """The dense ``f32[n, n]`` attention ``A`` (for tests and small grids only)."""
    return attention.matrix()


@jax.jit
def attend(saliency: jax.Array, attention: LrpfAttention, *, beta=0.5) -> jax.Array:
    """The adjusted map ``S' = β S + (1 − β) · up(attention(down(S)))``: ``f32[h, w]``.

    (P-IASSA eq. 6 with the released code's ``(1 − β)``.) ``down``/``up`` resample between the
    image and the attention grid: bilinear for the paper variant; ``INTER_NEAREST`` and
    ``grid_sample`` (bilinear, zero padding) for the reference variant. ``beta`` may be traced.
    """
    return attention.attend(jnp.asarray(saliency, jnp.float32), beta)


def highest_activated_region(saliency: jax.Array, *, threshold=0.3) -> jax.Array:
    """``HAR(S) = S > min S + T (max S − min S)``: ``bool[h, w]`` (P-IASSA eq. 8).

    The min–max relative threshold of the released code (``LRPF_SA.forward``); the paper's
    eq. 8 reads as an absolute ``S > T``, which depends on the map's units. A constant map has
    an empty HAR.
    """
    lo, hi = jnp.min(saliency), jnp.max(saliency)
    return saliency > lo + threshold * (hi - lo)
