"""Reinforcement-learning saliency agents: functional environments, actor-critic, PPO, checkpoints.

* :mod:`saliency_jax.rl.env`: the RExL environment (gymnax contract) and the
  :class:`~saliency_jax.rl.env.Environment` bundle the trainer takes.
* :mod:`saliency_jax.rl.networks`: the actor-critic MLP (separate π and V branches).
* :mod:`saliency_jax.rl.ppo`: ``make_train(config, env) -> train(key, env_params)`` (purejaxrl).
* :mod:`saliency_jax.rl.checkpoint`: orbax checkpoints and the resumable chunked driver
  ``train_agent``.

The inference explainer is :func:`saliency_jax.rexl.rexl`.
"""

from saliency_jax.rl.env import REXL, Environment, EnvParams, EnvState, make_env_params
from saliency_jax.rl.networks import ActorCritic
from saliency_jax.rl.ppo import TrainConfig, make_train

__all__ = [
    "REXL",
    "ActorCritic",
    "EnvParams",
    "EnvState",
    "Environment",
    "TrainConfig",
    "make_env_params",
    "make_train",
]
