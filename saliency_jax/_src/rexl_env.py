"""The RExL environment: reveal (insertion) or remove (deletion) grid patches, one per step.

RExL (Agarwal et al., 2021; reference code ``CVIR/RExL`` ``envs/attentionEnv.py``, METHODS §3.1)
poses saliency as a sequential search. The image is cut into a ``k x k`` grid of patches of
``(h / k, w / k)`` pixels; action ``a`` in ``[0, k²)`` is the patch at row ``a // k``, column
``a % k``.

* **insertion**: the canvas starts as the substrate; an action copies the original patch in.
* **deletion**: the canvas starts as the image; an action copies the substrate patch in.
* **reward** ``r_t = p_c(canvas_t)`` (insertion) or ``-p_c(canvas_t)`` (deletion): the class
  probability itself, not a difference. With ``γ = 1`` the return is ``k²`` times the Riemann sum
  of the patch-wise insertion AUC (or minus the deletion AUC).
* **episode**: exactly ``k²`` steps. A visited patch is a no-op that still costs a step, as in
  the code; ``mask_visited=True`` (an improvement, off by default) forbids visited patches
  through :func:`action_mask`.
* **substrate**: ``"noise"``, the code's ``rand − 0.5`` in *normalised* space drawn once per
  episode, i.e. ``mean_rgb + u · std_rgb`` in pixel space with ``u ~ U[−0.5, 0.5)``; or
  ``"baseline"``, the constant mean colour (the masking baseline of the other methods, for
  comparability). ``mean_rgb``/``std_rgb`` are the ``model_fn`` Partial's keywords; a model that
  declares no mean gets black (zeros),
  one that declares no std is taken to normalise by the mean only (``std_rgb = 1``), as
  :mod:`saliency_jax.metrics` does.
* **target** ``c``: given per image, or ``-1`` for the top-1 class of the original image.
* **observation** (METHODS §3.2): features of a frozen trunk (``features_fn``, its last stage
  unless ``stage`` is named) of the canvas, ``f32[hs, ws, c]``; for insertion the original's
  features are appended on the channel axis; for dataset-wide agents ``num_class_planes``
  one-hot planes of the target are prepended (the code's ``[one_hot; f(canvas); f(original)]``).

Functional contract (gymnax): ``reset(key, params) -> (obs, state)`` and
``step(key, state, action, params) -> (obs, state, reward, done, info)``, with auto-reset by a
leaf-wise select so that shapes never change and the environment sits inside ``lax.scan``.
Batch over environments with ``jax.vmap(step, in_axes=(0, 0, 0, None))``.

Cost per step: one ``model_fn`` pass (the reward) and one ``features_fn`` pass (the next
observation). The per-image constants, the resolved target and the original's features, are
computed once for all images by :func:`make_env_params` (the "cache at reset" of METHODS §3.8),
so the auto-reset branch, which a vmapped select evaluates at every step, costs no network pass
(except insertion on noise, whose first canvas is new noise each episode). When the encoder is
the black box's own trunk, an optional ``fused_fn(images) -> (scores, features)`` gives both from
ONE pass per step, halving the cost of training.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from saliency_jax._src import baselines, sharding, validation
from saliency_jax._src.model_fn import as_pytree_fn

MODES = ("deletion", "insertion")
SUBSTRATES = ("noise", "baseline")


@struct.dataclass
class EnvParams:
    """Everything the environment reads: data leaves (traced) and static structure.

    Build it with :func:`make_env_params`, which validates the inputs and fills the caches.

    Attributes:
      model_fn: the black box, a ``jax.tree_util.Partial`` ``f32[b, h, w, 3] -> f32[b, K]``.
      features_fn: the frozen state encoder, a ``Partial``
        ``f32[b, h, w, 3] -> {stage: f32[b, ...]}`` or ``-> f32[b, ...]``.
      images: ``f32[n, h, w, 3]`` in [0, 1], device resident.
      targets: ``i32[n]``, resolved (no ``-1`` left).
      original_features: ``f32[n, *feature_shape]``: the trunk's features of each original.
      blank_features: ``f32[*feature_shape]``: the features of the plain baseline-colour image
        (the first canvas of insertion on ``"baseline"``; zeros otherwise).
      fused_fn: ``None`` or a ``Partial`` ``images -> (scores f32[b, K], features)`` computing
        ``model_fn`` and ``features_fn`` in one pass (same numbers; a speed option).
      mean_rgb, std_rgb: ``f32[3]``: the normalisation the noise substrate is drawn in.
      grid: ``k`` (static).
      mode: ``"deletion"`` or ``"insertion"`` (static).
      substrate: ``"noise"`` or ``"baseline"`` (static).
      mask_visited: forbid visited patches (static).
      num_class_planes: number of one-hot class planes in the observation, 0 for none (static).
      stage: the ``features_fn`` stage to use, ``None`` for its last (static).
    """

    model_fn: Any
    features_fn: Any
    images: jax.Array
    targets: jax.Array
    original_features: jax.Array
    blank_features: jax.Array
    mean_rgb: jax.Array
    std_rgb: jax.Array
    grid: int = struct.field(pytree_node=False, default=7)
    mode: str = struct.field(pytree_node=False, default="deletion")
    substrate: str = struct.field(pytree_node=False, default="noise")
    mask_visited: bool = struct.field(pytree_node=False, default=False)
    num_class_planes: int = struct.field(pytree_node=False, default=0)
    stage: str | None = struct.field(pytree_node=False, default=None)
    fused_fn: Any = None

    @property
    def num_actions(self) -> int:
        return self.grid * self.grid

    @property
    def episode_length(self) -> int:
        return self.grid * self.grid


class EnvState(NamedTuple):
    """One environment's state: which image, which patches are done, the episode's substrate."""

    index: jax.Array  # i32[]: the image in params.images
    visited: jax.Array  # bool[k, k]
    substrate: jax.Array  # f32[h, w, 3]
    t: jax.Array  # i32[]: steps taken in this episode


def select_features(features, stage: str | None = None) -> jax.Array:
    """The state-encoder array of a ``features_fn`` output: the named (or last) stage of a dict."""
    if isinstance(features, dict):
        if stage is None:
            stage = list(features)[-1]
        return features[stage]
    return features


def check_grid(grid, image_hw, name: str = "grid") -> int:
    """``grid`` must be an int ``k >= 1`` that divides both image sides; returns ``k``."""
    if not isinstance(grid, int | np.integer) or isinstance(grid, bool) or grid < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {grid!r}")
    h, w = image_hw
    if h % grid or w % grid:
        raise ValueError(
            f"{name}={grid} must divide the image size {h}x{w} (patches of h/k x w/k pixels)"
        )
    return int(grid)


def check_mode(mode, name: str = "mode") -> str:
    if mode not in MODES:
        raise ValueError(f"{name} must be one of {MODES}, got {mode!r}")
    return mode


def check_substrate(substrate, name: str = "substrate") -> str:
    if substrate not in SUBSTRATES:
        raise ValueError(f"{name} must be one of {SUBSTRATES}, got {substrate!r}")
    return substrate


def substrate_colours(model_fn, baseline=None) -> tuple[jax.Array, jax.Array]:
    """``(mean_rgb, std_rgb)`` ``f32[3]``: the substrate's centre and noise scale (module doc)."""
    if baseline is None:
        baseline = baselines.model_mean_rgb(model_fn)
    if baseline is None:
        baseline = jnp.zeros((3,), jnp.float32)
    validation.check_baseline(baseline, (1, 1, 3))
    std = None
    if isinstance(model_fn, jax.tree_util.Partial):
        std = model_fn.keywords.get("std_rgb")
    if std is None:
        std = jnp.ones((3,), jnp.float32)
    if np.shape(std) not in ((), (3,)):
        raise ValueError(f"model_fn's std_rgb must be a scalar or f32[3], got {np.shape(std)}")
    mean = jnp.broadcast_to(jnp.asarray(baseline, jnp.float32).reshape(-1), (3,))
    return mean, jnp.broadcast_to(jnp.asarray(std, jnp.float32), (3,))


