"""RL-CAM: a localisation mask built by an agent that adds (forward) and removes (reverse) patches.

Sarkar et al., CVPRW 2023 (SAIAD), known from its abstract only (METHODS §4): a black-box agent,
using only the model's output probabilities, with a forward action that finds the most sensitive
region and a reverse action that fine-tunes the localisation mask. This is the **proposed**
reimplementation of METHODS §4.4 (label results "RL-CAM-style"); the MDP is documented in
:mod:`saliency_jax._src.rlcam_env`: a ``k x k`` patch mask ``m``, objective
``F(m) = p_c(I⊙m + (1−m)b) − p_c(I⊙(1−m) + m·b) − λ|m|/P``, reward ``ΔF``, and an observation
holding the exact sensitivity ``s_j = F(m ⊕ e_j) − F(m)`` of every patch from one batched
look-ahead.

Inference plays one episode from the empty mask: at each step the policy (a trained PPO
actor-critic, argmax or sampled, masked to the valid actions) picks forward/reverse/stop; the
episode ends on stop or after ``T`` steps (a ``lax.scan`` whose steps after the stop are
skipped: stopping early saves queries, and the episode is differentiable in reverse mode).

Outputs of one episode (:class:`RlcamResult`):

* **mask**: the final patch mask, up-sampled to pixels by repetition (``bool[h, w]``): the
  localisation mask that the segmentation metrics (IoU/F1/precision/recall) score directly.
* **saliency**: each patch's *leave-one-out credit in the final mask*,
  ``c_j = G(m ∪ {j}) − G(m \\ {j})`` with ``G = keep − remove`` (the objective without its size
  term, which shifts all cells alike): how much the evidence score depends on patch ``j`` given
  the rest of the mask, positive for patches the mask needs, and for an unselected patch what
  adding it would gain. It is read from the last look-ahead, which the episode has computed
  anyway (``c_j = ±s_j + λ/P``), then up-sampled with the mirror-bilinear matrix
  (:func:`saliency_jax.masks.mirror_bilinear_resize`). Unlike an inclusion-order map it ranks all
  ``P`` cells, so deletion/insertion curves have no tied plateau.

:func:`rlcam_greedy` is the same MDP without learning (the look-ahead policy of RLAB, METHODS
§4.3): take the valid toggle with the largest ``ΔF`` (forward = the most sensitive unselected
patch; reverse = the selected patch whose removal costs least, when that improves ``F``); stop
when no toggle improves ``F`` or at the horizon.

``RlcamConfig(observation="output")`` is the variant with the abstract's observation (the
model's output distribution on the current masked image, the mask and the step; no look-ahead;
:mod:`saliency_jax._src.rlcam_env`): one query for ``p(b)``, then one per toggle, at most
``1 + T``. Its map ranks the final mask's cells above all others and, within each group, the
cells by the change of ``p_c`` observed at their last toggle (untried cells 0), up-sampled alike.

Cost per explanation (:func:`rlcam_num_queries`): ``2 + 2P`` for the empty mask's state and
look-ahead, then ``2P`` per forward/reverse step; at most ``2 + 2P(T + 1)`` (1276 for ``k = 7``,
``T = 12``), fewer when the policy stops. :attr:`RlcamResult.num_queries` counts them.
"""

from __future__ import annotations

import functools
import json
import pathlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax._src import baselines, batching, masks, sharding, validation
from saliency_jax._src import rlcam_env as env
from saliency_jax._src.model_fn import ModelFn, as_pytree_fn
from saliency_jax._src.rexl_env import check_grid
from saliency_jax._src.rl import networks
from saliency_jax._src.rlcam_env import RlcamConfig

__all__ = [
    "RlcamConfig",
    "RlcamResult",
    "check_agent_params",
    "init_agent",
    "load_rlcam_agent",
    "rlcam",
    "rlcam_explain",
    "rlcam_greedy",
    "rlcam_greedy_explain",
    "rlcam_mask",
    "rlcam_num_queries",
    "train_rlcam",
]


