"""The RL-CAM environment: grow (forward) and refine (reverse) a patch mask that localises a class.

RL-CAM (Sarkar et al., CVPRW 2023) is known only from its abstract (METHODS §4.1): a black-box
agent, using only the model's output probabilities, with a *forward* action that "identifies the
most sensitive region to generate a localization mask" and a *reverse* action that "fine-tunes
the localization mask". Everything below is the **proposed** design of METHODS §4.4, guided by
the same group's RLAB code (a per-patch sensitivity analysis, add/remove patches; §4.3).

**Grid.** The image is cut into ``k x k`` patches of ``(h/k, w/k)`` pixels (``k`` must divide both
sides); patch ``j`` sits at row ``j // k``, column ``j % k``; ``P = k²``. Defaults: ``k = 7``
(16-px patches at 112², the synthetic benchmark; 32-px patches at 224², RLAB's patch size).
A 14 x 14 grid quadruples the look-ahead and the action space (see *Cost*).

**Masking.** With the binary patch mask ``m`` up-sampled to pixels and the baseline ``b`` (the
model's mean colour, the default baseline):
``keep(m) = p_c(I⊙m + (1−m)·b)`` (only the mask shown) and
``remove(m) = p_c(I⊙(1−m) + m·b)`` (the mask hidden).

**Objective and reward.** ``F(m) = keep(m) − remove(m) − λ·|m|/P``: the mask should hold
evidence sufficient for the class (keep high: sufficiency), the rest of the image should not
(remove low: comprehensiveness), and it should be small (``λ >= 0``; ``|m|/P`` is the area
fraction, so ``λ`` is the probability a mask covering the whole image would have to gain).
The reward of a step is ``r_t = F(m_{t+1}) − F(m_t)``, so with ``γ = 1`` an episode's return is
``F(final mask) − F(∅)``: the agent maximises ``F`` of the mask it ends with, and the stop action
lets it keep a mask as soon as no change improves it.

**State and observation.** The state holds the mask, ``keep(m)``, ``remove(m)`` and ONE batched
look-ahead: ``keep(m ⊕ e_j)`` and ``remove(m ⊕ e_j)`` for every patch ``j`` (``⊕`` toggles patch
``j``), from which the per-patch sensitivity ``s_j = F(m ⊕ e_j) − F(m)`` follows exactly.

**Actions** (``2P + 1``): ``P`` *forward* actions, each adding one unselected patch, ``P``
*reverse* actions, each removing one selected patch, and *stop* (``a = 2P``). Forward actions on
selected patches and reverse actions on unselected ones are not allowed: :func:`action_mask`
gives the allowed set (stop always) and the policy masks its logits with it; a disallowed action
is a no-op with reward 0 that still costs a step. ``action_order`` says which patch an action
index means:

* ``"rank"`` (default): forward action ``k`` adds the unselected patch with the ``k``-th largest
  gain ``s_j`` (allowed for ``k < P − |m|``); reverse action ``P + k`` removes the selected patch
  with the ``k``-th largest ``s_j``, i.e. the ``k``-th cheapest removal (allowed for ``k < |m|``);
  ties by patch index. The forward action "identifies the most sensitive region" by its index
  and the policy decides how far down each list to go and when to stop: what it learns
  transfers across patch positions, which a flat MLP over positional actions must learn patch by
  patch. Measured on a toy (49 patches, a red square among distractors, PPO with 8 envs x 12
  steps x 40 updates): the ``"rank"`` agent's training return reached 90–100 % of the greedy
  policy's, the ``"patch"`` agent's 15–25 % (a linear policy: 45 %).
* ``"patch"``: forward action ``j`` adds patch ``j``, reverse action ``P + j`` removes it.

The observation is ``f32[5P + 3]``::

    [m (P, by position),  g (2P),  g / max|g| (2P),  keep(m),  remove(m),  t / T]

where ``g_a`` is the reward action ``a`` would get (``s`` of its patch; 0 where not allowed),
aligned with the action indices. (The scale-free copy of ``g`` is an addition: the gains are
small probability differences and their order is what a policy needs.)

**Episode.** Ends on stop or after ``T`` steps (the horizon, default ``P // 2``). Auto-reset by
a leaf-wise select to a fresh episode on a uniformly drawn image (gymnax). The reward of action
``a`` equals the sensitivity the agent observed for it (the environment is deterministic): the
new state's ``keep``/``remove`` are read from the look-ahead, not re-queried.

**Cost.** The look-ahead is ``2P`` model queries per step (each toggle changes both the kept and
the removed image), batched as ``lax.map(batch_size=...)``. A fresh episode's state
(``keep(∅) = p_c(b)``, ``remove(∅) = p_c(I)`` and the look-ahead of ``∅``) is computed once per
image by :func:`make_env_params` (``2 + 2P`` queries, like RExL's cached constants), so the
auto-reset branch, evaluated at every step by the select, queries nothing.

**Output observation** (``observation="output"``): what the abstract describes, the agent
"relies solely on the probability distribution of the model's output": no look-ahead. The state
holds the mask ``m``, the model's output ``p(x_m)`` (``f32[K]``) on the kept image
``x_m = I⊙m + (1−m)·b`` and ``t``; the objective is ``F_out(m) = p_c(x_m) − λ·|m|/P`` (one image a
step, so the removed image is not queried) and the reward ``ΔF_out``. Actions by position
(``action_order="patch"``). Observation ``f32[P + 2K + 2]``::

    [m (P),  p(x_m) (K),  onehot(c) (K),  p_c(x_m),  t / T]

A toggle queries ``x_{m'}`` (1 query), stop and no-ops none; ``p(x_∅) = p(b)`` is the same for
every image and cached, so an explanation costs at most ``1 + T`` queries. The state also
records per patch the change of ``p_c`` seen at its last toggle (``credit``, 0 if never; not
observed): it orders the saliency map inside and outside the final mask.
:data:`RLCAM_OUTPUT` bundles this environment.

Functional contract (gymnax): ``reset(key, params) -> (obs, state)``,
``step(key, state, action, params) -> (obs, state, reward, done, info)``; batch with
``jax.vmap``. :data:`RLCAM` bundles them for :func:`saliency_jax.rl.make_train`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from saliency_jax._src import baselines, sharding, validation
from saliency_jax._src.model_fn import as_pytree_fn
from saliency_jax._src.rexl_env import Environment, check_grid, patch_mask

_EPS = 1e-6
ACTION_ORDERS = ("rank", "patch")
OBSERVATIONS = ("lookahead", "output")


@dataclasses.dataclass(frozen=True)
class RlcamConfig:
    """RL-CAM settings (hashable). An agent is tied to ``grid`` and its layers, and was trained
    with one ``horizon`` and ``size_penalty``.

    Attributes:
      grid: patches per side ``k`` (``P = k²``); must divide the image sides.
      horizon: the most steps ``T`` of an episode; ``None`` means ``P // 2`` (at least 1).
      size_penalty: ``λ >= 0`` in ``F(m) = keep − remove − λ·|m|/P`` (traced where used).
      action_order: ``"rank"`` (actions index candidates by their gain) or ``"patch"`` (by
        position); see the module doc. ``None``: ``"rank"`` with the look-ahead, ``"patch"``
        with ``observation="output"`` (which has no gains to rank by).
      observation: ``"lookahead"`` (the exact gain of every action, ``2P`` queries a step) or
        ``"output"`` (the abstract's: the model's output distribution on the current masked
        image, the mask and the step; one query a step; *Output observation* below).
      num_classes: ``K``, the classifier's classes: the ``"output"`` observation's size
        depends on it (required there, unused by the look-ahead).
      batch_size: images per model call in the look-ahead (``2P`` images per step).
      pi_layers, vf_layers: the actor-critic's hidden widths.
    """

    grid: int = 7
    horizon: int | None = None
    size_penalty: float = 1.0
    action_order: str | None = None
    batch_size: int = 128
    pi_layers: tuple[int, ...] = (256, 128)
    vf_layers: tuple[int, ...] = (256, 128)
    observation: str = "lookahead"
    num_classes: int | None = None

    def __post_init__(self):
        validation.check_positive_int(self.grid, "grid")
        if self.horizon is not None:
            validation.check_positive_int(self.horizon, "horizon")
        try:
            penalty = float(self.size_penalty)
        except (TypeError, ValueError):
            raise ValueError(f"size_penalty must be a number >= 0, got {self.size_penalty!r}"
                             ) from None
        if not (math.isfinite(penalty) and penalty >= 0):
            raise ValueError(f"size_penalty must be a finite number >= 0, got {penalty!r}")
        object.__setattr__(self, "size_penalty", penalty)
        if self.observation not in OBSERVATIONS:
            raise ValueError(f"observation must be one of {OBSERVATIONS}, got "
                             f"{self.observation!r}")
        output = self.observation == "output"
        if self.action_order is None:
            object.__setattr__(self, "action_order", "patch" if output else "rank")
        if self.action_order not in ACTION_ORDERS:
            raise ValueError(f"action_order must be one of {ACTION_ORDERS}, got "
                             f"{self.action_order!r}")
        if output and self.action_order != "patch":
            raise ValueError("action_order must be 'patch' with observation='output' (no "
                             f"look-ahead gains to rank by), got {self.action_order!r}")
        if output:
            if self.num_classes is None:
                raise ValueError("num_classes (the classifier's K) is required with "
                                 "observation='output': the observation holds K probabilities")
            validation.check_positive_int(self.num_classes, "num_classes")
        validation.check_positive_int(self.batch_size, "batch_size")
        object.__setattr__(self, "pi_layers", tuple(int(n) for n in self.pi_layers))
        object.__setattr__(self, "vf_layers", tuple(int(n) for n in self.vf_layers))

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @property
    def num_actions(self) -> int:
        """``2P + 1``: forward per patch, reverse per patch, stop."""
        return 2 * self.num_patches + 1

    @property
    def stop_action(self) -> int:
        return 2 * self.num_patches

    @property
    def steps(self) -> int:
        """The horizon ``T`` with the default resolved."""
        return self.horizon if self.horizon is not None else max(1, self.num_patches // 2)

    @property
    def observation_size(self) -> int:
        """``5P + 3`` (look-ahead) or ``P + 2K + 2`` (output)."""
        if self.observation == "output":
            return self.num_patches + 2 * self.num_classes + 2
        return 5 * self.num_patches + 3

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RlcamConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v)
                      for k, v in d.items() if k in fields})


class EnvState(NamedTuple):
    """One episode's state (all arrays; shapes static)."""

    index: jax.Array  # i32[]: the image in params.images
    mask: jax.Array  # bool[P]: the selected patches
    keep: jax.Array  # f32[]: keep(m)
    remove: jax.Array  # f32[]: remove(m)
    look_keep: jax.Array  # f32[P]: keep(m ⊕ e_j)
    look_remove: jax.Array  # f32[P]: remove(m ⊕ e_j)
    t: jax.Array  # i32[]: steps taken


