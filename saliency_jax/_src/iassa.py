"""IASSA: Iterative and Adaptive Sampling with Spatial Attention (Vasu & Long, WACV 2020).

Iteration ``t = 0..k`` estimates a map ``S_t`` from sliding windows of size ``W_t`` and stride
``S_t`` (both shrinking with ``t``), adjusts it with the LRPF-SA attention
(:mod:`saliency_jax._src.attention`), ``S'_t = β S_t + (1 − β) · attention(S_t)``, and restricts the
next iteration's sampling to the highest activated region
``HAR_t = S'_t > min + T (max − min)`` (P-IASSA §3.1, eqs. 5–8; METHODS §2). The explanation is
the last adjusted map ``S'_k``; ``return_iterations=True`` also returns ``S'_0..S'_k``.

Two variants (``IassaConfig.variant``):

* ``"paper"`` (default): the algorithm as the paper describes it, made well defined.

  - Masks **keep** the window (1 inside, baseline outside: "pixels preserved by m are
    important", eqs. 1–5), and the estimate is normalised **per pixel by its coverage**,
    ``Ŝ(λ) = Σ_i f_i M_i(λ) / Σ_i M_i(λ)`` (``E[f | λ visible]``), so the ``W mod S`` mismatch
    leaves no stripes (P-IASSA Fig. 8) and a constant model gives a constant map.
  - ``t = 0``: the full lattice of windows (origins ``arange(S − W, H, S)``, clipped to the
    image, as in the released code): every pixel is covered.
  - ``t ≥ 1``: ``n_t`` window **centres drawn uniformly from the HAR pixels** of ``S'_{t−1}``
    (inverse-CDF sampling, centre ``i`` from ``fold_in(fold_in(key, t), i)`` only, so the map
    does not depend on the chunking). No query is spent outside HAR; ``n_t`` is
    ``windows_per_iteration``, by default the number of lattice windows of ``(W_t, S_t)`` over
    the whole image (the budget of the released code, concentrated on HAR).
  - Combination (**ours**; the paper says only that ``M_{k+1} = HAR(S'_k)``): on the pixels
    that iteration ``t`` covered, the new estimate, shifted to the previous map's mean over
    those pixels (smaller windows show less of the image and score lower, so raw estimates of
    different window sizes are not on one scale), is blended with the previous map,
    ``S_t = (1 − η) S_{t−1} + η (Ŝ_t − mean Ŝ_t + mean S_{t−1})`` with ``η = update`` (0.5);
    pixels not covered keep ``S_{t−1}``.
  - The LRPF-SA of the paper variant (one temperature row-softmax on normalised features,
    see :mod:`saliency_jax._src.attention`), which does move saliency between similar pixels.
  - Early stop: once ``‖S_t − S_{t−1}‖ / ‖S_{t−1}‖ < tol`` the map is frozen (the remaining
    iterations run no model queries outside ``vmap``). ``tol = 0`` (default) runs all ``k``.
  - Schedule ``W_t = int(W − t ΔW)``, ``S_t = int(S − t ΔS)`` (the paper's "step size 1.5
    and 0.2").

* ``"reference"``: the released code (``vbhavank/IASSA-Saliency`` @ ``a3f55d7``; METHODS §2.2),
  faithfully: **occlusion** masks (0 inside the window), origins ``arange(S − W, H, S)``
  clipped to the image, ``sal = Σ_{kept} f_i M_i / N_kept`` (no ``E[M]`` factor), the
  ``find_intersection`` filter for ``t ≥ 1`` (keep a mask iff ``max(M · HAR) > 0``: the window
  does not cover all of HAR; filtered masks are still queried here, with weight 0, and ``N``
  counts the kept ones only), each map recomputed from scratch, the double-softmax LRPF-SA on
  the raw levels ``conv1`` (pre-BN), ``pool1``, ``layer2``, ``layer3``, ``layer4`` resized
  (nearest) to the finest level, and the schedule ``W = int(45 − (n + 1)·1.5)``,
  ``S = int(8 − 0.2 n)`` for ``n = t − 1`` (with the code's float rounding). Deviations,
  all where the released code cannot run: with an empty HAR (a constant map) no mask would be
  kept (``torch.cat`` of an empty list fails), so all are kept; the code picks among
  ``S'_0..S'_{k−1}`` by IoU with the ground-truth mask (an oracle) and never adjusts its last
  map ``S_k``; this returns ``S'_k`` (all of ``S'_0..S'_k`` with ``return_iterations``).
  A consequence of the released code worth knowing: the attention term is nearly the constant
  ``c`` (METHODS §2.2) but ``grid_sample``'s zero padding halves it on the outer 1-px ring,
  a drop of about ``c / 4`` (``c`` is of the order of the map's mean), whereas an occlusion map
  varies by at most ``(windows per pixel / N)`` times the score range (≈ 3 % at 224²). The ring
  then sets the minimum, ``HAR`` is essentially the whole interior and ``find_intersection``
  keeps every mask (seen on the test models; it filters only with ``β = 1`` and a small HAR).

Both variants mask with ``x = M I + (1 − M) baseline`` (default: the model's mean colour, what
the reference gets by masking the normalised tensor) and explain the given ``target`` (the
reference explains its top-1 class, one extra query).

**Image size.** The pixel settings are the paper's at 224²; ``IassaConfig.for_image_size(s)``
sets ``scale = s / 224`` and each schedule entry becomes ``round(scale · W_t)``,
``max(1, round(scale · S_t))`` (the 224² schedule is computed first, so it is exact at
``scale = 1``; window counts stay about the same at other sizes).

**Cost.** :func:`iassa_num_queries` gives the model queries of one explanation (an upper
bound when ``tol > 0``): ``Σ_t ceil(n_t / b) · b`` with ``b`` the batch size (the padding
windows of each iteration's last chunk are evaluated and weigh nothing). Reference at 224²,
``k = 5``: 1089 + 1089 + 4·1369 = 7654 windows (METHODS §2.4; 71,128 for ``k = 25``). Plus
one forward pass of ``features_fn``. Memory is one chunk of ``b`` masked images plus the
attention's ``chunk x n`` affinity block, whatever the number of windows.

**Compiled structure.** One ``jit``: a ``lax.scan`` over the ``k + 1`` iterations whose
per-iteration window size, stride, lattice shape and window count are scanned arrays, so the
model and the attention appear once in the program however large ``k``; inside, a
``fori_loop`` with a traced trip count runs the chunks (``lax`` loops over windows, no
Python loop), split over the devices with ``shard_map`` when there are several. Windows
are built by comparing a coordinate grid with the window origins (no slicing).

Static under ``jit``: the :class:`IassaConfig`'s shape-determining fields (variant,
iterations, window/stride schedule, scale, windows per iteration, feature names, attention
size, normalize, batch and chunk sizes), the image size, the feature shapes. Traced: ``key``,
``model_fn``'s and ``features_fn``'s parameters, ``image``, ``target``, ``baseline`` and the
config's ``beta``, ``threshold``, ``temperature``, ``update`` and ``tol`` (configs differing
only in these share one compilation).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from saliency_jax._src import attention as lrpf
from saliency_jax._src import baselines, validation
from saliency_jax._src.model_fn import as_pytree_fn

#: The image size the paper's pixel settings are for.
REFERENCE_SIZE = 224
#: The released code's LRPF-SA levels (ResNet-50 children ``[:-9], [:-6], [:-4], [:-3], [:-2]``).
REFERENCE_LEVELS = ("conv1", "pool1", "layer2", "layer3", "layer4")
_HIGHEST = jax.lax.Precision.HIGHEST
_AXIS = "windows"


def _number(value, name: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


@dataclasses.dataclass(frozen=True)
class IassaConfig:
    """IASSA settings (hashable). Its float weights (``beta``, ``threshold``, ``temperature``,
    ``update``, ``tol``) are traced; any other new value compiles anew.

    Attributes:
      variant: ``"paper"`` or ``"reference"`` (see the module docstring).
      iterations: ``k >= 1`` refinement iterations after the initial map (``k + 1`` maps).
        The released code's default is 5; the paper reports 25 (peak at 15, P-IASSA Fig. 6).
      window, stride: initial window size ``W`` and stride ``S`` in pixels at 224² (45, 8).
      window_step, stride_step: their per-iteration decrements at 224² (1.5, 0.2).
      scale: image size / 224; multiplies the pixel settings (:meth:`for_image_size`).
      beta: ``β`` in [0, 1], the weight of the map against the attention (0.5).
      threshold: ``T`` in [0, 1), the min–max relative HAR threshold (0.3).
      feature_names: the stages of ``features_fn`` used by LRPF-SA (default: the reference's
        ResNet-50 levels); ``None`` uses every stage it returns.
      attention_size: side (int) or ``(h, w)`` of the attention grid; ``None`` = the finest
        selected level (112² for ResNet-50 at 224², as the reference).
      temperature: ``τ`` of the paper variant's row softmax (0.1 on cosine similarities).
      normalize: paper variant: L2-normalise each level per pixel (see ``attention``).
      windows_per_iteration: paper variant, ``t >= 1``: windows sampled in HAR per iteration;
        ``None`` = the lattice count of ``(W_t, S_t)`` over the image.
      update: paper variant: ``η`` in (0, 1], weight of a new estimate on the pixels it covers.
      tol: stop when the relative change of the map falls below it (0: never).
      batch_size: masked images per model call.
      attention_chunk: affinity rows per block (memory ``chunk x n`` floats).
    """

    variant: str = "paper"
    iterations: int = 5
    window: float = 45.0
    stride: float = 8.0
    window_step: float = 1.5
    stride_step: float = 0.2
    scale: float = 1.0
    beta: float = 0.5
    threshold: float = 0.3
    feature_names: tuple[str, ...] | None = REFERENCE_LEVELS
    attention_size: int | tuple[int, int] | None = None
    temperature: float = 0.1
    normalize: bool = True
    windows_per_iteration: int | None = None
    update: float = 0.5
    tol: float = 0.0
    batch_size: int = 64
    attention_chunk: int = 256

    def __post_init__(self):
        if self.variant not in lrpf.VARIANTS:
            raise ValueError(f"variant must be one of {lrpf.VARIANTS}, got {self.variant!r}")
        validation.check_positive_int(self.iterations, "iterations")
        validation.check_positive_int(self.batch_size, "batch_size")
        validation.check_positive_int(self.attention_chunk, "attention_chunk")
        for name in ("window", "stride", "scale", "temperature"):
            value = _number(getattr(self, name), name)
            if not value > 0.0 or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
            object.__setattr__(self, name, value)
        for name in ("window_step", "stride_step", "tol"):
            value = _number(getattr(self, name), name)
            if not value >= 0.0 or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
            object.__setattr__(self, name, value)
        for name, allow_zero in (("beta", True), ("update", False)):
            value = _number(getattr(self, name), name)
            validation.check_probability(value, name, allow_zero=allow_zero)
            object.__setattr__(self, name, value)
        threshold = _number(self.threshold, "threshold")
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold must lie in [0, 1), got {threshold!r}")
        object.__setattr__(self, "threshold", threshold)
        if self.windows_per_iteration is not None:
            validation.check_positive_int(self.windows_per_iteration, "windows_per_iteration")
        if self.feature_names is not None:
            names = (self.feature_names,) if isinstance(self.feature_names, str) else tuple(
                self.feature_names)
            if not names or not all(isinstance(n, str) for n in names):
                raise ValueError(
                    f"feature_names must be a non-empty tuple of stage names or None, got "
                    f"{self.feature_names!r}"
                )
            object.__setattr__(self, "feature_names", names)
        if self.attention_size is not None:
            size = self.attention_size
            pair = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
            if len(pair) != 2:
                raise ValueError(f"attention_size must be an int or a pair, got {size!r}")
            for s in pair:
                validation.check_positive_int(s, "attention_size")
            object.__setattr__(self, "attention_size", (int(pair[0]), int(pair[1])))
        for t, (w, s) in enumerate(self.schedule()):
            if w < 1 or s < 1 or s > w:
                raise ValueError(
                    f"iterations={self.iterations} is too many for the window/stride schedule: "
                    f"iteration {t} would use window {w}, stride {s} (need 1 <= stride <= "
                    "window); lower iterations or window_step/stride_step"
                )

    @classmethod
    def for_image_size(cls, size: int, **overrides) -> IassaConfig:
        """The paper's pixel settings scaled to images of side ``size`` (``scale = size / 224``)."""
        validation.check_positive_int(size, "size")
        return cls(scale=size / REFERENCE_SIZE, **overrides)

    @classmethod
    def reference(cls, size: int = REFERENCE_SIZE, **overrides) -> IassaConfig:
        """The released code's settings (variant ``"reference"``, ``k = 5``), scaled to ``size``."""
        overrides = {"variant": "reference", "iterations": 5, **overrides}
        return cls.for_image_size(size, **overrides)

    def schedule(self) -> tuple[tuple[int, int], ...]:
        """``(W_t, S_t)`` in pixels for ``t = 0..k`` (at this config's scale)."""
        at_224 = [(int(self.window), int(self.stride))]
        for t in range(1, self.iterations + 1):
            if self.variant == "reference":
                n = t - 1  # the released code's loop index: W uses n + 1, S uses n
                at_224.append((int(self.window - (n + 1) * self.window_step),
                               int(self.stride - self.stride_step * n)))
            else:
                at_224.append((int(round(self.window - t * self.window_step, 9)),
                               int(round(self.stride - t * self.stride_step, 9))))
        if self.scale == 1.0:
            return tuple(at_224)
        return tuple((_round_half_up(self.scale * w), max(1, _round_half_up(self.scale * s)))
                     for w, s in at_224)


