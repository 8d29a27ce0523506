"""PPO for functional environments, in the purejaxrl shape: one compiled function trains.

``make_train(config, env) -> train(key, env_params)``: collect ``num_steps`` steps from
``num_envs`` environments (``vmap`` over environments, ``lax.scan`` over steps), compute GAE
advantages, then ``update_epochs`` passes of clipped-PPO minibatch updates, all inside one
``lax.scan`` over ``num_updates`` updates. ``jax.jit(make_train(cfg, env))(key, env_params)``
runs everything as one XLA program; ``jax.jit(jax.vmap(make_train(cfg, env), in_axes=(0, None)))``
trains several seeds at once.

The pieces are module-level pure functions (:func:`gae`, :func:`ppo_loss`, :func:`init_runner`,
:func:`update_step`, :func:`run_updates`) so that they can be tested alone and so that the
chunked, checkpointed driver (:mod:`saliency_jax._src.rl.checkpoint`) runs exactly the same updates.

**Deviation from RExL.** The reference trains with ACER (stable-baselines 2: ``gamma=1``,
``n_steps=980``, RMSProp ``lr=5e-5``, replay; METHODS §3.3). We use on-policy PPO with GAE
(Schulman et al. 2017) and Optax ``chain(clip_by_global_norm, adam)``: no replay buffer, no
average policy, no trust-region correction. ``gamma=1`` and ``ent_coef=0.01`` are kept.

The environment is passed as an :class:`saliency_jax.rl.Environment` of pure functions
(``reset``, ``step``, ``action_mask``, ``num_actions``); observations may be any pytree; actions
are discrete, with the environment's action mask applied to the logits.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from saliency_jax._src.rexl_env import REXL, Environment
from saliency_jax._src.rl import networks


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """PPO settings (static under ``jit``: a new value compiles a new program).

    ``batch = num_envs · num_steps`` transitions per update, split into ``num_minibatches``;
    with RExL, ``num_steps`` a multiple of the episode length ``k²`` makes every rollout hold
    whole episodes.
    """

    num_envs: int = 16
    num_steps: int = 49
    num_updates: int = 100
    update_epochs: int = 4
    num_minibatches: int = 4
    lr: float = 3e-4
    anneal_lr: bool = True
    gamma: float = 1.0
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    reward_scale: float = 1.0
    normalize_advantages: bool = True
    pi_layers: tuple[int, ...] = (256, 128)
    vf_layers: tuple[int, ...] = (256, 128)

    def __post_init__(self):
        for name in ("num_envs", "num_steps", "num_updates", "update_epochs", "num_minibatches"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.batch_size % self.num_minibatches:
            raise ValueError(
                f"num_minibatches={self.num_minibatches} must divide the batch "
                f"num_envs * num_steps = {self.batch_size}"
            )
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {self.gamma!r}")
        if not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"gae_lambda must lie in [0, 1], got {self.gae_lambda!r}")
        for name in ("lr", "clip_eps", "max_grad_norm", "reward_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        object.__setattr__(self, "pi_layers", tuple(int(n) for n in self.pi_layers))
        object.__setattr__(self, "vf_layers", tuple(int(n) for n in self.vf_layers))

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def total_timesteps(self) -> int:
        return self.batch_size * self.num_updates

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class Transition(NamedTuple):
    done: jax.Array
    action: jax.Array
    value: jax.Array
    reward: jax.Array
    log_prob: jax.Array
    obs: Any
    action_mask: jax.Array
    returned: jax.Array  # the finished episode's return where done, else 0


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    step: jax.Array  # i32[]: updates done


class RunnerState(NamedTuple):
    """Everything a training run carries from one update to the next (all arrays)."""

    train_state: TrainState
    env_state: Any
    obs: Any
    key: jax.Array
    episode_return: jax.Array  # f32[num_envs]: running return of each current episode


# ---------------------------------------------------------------------------------------------
# Pure pieces


def gae(rewards, values, dones, last_value, *, gamma: float, lam: float):
    """Generalised advantage estimation over a rollout of ``T`` steps (time is axis 0).

    ``δ_t = r_t + γ V_{t+1} (1 − d_t) − V_t``, ``A_t = δ_t + γ λ (1 − d_t) A_{t+1}``, where
    ``d_t`` says the episode ended at step ``t`` (so ``V_{t+1}``, the next episode's first value,
    is not bootstrapped) and ``V_T = last_value``. Returns ``(advantages, targets = A + V)``,
    both shaped like ``rewards`` (``f32[T, ...]``).
    """
    not_done = 1.0 - dones.astype(jnp.float32)
    next_values = jnp.concatenate([values[1:], last_value[None]], axis=0)
    deltas = rewards + gamma * next_values * not_done - values

    def _backward(carry, x):
        delta, nd = x
        carry = delta + gamma * lam * nd * carry
        return carry, carry

    _, advantages = jax.lax.scan(
        _backward, jnp.zeros_like(last_value), (deltas, not_done), reverse=True
    )
    return advantages, advantages + values


class LossInfo(NamedTuple):
    total: jax.Array
    value_loss: jax.Array
    policy_loss: jax.Array
    entropy: jax.Array
    approx_kl: jax.Array
    clip_frac: jax.Array


def ppo_loss(logits, values, actions, old_log_probs, old_values, advantages, targets, *,
             clip_eps: float, vf_coef: float, ent_coef: float,
             normalize_advantages: bool = True) -> LossInfo:
    """The clipped PPO objective on a minibatch of ``B`` transitions (to be minimised).

    ``ratio = exp(log π(a) − log π_old(a))``;
    ``L_π = −mean(min(ratio·Â, clip(ratio, 1±ε)·Â))``
    with ``Â`` the advantages (normalised to mean 0, std 1 when ``normalize_advantages``);
    ``L_V = ½ mean(max((V − G)², (V_old + clip(V − V_old, ±ε) − G)²))``;
    ``H = mean entropy``; ``total = L_π + vf_coef·L_V − ent_coef·H``.

    Args: ``logits f32[B, A]`` (already masked), ``values f32[B]`` of the current network;
    ``actions i32[B]``, ``old_log_probs f32[B]``, ``old_values f32[B]``, ``advantages f32[B]``,
    ``targets f32[B]`` from the rollout.
    """
    log_probs = jax.vmap(networks.log_prob)(logits, actions)
    entropy = jnp.mean(jax.vmap(networks.entropy)(logits))

    clipped_values = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
    value_loss = 0.5 * jnp.mean(
        jnp.maximum(jnp.square(values - targets), jnp.square(clipped_values - targets))
    )

    if normalize_advantages:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    log_ratio = log_probs - old_log_probs
    ratio = jnp.exp(log_ratio)
    clipped_ratio = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    policy_loss = -jnp.mean(jnp.minimum(ratio * advantages, clipped_ratio * advantages))
    total = policy_loss + vf_coef * value_loss - ent_coef * entropy
    approx_kl = jnp.mean((ratio - 1.0) - log_ratio)
    clip_frac = jnp.mean((jnp.abs(ratio - 1.0) > clip_eps).astype(jnp.float32))
    return LossInfo(total, value_loss, policy_loss, entropy, approx_kl, clip_frac)


def make_network(config: TrainConfig, num_actions: int) -> networks.ActorCritic:
    return networks.ActorCritic(num_actions=num_actions, pi_layers=config.pi_layers,
                                vf_layers=config.vf_layers)


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """``chain(clip_by_global_norm, adam)``; the learning rate decays linearly to 0 if annealed."""
    lr = config.lr
    if config.anneal_lr:
        steps = config.num_updates * config.update_epochs * config.num_minibatches
        lr = optax.linear_schedule(config.lr, 0.0, steps)
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(lr, eps=1e-5))


def _apply_batch(network, params, obs, action_mask):
    return jax.vmap(network.apply, in_axes=(None, 0, 0))(params, obs, action_mask)


def _loss_fn(params, network, config: TrainConfig, batch: Transition, advantages, targets):
    logits, values = _apply_batch(network, params, batch.obs, batch.action_mask)
    info = ppo_loss(logits, values, batch.action, batch.log_prob, batch.value, advantages,
                    targets, clip_eps=config.clip_eps, vf_coef=config.vf_coef,
                    ent_coef=config.ent_coef, normalize_advantages=config.normalize_advantages)
    return info.total, info


def init_runner(config: TrainConfig, env: Environment, key, env_params) -> RunnerState:
    """The state before the first update: fresh network, optimiser and ``num_envs`` episodes."""
    key, k_net, k_env = jax.random.split(key, 3)
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(k_env, config.num_envs), env_params
    )
    network = make_network(config, env.num_actions(env_params))
    obs0 = jax.tree.map(lambda x: x[0], obs)
    mask0 = env.action_mask(jax.tree.map(lambda x: x[0], env_state), env_params)
    params = network.init(k_net, obs0, mask0)
    opt_state = make_optimizer(config).init(params)
    train_state = TrainState(params, opt_state, jnp.zeros((), jnp.int32))
    return RunnerState(train_state, env_state, obs, key,
                       jnp.zeros((config.num_envs,), jnp.float32))


def _env_step(config: TrainConfig, env: Environment, network, env_params, runner: RunnerState):
    """One step of every environment under the current policy: ``(runner, Transition)``."""
    key, k_act, k_env = jax.random.split(runner.key, 3)
    mask = jax.vmap(env.action_mask, in_axes=(0, None))(runner.env_state, env_params)
    logits, value = _apply_batch(network, runner.train_state.params, runner.obs, mask)
    action = jax.random.categorical(k_act, logits)
    log_prob = jax.vmap(networks.log_prob)(logits, action)
    obs, env_state, reward, done, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
        jax.random.split(k_env, config.num_envs), runner.env_state, action, env_params
    )
    reward = reward.astype(jnp.float32)
    episode_return = runner.episode_return + reward
    returned = jnp.where(done, episode_return, 0.0)
    transition = Transition(done, action, value, reward * config.reward_scale, log_prob,
                            runner.obs, mask, returned)
    runner = RunnerState(runner.train_state, env_state, obs, key,
                         jnp.where(done, 0.0, episode_return))
    return runner, transition


def update_step(config: TrainConfig, env: Environment, runner: RunnerState, env_params):
    """One PPO update: a rollout of ``num_steps``, GAE, ``update_epochs`` of minibatch SGD.

    Returns ``(runner, metrics)``; ``metrics`` is a dict of ``f32[]``: ``episode_return`` (mean
    return of the episodes that ended in this rollout, unscaled; 0 if none), ``episodes``,
    ``reward`` (mean step reward) and the loss terms averaged over minibatches.
    """
    network = make_network(config, env.num_actions(env_params))
    tx = make_optimizer(config)

    # COLLECT TRAJECTORIES
    def _collect(r, unused):
        return _env_step(config, env, network, env_params, r)

    runner, traj = jax.lax.scan(_collect, runner, None, config.num_steps)

    # CALCULATE ADVANTAGE
    last_mask = jax.vmap(env.action_mask, in_axes=(0, None))(runner.env_state, env_params)
    _, last_value = _apply_batch(network, runner.train_state.params, runner.obs, last_mask)
    advantages, targets = gae(traj.reward, traj.value, traj.done, last_value,
                              gamma=config.gamma, lam=config.gae_lambda)

    # UPDATE NETWORK
    grad_fn = jax.value_and_grad(_loss_fn, has_aux=True)

    def _update_minibatch(train_state: TrainState, minibatch):
        batch, adv, tgt = minibatch
        (_, info), grads = grad_fn(train_state.params, network, config, batch, adv, tgt)
        updates, opt_state = tx.update(grads, train_state.opt_state, train_state.params)
        params = optax.apply_updates(train_state.params, updates)
        return TrainState(params, opt_state, train_state.step), info

    def _update_epoch(carry, unused):
        train_state, key = carry
        key, k_perm = jax.random.split(key)
        flat = jax.tree.map(lambda x: x.reshape(config.batch_size, *x.shape[2:]),
                            (traj, advantages, targets))
        perm = jax.random.permutation(k_perm, config.batch_size)
        minibatches = jax.tree.map(
            lambda x: x[perm].reshape(config.num_minibatches, config.minibatch_size, *x.shape[1:]),
            flat,
        )
        train_state, info = jax.lax.scan(_update_minibatch, train_state, minibatches)
        return (train_state, key), info

    key, k_epochs = jax.random.split(runner.key)
    (train_state, _), info = jax.lax.scan(
        _update_epoch, (runner.train_state, k_epochs), None, config.update_epochs
    )
    train_state = TrainState(train_state.params, train_state.opt_state, train_state.step + 1)
    runner = RunnerState(train_state, runner.env_state, runner.obs, key, runner.episode_return)

    episodes = jnp.sum(traj.done.astype(jnp.float32))
    metrics = {
        "episode_return": jnp.sum(traj.returned) / jnp.maximum(episodes, 1.0),
        "episodes": episodes,
        "reward": jnp.mean(traj.reward) / config.reward_scale,
        **{name: jnp.mean(value) for name, value in info._asdict().items()},
    }
    return runner, metrics


def run_updates(config: TrainConfig, env: Environment, runner: RunnerState, env_params,
                num_updates: int):
    """``num_updates`` (static) calls of :func:`update_step` in one ``lax.scan``.

    Returns ``(runner, metrics)`` with each metric stacked to ``f32[num_updates]``.
    """

    def _update(r, unused):
        return update_step(config, env, r, env_params)

    return jax.lax.scan(_update, runner, None, num_updates)


def make_train(config: TrainConfig, env: Environment = REXL, *, callback=None):
    """``train(key, env_params) -> (runner_state, metrics)``: the whole run as one pure function.

    ``runner_state.train_state.params`` are the trained network's parameters; ``metrics`` holds
    ``f32[num_updates]`` per metric (see :func:`update_step`). Compile it with ``jax.jit``; vmap it
    over keys for several seeds. ``callback(update, metrics)``, if given, is called from inside
    the compiled loop after every update (``jax.debug.callback``), e.g. to print progress.
    """

    def train(key, env_params):
        runner = init_runner(config, env, key, env_params)

        def _update(r, unused):
            r, metrics = update_step(config, env, r, env_params)
            if callback is not None:
                jax.debug.callback(callback, r.train_state.step, metrics)
            return r, metrics

        return jax.lax.scan(_update, runner, None, config.num_updates)

    return train