@struct.dataclass
class EnvParams:
    """What the environment reads. Build it with :func:`make_env_params`.

    Attributes:
      model_fn: the black box (a ``Partial``), ``f32[b, h, w, 3] -> f32[b, K]`` probabilities.
      images: ``f32[n, h, w, 3]`` in [0, 1]; targets: ``i32[n]`` (resolved).
      baseline: ``f32[h, w, 3]``: what a masked pixel becomes.
      size_penalty: ``f32[]``: ``λ``.
      init_keep, init_remove: ``f32[n]``: ``keep(∅)``, ``remove(∅)`` per image.
      init_look_keep, init_look_remove: ``f32[n, P]``: the look-ahead of ``∅`` per image.
      grid, horizon, batch_size, action_order: static (``horizon`` resolved).
    """

    model_fn: Any
    images: jax.Array
    targets: jax.Array
    baseline: jax.Array
    size_penalty: jax.Array
    init_keep: jax.Array
    init_remove: jax.Array
    init_look_keep: jax.Array
    init_look_remove: jax.Array
    grid: int = struct.field(pytree_node=False, default=7)
    horizon: int = struct.field(pytree_node=False, default=24)
    batch_size: int = struct.field(pytree_node=False, default=128)
    action_order: str = struct.field(pytree_node=False, default="rank")

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @property
    def num_actions(self) -> int:
        return 2 * self.num_patches + 1