class RlcamResult(NamedTuple):
    """One RL-CAM episode.

    Attributes:
      saliency: ``f32[h, w]``: the credit map up-sampled (module doc).
      mask: ``bool[h, w]``: the final localisation mask.
      grid_mask: ``bool[k, k]``; credit: ``f32[k, k]``: the same on the patch grid.
      objective: ``f32[]``: ``F`` of the final mask.
      steps: ``i32[]``: actions taken (the stop action included).
      num_queries: ``i32[]``: black-box images evaluated.
    """

    saliency: jax.Array
    mask: jax.Array
    grid_mask: jax.Array
    credit: jax.Array
    objective: jax.Array
    steps: jax.Array
    num_queries: jax.Array


def rlcam_num_queries(config: RlcamConfig = RlcamConfig()) -> int:
    """The most black-box queries of one explanation: ``2 + 2P(T + 1)`` with the look-ahead,
    ``1 + T`` with ``observation="output"`` (module doc)."""
    if config.observation == "output":
        return 1 + config.steps
    p = config.num_patches
    return 2 + 2 * p * (config.steps + 1)


def _network(config: RlcamConfig) -> networks.ActorCritic:
    return networks.ActorCritic(config.num_actions, config.pi_layers, config.vf_layers)


def init_agent(key, config: RlcamConfig = RlcamConfig()) -> dict:
    """Randomly initialised actor-critic parameters for ``config`` (an untrained agent)."""
    return jax.jit(_network(config).init)(
        key, jnp.zeros((config.observation_size,), jnp.float32),
        jnp.ones((config.num_actions,), bool))


def check_agent_params(agent_params, config: RlcamConfig) -> None:
    """``agent_params`` must be an actor-critic for ``config``'s grid and layers."""
    expected = jax.eval_shape(_network(config).init, jax.random.key(0),
                              jax.ShapeDtypeStruct((config.observation_size,), jnp.float32),
                              jax.ShapeDtypeStruct((config.num_actions,), bool))
    shapes = lambda tree: jax.tree.map(lambda x: tuple(np.shape(x)), tree)  # noqa: E731
    try:
        same = (jax.tree.structure(expected) == jax.tree.structure(agent_params)
                and shapes(expected) == shapes(agent_params))
    except Exception:  # noqa: BLE001 - anything that is not a matching pytree
        same = False
    if not same:
        raise ValueError(
            f"agent_params do not fit this config: expected an ActorCritic for grid={config.grid} "
            f"({config.observation_size} inputs, {config.num_actions} actions) with layers "
            f"pi={config.pi_layers}, vf={config.vf_layers}; expected {shapes(expected)}, got "
            f"{shapes(agent_params)} (an agent trained for another grid?)"
        )


def _credit(state: env.EnvState, size_penalty, num_patches: int) -> jax.Array:
    s = env.sensitivity(state, size_penalty, num_patches)
    return jnp.where(state.mask, -s, s) + size_penalty / num_patches


@functools.partial(jax.jit, static_argnames=("grid", "horizon", "batch_size", "action_order",
                                             "layers"))
