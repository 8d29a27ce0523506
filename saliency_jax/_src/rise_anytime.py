"""Anytime RISE: the RISE estimator with a control variate, stopped once its map has converged.

RISE's map is the mean of per-mask contributions ``y_i(λ) = f_i M_i(λ) / p`` with ``f_i =
f_c(I ⊙ M_i)`` (P-RISE eq. 6). Every pixel of a RISE mask has ``E[M_i(λ)] = p`` (bilinear
weights of Bernoulli(p) cells sum to one), so ``E[y(λ)] = E[f] + Cov(f, M(λ)) / p``, and the
same expectation is estimated with far less noise by

    S_n(λ) = f̄ + 1/((n - 1) p) Σ_i (f_i - f̄) M_i(λ)  =  f̄ + n/(n - 1) (ȳ(λ) - f̄ z̄(λ)),

``z_i = M_i / p``: the sample covariance replaces the product, which removes the noise
``f̄ (z̄(λ) - 1)`` of plain RISE (a control variate; unbiased, same map in expectation). Its
per-mask contributions are ``u_i = y_i - f̄ z_i``. ``control_variate=False`` gives plain RISE,
``S_n = ȳ``, ``u_i = y_i``.

Its Monte-Carlo error is known as it runs. The map is used by ranking its pixels (deletion,
insertion, pointing) and compared by correlation, so only the error of the map's *centred* part
matters: a shift common to all pixels changes no ranking. With ``ũ_i = u_i - mean_λ u_i``, the
error and the relative error are

    se² = Σ_λ var_i ũ_i(λ) / n,        r_n = se / ||S_n - mean_λ S_n||_2.

With ``S_n = S_∞ + e`` and ``||e||² ≈ se²`` (noise uncorrelated with the map), the Pearson
correlation of ``S_n`` with the map of infinitely many masks is ``ρ_n ≈ ||S_∞ - mean|| / ||S_n -
mean|| ≈ sqrt(1 - r_n²)``. ``tolerance`` bounds ``1 - ρ_n``: the estimator draws masks in blocks
of ``check_every`` and stops after the first block at which ``n >= min_masks`` and
``1 - sqrt(1 - r_n²) < tolerance`` (i.e. ``r_n² < tolerance (2 - tolerance)``), or at
``max_masks``. ``tolerance = 0.05`` asks for a map whose estimated correlation with the
converged one is above 0.95; ``tolerance = 0`` never stops early. Since ``se ∝ 1/√n``, ``1 -
ρ_n ≈ r_n² / 2`` falls like ``1/n``: halving the tolerance about doubles the masks.

``se`` is estimated from the scores drawn so far, so it cannot see what no mask has hit yet.
With ``k`` masks that changed the score, ``r_n`` is about ``1/√k`` or more: one hit is no stop,
and a stop at ``tolerance = 0.04`` (``r_n < 0.28``) takes a dozen or more. Scores that have not
varied at all (``se`` under 1e-5 of the map's RMS, float32's resolution; ``r_n = 0``) are no
evidence of convergence: a model whose score moves only when a rare set of pixels is all
visible gives exactly that for its first hundreds of masks (an 8 x 8 box more than 97 %
visible: 1.4 % of the masks, none in the first 500 for one key in 40). Such blocks never stop
the loop; it runs to ``max_masks``, where the map of a model that ignores its input is exact
(``relative_error = 0``). An effect hit by a fraction ``q`` of the masks is unseen after ``n``
masks with probability ``(1 - q)^n``; if the scores vary for another reason meanwhile, the
stop cannot know what it missed (no estimate from the sample can): ``min_masks`` bounds it.

The loop is compiled: a ``lax.while_loop`` over blocks whose carry is the running means of
``f``, ``y`` and ``z`` and their co-moments ``Σ (a - ā)(b - b̄)``, per pixel and of the per-mask
pixel means (``Σ_λ var ũ(λ) = Σ_λ var u(λ) - h w · var(mean_λ u)``, and ``var u = var y - 2 f̄
cov(y, z) + f̄² var z``); Chan et al.'s pairwise update, one block at a time; inside a block the
products are taken about the running means, so they do not cancel. Each block's chunks of
``batch_size`` masks are split over all devices by
:func:`saliency_jax._src.sharding.sharded_chunk_sum`, as in fixed-N RISE; memory is one chunk
plus five ``h x w`` maps whatever ``max_masks``. Mask ``i`` comes from ``fold_in(key, i)`` and
the stopping checks sit at multiples of ``check_every`` whatever the batch size, so the masks
used and the map do not depend on ``batch_size`` or the number of devices beyond float
summation order. The stop is CB-RISE's idea (a Welford convergence stop), made part of the
compiled call.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from saliency_jax._src import masks, rise, sharding, validation
from saliency_jax._src.model_fn import ModelFn, as_pytree_fn

_HIGHEST = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class RiseAnytimeConfig:
    """Anytime RISE settings (hashable: static under ``jit``).

    Attributes:
      max_masks: the most masks (model queries) spent; the fixed-N RISE it falls back to.
      grid: ``s`` or ``(s_h, s_w)``, grid cells per axis, as :class:`RiseConfig`.
      p_keep: probability that a grid cell is kept, in (0, 1] (traced).
      batch_size: masks per model call (the chunk); the default, 125, divides the default
        ``check_every``.
      check_every: masks between two convergence checks (a block; clamped to ``max_masks``);
        the masks used are a multiple of it (or ``max_masks``). A ``batch_size`` that divides
        it, and a ``max_masks`` that is a multiple of it, leave no padding masks to compute.
      min_masks: no stop before this many masks (the variance estimate needs some; an effect
        hit by a fraction ``q`` of the masks is unseen by them with probability ``(1 -
        q)^min_masks``). Scores that have not varied never stop the loop (module docstring).
      tolerance: stop when ``1 - sqrt(1 - r_n²)``, one minus the map's estimated correlation
        with the map of infinitely many masks, falls under it; in [0, 1] (traced). 0 never
        stops early; 0.05 stops at an estimated correlation above 0.95. The default, 0.04, is
        the largest whose control-variate maps matched plain fixed-N 4000's correlation with
        an 8000-mask map (within 0.005) on 16 ``saliency_shapes`` train images; on 100 test
        images it then used 5.5x fewer masks than 4000 at equal correlation and AUCs
        (``benchmarks/bench_rise_anytime.py``, with these defaults: ``max_masks=4000``,
        ``check_every=250``, ``min_masks=500``; ``max_masks=4000`` is fixed-N RISE's
        comparison point, the paper's N for VGG16, half of :class:`RiseConfig`'s 8000).
      control_variate: estimate the map as ``f̄ + Cov(f, M) / p`` (the same expectation as
        RISE, less noise); ``False`` is plain RISE. With ``tolerance = 0`` the map is
        :func:`saliency_jax.rise`'s with ``num_masks = max_masks`` and the same
        ``control_variate``.
    """

    max_masks: int = 4000
    grid: int | tuple[int, int] = 7
    p_keep: float = 0.5
    batch_size: int = 125
    check_every: int = 250
    min_masks: int = 500
    tolerance: float = 0.04
    control_variate: bool = True

    def __post_init__(self):
        for name in ("max_masks", "batch_size", "check_every", "min_masks"):
            validation.check_positive_int(getattr(self, name), name)
        s_h, s_w = masks.grid_pair(self.grid, "grid")
        object.__setattr__(self, "grid", s_h if s_h == s_w else (s_h, s_w))
        for name in ("p_keep", "tolerance"):
            try:
                object.__setattr__(self, name, float(getattr(self, name)))
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be a number, got {getattr(self, name)!r}") from None
        validation.check_probability(self.p_keep, "p_keep")
        if not 0.0 <= self.tolerance <= 1.0:
            raise ValueError(f"tolerance must be a number in [0, 1], got {self.tolerance}")
        if not isinstance(self.control_variate, bool):
            raise ValueError(f"control_variate must be True or False, got "
                             f"{self.control_variate!r}")


class RiseAnytimeResult(NamedTuple):
    """What :func:`rise_anytime` returns.

    Attributes:
      saliency: ``f32[h, w]``, the map of the masks used (with the control variate unless the
        config turns it off).
      num_masks: ``i32[]``, the masks (model queries) used.
      relative_error: ``f32[]``, ``r_n`` at the stop (the relative standard error of the
        centred map); ``sqrt(1 - r_n²)`` estimates its correlation with the converged map. 0
        only where the scores never varied, and then ``num_masks = max_masks``.
    """

    saliency: jax.Array
    num_masks: jax.Array
    relative_error: jax.Array


DEFAULT_CONFIG = RiseAnytimeConfig()


class _Moments(NamedTuple):
    """Running moments of ``f``, ``y = f M / p`` and ``z = M / p`` over the masks so far:
    means, and co-moments ``Σ (a - ā)(b - b̄)`` per pixel and of the per-mask pixel means."""

    count: jax.Array  # f32[]
    mean_f: jax.Array  # f32[]
    mean_y: jax.Array  # f32[h, w]
    mean_z: jax.Array  # f32[h, w]
    c_yy: jax.Array  # f32[h, w]
    c_yz: jax.Array
    c_zz: jax.Array
    cbar_yy: jax.Array  # f32[], of mean_λ y_i and mean_λ z_i
    cbar_yz: jax.Array
    cbar_zz: jax.Array


def _saliency(m: _Moments, control_variate: bool):
    """Plain RISE ``ȳ``, or ``f̄ + n/(n-1) (ȳ - f̄ z̄)`` with the control variate."""
    if not control_variate:
        return m.mean_y
    return m.mean_f + (m.mean_y - m.mean_f * m.mean_z) * (m.count / jnp.maximum(m.count - 1, 1))


def _relative_error(m: _Moments, control_variate: bool):
    """``(r_n, exact)``: ``r_n = se / ||S_n - mean_λ S_n||`` of the centred map, and whether
    ``se`` is under float32's resolution of the map (1e-5 of its RMS: the scores did not vary;
    then ``r_n = 0``)."""
    beta = m.mean_f if control_variate else 0.0

    def residual(c_yy, c_yz, c_zz):  # Σ_i (u_i - ū)², u = y - β z
        return c_yy - 2.0 * beta * c_yz + beta * beta * c_zz

    noise = (jnp.sum(residual(m.c_yy, m.c_yz, m.c_zz))
             - m.c_yy.size * residual(m.cbar_yy, m.cbar_yz, m.cbar_zz))
    se_sq = jnp.maximum(noise, 0.0) / (m.count * jnp.maximum(m.count - 1.0, 1.0))
    sal = _saliency(m, control_variate)
    spread_sq = jnp.sum(jnp.square(sal - jnp.mean(sal)))
    exact = se_sq <= 1e-10 * jnp.sum(jnp.square(sal))
    return jnp.where(exact, 0.0, jnp.sqrt(se_sq / jnp.maximum(spread_sq, 1e-30))), exact


def _block_moments(operands, start, shift_y, shift_z, *, block, max_masks, grid, batch_size,
                   image_hw, call_id):
    """Sums over masks ``start .. start + block - 1`` (< N): ``(n, Σ f, Σ y, Σ z)`` and the
    co-moment sums about the shifts, per pixel and of the pixel means."""

    def chunk_sum(ops, indices, valid):
        key, model_fn, image, baseline, p_keep, target, start, shift_y, shift_z, call_id = ops
        indices = start + indices
        valid = valid & (indices < max_masks)
        mask_chunk = masks.rise_masks_at(key, indices, grid=grid, p_keep=p_keep,
                                         image_hw=image_hw)
        scores = rise._masked_scores(model_fn, image, mask_chunk, baseline)[:, target]
        f = jnp.where(valid, scores, 0.0)  # padding masks weigh nothing
        on = valid.astype(jnp.float32)[:, None, None]
        z = on * mask_chunk / p_keep
        y = f[:, None, None] * z
        dy, dz = on * (y - shift_y[None]), on * (z - shift_z[None])
        dy_bar, dz_bar = jnp.mean(dy, axis=(1, 2)), jnp.mean(dz, axis=(1, 2))
        out = (jnp.sum(valid.astype(jnp.int32)), jnp.sum(f),
               jnp.einsum("n,nhw->hw", f / p_keep, mask_chunk, precision=_HIGHEST),
               jnp.sum(z, axis=0), jnp.sum(dy * dy, axis=0), jnp.sum(dy * dz, axis=0),
               jnp.sum(dz * dz, axis=0), jnp.sum(dy_bar * dy_bar), jnp.sum(dy_bar * dz_bar),
               jnp.sum(dz_bar * dz_bar))
        if call_id is not None:
            rise.report_chunk(call_id, valid, out[2])
        return out

    return sharding.sharded_chunk_sum(
        chunk_sum, (*operands, start, shift_y, shift_z, call_id), num_items=block,
        chunk_size=batch_size)


def _merge(m: _Moments, sums) -> _Moments:
    """Chan et al.'s pairwise update: the running moments with one more block's sums."""
    n_b, sum_f, sum_y, sum_z, q_yy, q_yz, q_zz, qbar_yy, qbar_yz, qbar_zz = sums
    n_b = n_b.astype(jnp.float32)
    total = m.count + n_b
    weight = m.count * n_b / jnp.maximum(total, 1.0)
    # The block's squares are about the old means (the shifts): d = block mean - old mean.
    d_y = sum_y / jnp.maximum(n_b, 1.0) - m.mean_y
    d_z = sum_z / jnp.maximum(n_b, 1.0) - m.mean_z
    d_f = sum_f / jnp.maximum(n_b, 1.0) - m.mean_f
    dbar_y, dbar_z = jnp.mean(d_y), jnp.mean(d_z)

    def co(c, q, a, b):
        return c + q - n_b * a * b + a * b * weight

    grow = n_b / jnp.maximum(total, 1.0)
    return _Moments(total, m.mean_f + d_f * grow, m.mean_y + d_y * grow, m.mean_z + d_z * grow,
                    co(m.c_yy, q_yy, d_y, d_y), co(m.c_yz, q_yz, d_y, d_z),
                    co(m.c_zz, q_zz, d_z, d_z), co(m.cbar_yy, qbar_yy, dbar_y, dbar_y),
                    co(m.cbar_yz, qbar_yz, dbar_y, dbar_z),
                    co(m.cbar_zz, qbar_zz, dbar_z, dbar_z))


@functools.partial(jax.jit, static_argnames=("max_masks", "grid", "batch_size", "check_every",
                                             "min_masks", "control_variate"))
def _rise_anytime(key, model_fn, image, target, baseline, p_keep, tolerance, call_id=None, *,
                  max_masks, grid, batch_size, check_every, min_masks, control_variate):
    image_hw = image.shape[:2]
    operands = (key, model_fn, image, baseline, p_keep, target)
    check_every = min(check_every, max_masks)
    num_blocks = math.ceil(max_masks / check_every)
    moments = functools.partial(_block_moments, block=check_every, max_masks=max_masks,
                                grid=grid, batch_size=min(batch_size, check_every),
                                image_hw=image_hw, call_id=call_id)
    threshold = tolerance * (2.0 - tolerance)  # 1 - sqrt(1 - r²) < tol  <=>  r² < tol (2 - tol)

    def cond(carry):
        block, m = carry
        r, exact = _relative_error(m, control_variate)
        # Scores that have not varied are no evidence: with rare hits they are what the first
        # blocks show (module docstring). Only max_masks ends such a run.
        converged = (m.count >= min_masks) & ~exact & (jnp.square(r) < threshold)
        return (block < num_blocks) & ~converged

    def body(carry):
        block, m = carry
        return block + 1, _merge(m, moments(operands, block * check_every, m.mean_y, m.mean_z))

    zeros, zero = jnp.zeros(image_hw, jnp.float32), jnp.float32(0.0)
    start = _Moments(zero, zero, zeros, zeros, zeros, zeros, zeros, zero, zero, zero)
    _, m = jax.lax.while_loop(cond, body, (jnp.int32(0), start))
    return RiseAnytimeResult(_saliency(m, control_variate), m.count.astype(jnp.int32),
                             _relative_error(m, control_variate)[0])


def rise_anytime(key, model_fn: ModelFn, image, target, *,
                 config: RiseAnytimeConfig = DEFAULT_CONFIG, baseline=None,
                 progress: Callable[[int, int], None] | None = None) -> RiseAnytimeResult:
    """RISE of class ``target`` that stops when its map has converged: a
    :class:`RiseAnytimeResult` ``(saliency f32[h, w], num_masks i32[], relative_error f32[])``.

    ``S_n(λ) = f̄ + 1/((n - 1) p) Σ_{i<n} (f_i - f̄) M_i(λ)``, ``f_i = f_target(I ⊙ M_i)`` (the
    expectation of P-RISE eq. 6 with a control variate; ``config.control_variate=False``: eq. 6,
    ``1/(n p) Σ f_i M_i(λ)``) with ``n`` the first multiple of ``check_every`` (at least
    ``min_masks``) at which the centred map's relative standard error ``r_n = ||se|| / ||S_n -
    mean S_n||`` gives ``1 - sqrt(1 - r_n²) < tolerance`` (its estimated correlation with the
    converged map exceeds ``1 - tolerance``), else ``n = max_masks``; scores that have not
    varied (``r_n = 0``) are no evidence and never stop it. The masks are those of
    :func:`saliency_jax.rise` with the same key, so with ``tolerance=0`` the map is ``rise(key,
    ..., config=RiseConfig(num_masks=max_masks, control_variate=config.control_variate,
    ...))``.

    Args:
      key: PRNG key (``jax.random.key``); the same key gives a bit-identical result.
      model_fn: ``ModelFn``, ``f32[b, h, w, 3] -> f32[b, k]`` class probabilities.
      image: ``f32[h, w, 3]`` in [0, 1].
      target: integer class index in ``[0, k)`` (traced; may be vmapped).
      config: :class:`RiseAnytimeConfig` (static but for ``p_keep`` and ``tolerance``).
      baseline: what a masked pixel becomes, as in :func:`saliency_jax.rise`.
      progress: ``None`` or ``progress(masks_done, max_masks)``, called on the host after each
        chunk (under ``vmap``, once per image and chunk).

    Returns:
      :class:`RiseAnytimeResult`. Under ``vmap`` every image stops on its own; the loop runs
      until the last one has (the others' extra blocks are not computed into their maps).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import saliency_jax as sj
      >>> model_fn, _ = sj.testing.tiny_cnn(jax.random.key(1), (32, 32))
      >>> cfg = sj.RiseAnytimeConfig(max_masks=256, grid=4, batch_size=32, check_every=64,
      ...                            min_masks=64, tolerance=0.1)
      >>> out = sj.rise_anytime(jax.random.key(0), model_fn, jnp.full((32, 32, 3), 0.7), 0,
      ...                       config=cfg)
      >>> out.saliency.shape
      (32, 32)

    References:
      Petsiuk, Das, Saenko, *RISE*, BMVC 2018; Chan, Golub, LeVeque, *Updating formulae and a
      pairwise algorithm for computing sample variances*, 1979 (the block update).
    """
    if not isinstance(config, RiseAnytimeConfig):
        raise ValueError(f"config must be a RiseAnytimeConfig, got {type(config).__name__}")
    model_fn = as_pytree_fn(model_fn)
    fixed = rise.RiseConfig(num_masks=config.max_masks, grid=config.grid, p_keep=config.p_keep,
                            batch_size=config.batch_size)
    image, baseline, num_classes, static = rise._prepare(model_fn, image, fixed, baseline)
    validation.check_target(target, num_classes)
    call_id = rise._call_id_operand(progress, config.max_masks)
    operands = sharding.replicate((key, model_fn, image, jnp.asarray(target, jnp.int32),
                                   baseline, jnp.float32(config.p_keep),
                                   jnp.float32(config.tolerance), call_id))
    return _rise_anytime(*operands, max_masks=config.max_masks, grid=static["grid"],
                         batch_size=config.batch_size, check_every=config.check_every,
                         min_masks=config.min_masks, control_variate=config.control_variate)