# ---------------------------------------------------------------------------------------------
# Pure pieces (one image), shared by the environment and the explainers


def objective(keep, remove, size, size_penalty, num_patches: int) -> jax.Array:
    """``F = keep − remove − λ·size/P``."""
    return keep - remove - size_penalty * (jnp.asarray(size, jnp.float32) / num_patches)


def pixel_mask(mask, grid: int, image_hw) -> jax.Array:
    """``bool[h, w]``: the pixels of the patches in ``mask`` (``bool[P]``)."""
    return patch_mask(mask.reshape(grid, grid), image_hw)


def masked_pair(model_fn, image, baseline, target, mask, *, grid: int):
    """``(keep(m), remove(m))`` with two model queries (one call of a batch of 2)."""
    shown = pixel_mask(mask, grid, image.shape[:2])[..., None]
    x = jnp.stack([jnp.where(shown, image, baseline), jnp.where(shown, baseline, image)])
    p = model_fn(x)[:, target]
    return p[0], p[1]


def lookahead(model_fn, image, baseline, target, mask, *, grid: int, batch_size: int):
    """The batched one-step look-ahead: ``(keep(m ⊕ e_j), remove(m ⊕ e_j))``, ``f32[P]`` each.

    ``2P`` model queries in calls of ``batch_size`` images: item ``i < P`` is the kept image of
    toggle ``i``, item ``P + i`` its removed image. Only one call's images exist at a time per
    device; the calls are split over all devices (:func:`saliency_jax.sharding.sharded_item_map`).
    """
    p = grid * grid
    h, w = image.shape[:2]

    def chunk_scores(operands, indices, valid):
        model_fn, image, baseline, target, mask = operands

        def toggled_image(i):
            toggled = mask ^ (jnp.arange(p) == i % p)
            shown = pixel_mask(toggled, grid, (h, w))[..., None] == (i < p)
            return jnp.where(shown, image, baseline)

        scores = model_fn(jax.vmap(toggled_image)(indices))[:, target]
        return jnp.where(valid, scores, 0.0)

    scores = sharding.sharded_item_map(chunk_scores, (model_fn, image, baseline, target, mask),
                                       num_items=2 * p, chunk_size=batch_size)
    return scores[:p], scores[p:]