@functools.partial(jax.jit, static_argnames=("stage", "batch_size"))
def _precompute(model_fn, features_fn, images, targets, *, stage, batch_size):
    """Resolved targets and original features, image chunks split over all devices."""
    def rows(operands, indices, valid):
        model_fn, features_fn, images, targets = operands
        index = jnp.where(valid, indices, 0)  # padding rows recompute image 0 and are dropped
        x, target = images[index], targets[index]
        top1 = jnp.argmax(model_fn(x), axis=-1).astype(jnp.int32)
        return jnp.where(target < 0, top1, target), select_features(features_fn(x), stage)

    return sharding.sharded_item_map(rows, (model_fn, features_fn, images, targets),
                                     num_items=images.shape[0], chunk_size=batch_size)


def make_env_params(
    model_fn,
    features_fn,
    images,
    targets=None,
    *,
    grid: int = 7,
    mode: str = "deletion",
    substrate: str = "noise",
    mask_visited: bool = False,
    num_class_planes: int = 0,
    stage: str | None = None,
    baseline=None,
    batch_size: int = 32,
    fused_fn=None,
) -> EnvParams:
    """Validate and build :class:`EnvParams` (one network pass per image fills the caches).

    Args:
      model_fn: the black-box ``ModelFn`` (probabilities).
      features_fn: the frozen trunk: images ``f32[b, h, w, 3]`` in [0, 1] ->
        ``{stage: f32[b, ...]}`` or one array ``f32[b, ...]``.
      images: ``f32[n, h, w, 3]`` in [0, 1] (or one image ``f32[h, w, 3]``).
      targets: ``int[n]`` class per image, ``-1`` for the top-1 class of the original;
        default all -1.
      grid: patches per side ``k``; must divide ``h`` and ``w``.
      mode: ``"deletion"`` (default, as the code) or ``"insertion"``.
      substrate: ``"noise"`` (default, the code's) or ``"baseline"`` (the mean colour).
      mask_visited: forbid choosing a visited patch (off by default = the code).
      num_class_planes: 0 (per-image and class-specific agents) or the number of classes
        (dataset-wide agents: one-hot planes of the target in the observation).
      stage: the features stage; default the last one the function returns.
      baseline: the substrate's centre colour; default the model's ``mean_rgb`` (else zeros).
      batch_size: images per network call while filling the caches.
      fused_fn: optional ``images -> (scores, features)`` equal to ``(model_fn(x), features_fn(x))``
        in one network pass (when the encoder is the black box's trunk); training then costs one
        pass per step instead of two.

    Regimes (METHODS §3.3): per-image = one image; class-specific = images of one class with that
    class as a fixed target; dataset-wide = all images, targets = labels or -1, and
    ``num_class_planes = K``.
    """
    images = validation.check_image_batch(images)
    n, h, w, _ = images.shape
    grid = check_grid(grid, (h, w))
    check_mode(mode)
    check_substrate(substrate)
    model_fn = as_pytree_fn(model_fn)
    features_fn = as_pytree_fn(features_fn, "features_fn")
    num_classes = validation.num_classes_of(model_fn, images[0])
    if targets is None:
        targets = np.full((n,), -1, np.int32)
    targets = np.asarray(targets)
    if targets.shape != (n,) or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"targets must be int[{n}] (one per image, -1 = top-1), got "
                         f"{targets.dtype}{list(targets.shape)}")
    if np.any((targets < -1) | (targets >= num_classes)):
        raise ValueError(f"targets must lie in [-1, {num_classes}): the model has "
                         f"{num_classes} classes")
    if not isinstance(num_class_planes, int | np.integer) or num_class_planes < 0:
        raise ValueError(f"num_class_planes must be an int >= 0, got {num_class_planes!r}")
    if num_class_planes and num_class_planes < num_classes:
        raise ValueError(f"num_class_planes={num_class_planes} is smaller than the model's "
                         f"{num_classes} classes")
    validation.check_positive_int(batch_size, "batch_size")
    probe = jax.eval_shape(features_fn, jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32))
    if isinstance(probe, dict) and stage is not None and stage not in probe:
        raise ValueError(f"stage={stage!r} is not among features_fn's stages {list(probe)}")
    if fused_fn is not None:
        fused_fn = as_pytree_fn(fused_fn, "fused_fn")
        out = jax.eval_shape(fused_fn, jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32))
        if not (isinstance(out, tuple) and len(out) == 2 and out[0].shape == (1, num_classes)
                and select_features(out[1], stage).shape == select_features(probe, stage).shape):
            raise ValueError("fused_fn must return (model_fn(x), features_fn(x)) for images x")
    mean_rgb, std_rgb = substrate_colours(model_fn, baseline)
    model_fn, features_fn, images, targets, mean_rgb, std_rgb, fused_fn = sharding.replicate(
        (model_fn, features_fn, images, jnp.asarray(targets, jnp.int32), mean_rgb, std_rgb,
         fused_fn))
    targets, original_features = _precompute(
        model_fn, features_fn, images, targets, stage=stage, batch_size=batch_size,
    )
    blank_features = blank_image_features(features_fn, mean_rgb, (h, w), stage=stage,
                                          needed=mode == "insertion" and substrate == "baseline")
    return EnvParams(
        model_fn=model_fn, features_fn=features_fn, images=images, targets=targets,
        original_features=original_features, blank_features=blank_features, mean_rgb=mean_rgb,
        std_rgb=std_rgb, grid=grid, mode=mode, substrate=substrate,
        mask_visited=bool(mask_visited), num_class_planes=int(num_class_planes), stage=stage,
        fused_fn=fused_fn,
    )