def _episode(key, model_fn, image, target, baseline, size_penalty, agent_params, deterministic,
             *, grid, horizon, batch_size, action_order, layers):
    """One episode from the empty mask; ``layers=None`` plays the greedy look-ahead policy."""
    h, w, _ = image.shape
    network = None if layers is None else networks.ActorCritic(2 * grid * grid + 1, *layers)
    p = grid * grid
    stop = 2 * p
    look = functools.partial(env.refresh, grid=grid, batch_size=batch_size)
    state0 = env.initial_state(model_fn, image, baseline, target, grid=grid,
                               batch_size=batch_size)

    def _policy(state, t, key, size_penalty, agent_params, deterministic):
        """The patch-indexed action (j, P + j or stop = 2P)."""
        if network is None:
            c = env.candidates(state, size_penalty, "patch")
            gains = jnp.where(c.valid[:stop], c.gains, -jnp.inf)
            best = jnp.argmax(gains)
            return jnp.where(gains[best] > 0, best, stop).astype(jnp.int32)
        c = env.candidates(state, size_penalty, action_order)
        obs = env.observation(state, size_penalty, horizon, action_order)
        logits, _ = network.apply(agent_params, obs, c.valid)
        sampled = jax.random.categorical(jax.random.fold_in(key, t), logits)
        return c.patch_action[jnp.where(deterministic, jnp.argmax(logits), sampled)]

    def _body(carry, args):
        state, _, queries = carry
        key, model_fn, image, target, baseline, size_penalty, agent_params, deterministic = args
        action = _policy(state, state.t, key, size_penalty, agent_params, deterministic)
        state, _ = env.apply_action(state, action, size_penalty)
        is_stop = action == stop
        state = batching.skip_cond(is_stop, lambda ops: ops[-1], lambda ops: look(*ops),
                                   (model_fn, image, baseline, target, state))
        return state, is_stop, queries + jnp.where(is_stop, 0, 2 * p)

    state, _, queries = _run_until_stop(
        _body, (state0, jnp.zeros((), bool), jnp.asarray(2 + 2 * p, jnp.int32)),
        (key, model_fn, image, target, baseline, size_penalty, agent_params, deterministic),
        horizon)
    credit = _credit(state, size_penalty, p).reshape(grid, grid)
    grid_mask = state.mask.reshape(grid, grid)
    return RlcamResult(
        saliency=masks.mirror_bilinear_resize(credit, (h, w)),
        mask=env.patch_mask(grid_mask, (h, w)),
        grid_mask=grid_mask,
        credit=credit,
        objective=env.objective(state.keep, state.remove, jnp.sum(state.mask), size_penalty, p),
        steps=state.t,
        num_queries=queries,
    )


def _run_until_stop(body, carry, args, horizon: int):
    """``carry = body(carry, args)`` until the carry's ``stopped`` flag (``carry[1]``) is set,
    at most ``horizon`` times: a ``lax.scan`` whose steps after the stop are skipped
    (``skip_cond``: no queries), so the episode is differentiable in reverse mode too, unlike a
    ``while_loop``. ``body`` closes over no traced value: ``args`` carries them."""
    def step(carry, _):
        return batching.skip_cond(carry[1], lambda ops: ops[0], lambda ops: body(*ops),
                                  (carry, args)), None

    return jax.lax.scan(step, carry, None, length=horizon)[0]


@functools.partial(jax.jit, static_argnames=("grid", "horizon", "layers"))
def _episode_output(key, model_fn, image, target, baseline, size_penalty, agent_params,
                    deterministic, *, grid, horizon, layers):
    """One episode of the output-observation agent from the empty mask (1 query a toggle)."""
    h, w, _ = image.shape
    p = grid * grid
    stop = 2 * p
    network = networks.ActorCritic(2 * p + 1, *layers)
    state0 = env.output_initial_state(model_fn(baseline[None])[0], p)

    def _query(ops):
        model_fn, image, baseline, mask = ops
        return model_fn(env.kept_image(image, baseline, mask, grid=grid)[None])[0]

    def _body(carry, args):
        state, _, queries = carry
        key, model_fn, image, target, baseline, size_penalty, agent_params, deterministic = args
        obs = env.output_observation(state, target, horizon)
        logits, _ = network.apply(agent_params, obs, env.output_action_mask(state))
        sampled = jax.random.categorical(jax.random.fold_in(key, state.t), logits)
        action = jnp.where(deterministic, jnp.argmax(logits), sampled).astype(jnp.int32)
        changes, mask = env.output_toggle(state, action)
        zeros = jax.ShapeDtypeStruct(state.probs.shape, state.probs.dtype)  # static
        probs = batching.skip_cond(~changes, lambda ops: jnp.zeros(zeros.shape, zeros.dtype),
                                   _query, (model_fn, image, baseline, mask))
        state, _ = env.output_apply(state, action, probs, target, size_penalty)
        return state, action == stop, queries + changes.astype(jnp.int32)

    state, _, queries = _run_until_stop(
        _body, (state0, jnp.zeros((), bool), jnp.ones((), jnp.int32)),
        (key, model_fn, image, target, baseline, size_penalty, agent_params, deterministic),
        horizon)
    grid_mask = state.mask.reshape(grid, grid)
    # the final mask's cells above all others; inside and outside, by the p_c change observed
    credit = jnp.where(state.mask, 2.0 + state.credit, state.credit).reshape(grid, grid)
    return RlcamResult(
        saliency=masks.mirror_bilinear_resize(credit, (h, w)),
        mask=env.patch_mask(grid_mask, (h, w)),
        grid_mask=grid_mask,
        credit=credit,
        objective=env.output_objective(state, target, size_penalty),
        steps=state.t,
        num_queries=queries,
    )


