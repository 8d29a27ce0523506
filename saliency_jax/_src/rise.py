"""RISE: Randomized Input Sampling for Explanation (Petsiuk, Das, Saenko, BMVC 2018).

The saliency of pixel ``λ`` for class ``c`` is the expected score of the masked image given
that ``λ`` is kept (P-RISE eq. 1), estimated by Monte Carlo over ``N`` random masks (eq. 6):

    S_c(λ) = 1 / (N · p_keep) · Σ_i f_c(I ⊙ M_i) · M_i(λ),

with ``E[M(λ)] = p_keep`` at every pixel (METHODS §1.1). ``f`` is the ``ModelFn``'s scores
(class probabilities, softmax composed in, as the reference wraps its model in ``nn.Softmax``).
A masked pixel becomes the baseline, ``I ⊙ M = M · I + (1 - M) · baseline``; the default
baseline is the model's mean colour, which is what the reference gets by masking the
normalised tensor (METHODS §1.4).

Masks (:mod:`saliency_jax.masks`) are made from the key inside the compiled call, one chunk
of ``batch_size`` at a time, in a ``lax.scan`` that accumulates ``P_chunk^T @ M_chunk`` in
float32; the chunks are split over all devices (:mod:`saliency_jax._src.sharding`). Memory is one
chunk whatever ``num_masks``; mask ``i`` depends on ``fold_in(key, i)`` only, so the map does
not depend on ``batch_size`` or the number of devices beyond float summation order.

Progress: ``progress(masks_done, num_masks)`` is called on the host after each chunk, from
inside the compiled loop (``jax.debug.callback``, after the chunk's scores exist); with
``progress=None`` the compiled program has no callback at all.

Static under ``jit`` (a new value compiles anew): ``num_masks``, ``grid``, ``batch_size``, whether
there is a ``progress`` callback, and the image size. Traced: ``key``, ``model_fn``'s
parameters, ``image``, ``target``, ``baseline``, ``p_keep``. Batch over images with
``jax.vmap`` (the mask axis stays the sharded one).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import threading
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax._src import baselines, masks, sharding, validation
from saliency_jax._src.model_fn import ModelFn, as_pytree_fn

_HIGHEST = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class RiseConfig:
    """RISE settings (hashable: static under ``jit``).

    ``num_masks``, ``grid`` and ``batch_size`` set shapes and are compiled in; ``p_keep`` is
    passed to the compiled call as a traced value, so changing it does not recompile.

    Attributes:
      num_masks: ``N``, the number of masks (model queries).
      grid: ``s`` or ``(s_h, s_w)``, grid cells per axis; at most the image size.
      p_keep: probability ``p`` that a grid cell is kept, in (0, 1].
      batch_size: masks per model call (the chunk); ``N`` need not be a multiple of it.
        ``None`` (default): :meth:`resolved_batch_size` of the devices RISE runs on,
        ``CPU_BATCH_SIZE`` on a CPU, ``ACCELERATOR_BATCH_SIZE`` (the reference code's
        ``gpu_batch=100``) on a GPU or TPU. The map does not depend on it beyond float
        summation order (mask ``i`` comes from ``fold_in(key, i)``).
      control_variate: ``False`` (default): the paper's estimator (eq. 6). ``True``: the same
        expectation with less noise, ``S(λ) = f̄ + 1/((N - 1) p) Σ_i (f_i - f̄) M_i(λ)`` (the
        sample covariance of score and mask; unbiased because ``E[M(λ)] = p``); it removes
        plain RISE's noise term ``f̄ (Σ_i M_i(λ) / (N p) - 1)``. Not the paper's map at finite
        ``N``: a shift and less noise (``benchmarks/bench_rise_anytime.py``).

    The defaults are the paper's for ResNet50 (P-RISE §4.2: ``N = 8000``, ``s = 7``,
    ``p = 0.5``; ``N = 4000`` for VGG16). The application (``saliency-jax evaluate``) and
    ``sj.RiseAnytimeConfig``'s ``max_masks`` use the paper's other setting, ``N = 4000``, for
    half the queries: on 100 ``saliency_shapes`` test images (``resnet_small``, 112²) fixed
    ``N = 4000`` gave an 8000-mask map's deletion and insertion AUCs (paired Δ −0.004 [−0.018,
    0.009] and +0.001 [−0.001, 0.002], ``benchmarks/results/rise_anytime.json``). On a CPU a
    small chunk is faster and smaller: ResNet50 224², N = 200, 2 cores, batch 10 took 0.71×
    the time of batch 100 and a third of the peak memory, the same map to float rounding
    (``benchmarks/bench_rise_batch.py``, ``results/peers_rise_batch.json``). The reference
    notebooks use other settings (METHODS §1.3):
    ``Saliency.ipynb`` N=6000, s=8, p=0.1; ``Evaluation.ipynb`` N=5000, s=10, p=0.1;
    ``Easy_start.ipynb`` N=2000, s=8, p=0.5.
    """

    num_masks: int = 8000
    grid: int | tuple[int, int] = 7
    p_keep: float = 0.5
    batch_size: int | None = None
    control_variate: bool = False

    def __post_init__(self):
        validation.check_positive_int(self.num_masks, "num_masks")
        if not isinstance(self.control_variate, bool):
            raise ValueError(f"control_variate must be True or False, got "
                             f"{self.control_variate!r}")
        if self.batch_size is not None:
            validation.check_positive_int(self.batch_size, "batch_size")
        s_h, s_w = masks.grid_pair(self.grid, "grid")
        object.__setattr__(self, "grid", s_h if s_h == s_w else (s_h, s_w))
        try:
            p_keep = float(self.p_keep)
        except (TypeError, ValueError):
            raise ValueError(f"p_keep must be a number in (0, 1], got {self.p_keep!r}") from None
        validation.check_probability(p_keep, "p_keep")
        object.__setattr__(self, "p_keep", p_keep)

    def resolved_batch_size(self, platform: str | None = None) -> int:
        """The chunk size used: ``batch_size``, or for ``None`` the default of ``platform``
        (``"cpu"``, ``"gpu"``, ``"tpu"``, ...; default: the platform of the devices RISE
        runs on, :func:`saliency_jax.sharding.use_devices` or ``jax.devices()``)."""
        if self.batch_size is not None:
            return self.batch_size
        if platform is None:
            platform = sharding._devices(None)[0].platform
        return CPU_BATCH_SIZE if platform == "cpu" else ACCELERATOR_BATCH_SIZE


CPU_BATCH_SIZE = 10  # measured against 100: benchmarks/results/peers_rise_batch.json
ACCELERATOR_BATCH_SIZE = 100  # the reference code's gpu_batch


DEFAULT_CONFIG = RiseConfig()


# --------------------------------------------------------------------------- progress

# Host side of the progress callback: the compiled program passes a traced call id (so a new
# callback does not recompile) and the chunk's count of valid masks; every device's chunks add
# to the same counter. Entries are dropped once complete; at most _MAX_CALLS are kept.
_PROGRESS: dict[int, list] = {}
_PROGRESS_LOCK = threading.Lock()
_PROGRESS_IDS = itertools.count(1)
_MAX_CALLS = 256
NO_PROGRESS = -1  # the call id when there is no callback (the program then has none)


def register_progress(progress: Callable[[int, int], None] | None, total: int) -> int:
    """A call id for ``progress`` (``NO_PROGRESS`` for ``None``); ``ValueError`` if not callable."""
    if progress is None:
        return NO_PROGRESS
    if not callable(progress):
        raise ValueError(f"progress must be None or a callable (masks_done, num_masks), "
                         f"got {type(progress).__name__}")
    call_id = next(_PROGRESS_IDS) % (2**31 - 1)
    with _PROGRESS_LOCK:
        while len(_PROGRESS) >= _MAX_CALLS:
            _PROGRESS.pop(next(iter(_PROGRESS)))
        _PROGRESS[call_id] = [progress, 0, int(total)]
    return call_id


def _on_chunk_done(call_id, num_valid, _dependency):
    with _PROGRESS_LOCK:
        entry = _PROGRESS.get(int(call_id))
        if entry is None:
            return
        entry[1] += int(num_valid)
        progress, done, total = entry
        if done >= total:
            _PROGRESS.pop(int(call_id), None)
    progress(min(done, total), total)


def report_chunk(call_id, valid, after):
    """Inside the compiled loop: tell the host that the chunk's ``valid`` masks are done.
    ``after`` (a value computed from the chunk's scores) orders the call after the chunk."""
    jax.debug.callback(_on_chunk_done, call_id, jnp.sum(valid.astype(jnp.int32)),
                       jnp.ravel(after)[0])


# --------------------------------------------------------------------------- estimator


def _pick_target(scores, target):
    return scores[:, target]


def _pick_all(scores, target):
    del target
    return scores


def _masked_scores(model_fn, image, mask_chunk, baseline):
    """Scores ``f32[n, k]`` of the image under each mask of ``mask_chunk`` ``f32[n, h, w]``."""
    masked = jax.vmap(baselines.apply_mask, in_axes=(None, 0, None))(image, mask_chunk, baseline)
    return model_fn(masked).astype(jnp.float32)


def _rise_sum(pick, key, model_fn, image, baseline, p_keep, target, *, num_masks, grid,
              batch_size, control_variate=False, call_id=None):
    """The RISE map of the scores ``pick(f(I ⊙ M_i), target)`` (``f32[N]`` or ``f32[N, k]``)
    over masks ``0..N-1`` from ``key``, chunked: ``Σ_i f_i M_i / (N p)``, or with the control
    variate ``f̄ + (Σ_i f_i (M_i - p) - f̄ Σ_i (M_i - p)) / ((N - 1) p)`` (sums about ``p``
    keep float32 from cancelling). With a ``call_id`` (traced int32) each chunk reports its
    progress to the host."""
    image_hw = image.shape[:2]

    def chunk_sum(operands, indices, valid):
        key, model_fn, image, baseline, p_keep, target, call_id = operands
        mask_chunk = masks.rise_masks_at(key, indices, grid=grid, p_keep=p_keep,
                                         image_hw=image_hw)
        scores = _masked_scores(model_fn, image, mask_chunk, baseline)
        scores = jnp.where(valid[:, None], scores, 0.0)  # padding masks past N weigh nothing
        f = pick(scores, target)
        if control_variate:
            centred = jnp.where(valid[:, None, None], mask_chunk - p_keep, 0.0)
            total = (jnp.einsum("n...,nhw->...hw", f, centred, precision=_HIGHEST),
                     jnp.sum(f, axis=0), jnp.sum(centred, axis=0))
        else:
            total = jnp.einsum("n...,nhw->...hw", f, mask_chunk, precision=_HIGHEST)
        if call_id is not None:
            report_chunk(call_id, valid, jax.tree.leaves(total)[0])
        return total

    total = sharding.sharded_chunk_sum(
        chunk_sum, (key, model_fn, image, baseline, p_keep, target, call_id),
        num_items=num_masks, chunk_size=batch_size,
    )
    if not control_variate:
        return total / (num_masks * p_keep)
    weighted, sum_f, sum_m = total
    mean_f = (sum_f / num_masks)[..., None, None]  # f32[1, 1] or f32[k, 1, 1]
    sum_m = jnp.broadcast_to(sum_m, weighted.shape)
    return mean_f + (weighted - mean_f * sum_m) / (max(num_masks - 1, 1) * p_keep)


@functools.partial(jax.jit, static_argnames=("num_masks", "grid", "batch_size",
                                             "control_variate"))
def _rise_target(key, model_fn, image, target, baseline, p_keep, call_id=None, *, num_masks,
                 grid, batch_size, control_variate=False):
    return _rise_sum(_pick_target, key, model_fn, image, baseline, p_keep, target,
                     num_masks=num_masks, grid=grid, batch_size=batch_size,
                     control_variate=control_variate, call_id=call_id)


@functools.partial(jax.jit, static_argnames=("num_masks", "grid", "batch_size",
                                             "control_variate"))
def _rise_all(key, model_fn, image, baseline, p_keep, call_id=None, *, num_masks, grid,
              batch_size, control_variate=False):
    return _rise_sum(_pick_all, key, model_fn, image, baseline, p_keep, None,
                     num_masks=num_masks, grid=grid, batch_size=batch_size,
                     control_variate=control_variate, call_id=call_id)


def _call_id_operand(progress, total):
    """The traced call id, or ``None`` (no callback compiled in) when ``progress`` is None."""
    call_id = register_progress(progress, total)
    return None if call_id == NO_PROGRESS else jnp.int32(call_id)


@functools.partial(jax.jit, static_argnames=("batch_size",))
def _rise_from_masks(model_fn, image, mask_set, baseline, p_keep, *, batch_size):
    scores = jax.lax.map(
        lambda m: _masked_scores(model_fn, image, m[None], baseline)[0],
        mask_set, batch_size=batch_size,
    )
    sal = jnp.einsum("nk,nhw->khw", scores, mask_set, precision=_HIGHEST)
    return sal / (mask_set.shape[0] * p_keep)


# --------------------------------------------------------------------------- public API


def _prepare(model_fn, image, config, baseline):
    """Validate the arguments shared by ``rise`` and ``rise_all_classes``."""
    if not isinstance(config, RiseConfig):
        raise ValueError(f"config must be a RiseConfig, got {type(config).__name__}")
    h, w = validation.check_image(image)
    grid = masks.check_grid_fits(config.grid, (h, w), "grid")
    num_classes = validation.num_classes_of(model_fn, image)
    baseline = baselines.resolve_baseline(model_fn, image, baseline)
    static = dict(num_masks=config.num_masks, grid=grid,
                  batch_size=min(config.resolved_batch_size(), config.num_masks),
                  control_variate=config.control_variate)
    return jnp.asarray(image, jnp.float32), baseline, num_classes, static


def rise(key, model_fn: ModelFn, image, target, *, config: RiseConfig = DEFAULT_CONFIG,
         baseline=None, progress: Callable[[int, int], None] | None = None):
    """The RISE saliency map of class ``target``: ``f32[h, w]``.

    ``S(λ) = 1/(N·p) Σ_i f_target(I ⊙ M_i) M_i(λ)`` over ``N = config.num_masks`` masks drawn
    from ``key`` (P-RISE eq. 6; reference ``RISE.forward``, normalised by ``N·p_keep``); with
    ``config.control_variate``, ``f̄ + 1/((N-1)·p) Σ_i (f_i - f̄) M_i(λ)``, the same
    expectation with less noise.

    Args:
      key: PRNG key (``jax.random.key``); the same key gives a bit-identical map.
      model_fn: ``ModelFn``, ``f32[b, h, w, 3] -> f32[b, k]`` class probabilities.
      image: ``f32[h, w, 3]`` in [0, 1].
      target: integer class index in ``[0, k)`` (traced; may be vmapped).
      config: :class:`RiseConfig` (static).
      baseline: what a masked pixel becomes: ``None`` (the model's ``mean_rgb``, else black),
        a scalar, an RGB ``f32[3]`` or an ``f32[h, w, 3]`` image.
      progress: ``None`` or ``progress(masks_done, num_masks)``, called on the host after each
        chunk of ``batch_size`` masks (under ``vmap``, once per image and chunk).

    Returns:
      ``f32[h, w]``. Its mean over pixels is about the target's mean masked score.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import saliency_jax as sj
      >>> model_fn, _ = sj.testing.tiny_cnn(jax.random.key(1), (32, 32))
      >>> image = jnp.full((32, 32, 3), 0.7)
      >>> cfg = sj.RiseConfig(num_masks=64, grid=4, batch_size=32)
      >>> sj.rise(jax.random.key(0), model_fn, image, 0, config=cfg).shape
      (32, 32)

    References:
      Petsiuk, Das, Saenko, *RISE: Randomized Input Sampling for Explanation of Black-box
      Models*, BMVC 2018; code ``eclique/RISE``.
    """
    model_fn = as_pytree_fn(model_fn)
    image, baseline, num_classes, static = _prepare(model_fn, image, config, baseline)
    validation.check_target(target, num_classes)
    call_id = _call_id_operand(progress, config.num_masks)
    operands = sharding.replicate((key, model_fn, image, jnp.asarray(target, jnp.int32),
                                   baseline, jnp.float32(config.p_keep), call_id))
    return _rise_target(*operands, **static)


def rise_all_classes(key, model_fn: ModelFn, image, *, config: RiseConfig = DEFAULT_CONFIG,
                     baseline=None, progress: Callable[[int, int], None] | None = None):
    """RISE maps of every class from one set of ``N`` forward passes: ``f32[k, h, w]``.

    ``rise_all_classes(...)[c]`` equals ``rise(..., target=c)`` with the same key (up to float
    summation order). Costs a ``k x h x w`` float32 accumulator (200 MB for 1000 classes at 224²).

    Args:
      key: PRNG key (``jax.random.key``); the same key gives the masks of :func:`rise`.
      model_fn: ``ModelFn``, ``f32[b, h, w, 3] -> f32[b, k]`` class probabilities.
      image: ``f32[h, w, 3]`` in [0, 1].
      config: :class:`RiseConfig` (static).
      baseline: what a masked pixel becomes, as in :func:`rise`.
      progress: ``None`` or ``progress(masks_done, num_masks)``, as in :func:`rise`.

    Returns:
      ``f32[k, h, w]``: one map per class.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import saliency_jax as sj
      >>> model_fn, _ = sj.testing.tiny_cnn(jax.random.key(1), (32, 32))
      >>> cfg = sj.RiseConfig(num_masks=64, grid=4, batch_size=32)
      >>> sj.rise_all_classes(jax.random.key(0), model_fn, jnp.full((32, 32, 3), 0.7),
      ...                     config=cfg).shape[1:]
      (32, 32)

    References:
      Petsiuk, Das, Saenko, *RISE: Randomized Input Sampling for Explanation of Black-box
      Models*, BMVC 2018; code ``eclique/RISE``.
    """
    model_fn = as_pytree_fn(model_fn)
    image, baseline, _, static = _prepare(model_fn, image, config, baseline)
    call_id = _call_id_operand(progress, config.num_masks)
    operands = sharding.replicate((key, model_fn, image, baseline, jnp.float32(config.p_keep),
                                   call_id))
    return _rise_all(*operands, **static)


def rise_from_masks(model_fn, image, mask_set, *, p_keep, baseline=None, batch_size: int = 100):
    """The RISE estimator on given masks, all classes: ``f32[k, h, w]``.

    ``sal = P^T M / (N · p_keep)`` with ``P[i] = f(I ⊙ M_i)`` ``f32[N, k]`` and ``M`` the masks
    flattened to ``f32[N, h·w]``: exactly the reference ``RISE.forward`` (``explanations.py``
    l.40-58), here with an explicit baseline. For parity tests and user-supplied mask sets; it
    holds all ``N`` masks, unlike :func:`rise`.

    Args:
      model_fn: ``ModelFn``.
      image: ``f32[h, w, 3]`` in [0, 1].
      mask_set: ``f32[N, h, w]`` masks (1 = keep), finite.
      p_keep: the masks' keep probability ``E[M]`` used to normalise, in (0, 1] (traced).
      baseline: as in :func:`rise`.
      batch_size: masks per model call (static).
    """
    model_fn = as_pytree_fn(model_fn)
    h, w = validation.check_image(image)
    shape = np.shape(mask_set)
    if len(shape) != 3 or tuple(shape[1:]) != (h, w) or shape[0] < 1:
        raise ValueError(f"mask_set must have shape (N, {h}, {w}) with N >= 1, got {shape}")
    if not isinstance(mask_set, jax.core.Tracer) and not np.all(np.isfinite(mask_set)):
        raise ValueError("mask_set contains non-finite values (NaN or inf)")
    if not isinstance(p_keep, jax.core.Tracer):
        validation.check_probability(float(p_keep), "p_keep")
    validation.check_positive_int(batch_size, "batch_size")
    validation.num_classes_of(model_fn, image)
    baseline = baselines.resolve_baseline(model_fn, image, baseline)
    return _rise_from_masks(model_fn, jnp.asarray(image, jnp.float32),
                            jnp.asarray(mask_set, jnp.float32), baseline,
                            jnp.asarray(p_keep, jnp.float32),
                            batch_size=min(int(batch_size), shape[0]))
