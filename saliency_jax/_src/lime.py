"""LIME for images (Ribeiro, Singh, Guestrin, KDD 2016): the "LIME" baseline of RISE Table 1.

The reference is ``lime_image.LimeImageExplainer.explain_instance`` (``marcotcr/lime``) with its
defaults, which the RISE paper ran with 1000 samples:

1. **Superpixels** ``segments int[h, w]`` with labels ``0..n−1``; LIME's default is scikit-image
   quickshift with ``kernel_size=4, max_dist=200, ratio=0.2`` for 224² images
   (:func:`quickshift_segments`, whose kernel scales with the image size). This runs in
   numpy, outside ``jit``, once per image; pass ``segments`` to use another segmentation or
   to trace ``lime`` (``jit``/``vmap``).
2. **Samples** ``z_i ∈ {0, 1}^n``, ``i = 0..N−1``: each superpixel on with probability 1/2
   (``randint(0, 2)``), and ``z_0`` all on (the image itself). Sample ``i`` is drawn from
   ``fold_in(key, i)`` only (:func:`lime_samples`).
3. **Scores** ``y_i = f_c(I_i)`` where ``I_i`` is the image with the superpixels off in ``z_i``
   set to the baseline (``x = m·I + (1 − m)·baseline``). LIME's default ``hide_color=None`` paints
   each superpixel with its own mean colour: pass
   ``baseline=superpixel_mean_image(image, segments)`` for that; the default here is the
   project's shared baseline, the model's mean colour.
4. **Weights** ``π_i = sqrt(exp(−d_i² / w²))`` with ``d_i`` the cosine distance from ``z_i`` to the
   all-on vector, ``d_i = 1 − sqrt(|z_i| / n)`` (1 for ``z_i = 0``, as sklearn's
   ``pairwise_distances(metric="cosine")``), and kernel width ``w = 0.25``.
5. **Surrogate**: weighted ridge regression ``y ≈ β·z + b`` with ``alpha = 1`` and an intercept,
   as ``sklearn.linear_model.Ridge(alpha=1).fit(Z, y, sample_weight=π)``; with LIME's default
   ``num_features=100000`` every superpixel is kept by its feature selection. Closed form:

       z̄ = Σπz / Σπ,  ȳ = Σπy / Σπ,
       β = (Σ π (z − z̄)(z − z̄)ᵀ + alpha·I)⁻¹ Σ π (z − z̄)(y − ȳ),  b = ȳ − z̄·β.

6. **Map**: ``S(λ) = β_{segments(λ)}``, each superpixel painted with its weight.

**Static shapes.** The number of superpixels is data-dependent, so features are padded to a
static ``LimeConfig.max_segments``: features ``n..max_segments−1`` are held at 0 in every sample,
their centred column is zero and their ridge weight is exactly 0; they change nothing else.
``n = max(segments) + 1`` is traced. Memory is flat in ``num_samples``: the samples are drawn, the
images built and scored a chunk of ``batch_size`` at a time inside one compiled ``lax.scan``
(chunks split over the devices), accumulating only the weighted sums above (``O(max_segments²)``).
They are accumulated around ``z = 1/2`` (``u = z − 1/2``), which leaves ``β`` unchanged and keeps
the float32 centring exact enough. Cost: ``num_samples`` model queries.

Static under ``jit``: ``num_samples``, ``max_segments``, ``batch_size``, image size. Traced:
``key``, ``model_fn``'s parameters, ``image``, ``target``, ``segments``, ``baseline``,
``kernel_width``, ``alpha``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax._src import baselines, optional, sharding, validation
from saliency_jax._src.model_fn import ModelFn, as_pytree_fn

_HIGHEST = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class LimeConfig:
    """LIME settings (hashable: static under ``jit``).

    Attributes:
      num_samples: ``N``, perturbed samples (model queries), the first being the image itself.
      max_segments: static bound on the number of superpixels (features are padded to it).
      kernel_width: ``w`` of the kernel ``sqrt(exp(−d² / w²))`` on cosine distances, > 0.
      alpha: ridge penalty, > 0 (sklearn ``Ridge(alpha=...)``).
      batch_size: perturbed images per model call (the chunk).

    Defaults are LIME's (``num_samples=1000``, ``kernel_width=0.25``, ``Ridge(alpha=1)``), the
    setting of P-RISE Table 1. LIME's own model batch is 10; 100 here, as RISE's.
    """

    num_samples: int = 1000
    max_segments: int = 256
    kernel_width: float = 0.25
    alpha: float = 1.0
    batch_size: int = 100

    def __post_init__(self):
        validation.check_positive_int(self.num_samples, "num_samples")
        validation.check_positive_int(self.max_segments, "max_segments")
        validation.check_positive_int(self.batch_size, "batch_size")
        for name in ("kernel_width", "alpha"):
            value = getattr(self, name)
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}") from None
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
            object.__setattr__(self, name, value)


class LimeFit(NamedTuple):
    """The LIME surrogate: ``y ≈ coef · z + intercept``.

    ``coef f32[max_segments]`` (0 past the image's ``num_segments``), ``intercept f32[]``,
    ``num_segments i32[]``.
    """

    coef: jax.Array
    intercept: jax.Array
    num_segments: jax.Array


# --------------------------------------------------------------------------- superpixels


def quickshift_segments(image, *, kernel_size: float | None = None, max_dist: float = 200,
                        ratio: float = 0.2, seed: int = 42) -> np.ndarray:
    """LIME's default superpixels: ``skimage.segmentation.quickshift``, labels ``0..n−1``.

    ``int32[h, w]``. LIME's setting is ``kernel_size=4, max_dist=200, ratio=0.2`` for 224²
    images. Quickshift's kernel is in pixels, so by default (``kernel_size=None``) it is scaled
    with the image, ``kernel_size = max(1, 4·sqrt(h·w)/224)``: exactly LIME's at 224², and about
    the same superpixels relative to the image at other sizes (bundled skimage photos: ~30
    superpixels at 224² with 4, at 112² with 2, at 64² with 1.14; an unscaled 4 gives 10-14 at
    112² and 3-6 at 64²). ``max_dist`` made no difference at these sizes and is not scaled.
    Runs in numpy on a concrete image, outside ``jit``. ``seed`` seeds quickshift's
    tie-breaking noise (LIME draws it from its random state; fixed here, so the segmentation is
    a function of the image).
    """
    quickshift = optional.require("skimage.segmentation", package="scikit-image",
                                  feature="LIME's quickshift superpixels").quickshift

    h, w = validation.check_image(image)
    if isinstance(image, jax.core.Tracer):
        raise ValueError("image must be concrete to segment it (quickshift runs in numpy)")
    if kernel_size is None:
        kernel_size = max(1.0, 4.0 * math.sqrt(h * w) / 224.0)
    labels = quickshift(np.asarray(image, np.float64), kernel_size=kernel_size,
                        max_dist=max_dist, ratio=ratio, rng=seed)
    _, labels = np.unique(labels, return_inverse=True)
    return labels.reshape(h, w).astype(np.int32)


def superpixel_mean_image(image, segments) -> jax.Array:
    """Each superpixel painted with its mean colour: LIME's default ``hide_color=None``.

    ``f32[h, w, 3]``, usable as ``baseline``. ``segments`` ``int[h, w]`` with labels ``>= 0``.
    """
    if isinstance(segments, jax.core.Tracer):
        raise ValueError("segments must be concrete for superpixel_mean_image")
    image = jnp.asarray(image, jnp.float32)
    segments = jnp.asarray(segments, jnp.int32)
    n = int(jnp.max(segments)) + 1
    flat = segments.reshape(-1)
    sums = jax.ops.segment_sum(image.reshape(-1, 3), flat, num_segments=n)
    counts = jax.ops.segment_sum(jnp.ones_like(flat, jnp.float32), flat, num_segments=n)
    means = sums / jnp.maximum(counts, 1.0)[:, None]
    return means[segments]


# --------------------------------------------------------------------------- estimator


def _samples_at(key, indices, feature_valid):
    """``bool[n, max_segments]``: sample ``i`` from ``fold_in(key, i)``; sample 0 is all on."""
    def one(i):
        z = jax.random.bernoulli(jax.random.fold_in(key, i), 0.5, feature_valid.shape)
        return jnp.where(i == 0, True, z) & feature_valid
    return jax.vmap(one)(indices)


def lime_samples(key, num_samples: int, *, num_segments: int, max_segments: int | None = None):
    """The binary samples ``bool[num_samples, max_segments]`` that :func:`lime` draws from ``key``.

    Row ``i`` comes from ``fold_in(key, i)``: each of the first ``num_segments`` entries is on
    with probability 1/2 (row 0: all on); entries past ``num_segments`` are off.
    ``max_segments`` defaults to ``num_segments``.
    """
    max_segments = num_segments if max_segments is None else max_segments
    validation.check_positive_int(num_samples, "num_samples")
    validation.check_positive_int(num_segments, "num_segments")
    validation.check_positive_int(max_segments, "max_segments")
    if num_segments > max_segments:
        raise ValueError(f"num_segments={num_segments} exceeds max_segments={max_segments}")
    return _lime_samples(key, num_segments, num_samples=num_samples, max_segments=max_segments)


@functools.partial(jax.jit, static_argnames=("num_samples", "max_segments"))
def _lime_samples(key, num_segments, *, num_samples, max_segments):
    valid = jnp.arange(max_segments) < num_segments
    return _samples_at(key, jnp.arange(num_samples, dtype=jnp.int32), valid)


def kernel_weights(z, num_segments, kernel_width):
    """LIME's sample weights ``sqrt(exp(−d² / w²))`` with ``d = 1 − sqrt(|z| / n)``.

    ``z bool[..., max_segments]`` (off past ``num_segments = n``) -> ``f32[...]``. ``d`` is the
    cosine distance to the all-on vector (1 when ``z`` is all off).
    """
    on = jnp.sum(z, axis=-1).astype(jnp.float32)
    d = 1.0 - jnp.sqrt(on / jnp.asarray(num_segments, jnp.float32))
    return jnp.sqrt(jnp.exp(-(d**2) / jnp.asarray(kernel_width, jnp.float32) ** 2))


def solve_ridge(sums, alpha):
    """Weighted ridge with intercept from the sums ``(Σπ, Σπu, Σπy, Σπuuᵀ, Σπuy)``.

    Returns ``(coef f32[m], intercept f32[])`` in the coordinates ``u`` of the sums; see the
    module docstring for the formula (sklearn ``Ridge(alpha).fit(U, y, sample_weight=π)``).
    """
    sw, su, sy, suu, suy = sums
    u_bar, y_bar = su / sw, sy / sw
    gram = suu - sw * jnp.outer(u_bar, u_bar)
    rhs = suy - sw * u_bar * y_bar
    eye = jnp.eye(gram.shape[0], dtype=gram.dtype)
    coef = jnp.linalg.solve(gram + alpha * eye, rhs)
    return coef, y_bar - jnp.dot(u_bar, coef, precision=_HIGHEST)


@functools.partial(jax.jit, static_argnames=("num_samples", "max_segments", "batch_size"))
def _lime_fit(key, model_fn, image, target, segments, baseline, kernel_width, alpha, *,
              num_samples, max_segments, batch_size):
    num_segments = jnp.max(segments) + 1
    feature_valid = jnp.arange(max_segments) < num_segments

    def chunk_sum(operands, indices, valid):
        key, model_fn, image, target, segments, baseline, kernel_width = operands
        z = _samples_at(key, indices, feature_valid)                        # bool[n, m]
        keep = jnp.take(z, segments, axis=1).astype(jnp.float32)            # f32[n, h, w]
        perturbed = jax.vmap(baselines.apply_mask, in_axes=(None, 0, None))(image, keep, baseline)
        y = model_fn(perturbed)[:, target].astype(jnp.float32)
        pi = jnp.where(valid, kernel_weights(z, num_segments, kernel_width), 0.0)
        y = jnp.where(valid, y, 0.0)  # a NaN score on a padding sample must not leak in
        u = jnp.where(feature_valid[None, :], z.astype(jnp.float32) - 0.5, 0.0)
        pu = pi[:, None] * u
        return (jnp.sum(pi), jnp.sum(pu, axis=0), jnp.dot(pi, y, precision=_HIGHEST),
                jnp.einsum("ni,nj->ij", pu, u, precision=_HIGHEST),
                jnp.einsum("ni,n->i", pu, y, precision=_HIGHEST))

    sums = sharding.sharded_chunk_sum(
        chunk_sum, (key, model_fn, image, target, segments, baseline, kernel_width),
        num_items=num_samples, chunk_size=batch_size,
    )
    coef, intercept_u = solve_ridge(sums, alpha)
    # Back from u = z − 1/2 to z: the slope is the same, the intercept shifts by −β·1/2.
    intercept = intercept_u - 0.5 * jnp.sum(coef)
    return LimeFit(coef, intercept, num_segments)


@jax.jit
def _paint(coef, segments):
    return jnp.take(coef, segments)


# --------------------------------------------------------------------------- public API


def _prepare(model_fn, image, target, config, segments, baseline):
    if not isinstance(config, LimeConfig):
        raise ValueError(f"config must be a LimeConfig, got {type(config).__name__}")
    h, w = validation.check_image(image)
    num_classes = validation.num_classes_of(model_fn, image)
    validation.check_target(target, num_classes)
    if segments is None:
        if isinstance(image, jax.core.Tracer):
            raise ValueError(
                "segments must be given when lime is traced (jit/vmap): compute them outside "
                "with quickshift_segments(image)"
            )
        segments = quickshift_segments(image)
    _check_segments(segments, (h, w), config.max_segments)
    baseline = baselines.resolve_baseline(model_fn, image, baseline)
    args = (jnp.asarray(image, jnp.float32), jnp.asarray(target, jnp.int32),
            jnp.asarray(segments, jnp.int32), baseline,
            jnp.float32(config.kernel_width), jnp.float32(config.alpha))
    static = dict(num_samples=config.num_samples, max_segments=config.max_segments,
                  batch_size=min(config.batch_size, config.num_samples))
    return args, static


def _warn_single_segment(segments, *, given: bool) -> None:
    """A single superpixel gives a constant map (one weight painted everywhere): say why."""
    if isinstance(segments, jax.core.Tracer) or int(np.max(np.asarray(segments))) > 0:
        return
    h, w = np.shape(segments)
    source = ("the segments given have a single label" if given else
              f"quickshift found a single superpixel on this {h} x {w} image (too small or too "
              "uniform for its kernel)")
    warnings.warn(f"lime: {source}, so the map is constant; pass segments= with several "
                  "superpixels, or a larger image", stacklevel=3)


def _check_segments(segments, hw, max_segments):
    shape = tuple(np.shape(segments))
    if shape != tuple(hw):
        raise ValueError(f"segments must have shape {tuple(hw)} (the image's h, w), got {shape}")
    dtype = segments.dtype if hasattr(segments, "dtype") else np.asarray(segments).dtype
    if not np.issubdtype(dtype, np.integer):
        raise ValueError(f"segments must be integer labels, got dtype {dtype}")
    if isinstance(segments, jax.core.Tracer):
        return
    labels = np.unique(np.asarray(segments))
    if labels[0] < 0:
        raise ValueError(f"segments must be labels >= 0, got {labels[0]}")
    if labels[-1] + 1 != len(labels):
        raise ValueError(
            "segments must use every label 0..n-1 (relabel with "
            "skimage.segmentation.relabel_sequential(segments, offset=0)), got "
            f"{len(labels)} labels with maximum {labels[-1]}"
        )
    if len(labels) > max_segments:
        raise ValueError(
            f"segments has {len(labels)} superpixels, more than max_segments={max_segments}; "
            "raise LimeConfig.max_segments"
        )


def lime(key, model_fn: ModelFn, image, target, *, config: LimeConfig = LimeConfig(), segments=None,
         baseline=None):
    """The LIME map of class ``target``, each superpixel painted with its weight: ``f32[h, w]``.

    Args:
      key: PRNG key (``jax.random.key``); the same key gives a bit-identical map.
      model_fn: ``ModelFn``, ``f32[b, h, w, 3] -> f32[b, k]`` class probabilities.
      image: ``f32[h, w, 3]`` in [0, 1].
      target: integer class index in ``[0, k)`` (traced; may be vmapped).
      config: :class:`LimeConfig` (static).
      segments: superpixels ``int[h, w]``, labels ``0..n−1`` all used, ``n <= max_segments``
        (traced). ``None``: :func:`quickshift_segments` with LIME's defaults, computed in numpy
        here (so ``image`` must then be concrete: under ``jit``/``vmap`` pass ``segments``).
      baseline: what a switched-off superpixel becomes: ``None`` (the model's ``mean_rgb``, else
        black), a scalar, an RGB ``f32[3]`` or an ``f32[h, w, 3]`` image (LIME's own default is
        :func:`superpixel_mean_image`).

    Returns:
      ``f32[h, w]``, after ``config.num_samples`` model queries.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import saliency_jax as sj
      >>> model_fn, _ = sj.testing.tiny_cnn(jax.random.key(1), (32, 32))
      >>> image = jax.random.uniform(jax.random.key(2), (32, 32, 3))
      >>> segments = (jnp.arange(32)[:, None] // 8) * 4 + jnp.arange(32)[None, :] // 8
      >>> cfg = sj.LimeConfig(num_samples=64, max_segments=16, batch_size=32)
      >>> sj.lime(jax.random.key(0), model_fn, image, 0, config=cfg, segments=segments).shape
      (32, 32)

    References:
      Ribeiro, Singh, Guestrin, *"Why Should I Trust You?": Explaining the Predictions of Any
      Classifier*, KDD 2016; code ``marcotcr/lime`` (``lime_image``).
    """
    model_fn = as_pytree_fn(model_fn)
    args, static = _prepare(model_fn, image, target, config, segments, baseline)
    _warn_single_segment(args[2], given=segments is not None)
    operands = sharding.replicate((key, model_fn, *args))
    fit = _lime_fit(*operands, **static)
    return _paint(fit.coef, operands[4])  # operands[4]: the segments


def lime_fit(key, model_fn: ModelFn, image, target, *, config: LimeConfig = LimeConfig(), segments=None,
             baseline=None) -> LimeFit:
    """The LIME surrogate itself (per-superpixel weights and intercept); arguments as :func:`lime`.

    ``lime(...)`` equals ``lime_fit(...).coef[segments]``.
    """
    model_fn = as_pytree_fn(model_fn)
    args, static = _prepare(model_fn, image, target, config, segments, baseline)
    return _lime_fit(*sharding.replicate((key, model_fn, *args)), **static)