def _prepare(model_fn, image, target, config, baseline):
    if not isinstance(config, RlcamConfig):
        raise ValueError(f"config must be an RlcamConfig, got {type(config).__name__}")
    hw = validation.check_image(image)
    check_grid(config.grid, hw, name="grid")
    model_fn = as_pytree_fn(model_fn)
    num_classes = validation.num_classes_of(model_fn, image)
    validation.check_target(target, num_classes)
    if config.observation == "output" and config.num_classes != num_classes:
        raise ValueError(f"config.num_classes must equal the model's classes ({num_classes}) "
                         f"for observation='output', got {config.num_classes}")
    baseline = baselines.resolve_baseline(model_fn, image, baseline)
    static = dict(grid=config.grid, horizon=config.steps, action_order=config.action_order,
                  batch_size=min(config.batch_size, 2 * config.num_patches))
    return (model_fn, jnp.asarray(image, jnp.float32), jnp.asarray(target, jnp.int32), baseline,
            jnp.float32(config.size_penalty), static)


def rlcam_explain(key, model_fn: ModelFn, image, target, *, config: RlcamConfig = RlcamConfig(),
                  agent_params, baseline=None, deterministic=True) -> RlcamResult:
    """One RL-CAM episode of a trained agent on ``image`` for class ``target``.

    Args:
      key: ``jax.random.key``: the actions when sampled (unused when ``deterministic``).
      model_fn: the black box ``f32[b, h, w, 3] -> f32[b, K]`` (probabilities; a ``Partial``).
      image: ``f32[h, w, 3]`` in [0, 1]; ``h`` and ``w`` divisible by ``config.grid``.
      target: the class to explain (int; traced).
      config: :class:`RlcamConfig` (static except ``size_penalty``), as the agent was trained.
      agent_params: the actor-critic's parameters (traced: new weights do not recompile).
      baseline: what a masked pixel becomes; default the model's ``mean_rgb`` (else zeros).
      deterministic: argmax actions (default) or actions sampled from ``key`` (traced).

    Returns:
      :class:`RlcamResult`: saliency ``f32[h, w]``, mask ``bool[h, w]``, and the episode's facts.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import saliency_jax as sj
      >>> model_fn, _ = sj.testing.tiny_cnn(jax.random.key(1), (32, 32))
      >>> cfg = sj.RlcamConfig(grid=4, horizon=3, pi_layers=(8,), vf_layers=(8,))
      >>> agent = sj.init_rlcam_agent(jax.random.key(2), cfg)           # untrained
      >>> image = jnp.full((32, 32, 3), 0.7)
      >>> result = sj.rlcam_explain(jax.random.key(0), model_fn, image, 0, config=cfg,
      ...                           agent_params=agent)
      >>> result.saliency.shape, result.mask.dtype
      ((32, 32), dtype('bool'))

    References:
      Sarkar et al., *RL-CAM: Visual Explanations for Convolutional Networks using Reinforcement
      Learning*, CVPR 2023 Workshops (SAIAD), pp. 3861–3869.
    """
    model_fn, image, target, baseline, penalty, static = _prepare(model_fn, image, target,
                                                                  config, baseline)
    check_agent_params(agent_params, config)
    operands = sharding.replicate((key, model_fn, image, target, baseline, penalty, agent_params,
                                   jnp.asarray(deterministic, bool)))
    if config.observation == "output":
        return _episode_output(*operands, grid=static["grid"], horizon=static["horizon"],
                               layers=(config.pi_layers, config.vf_layers))
    return _episode(*operands, layers=(config.pi_layers, config.vf_layers), **static)