@functools.partial(jax.jit, static_argnames=("image_hw", "stage", "needed"))
def blank_image_features(features_fn, mean_rgb, image_hw, *, stage, needed) -> jax.Array:
    """Features of the plain ``mean_rgb`` image (zeros of that shape when not ``needed``)."""
    blank = jnp.broadcast_to(mean_rgb, (1, *image_hw, 3))
    if needed:
        return select_features(features_fn(blank), stage)[0]
    shape = jax.eval_shape(lambda x: select_features(features_fn(x), stage), blank).shape
    return jnp.zeros(shape[1:], jnp.float32)


def patch_mask(visited, image_hw) -> jax.Array:
    """``bool[h, w]``: the pixels of the visited patches (``bool[k, k]`` repeated per pixel)."""
    k_h, k_w = visited.shape
    h, w = image_hw
    return jnp.repeat(jnp.repeat(visited, h // k_h, axis=0), w // k_w, axis=1)


def canvas(state: EnvState, params: EnvParams) -> jax.Array:
    """The current canvas ``f32[h, w, 3]``: insertion reveals, deletion removes visited patches."""
    image = params.images[state.index]
    done = patch_mask(state.visited, image.shape[:2])[..., None]
    if params.mode == "insertion":
        return jnp.where(done, image, state.substrate)
    return jnp.where(done, state.substrate, image)


def draw_substrate(key, params: EnvParams, image_hw) -> jax.Array:
    """The episode's substrate ``f32[h, w, 3]`` (pixel space; see the module doc)."""
    h, w = image_hw
    if params.substrate == "baseline":
        return jnp.broadcast_to(params.mean_rgb, (h, w, 3))
    u = jax.random.uniform(key, (h, w, 3), jnp.float32, -0.5, 0.5)
    return params.mean_rgb[None, None] + params.std_rgb[None, None] * u


def reset_state(key, params: EnvParams) -> EnvState:
    """A fresh episode's state (no network pass): a uniformly drawn image and a new substrate."""
    k_index, k_noise = jax.random.split(key)
    _, h, w, _ = params.images.shape
    index = jax.random.randint(k_index, (), 0, params.images.shape[0])
    return EnvState(
        index=index,
        visited=jnp.zeros((params.grid, params.grid), bool),
        substrate=draw_substrate(k_noise, params, (h, w)),
        t=jnp.zeros((), jnp.int32),
    )


def observe(state: EnvState, params: EnvParams) -> jax.Array:
    """The observation ``f32[*feature_shape[:-1], C]`` of a state: one trunk pass on the canvas.

    ``C = num_class_planes + c (+ c for insertion)``: ``[one_hot(target); f(canvas); f(original)]``.
    """
    return observation(_features(params, canvas(state, params)), state, params)


def _features(params: EnvParams, image) -> jax.Array:
    return select_features(params.features_fn(image[None]), params.stage)[0]


def first_canvas_features(state: EnvState, params: EnvParams) -> jax.Array:
    """``f(canvas)`` of a fresh episode: cached (deletion: the original; insertion on the
    baseline colour: the blank image), a trunk pass only for insertion on noise."""
    if params.mode == "deletion":
        return params.original_features[state.index]
    if params.substrate == "baseline":
        return params.blank_features
    return _features(params, canvas(state, params))


def observation(feats, state: EnvState, params: EnvParams) -> jax.Array:
    """Assemble the observation of ``state`` from its canvas's features ``feats``."""
    parts = [feats.astype(jnp.float32)]
    if params.mode == "insertion":
        parts.append(params.original_features[state.index].astype(jnp.float32))
    if params.num_class_planes:
        one_hot = jax.nn.one_hot(params.targets[state.index], params.num_class_planes)
        parts.insert(0, jnp.broadcast_to(one_hot, (*feats.shape[:-1], params.num_class_planes)))
    return jnp.concatenate(parts, axis=-1)


def observation_shape(params: EnvParams) -> tuple[int, ...]:
    """The static shape of one observation (no compute)."""
    state = jax.eval_shape(reset_state, jax.random.key(0), params)
    return tuple(jax.eval_shape(observe, state, params).shape)


@jax.jit
def reset(key, params: EnvParams) -> tuple[jax.Array, EnvState]:
    """``(obs, state)`` of a new episode."""
    state = reset_state(key, params)
    return observation(first_canvas_features(state, params), state, params), state


def action_mask(state: EnvState, params: EnvParams) -> jax.Array:
    """``bool[k²]``: the allowed actions (all, unless ``mask_visited``: the unvisited patches)."""
    if params.mask_visited:
        return ~state.visited.reshape(-1)
    return jnp.ones((params.num_actions,), bool)


@jax.jit
def step(key, state: EnvState, action, params: EnvParams):
    """Take patch ``action``; returns ``(obs, state, reward, done, info)`` with auto-reset.

    ``reward = ±p_target(canvas_t)``; ``done`` after exactly ``k²`` steps, when the returned
    ``obs``/``state`` are already those of the next episode (gymnax). ``info`` holds the score
    ``p_target(canvas_t)``, the image index and the step count ``t`` of the finished step.
    """
    k = params.grid
    visited = state.visited.reshape(-1).at[action].set(True).reshape(k, k)
    stepped = EnvState(state.index, visited, state.substrate, state.t + 1)
    image = canvas(stepped, params)[None]
    if params.fused_fn is None:
        scores, feats = params.model_fn(image), None
    else:
        scores, feats = params.fused_fn(image)
        feats = select_features(feats, params.stage)[0]
    score = scores[0, params.targets[state.index]]
    reward = score if params.mode == "insertion" else -score
    done = stepped.t >= params.episode_length
    fresh = reset_state(key, params)
    new_state = jax.tree.map(lambda a, b: jax.lax.select(done, a, b), fresh, stepped)
    if params.mode == "insertion" and params.substrate == "noise" and feats is None:
        feats = _features(params, canvas(new_state, params))  # the next canvas, whichever it is
    else:
        if feats is None:
            feats = _features(params, image[0])
        feats = jax.lax.select(done, first_canvas_features(fresh, params), feats)
    obs = observation(feats, new_state, params)
    info = {"score": score, "index": state.index, "t": stepped.t}
    return obs, new_state, reward, done, info


class Environment(NamedTuple):
    """A functional environment as the trainer sees it (static: hashable functions only).

    ``reset(key, params) -> (obs, state)``; ``step(key, state, action, params) ->
    (obs, state, reward, done, info)``; ``action_mask(state, params) -> bool[num_actions]``;
    ``num_actions(params) -> int`` (static).
    """

    reset: Any
    step: Any
    action_mask: Any
    num_actions: Any


def _num_actions(params: EnvParams) -> int:
    return params.num_actions


REXL = Environment(reset=reset, step=step, action_mask=action_mask, num_actions=_num_actions)
"""The RExL environment as an :class:`Environment` for :func:`saliency_jax.rl.make_train`."""