# --------------------------------------------------------------------------- windows


def _lattice_size(length: int, window: int, stride: int) -> int:
    """``len(arange(S − W, L, S))``: the reference's window origins along one axis."""
    return len(range(stride - window, length, stride))


def window_schedule(config: IassaConfig, image_hw) -> tuple[tuple[int, int, int], ...]:
    """``(W_t, S_t, n_t)`` for ``t = 0..k``: window, stride and number of windows (queries).

    Lattice iterations (all of the reference's; the paper variant's ``t = 0``) have
    ``len(arange(S − W, H, S)) · len(arange(S − W, W_img, S))`` windows.
    """
    h, w = (int(s) for s in image_hw)
    out = []
    for t, (win, stride) in enumerate(config.schedule()):
        n = _lattice_size(h, win, stride) * _lattice_size(w, win, stride)
        if config.variant == "paper" and t > 0 and config.windows_per_iteration is not None:
            n = config.windows_per_iteration
        out.append((win, stride, n))
    return tuple(out)


def _chunk_size(config: IassaConfig, image_hw) -> int:
    return min(config.batch_size, max(n for _, _, n in window_schedule(config, image_hw)))


def iassa_num_queries(config: IassaConfig, image_hw) -> int:
    """Model queries (masked images forwarded) of one explanation: ``Σ_t ceil(n_t / b) · b``.

    An upper bound when ``config.tol > 0`` (stopped iterations query nothing). The
    ``features_fn`` pass (one image) is not counted.
    """
    b = _chunk_size(config, image_hw)
    return sum(math.ceil(n / b) * b for _, _, n in window_schedule(config, image_hw))