def sensitivity(state: EnvState, size_penalty, num_patches: int) -> jax.Array:
    """``s_j = F(m ⊕ e_j) − F(m)``, ``f32[P]``: the objective's change from toggling patch ``j``."""
    size = jnp.sum(state.mask)
    toggled_size = size + jnp.where(state.mask, -1, 1)
    now = objective(state.keep, state.remove, size, size_penalty, num_patches)
    return objective(state.look_keep, state.look_remove, toggled_size, size_penalty,
                     num_patches) - now


def initial_state(model_fn, image, baseline, target, *, grid: int, batch_size: int,
                  index=0) -> EnvState:
    """The state of the empty mask: ``2 + 2P`` queries."""
    mask = jnp.zeros((grid * grid,), bool)
    keep, remove = masked_pair(model_fn, image, baseline, target, mask, grid=grid)
    look_keep, look_remove = lookahead(model_fn, image, baseline, target, mask, grid=grid,
                                       batch_size=batch_size)
    return EnvState(jnp.asarray(index, jnp.int32), mask, keep, remove, look_keep, look_remove,
                    jnp.zeros((), jnp.int32))


class Candidates(NamedTuple):
    """What each action index means in a state."""

    patch_action: jax.Array  # i32[2P + 1]: j (add patch j), P + j (remove patch j) or 2P (stop)
    valid: jax.Array  # bool[2P + 1]: the allowed actions
    gains: jax.Array  # f32[2P]: the reward of each forward/reverse action (0 where not allowed)


