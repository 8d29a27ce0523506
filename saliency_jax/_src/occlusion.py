"""Sliding-window occlusion: the "sliding window" baseline of RISE Table 1 (Petsiuk et al. 2018).

Zeiler & Fergus style occlusion (ECCV 2014), as the RISE paper evaluates it (P-RISE Table 1:
a ``64 x 64`` window moved with stride 8 over the ``224 x 224`` image). Every window ``w`` is
filled with the baseline and the drop of the target score is recorded:

    d_w = f_c(I) − f_c(I with window w set to the baseline),

    S(λ) = (1 / |W(λ)|) Σ_{w ∈ W(λ)} d_w,

the average drop over the set ``W(λ)`` of windows covering pixel ``λ``. A pixel that no window
covers (only possible when ``stride > window``) gets ``S(λ) = 0``.

**Window placement.** Per axis of length ``L`` with window ``k`` and stride ``s``, the origins are
``min(i·s, L − k)`` for ``i = 0, ..., n − 1`` with ``n = ceil((L − k) / s) + 1``: ``0, s, 2s, ...``
while the window stays inside the image, and a last window flush with the far border when
``L − k`` is not a multiple of ``s`` (so the border is always covered; that last step is shorter
than ``s``). Windows are the product of the row and column origins (row-major), all of them
inside the image; ``224, 64, 8`` gives 21 x 21 = 441 windows.

**Cost.** ``num_windows + 1`` model queries (the ``+ 1`` is the unoccluded image). The windows
are built by comparing a coordinate grid with each window's origin (no slicing), a chunk of
``batch_size`` at a time inside one compiled ``lax.scan`` whose chunks are split over the devices
(:func:`saliency_jax._src.sharding.sharded_chunk_sum`): memory is one chunk whatever the number of
windows.

Static under ``jit``: ``window``, ``stride``, ``batch_size`` and the image size. Traced:
``model_fn``'s parameters, ``image``, ``target``, ``baseline``. The method is deterministic:
``key`` is accepted for the explainers' shared signature and ignored.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax._src import baselines, sharding, validation
from saliency_jax._src.model_fn import ModelFn, as_pytree_fn

_HIGHEST = jax.lax.Precision.HIGHEST

#: The image size the paper's setting (window 64, stride 8) is for.
REFERENCE_SIZE = 224


def _pair(value, name: str) -> tuple[int, int]:
    try:
        pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    except TypeError:
        pair = (value,)
    if len(pair) != 2 or any(
        not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1 for v in pair
    ):
        raise ValueError(f"{name} must be an int >= 1 or a pair (h, w) of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def _collapse(pair: tuple[int, int]):
    return pair[0] if pair[0] == pair[1] else pair


@dataclasses.dataclass(frozen=True)
class OcclusionConfig:
    """Sliding-window occlusion settings (hashable: static under ``jit``).

    Attributes:
      window: side ``k`` of the square window, or ``(k_h, k_w)``; at most the image size.
      stride: step ``s`` between window origins, or ``(s_h, s_w)``; >= 1.
      batch_size: occluded images per model call (the chunk).

    The defaults are the paper's at 224² (P-RISE Table 1: window 64, stride 8, 441 windows).
    For another image size use :meth:`for_image_size`, which keeps the window and the stride
    the same fraction of the image (``112 -> window 32, stride 4``, again 441 windows).
    """

    window: int | tuple[int, int] = 64
    stride: int | tuple[int, int] = 8
    batch_size: int = 64

    def __post_init__(self):
        object.__setattr__(self, "window", _collapse(_pair(self.window, "window")))
        object.__setattr__(self, "stride", _collapse(_pair(self.stride, "stride")))
        validation.check_positive_int(self.batch_size, "batch_size")

    @classmethod
    def for_image_size(cls, image_hw, *, batch_size: int = 64) -> OcclusionConfig:
        """The paper's setting scaled to ``image_hw`` (an int or ``(h, w)``).

        ``window = round(64 · L / 224)`` and ``stride = max(1, round(8 · L / 224))`` per axis:
        the same window fraction and (up to rounding) the same number of windows as at 224².
        """
        h, w = _pair(image_hw, "image_hw")
        window = tuple(max(1, round(64 * n / REFERENCE_SIZE)) for n in (h, w))
        stride = tuple(max(1, round(8 * n / REFERENCE_SIZE)) for n in (h, w))
        return cls(window=_collapse(window), stride=_collapse(stride), batch_size=batch_size)

    def num_windows(self, image_hw) -> int:
        """How many windows an image of size ``image_hw`` gets (model queries: this + 1)."""
        (h, w), (k_h, k_w), (s_h, s_w) = image_hw, _pair(self.window, "window"), _pair(
            self.stride, "stride")
        return len(window_origins(h, k_h, s_h)) * len(window_origins(w, k_w, s_w))


def window_origins(length: int, window: int, stride: int) -> np.ndarray:
    """Window origins along one axis: ``min(i·stride, length − window)``, ``i = 0..n−1``.

    ``n = ceil((length − window) / stride) + 1``: the windows step by ``stride`` from 0 and the
    last one ends exactly at the border. Returns ``int32[n]``, strictly increasing.
    """
    for value, name in ((length, "length"), (window, "window"), (stride, "stride")):
        validation.check_positive_int(value, name)
    if window > length:
        raise ValueError(f"window={window} is larger than the image side {length}")
    n = math.ceil((length - window) / stride) + 1
    return np.minimum(np.arange(n) * stride, length - window).astype(np.int32)


def _window_masks(indices, *, image_hw, window, stride):
    """Masks ``f32[n, h, w]`` (0 inside window ``indices[i]``, 1 elsewhere), built by comparison."""
    (h, w), (k_h, k_w), (s_h, s_w) = image_hw, window, stride
    n_x = math.ceil((w - k_w) / s_w) + 1
    oy = jnp.minimum((indices // n_x) * s_h, h - k_h)[:, None, None]
    ox = jnp.minimum((indices % n_x) * s_w, w - k_w)[:, None, None]
    yy = jnp.arange(h, dtype=jnp.int32)[None, :, None]
    xx = jnp.arange(w, dtype=jnp.int32)[None, None, :]
    inside = (yy >= oy) & (yy < oy + k_h) & (xx >= ox) & (xx < ox + k_w)
    return jnp.where(inside, 0.0, 1.0).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("window", "stride", "batch_size"))
def _occlusion(model_fn, image, target, baseline, *, window, stride, batch_size):
    image_hw = image.shape[:2]
    (h, w), (k_h, k_w), (s_h, s_w) = image_hw, window, stride
    num_windows = (math.ceil((h - k_h) / s_h) + 1) * (math.ceil((w - k_w) / s_w) + 1)
    full_score = model_fn(image[None])[0, target].astype(jnp.float32)

    def chunk_sum(operands, indices, valid):
        model_fn, image, target, baseline, full_score = operands
        keep = _window_masks(indices, image_hw=image_hw, window=window, stride=stride)
        occluded = jax.vmap(baselines.apply_mask, in_axes=(None, 0, None))(image, keep, baseline)
        drop = full_score - model_fn(occluded)[:, target].astype(jnp.float32)
        drop = jnp.where(valid, drop, 0.0)  # padding windows past the last one weigh nothing
        covered = jnp.where(valid[:, None, None], 1.0 - keep, 0.0)
        return (jnp.einsum("n,nhw->hw", drop, covered, precision=_HIGHEST),
                jnp.sum(covered, axis=0))

    total, count = sharding.sharded_chunk_sum(
        chunk_sum, (model_fn, image, target, baseline, full_score),
        num_items=num_windows, chunk_size=batch_size,
    )
    return jnp.where(count > 0, total / jnp.maximum(count, 1.0), 0.0)


def occlusion(key, model_fn: ModelFn, image, target, *, config: OcclusionConfig = OcclusionConfig(),
              baseline=None):
    """The sliding-window occlusion map of class ``target``: ``f32[h, w]``.

    ``S(λ)`` is the mean, over the windows covering ``λ``, of the score drop
    ``f_target(I) − f_target(I with the window set to the baseline)`` (0 where no window covers
    ``λ``). Positive where hiding the pixel lowers the score. See the module docstring for the
    window placement.

    Args:
      key: PRNG key, unused (the method is deterministic); kept for the explainers' signature.
      model_fn: ``ModelFn``, ``f32[b, h, w, 3] -> f32[b, k]`` class probabilities.
      image: ``f32[h, w, 3]`` in [0, 1].
      target: integer class index in ``[0, k)`` (traced; may be vmapped).
      config: :class:`OcclusionConfig` (static); the window must fit in the image.
      baseline: what an occluded pixel becomes: ``None`` (the model's ``mean_rgb``, else black),
        a scalar, an RGB ``f32[3]`` or an ``f32[h, w, 3]`` image.

    Returns:
      ``f32[h, w]``, after ``config.num_windows((h, w)) + 1`` model queries.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import saliency_jax as sj
      >>> model_fn, _ = sj.testing.tiny_cnn(jax.random.key(1), (32, 32))
      >>> image = jnp.full((32, 32, 3), 0.7)
      >>> cfg = sj.OcclusionConfig.for_image_size(32)      # window 9, stride 1
      >>> sj.occlusion(jax.random.key(0), model_fn, image, 0, config=cfg).shape
      (32, 32)

    References:
      Zeiler & Fergus, *Visualizing and Understanding Convolutional Networks*, ECCV 2014; as the
      "sliding window" baseline of Petsiuk et al., BMVC 2018, Table 1.
    """
    del key
    model_fn = as_pytree_fn(model_fn)
    if not isinstance(config, OcclusionConfig):
        raise ValueError(f"config must be an OcclusionConfig, got {type(config).__name__}")
    h, w = validation.check_image(image)
    window, stride = _pair(config.window, "window"), _pair(config.stride, "stride")
    if window[0] > h or window[1] > w:
        raise ValueError(f"window={config.window!r} is larger than the image {h}x{w}")
    num_classes = validation.num_classes_of(model_fn, image)
    validation.check_target(target, num_classes)
    baseline = baselines.resolve_baseline(model_fn, image, baseline)
    batch_size = min(config.batch_size, config.num_windows((h, w)))
    operands = sharding.replicate((model_fn, jnp.asarray(image, jnp.float32),
                                   jnp.asarray(target, jnp.int32), baseline))
    return _occlusion(*operands, window=window, stride=stride, batch_size=batch_size)