# --------------------------------------------------------------------------- compiled core


def _chunk_loop(fn, operands, num_chunks, init):
    """``Σ_{c < num_chunks} fn(operands, c)`` (``num_chunks`` traced), chunks split over devices."""
    devices = jax.devices()

    def local(operands, first, step, trips):
        def body(j, total):
            return jax.tree.map(jnp.add, total, fn(operands, first + j * step))

        return jax.lax.fori_loop(0, trips, body, init)

    if len(devices) == 1:
        return local(operands, 0, 1, num_chunks)
    num_devices = len(devices)

    def per_device(operands, num_chunks):
        d = jax.lax.axis_index(_AXIS)
        trips = jnp.maximum(num_chunks - d + num_devices - 1, 0) // num_devices
        total = local(operands, d, num_devices, trips)
        return jax.tree.map(lambda x: jax.lax.psum(x, _AXIS), total)

    mesh = Mesh(np.asarray(devices), (_AXIS,))
    return jax.shard_map(per_device, mesh=mesh, in_specs=(PartitionSpec(), PartitionSpec()),
                         out_specs=PartitionSpec(), check_vma=False)(operands, num_chunks)


def _window_sums(operands, c, *, chunk, variant, image_hw):
    """Chunk ``c``'s sums ``(Σ w_i f_i M_i, Σ w_i M_i, Σ w_i)``, ``w_i`` the window weights."""
    (model_fn, image, baseline, target, har, cdf, key_t, win, stride, n_cols, n_windows,
     sampled, first) = operands
    h, w = image_hw
    idx = c * chunk + jnp.arange(chunk, dtype=jnp.int32)
    valid = idx < n_windows
    oy = stride - win + stride * (idx // n_cols)
    ox = stride - win + stride * (idx % n_cols)
    if variant == "paper":
        u = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key_t, i)))(idx)
        flat = jnp.clip(jnp.searchsorted(cdf, u * cdf[-1], side="right"), 0, h * w - 1)
        oy = jnp.where(sampled, flat // w - win // 2, oy)
        ox = jnp.where(sampled, flat % w - win // 2, ox)
    yy = jnp.arange(h, dtype=jnp.int32)[None, :, None]
    xx = jnp.arange(w, dtype=jnp.int32)[None, None, :]
    oy, ox = oy[:, None, None], ox[:, None, None]
    box = (yy >= oy) & (yy < oy + win) & (xx >= ox) & (xx < ox + win)
    keep_mask = box if variant == "paper" else ~box
    masks = keep_mask.astype(jnp.float32)
    masked = jax.vmap(baselines.apply_mask, in_axes=(None, 0, None))(image, masks, baseline)
    scores = model_fn(masked).astype(jnp.float32)[:, target]
    keep = valid
    if variant == "reference":  # find_intersection: the mask shows some HAR pixel
        keep = keep & (first | jnp.any(keep_mask & har[None], axis=(1, 2)))
    weighted = jnp.where(keep, scores, 0.0)  # where, not a product: no NaN leaks from padding
    weights = keep.astype(jnp.float32)
    return (jnp.einsum("n,nhw->hw", weighted, masks, precision=_HIGHEST),
            jnp.einsum("n,nhw->hw", weights, masks, precision=_HIGHEST),
            jnp.sum(weights))


def _masked_mean(x, where):
    return jnp.sum(jnp.where(where, x, 0.0)) / jnp.maximum(jnp.sum(where), 1)


#: The float settings, traced (configs that differ only in them share one compilation).
_TRACED = ("beta", "threshold", "temperature", "update", "tol")


def _split_config(config: IassaConfig):
    """``(static config with the traced floats at their defaults, {name: f32[]})``."""
    params = {name: jnp.float32(getattr(config, name)) for name in _TRACED}
    defaults = {f.name: f.default for f in dataclasses.fields(IassaConfig) if f.name in _TRACED}
    return dataclasses.replace(config, **defaults), params


@functools.partial(jax.jit, static_argnames=("config", "names", "grid", "return_iterations"))
def _iassa_impl(key, model_fn, image, target, baseline, features_fn, params, *, config, names,
                grid, return_iterations):
    h, w = image.shape[:2]
    feats = features_fn(image[None])
    levels = [jnp.asarray(feats[name][0], jnp.float32) for name in names]
    attention = lrpf._build(levels, out_hw=grid, variant=config.variant,
                            temperature=params["temperature"], normalize=config.normalize,
                            chunk=config.attention_chunk)
    plan = window_schedule(config, (h, w))
    chunk = _chunk_size(config, (h, w))
    xs = {
        "t": np.arange(len(plan), dtype=np.int32),
        "win": np.array([p[0] for p in plan], np.int32),
        "stride": np.array([p[1] for p in plan], np.int32),
        "n_cols": np.array([_lattice_size(w, p[0], p[1]) for p in plan], np.int32),
        "n_windows": np.array([p[2] for p in plan], np.int32),
        "n_chunks": np.array([math.ceil(p[2] / chunk) for p in plan], np.int32),
    }
    sums = functools.partial(_window_sums, chunk=chunk, variant=config.variant, image_hw=(h, w))
    zeros = (jnp.zeros((h, w), jnp.float32), jnp.zeros((h, w), jnp.float32), jnp.float32(0.0))
    paper = config.variant == "paper"

    def iteration(carry, x):
        s_prev, adj_prev, har, done = carry
        first = x["t"] == 0
        cdf = jnp.cumsum(har.reshape(-1).astype(jnp.float32))
        operands = (model_fn, image, baseline, target, har, cdf, jax.random.fold_in(key, x["t"]),
                    x["win"], x["stride"], x["n_cols"], x["n_windows"], paper & ~first, first)
        trips = jnp.where(done, 0, x["n_chunks"])
        num, den, count = _chunk_loop(sums, operands, trips, zeros)
        if paper:
            covered = den > 0
            estimate = jnp.where(covered, num / jnp.where(covered, den, 1.0), 0.0)
            shifted = estimate - _masked_mean(estimate, covered) + _masked_mean(s_prev, covered)
            eta = params["update"]
            refined = jnp.where(covered, (1 - eta) * s_prev + eta * shifted, s_prev)
            s_new = jnp.where(first, estimate, refined)
        else:
            s_new = num / jnp.maximum(count, 1.0)
        s_new = jnp.where(done, s_prev, s_new)
        adj = jax.lax.cond(done, lambda: adj_prev,
                           lambda: lrpf.attend(s_new, attention, beta=params["beta"]))
        har_new = lrpf.highest_activated_region(adj, threshold=params["threshold"])
        har_new = har_new | ~jnp.any(har_new)  # a flat map: sample everywhere
        change = jnp.linalg.norm(s_new - s_prev) / jnp.maximum(jnp.linalg.norm(s_prev), 1e-30)
        done = done | (~first & (change < params["tol"]))
        return (s_new, adj, har_new, done), (adj if return_iterations else None)

    init = (jnp.zeros((h, w), jnp.float32), jnp.zeros((h, w), jnp.float32),
            jnp.ones((h, w), bool), jnp.asarray(False))
    (_, final, _, _), maps = jax.lax.scan(iteration, init, xs)
    return (final, maps) if return_iterations else final


# --------------------------------------------------------------------------- public API


def _check_features(features_fn, image_hw, config):
    """Stage names and attention grid, from ``features_fn``'s abstract output (no compute)."""
    h, w = image_hw
    try:
        out = jax.eval_shape(features_fn, jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32))
    except Exception as err:  # noqa: BLE001 - report any failure as a bad argument
        raise ValueError(
            f"features_fn failed on an f32[1, {h}, {w}, 3] image batch: {err}"
        ) from err
    if not isinstance(out, dict) or not out:
        raise ValueError(
            "features_fn must return a non-empty dict {stage name: f32[b, h, w, c]}, got "
            f"{type(out).__name__}"
        )
    names = tuple(out) if config.feature_names is None else config.feature_names
    missing = [n for n in names if n not in out]
    if missing:
        raise ValueError(
            f"feature_names {list(missing)} are not returned by features_fn, which returns "
            f"{list(out)}; set IassaConfig(feature_names=...)"
        )
    for name in names:
        shape = tuple(getattr(out[name], "shape", ()))
        if len(shape) != 4 or shape[0] != 1 or min(shape) < 1:
            raise ValueError(
                f"features_fn must return f32[b, h, w, c] per stage; stage {name!r} has shape "
                f"{shape} for a batch of 1"
            )
        if shape[1] > h or shape[2] > w:
            raise ValueError(
                f"features_fn stage {name!r} is {shape[1]}x{shape[2]}, larger than the image "
                f"{h}x{w}: features must be at the image's resolution or coarser"
            )
    if config.attention_size is not None:
        grid = config.attention_size
        if grid[0] > h or grid[1] > w:
            raise ValueError(f"attention_size {grid} is larger than the image {h}x{w}")
    else:
        grid = max((tuple(out[n].shape[1:3]) for n in names), key=lambda s: s[0] * s[1])
    return names, (int(grid[0]), int(grid[1]))


def iassa(key, model_fn, image, target, *, config: IassaConfig = IassaConfig(), features_fn,
          baseline=None, return_iterations: bool = False):
    """The IASSA saliency map of class ``target``: ``f32[h, w]`` (Vasu & Long, WACV 2020).

    ``S'_k`` after ``k`` iterations of ``S_t`` from windows (eq. 5), ``S'_t = β S_t +
    (1 − β) attention(S_t)`` (eq. 6) and sampling restricted to ``HAR(S'_t)`` (eqs. 7–8);
    see the module docstring for the two variants.

    Args:
      key: PRNG key (``jax.random.key``); the same key gives a bit-identical map. The
        reference variant is deterministic and ignores it.
      model_fn: ``ModelFn``, ``f32[b, h, w, 3] -> f32[b, k]`` scores.
      image: ``f32[h, w, 3]`` in [0, 1].
      target: integer class index in ``[0, k)`` (traced; may be vmapped).
      config: :class:`IassaConfig` (static); :meth:`IassaConfig.for_image_size` scales the
        paper's 224² settings.
      features_fn: images ``f32[b, h, w, 3]`` in [0, 1] -> ``{stage: f32[b, h_s, w_s, c_s]}``,
        the LRPF-SA feature network (the reference uses the black box's own ResNet-50:
        ``models.features_fn("resnet50", variables)``); a ``jax.tree_util.Partial`` so its
        weights are traced.
      baseline: what a masked pixel becomes: ``None`` (the model's ``mean_rgb``, else black),
        a scalar, an RGB ``f32[3]`` or an ``f32[h, w, 3]`` image.
      return_iterations: also return the adjusted maps of every iteration.

    Returns:
      ``f32[h, w]``, or ``(f32[h, w], f32[k + 1, h, w])`` with ``return_iterations``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from saliency_jax import testing
      >>> model_fn, _ = testing.tiny_cnn(jax.random.key(1), (32, 32))
      >>> feats = lambda x: {"a": x[:, ::2, ::2], "b": x[:, ::4, ::4]}
      >>> cfg = IassaConfig(window=12, stride=4, window_step=2, stride_step=1, iterations=2,
      ...                   feature_names=None)  # 100 + 169 + 361 windows on 32 x 32
      >>> sal, maps = iassa(jax.random.key(0), model_fn, jnp.full((32, 32, 3), 0.7), 0,
      ...                   config=cfg, features_fn=feats, return_iterations=True)
      >>> sal.shape, maps.shape
      ((32, 32), (3, 32, 32))
    """
    if not isinstance(config, IassaConfig):
        raise ValueError(f"config must be an IassaConfig, got {type(config).__name__}")
    h, w = validation.check_image(image)
    window = config.schedule()[0][0]
    if window > min(h, w):
        raise ValueError(
            f"window {window} px (config.window={config.window:g} at scale {config.scale:g}) is "
            f"larger than the image {h}x{w}; use IassaConfig.for_image_size({min(h, w)})"
        )
    model_fn = as_pytree_fn(model_fn, "model_fn")
    features_fn = as_pytree_fn(features_fn, "features_fn")
    validation.check_target(target, validation.num_classes_of(model_fn, image))
    names, grid = _check_features(features_fn, (h, w), config)
    baseline = baselines.resolve_baseline(model_fn, image, baseline)
    static, params = _split_config(config)
    return _iassa_impl(key, model_fn, jnp.asarray(image, jnp.float32),
                       jnp.asarray(target, jnp.int32), baseline, features_fn, params,
                       config=static, names=names, grid=grid,
                       return_iterations=bool(return_iterations))