def candidates(state: EnvState, size_penalty, action_order: str) -> Candidates:
    """The actions of ``state`` under ``action_order`` (``"rank"`` or ``"patch"``; module doc)."""
    mask = state.mask
    p = mask.shape[0]
    s = sensitivity(state, size_penalty, p)
    stop = jnp.full((1,), 2 * p, jnp.int32)
    if action_order == "patch":
        valid = jnp.concatenate([~mask, mask])
        patch_action = jnp.arange(2 * p + 1, dtype=jnp.int32)
        gains = jnp.concatenate([s, s])
    else:
        # stable sorts: allowed patches by decreasing gain, then the others
        forward = jnp.argsort(jnp.where(mask, jnp.inf, -s)).astype(jnp.int32)
        reverse = jnp.argsort(jnp.where(mask, -s, jnp.inf)).astype(jnp.int32)
        size = jnp.sum(mask)
        ranks = jnp.arange(p)
        valid = jnp.concatenate([ranks < p - size, ranks < size])
        patch_action = jnp.concatenate([forward, p + reverse, stop])
        gains = jnp.concatenate([s[forward], s[reverse]])
    gains = jnp.where(valid, gains, 0.0)
    return Candidates(patch_action, jnp.concatenate([valid, jnp.ones((1,), bool)]), gains)


def observation(state: EnvState, size_penalty, horizon: int, action_order: str) -> jax.Array:
    """``f32[5P + 3]``: ``[m, g, g / max|g|, keep, remove, t / T]`` (module doc)."""
    g = candidates(state, size_penalty, action_order).gains
    scale = jnp.maximum(jnp.max(jnp.abs(g)), _EPS)
    scalars = jnp.stack([state.keep, state.remove, state.t / jnp.float32(horizon)])
    return jnp.concatenate([state.mask.astype(jnp.float32), g, g / scale,
                            scalars.astype(jnp.float32)])


def apply_action(state: EnvState, action, size_penalty) -> tuple[EnvState, jax.Array]:
    """The mask after the patch-indexed ``action`` and the reward ``F(m') − F(m)``; no query.

    ``action``: ``j`` adds patch ``j``, ``P + j`` removes it, ``2P`` stops
    (:attr:`Candidates.patch_action` translates a policy's action).
    The new ``keep``/``remove`` are the look-ahead's values for the toggled patch. The returned
    state's look-ahead is stale (still that of ``m``): :func:`refresh` it unless the episode ends.
    """
    p = state.mask.shape[0]
    j = action % p
    forward, stop = action < p, action == 2 * p
    changes = (~stop) & (state.mask[j] != forward)  # a valid toggle
    mask = state.mask.at[j].set(jnp.where(changes, forward, state.mask[j]))
    keep = jnp.where(changes, state.look_keep[j], state.keep)
    remove = jnp.where(changes, state.look_remove[j], state.remove)
    before = objective(state.keep, state.remove, jnp.sum(state.mask), size_penalty, p)
    after = objective(keep, remove, jnp.sum(mask), size_penalty, p)
    new = EnvState(state.index, mask, keep, remove, state.look_keep, state.look_remove,
                   state.t + 1)
    return new, after - before


def refresh(model_fn, image, baseline, target, state: EnvState, *, grid: int,
            batch_size: int) -> EnvState:
    """``state`` with the look-ahead of its mask recomputed (``2P`` queries)."""
    look_keep, look_remove = lookahead(model_fn, image, baseline, target, state.mask, grid=grid,
                                       batch_size=batch_size)
    return state._replace(look_keep=look_keep, look_remove=look_remove)


# ---------------------------------------------------------------------------------------------
# Environment


@functools.partial(jax.jit, static_argnames=("grid", "batch_size"))
def _precompute(model_fn, images, targets, baseline, *, grid, batch_size):
    def one(args):
        image, target = args
        target = jnp.where(target < 0, jnp.argmax(model_fn(image[None])[0]).astype(jnp.int32),
                           target)
        state = initial_state(model_fn, image, baseline, target, grid=grid, batch_size=batch_size)
        return target, state.keep, state.remove, state.look_keep, state.look_remove

    return jax.lax.map(one, (images, targets))