def rlcam(key, model_fn: ModelFn, image, target, *, config: RlcamConfig = RlcamConfig(), agent_params,
          baseline=None, deterministic=True) -> jax.Array:
    """The RL-CAM saliency map: the credit map of :func:`rlcam_explain`'s episode.

    Args:
      key: ``jax.random.key``: the actions when sampled (unused when ``deterministic``).
      model_fn: the black box ``f32[b, h, w, 3] -> f32[b, K]`` (probabilities).
      image: ``f32[h, w, 3]`` in [0, 1]; ``h`` and ``w`` divisible by ``config.grid``.
      target: the class to explain (int; traced).
      config: :class:`RlcamConfig`, as the agent was trained.
      agent_params: the actor-critic's parameters (traced).
      baseline: what a masked pixel becomes; default the model's ``mean_rgb`` (else zeros).
      deterministic: argmax actions (default) or sampled ones (traced).

    Returns:
      ``f32[h, w]``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import saliency_jax as sj
      >>> model_fn, _ = sj.testing.tiny_cnn(jax.random.key(1), (32, 32))
      >>> cfg = sj.RlcamConfig(grid=4, horizon=3, pi_layers=(8,), vf_layers=(8,))
      >>> agent = sj.init_rlcam_agent(jax.random.key(2), cfg)           # untrained
      >>> image = jnp.full((32, 32, 3), 0.7)
      >>> sj.rlcam(jax.random.key(0), model_fn, image, 0, config=cfg, agent_params=agent).shape
      (32, 32)

    References:
      Sarkar et al., *RL-CAM: Visual Explanations for Convolutional Networks using Reinforcement
      Learning*, CVPR 2023 Workshops (SAIAD), pp. 3861–3869.
    """
    return rlcam_explain(key, model_fn, image, target, config=config, agent_params=agent_params,
                         baseline=baseline, deterministic=deterministic).saliency


def rlcam_mask(key, model_fn: ModelFn, image, target, *, config: RlcamConfig = RlcamConfig(),
               agent_params, baseline=None, deterministic=True) -> jax.Array:
    """The RL-CAM localisation mask: the final patch mask of :func:`rlcam_explain`'s episode.

    Args:
      key: ``jax.random.key``: the actions when sampled (unused when ``deterministic``).
      model_fn: the black box ``f32[b, h, w, 3] -> f32[b, K]`` (probabilities).
      image: ``f32[h, w, 3]`` in [0, 1]; ``h`` and ``w`` divisible by ``config.grid``.
      target: the class to explain (int; traced).
      config: :class:`RlcamConfig`, as the agent was trained.
      agent_params: the actor-critic's parameters (traced).
      baseline: what a masked pixel becomes; default the model's ``mean_rgb`` (else zeros).
      deterministic: argmax actions (default) or sampled ones (traced).

    Returns:
      ``bool[h, w]``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import saliency_jax as sj
      >>> model_fn, _ = sj.testing.tiny_cnn(jax.random.key(1), (32, 32))
      >>> cfg = sj.RlcamConfig(grid=4, horizon=3, pi_layers=(8,), vf_layers=(8,))
      >>> agent = sj.init_rlcam_agent(jax.random.key(2), cfg)           # untrained
      >>> image = jnp.full((32, 32, 3), 0.7)
      >>> sj.rlcam_mask(jax.random.key(0), model_fn, image, 0, config=cfg,
      ...               agent_params=agent).shape
      (32, 32)

    References:
      Sarkar et al., *RL-CAM: Visual Explanations for Convolutional Networks using Reinforcement
      Learning*, CVPR 2023 Workshops (SAIAD), pp. 3861–3869.
    """
    return rlcam_explain(key, model_fn, image, target, config=config, agent_params=agent_params,
                         baseline=baseline, deterministic=deterministic).mask


