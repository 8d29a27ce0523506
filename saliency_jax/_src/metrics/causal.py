"""Deletion and insertion: the causal metrics of RISE (Petsiuk et al., BMVC 2018, §4.1).

A faithful port of the reference ``CausalMetric`` (eclique/RISE ``evaluation.py``; METHODS §5.1).
Pixels are ranked by descending saliency; ``step`` pixels (all three channels) change per
iteration, ``n = ceil(h·w / step)`` iterations, ``n + 1`` evaluations with both endpoints. At
step ``i`` the first ``min(i·step, h·w)`` pixels of the order have been changed from ``start``
to ``finish``:

* **deletion**: ``start = image``, ``finish = substrate`` (default: the model's mean colour, i.e.
  the reference's zeros in normalised space). **Lower AUC is better**: a good map destroys the
  class score fast.
* **insertion**: ``start = substrate`` (default: the ``gkern(11, 5)`` blur of the image),
  ``finish = image``. **Higher AUC is better**: a good map restores the class score fast.

The score is ``model_fn``'s output (already probabilities) for the tracked class: ``target``, or
by default the top-1 class of the original image (as the reference). The AUC is the trapezoid
rule on a uniform grid over [0, 1]: ``(Σ s_i − s_0/2 − s_n/2) / n``.

**Tie rule.** The reference orders by ``np.flip(np.argsort(sal))`` whose tie order is
implementation-defined. Here the order is the *stable* argsort of ``−saliency``: equal values are
taken in increasing flat (row-major) index.

**Compiled shape.** The pixels are ranked once (a rank map ``i32[h, w]``); the image at step ``i``
is ``where(rank < count_i, finish, start)``. All ``n + 1`` images are built and scored inside one
compiled call, ``batch_size`` images per model call (:func:`saliency_jax._src.sharding.sharded_chunk_sum`:
a ``lax.scan`` over chunks of step counts, the chunks split over all devices), so memory is one
batch per device whatever the number of steps, and there is no Python loop over steps.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax._src import baselines, sharding, validation
from saliency_jax._src.model_fn import ModelFn, as_pytree_fn

SUBSTRATES = ("baseline", "blur", "noise")


class Curve(NamedTuple):
    """A deletion or insertion curve: ``scores f32[n_steps + 1]`` and its ``auc f32[]``."""

    scores: jax.Array
    auc: jax.Array


def _gkern_taps(klen: int = 11, sigma: float = 5.0, truncate: float = 4.0) -> np.ndarray:
    """1-D taps of reference ``gkern(klen, sigma)``: ``gaussian_filter(delta_klen, sigma)``.

    Exactly what ``scipy.ndimage.gaussian_filter`` does to a centred delta of length ``klen``:
    a normalised Gaussian of radius ``int(truncate·sigma + 0.5)`` correlated with the delta
    extended by ``mode='reflect'`` (``d c b a | a b c d | d c b a``). The 11×11 ``gkern`` is the
    outer product of these taps. Because the radius (20) exceeds the kernel (11), the reflected
    tails fold back in and the result is nearly a box filter, not a truncated Gaussian.
    """
    radius = int(truncate * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    source = np.arange(klen)[:, None] + offsets[None, :]  # index read by output i at offset k
    source = np.mod(source, 2 * klen)
    source = np.where(source >= klen, 2 * klen - 1 - source, source)  # half-sample reflection
    return ((source == klen // 2) * weights[None, :]).sum(axis=1)


GKERN_TAPS = _gkern_taps()
"""``f64[11]``: the separable taps of the reference insertion blur ``gkern(11, 5)`` (sum 1)."""


@jax.jit
def blur(image, baseline) -> jax.Array:
    """The reference insertion substrate: ``conv2d(x, gkern(11, 5), padding=5)``, per channel.

    The reference blurs the *normalised* tensor with zero padding; in pixel space that is
    ``baseline + K * (image − baseline)`` with zero padding, i.e. padding with the baseline
    colour (exact for a constant colour). ``image`` ``f32[h, w, 3]``, ``baseline`` broadcastable.
    """
    taps = jnp.asarray(GKERN_TAPS, jnp.float32)
    r = len(GKERN_TAPS) // 2
    h, w, _ = image.shape
    baseline = jnp.broadcast_to(jnp.asarray(baseline, jnp.float32), image.shape)
    x = jnp.asarray(image, jnp.float32) - baseline
    x = jnp.pad(x, ((r, r), (r, r), (0, 0)))
    x = sum(taps[j] * x[j : j + h] for j in range(2 * r + 1))  # rows
    x = sum(taps[j] * x[:, j : j + w] for j in range(2 * r + 1))  # columns
    return x + baseline


def auc(scores) -> jax.Array:
    """Trapezoid area under a curve sampled on a uniform grid of [0, 1]: ``(Σs − s0/2 − sn/2)/n``."""
    scores = jnp.asarray(scores, jnp.float32)
    if scores.ndim != 1 or scores.shape[0] < 2:
        raise ValueError(f"scores must be a 1-D curve with at least 2 points, got {scores.shape}")
    n = scores.shape[0] - 1
    return (jnp.sum(scores) - scores[0] / 2 - scores[-1] / 2) / n


def pixel_rank(saliency) -> jax.Array:
    """``i32[h, w]``: each pixel's position in descending saliency order (0 = most salient).

    Stable: equal values are ranked by increasing flat (row-major) index.
    """
    flat = jnp.asarray(saliency, jnp.float32).reshape(-1)
    order = jnp.argsort(-flat, stable=True)
    n = flat.shape[0]
    return jnp.zeros((n,), jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32)).reshape(
        saliency.shape
    )


def model_std_rgb(model_fn):
    """The per-channel std ``f32[3]`` a ``ModelFn`` declares (``std_rgb`` keyword), or ``None``."""
    if isinstance(model_fn, jax.tree_util.Partial):
        return model_fn.keywords.get("std_rgb")
    return None


@jax.jit
def _noise(key, base, std):
    u = jax.random.uniform(key, base.shape, jnp.float32, -0.5, 0.5)
    return base + jnp.broadcast_to(std, u.shape) * u


def _substrate(model_fn, image, substrate, baseline, key):
    """The pixel-space "removed" image ``f32[h, w, 3]`` for a substrate name or array."""
    if isinstance(substrate, str):
        if substrate not in SUBSTRATES:
            raise ValueError(
                f"substrate must be one of {SUBSTRATES} or an array of the image's shape, "
                f"got {substrate!r}"
            )
        base = baselines.resolve_baseline(model_fn, image, baseline)
        if substrate == "baseline":
            return base
        if substrate == "blur":
            return blur(image, base)
        if key is None:
            raise ValueError("key is required for substrate='noise' (a jax.random.key)")
        std = model_std_rgb(model_fn)
        if std is None:
            std = jnp.ones((3,), jnp.float32)
        if np.shape(std) not in ((), (3,)):
            raise ValueError(f"model_fn's std_rgb must be a scalar or f32[3], got {np.shape(std)}")
        return _noise(key, base, jnp.asarray(std, jnp.float32))
    if tuple(np.shape(substrate)) != tuple(np.shape(image)):
        raise ValueError(
            f"substrate must be one of {SUBSTRATES} or an array of the image's shape "
            f"{tuple(np.shape(image))}, got shape {tuple(np.shape(substrate))}"
        )
    if not isinstance(substrate, jax.core.Tracer) and not np.all(np.isfinite(substrate)):
        raise ValueError("substrate contains non-finite values (NaN or inf)")
    return jnp.asarray(substrate, jnp.float32)


@functools.partial(jax.jit, static_argnames=("step", "batch_size", "insert"))
def _causal_curve(model_fn, image, saliency, target, removed, *, step, batch_size, insert):
    h, w, _ = image.shape
    hw = h * w
    n_points = -(-hw // step) + 1
    if target is None:
        target = jnp.argmax(model_fn(image[None])[0])
    rank = pixel_rank(saliency)
    start, finish = (removed, image) if insert else (image, removed)

    def chunk_scores(operands, indices, valid):
        model_fn, rank, start, finish, target = operands
        counts = jnp.minimum(indices * step, hw)
        x = jnp.where((rank[None] < counts[:, None, None])[..., None], finish[None], start[None])
        scores = model_fn(x)[:, target]
        # Each point of the curve is written by exactly one chunk: the sum over chunks adds
        # only zeros to it, so the curve is exact whatever the chunking or the device count.
        slots = jnp.where(valid, indices, n_points)
        return jnp.zeros(n_points, jnp.float32).at[slots].add(
            jnp.where(valid, scores, 0.0), mode="drop")

    chunk = -(-n_points // -(-n_points // batch_size))  # <= batch_size, least padding
    scores = sharding.sharded_chunk_sum(
        chunk_scores, (model_fn, rank, start, finish, target),
        num_items=n_points, chunk_size=chunk)
    return Curve(scores, auc(scores))


def _causal(model_fn, image, saliency, target, *, step, substrate, baseline, key, batch_size,
            insert):
    model_fn = as_pytree_fn(model_fn)
    hw = validation.check_image(image)
    validation.check_saliency(saliency, hw)
    validation.check_positive_int(step, "step")
    validation.check_positive_int(batch_size, "batch_size")
    if target is not None:
        validation.check_target(target, validation.num_classes_of(model_fn, image))
        target = jnp.asarray(target, jnp.int32)
    image = jnp.asarray(image, jnp.float32)
    removed = _substrate(model_fn, image, substrate, baseline, key)
    operands = sharding.replicate(
        (model_fn, image, jnp.asarray(saliency, jnp.float32), target, removed))
    return _causal_curve(*operands, step=step, batch_size=batch_size, insert=insert)


_ARGS_DOC = """
    Args:
      model_fn: ``ModelFn`` ``f32[b, h, w, 3] -> f32[b, k]`` (probabilities).
      image: ``f32[h, w, 3]`` in [0, 1].
      saliency: ``f32[h, w]``, finite.
      target: the class whose score is tracked; default ``None``: the top-1 class of ``image``
        (one extra forward pass), as the reference.
      step: pixels changed per iteration (static): 224 (reference single image, IASSA) or
        1792 = 224·8 (reference batch evaluation, RExL). ``n_steps = ceil(h·w / step)``.
      substrate: what a removed pixel becomes (pixel space, ``f32[h, w, 3]``):
        ``"baseline"``: the masking baseline (default: the model's ``mean_rgb``, i.e. 0 in
        normalised space as the reference's ``zeros_like``); ``"blur"``: :func:`blur` of the
        image, padded with the baseline colour; ``"noise"``: RExL's ``rand − 0.5`` in
        normalised space, i.e. ``baseline + std_rgb · u`` with
        ``u = jax.random.uniform(key, image.shape, minval=-0.5, maxval=0.5)`` and ``std_rgb``
        the model's ``std_rgb`` keyword; a model that declares none is taken to normalise by
        subtracting the mean only (``std_rgb = 1``). Or an array of the image's shape.
      baseline: the masking baseline for ``resolve_baseline`` (default the model's mean colour).
      key: ``jax.random.key`` for ``substrate="noise"`` (required there, unused otherwise).
      batch_size: the most images per model call (static); the ``n + 1`` images are split
        into equal chunks of at most this size.

    Returns:
      ``Curve(scores f32[n_steps + 1], auc f32[])``.
    """


def deletion(model_fn: ModelFn, image, saliency, target=None, *, step: int = 224,
             substrate="baseline", baseline=None, key=None, batch_size: int = 32) -> Curve:
    return _causal(model_fn, image, saliency, target, step=step, substrate=substrate,
                   baseline=baseline, key=key, batch_size=batch_size, insert=False)


def insertion(model_fn: ModelFn, image, saliency, target=None, *, step: int = 224,
              substrate="blur", baseline=None, key=None, batch_size: int = 32) -> Curve:
    return _causal(model_fn, image, saliency, target, step=step, substrate=substrate,
                   baseline=baseline, key=key, batch_size=batch_size, insert=True)


deletion.__doc__ = (
    """Deletion curve (RISE §4.1): remove pixels in descending saliency, track the class score.

    ``start = image``, ``finish = substrate`` (default the baseline colour). **Lower is better.**
    Reference: ``CausalMetric(model, 'del', step, torch.zeros_like)``.
    """
    + _ARGS_DOC
)
insertion.__doc__ = (
    """Insertion curve (RISE §4.1): reveal pixels in descending saliency onto the substrate.

    ``start = substrate`` (default the ``gkern(11, 5)`` blur), ``finish = image``. **Higher is
    better.** Reference: ``CausalMetric(model, 'ins', step, blur)``.
    """
    + _ARGS_DOC
)