def make_env_params(model_fn, images, targets=None, *, config: RlcamConfig = RlcamConfig(),
                    baseline=None) -> EnvParams | OutputEnvParams:
    """Validate and build :class:`EnvParams` (``2 + 2P`` queries per image fill the caches), or
    :class:`OutputEnvParams` for ``config.observation == "output"`` (one query: ``p(b)``).

    Args:
      model_fn: the black-box ``ModelFn`` (probabilities).
      images: ``f32[n, h, w, 3]`` in [0, 1] (or one image ``f32[h, w, 3]``).
      targets: ``int[n]``, the class per image; ``-1`` (the default) for the top-1 class.
      config: :class:`RlcamConfig`: grid, horizon, λ, batch size.
      baseline: the masking baseline (default the model's ``mean_rgb``, else zeros).
    """
    if not isinstance(config, RlcamConfig):
        raise ValueError(f"config must be an RlcamConfig, got {type(config).__name__}")
    images = validation.check_image_batch(images)
    n, h, w, _ = images.shape
    check_grid(config.grid, (h, w))
    model_fn = as_pytree_fn(model_fn)
    num_classes = validation.num_classes_of(model_fn, images[0])
    targets = np.full((n,), -1, np.int32) if targets is None else np.asarray(targets)
    if targets.shape != (n,) or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"targets must be int[{n}] (one per image, -1 = top-1), got "
                         f"{targets.dtype}{list(targets.shape)}")
    if np.any((targets < -1) | (targets >= num_classes)):
        raise ValueError(f"targets must lie in [-1, {num_classes}): the model has "
                         f"{num_classes} classes")
    baseline = baselines.resolve_baseline(model_fn, images[0], baseline)
    model_fn, images, targets, baseline = sharding.replicate(
        (model_fn, images, jnp.asarray(targets, jnp.int32), baseline))
    if config.observation == "output":
        if num_classes != config.num_classes:
            raise ValueError(f"config.num_classes must equal the model's classes "
                             f"({num_classes}), got {config.num_classes}")
        targets, init_probs = _precompute_output(model_fn, images, targets, baseline)
        return OutputEnvParams(
            model_fn=model_fn, images=images, targets=targets, baseline=baseline,
            size_penalty=jnp.float32(config.size_penalty), init_probs=init_probs,
            grid=config.grid, horizon=config.steps)
    targets, keep, remove, look_keep, look_remove = _precompute(
        model_fn, images, targets, baseline, grid=config.grid, batch_size=config.batch_size)
    return EnvParams(
        model_fn=model_fn, images=images, targets=targets, baseline=baseline,
        size_penalty=jnp.float32(config.size_penalty), init_keep=keep, init_remove=remove,
        init_look_keep=look_keep, init_look_remove=look_remove, grid=config.grid,
        horizon=config.steps, batch_size=config.batch_size, action_order=config.action_order,
    )


def reset_state(key, params: EnvParams) -> EnvState:
    """A fresh episode on a uniformly drawn image, from the caches (no model query)."""
    i = jax.random.randint(key, (), 0, params.images.shape[0])
    return EnvState(i, jnp.zeros((params.num_patches,), bool), params.init_keep[i],
                    params.init_remove[i], params.init_look_keep[i], params.init_look_remove[i],
                    jnp.zeros((), jnp.int32))


def observe(state: EnvState, params: EnvParams) -> jax.Array:
    return observation(state, params.size_penalty, params.horizon, params.action_order)


@jax.jit
def reset(key, params: EnvParams) -> tuple[jax.Array, EnvState]:
    """``(obs, state)`` of a new episode."""
    state = reset_state(key, params)
    return observe(state, params), state


def action_mask(state: EnvState, params: EnvParams) -> jax.Array:
    """``bool[2P + 1]``: the allowed actions (:func:`candidates`)."""
    return candidates(state, params.size_penalty, params.action_order).valid


@jax.jit
def step(key, state: EnvState, action, params: EnvParams):
    """Take ``action``; ``(obs, state, reward, done, info)`` with auto-reset (module doc).

    ``info``: ``patch_action`` (what ``action`` meant: ``j``/``P + j``/``2P``), ``objective``
    ``F`` of the mask after the step, ``size`` ``|m|``, ``index``, ``t`` (of the finished step)
    and ``action_mask`` of the returned state.
    """
    i = state.index
    image, target = params.images[i], params.targets[i]
    patch_action = candidates(state, params.size_penalty, params.action_order).patch_action
    stepped, reward = apply_action(state, patch_action[action], params.size_penalty)
    stepped = refresh(params.model_fn, image, params.baseline, target, stepped, grid=params.grid,
                      batch_size=params.batch_size)
    done = (action == 2 * params.num_patches) | (stepped.t >= params.horizon)
    fresh = reset_state(key, params)
    new_state = jax.tree.map(lambda a, b: jax.lax.select(done, a, b), fresh, stepped)
    size = jnp.sum(stepped.mask)
    info = {
        "patch_action": patch_action[action],
        "objective": objective(stepped.keep, stepped.remove, size, params.size_penalty,
                               params.num_patches),
        "size": size, "index": i, "t": stepped.t,
        "action_mask": action_mask(new_state, params),
    }
    return observe(new_state, params), new_state, reward, done, info