def rlcam_greedy_explain(key, model_fn: ModelFn, image, target, *, config: RlcamConfig = RlcamConfig(),
                         baseline=None) -> RlcamResult:
    """The greedy look-ahead baseline of RL-CAM (no learning; module doc): at each step the
    action with the best look-ahead objective.

    Args:
      key: accepted for the shared signature; the greedy policy is deterministic.
      model_fn: the black box ``f32[b, h, w, 3] -> f32[b, K]`` (probabilities).
      image: ``f32[h, w, 3]`` in [0, 1]; ``h`` and ``w`` divisible by ``config.grid``.
      target: the class to explain (int; traced).
      config: :class:`RlcamConfig` (grid, horizon, size penalty, batch size).
      baseline: what a masked pixel becomes; default the model's ``mean_rgb`` (else zeros).

    Returns:
      :class:`RlcamResult`, as :func:`rlcam_explain`.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import saliency_jax as sj
      >>> model_fn, _ = sj.testing.tiny_cnn(jax.random.key(1), (32, 32))
      >>> cfg = sj.RlcamConfig(grid=4, horizon=3)
      >>> result = sj.rlcam_greedy_explain(jax.random.key(0), model_fn,
      ...                                  jnp.full((32, 32, 3), 0.7), 0, config=cfg)
      >>> result.mask.shape
      (32, 32)

    References:
      Sarkar et al., *RL-CAM: Visual Explanations for Convolutional Networks using Reinforcement
      Learning*, CVPR 2023 Workshops (SAIAD), pp. 3861–3869.
    """
    del key
    if isinstance(config, RlcamConfig) and config.observation != "lookahead":
        raise ValueError("config.observation must be 'lookahead' for the greedy baseline (it "
                         f"ranks the look-ahead's gains), got {config.observation!r}")
    model_fn, image, target, baseline, penalty, static = _prepare(model_fn, image, target,
                                                                  config, baseline)
    operands = sharding.replicate((jax.random.key(0), model_fn, image, target, baseline, penalty,
                                   None, jnp.ones((), bool)))
    return _episode(*operands, layers=None, **static)


def rlcam_greedy(key, model_fn: ModelFn, image, target, *, config: RlcamConfig = RlcamConfig(),
                 baseline=None) -> jax.Array:
    """The greedy baseline's saliency map (the credit map of :func:`rlcam_greedy_explain`).

    Args:
      key: accepted for the shared signature; the greedy policy is deterministic.
      model_fn: the black box ``f32[b, h, w, 3] -> f32[b, K]`` (probabilities).
      image: ``f32[h, w, 3]`` in [0, 1]; ``h`` and ``w`` divisible by ``config.grid``.
      target: the class to explain (int; traced).
      config: :class:`RlcamConfig` (grid, horizon, size penalty, batch size).
      baseline: what a masked pixel becomes; default the model's ``mean_rgb`` (else zeros).

    Returns:
      ``f32[h, w]``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import saliency_jax as sj
      >>> model_fn, _ = sj.testing.tiny_cnn(jax.random.key(1), (32, 32))
      >>> sj.rlcam_greedy(jax.random.key(0), model_fn, jnp.full((32, 32, 3), 0.7), 0,
      ...                 config=sj.RlcamConfig(grid=4, horizon=3)).shape
      (32, 32)

    References:
      Sarkar et al., *RL-CAM: Visual Explanations for Convolutional Networks using Reinforcement
      Learning*, CVPR 2023 Workshops (SAIAD), pp. 3861–3869.
    """
    return rlcam_greedy_explain(key, model_fn, image, target, config=config,
                                baseline=baseline).saliency


# ---------------------------------------------------------------------------------------------
# Training and loading