def _num_actions(params: EnvParams) -> int:
    return params.num_actions


RLCAM = Environment(reset=reset, step=step, action_mask=action_mask, num_actions=_num_actions)
"""The RL-CAM environment as an :class:`saliency_jax.rl.Environment` for PPO."""


def env_description(params: EnvParams) -> dict:
    """The static settings an agent trained on ``params`` is tied to (JSON-serialisable)."""
    return {
        "env": "rlcam",
        "grid": params.grid,
        "horizon": params.horizon,
        "size_penalty": float(params.size_penalty),
        "batch_size": params.batch_size,
        "action_order": params.action_order,
        "image_hw": list(params.images.shape[1:3]),
        "num_images": int(params.images.shape[0]),
        "observation_size": 5 * params.num_patches + 3,
        "num_actions": params.num_actions,
    }


# ---------------------------------------------------------------------------------------------
# Output observation (the abstract's): one query a step, no look-ahead (module doc)


class OutputState(NamedTuple):
    """One episode's state under the output observation."""

    index: jax.Array  # i32[]
    mask: jax.Array  # bool[P]
    probs: jax.Array  # f32[K]: p(x_m)
    credit: jax.Array  # f32[P]: p_c(with j) − p_c(without j) at j's last toggle
    t: jax.Array  # i32[]


@struct.dataclass
class OutputEnvParams:
    """What the output-observation environment reads (:func:`make_env_params`).

    Attributes:
      model_fn, images, targets, baseline, size_penalty: as :class:`EnvParams`.
      init_probs: ``f32[K]``: ``p(b)``, the output on the empty mask (any image).
      grid, horizon: static.
    """

    model_fn: Any
    images: jax.Array
    targets: jax.Array
    baseline: jax.Array
    size_penalty: jax.Array
    init_probs: jax.Array
    grid: int = struct.field(pytree_node=False, default=7)
    horizon: int = struct.field(pytree_node=False, default=24)

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @property
    def num_actions(self) -> int:
        return 2 * self.num_patches + 1


@jax.jit
def _precompute_output(model_fn, images, targets, baseline):
    def one(args):
        image, target = args
        return jnp.where(target < 0, jnp.argmax(model_fn(image[None])[0]).astype(jnp.int32),
                         target)

    return jax.lax.map(one, (images, targets)), model_fn(baseline[None])[0]


def kept_image(image, baseline, mask, *, grid: int) -> jax.Array:
    """``x_m = I⊙m + (1−m)·b``, ``f32[h, w, 3]``."""
    return jnp.where(pixel_mask(mask, grid, image.shape[:2])[..., None], image, baseline)


def output_initial_state(init_probs, num_patches: int, index=0) -> OutputState:
    """The empty mask's state (``init_probs = p(b)``: 1 query, made by the caller)."""
    return OutputState(jnp.asarray(index, jnp.int32), jnp.zeros((num_patches,), bool),
                       jnp.asarray(init_probs, jnp.float32),
                       jnp.zeros((num_patches,), jnp.float32), jnp.zeros((), jnp.int32))


def output_observation(state: OutputState, target, horizon: int) -> jax.Array:
    """``f32[P + 2K + 2]``: ``[m, p(x_m), onehot(c), p_c(x_m), t / T]``."""
    k = state.probs.shape[0]
    scalars = jnp.stack([state.probs[target], state.t / jnp.float32(horizon)])
    return jnp.concatenate([state.mask.astype(jnp.float32), state.probs,
                            jax.nn.one_hot(target, k, dtype=jnp.float32),
                            scalars.astype(jnp.float32)])


def output_action_mask(state: OutputState) -> jax.Array:
    """``bool[2P + 1]``: add an unselected patch, remove a selected one, or stop."""
    return jnp.concatenate([~state.mask, state.mask, jnp.ones((1,), bool)])


def output_toggle(state: OutputState, action):
    """``(changes, mask')``: whether the patch-indexed ``action`` toggles a patch, and the mask."""
    p = state.mask.shape[0]
    j = action % p
    forward = action < p
    changes = (action != 2 * p) & (state.mask[j] != forward)
    return changes, state.mask.at[j].set(jnp.where(changes, forward, state.mask[j]))


def output_apply(state: OutputState, action, new_probs, target, size_penalty):
    """The state after ``action`` given ``new_probs = p(x_{m'})`` and the reward ``ΔF_out``."""
    p = state.mask.shape[0]
    j = action % p
    changes, mask = output_toggle(state, action)
    probs = jnp.where(changes, new_probs, state.probs)
    delta = probs[target] - state.probs[target]
    credit = state.credit.at[j].set(
        jnp.where(changes, jnp.where(action < p, delta, -delta), state.credit[j]))
    before = output_objective(state, target, size_penalty)
    new = OutputState(state.index, mask, probs, credit, state.t + 1)
    return new, output_objective(new, target, size_penalty) - before


def output_objective(state: OutputState, target, size_penalty) -> jax.Array:
    """``F_out = p_c(x_m) − λ·|m|/P``."""
    p = state.mask.shape[0]
    return state.probs[target] - size_penalty * (jnp.sum(state.mask) / jnp.float32(p))


def output_reset_state(key, params: OutputEnvParams) -> OutputState:
    i = jax.random.randint(key, (), 0, params.images.shape[0])
    return output_initial_state(params.init_probs, params.num_patches, i)


@jax.jit
def output_reset(key, params: OutputEnvParams):
    """``(obs, state)`` of a new episode (no query)."""
    state = output_reset_state(key, params)
    return output_observation(state, params.targets[state.index], params.horizon), state


def _output_action_mask(state: OutputState, params: OutputEnvParams) -> jax.Array:
    return output_action_mask(state)


@jax.jit
def output_step(key, state: OutputState, action, params: OutputEnvParams):
    """Take ``action`` (1 query: ``p(x_{m'})``); ``(obs, state, reward, done, info)``, auto-reset.

    ``info``: ``objective`` ``F_out`` after the step, ``size``, ``index``, ``t``, ``action_mask``
    and ``queries`` (1 for a toggle, else 0).
    """
    i = state.index
    image, target = params.images[i], params.targets[i]
    changes, mask = output_toggle(state, action)
    new_probs = params.model_fn(kept_image(image, params.baseline, mask, grid=params.grid)[None])[0]
    stepped, reward = output_apply(state, action, new_probs, target, params.size_penalty)
    done = (action == 2 * params.num_patches) | (stepped.t >= params.horizon)
    fresh = output_reset_state(key, params)
    new_state = jax.tree.map(lambda a, b: jax.lax.select(done, a, b), fresh, stepped)
    info = {
        "objective": output_objective(stepped, target, params.size_penalty),
        "size": jnp.sum(stepped.mask), "index": i, "t": stepped.t,
        "action_mask": output_action_mask(new_state),
        "queries": changes.astype(jnp.int32),
    }
    obs = output_observation(new_state, params.targets[new_state.index], params.horizon)
    return obs, new_state, reward, done, info


RLCAM_OUTPUT = Environment(reset=output_reset, step=output_step,
                           action_mask=_output_action_mask, num_actions=_num_actions)
"""RL-CAM with the output observation as an :class:`saliency_jax.rl.Environment` for PPO."""


def output_env_description(params: OutputEnvParams) -> dict:
    """The static settings an output-observation agent is tied to (JSON-serialisable)."""
    p, k = params.num_patches, int(params.init_probs.shape[0])
    return {
        "env": "rlcam", "observation": "output", "grid": params.grid,
        "horizon": params.horizon, "size_penalty": float(params.size_penalty),
        "action_order": "patch", "image_hw": list(params.images.shape[1:3]),
        "num_images": int(params.images.shape[0]), "num_classes": k,
        "observation_size": p + 2 * k + 2, "num_actions": params.num_actions,
    }