def default_train_config(config: RlcamConfig = RlcamConfig(), **changes):
    """PPO settings for RL-CAM: rollouts of whole horizons, many epochs per (costly) sample."""
    from saliency_jax._src.rl import ppo

    settings = dict(num_envs=8, num_steps=config.steps, num_updates=40, update_epochs=8,
                    num_minibatches=4, lr=1e-3, anneal_lr=True, gamma=1.0, gae_lambda=0.95,
                    clip_eps=0.2, ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5,
                    reward_scale=1.0, pi_layers=config.pi_layers, vf_layers=config.vf_layers)
    settings.update(changes)
    return ppo.TrainConfig(**settings)


def train_rlcam(config: RlcamConfig, images, targets, model_fn, out_dir, *, key,
                train_config=None, baseline=None, checkpoint_every: int = 5,
                progress: bool = True, max_chunks: int | None = None, meta: dict | None = None):
    """Train (or resume) an RL-CAM agent with PPO; checkpoints and the agent go to ``out_dir``.

    A dataset-wide agent: episodes start on uniformly drawn ``images`` (``f32[n, h, w, 3]``) with
    their ``targets`` (``int[n]``, ``-1`` = the model's top-1). Training is
    :func:`saliency_jax.rl.train_agent` on the :data:`saliency_jax.rl.RLCAM`
    environment: one compiled chunk of ``checkpoint_every`` PPO updates at a time, an orbax
    checkpoint after each; calling again with the same ``out_dir`` resumes from the last one and
    ends with the same parameters as an uninterrupted run. ``max_chunks`` stops early (tests,
    time boxes). On completion ``out_dir/agent`` holds the parameters and ``agent.json`` (which
    :func:`load_rlcam_agent` reads), and ``out_dir/metrics.json`` the training curves.

    Args:
      config: :class:`RlcamConfig` (grid, horizon, λ, layers).
      train_config: a :class:`saliency_jax.rl.TrainConfig`; default
        :func:`default_train_config`; its layers must equal ``config``'s.
      key: ``jax.random.key`` of the run (ignored when resuming).

    Returns:
      ``(agent_params, metrics)`` as ``train_agent``.
    """
    from saliency_jax._src.rl import checkpoint

    if not isinstance(config, RlcamConfig):
        raise ValueError(f"config must be an RlcamConfig, got {type(config).__name__}")
    if train_config is None:
        train_config = default_train_config(config)
    if (train_config.pi_layers, train_config.vf_layers) != (config.pi_layers, config.vf_layers):
        raise ValueError(
            f"train_config layers (pi={train_config.pi_layers}, vf={train_config.vf_layers}) must "
            f"equal config's (pi={config.pi_layers}, vf={config.vf_layers})")
    env_params = env.make_env_params(model_fn, images, targets, config=config, baseline=baseline)
    output = config.observation == "output"
    description = {"rlcam_config": config.to_dict(),
                   "env": (env.output_env_description if output else env.env_description)(
                       env_params)}
    description = json.loads(json.dumps(description))
    out_dir = pathlib.Path(out_dir).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    # train_agent's run.json check only knows RExL's environment: guard RL-CAM's settings here.
    guard = out_dir / "rlcam.json"
    if guard.exists() and json.loads(guard.read_text()) != description:
        raise ValueError(f"out_dir {out_dir} holds an RL-CAM run with other settings "
                         "(rlcam.json differs); use a new out_dir")
    guard.write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")
    return checkpoint.train_agent(
        train_config, env_params, out_dir, key=key, env=env.RLCAM_OUTPUT if output else env.RLCAM,
        checkpoint_every=checkpoint_every, progress=progress, max_chunks=max_chunks,
        meta={**description, **(meta or {})})


def load_rlcam_agent(path) -> tuple[dict, RlcamConfig]:
    """``(agent_params, config)`` of an agent folder written by :func:`train_rlcam`."""
    from saliency_jax._src.rl import checkpoint

    params, meta = checkpoint.load_agent(path)
    if "rlcam_config" not in meta:
        raise ValueError(f"{path} is not an RL-CAM agent (agent.json has no rlcam_config)")
    return params, RlcamConfig.from_dict(meta["rlcam_config"])
