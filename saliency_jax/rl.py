"""Reinforcement-learning saliency: functional environments, actor-critic, PPO, checkpoints.

* Environments (gymnax contract: ``reset(key, params) -> (obs, state)``,
  ``step(key, state, action, params) -> (obs, state, reward, done, info)``), each an
  :class:`Environment` bundle: :data:`REXL` (reveal/remove grid patches, RExL) with its
  :func:`make_rexl_env_params`, and :data:`RLCAM` (forward/reverse actions on a patch mask,
  RL-CAM) with :func:`make_rlcam_env_params`.
* :class:`ActorCritic`: the actor-critic MLP (separate π and V branches).
* PPO (purejaxrl shape): ``make_train(config, env) -> train(key, env_params)``, one ``jit``.
* Checkpoints (orbax): :func:`save_agent`, :func:`load_agent`, and :func:`train_agent`, the
  resumable chunked driver.

The inference explainers are :func:`saliency_jax.rexl` and :func:`saliency_jax.rlcam`.
"""

from saliency_jax._src.rexl_env import REXL, Environment, EnvParams, EnvState
from saliency_jax._src.rexl_env import make_env_params as make_rexl_env_params
from saliency_jax._src.rl.checkpoint import load_agent, save_agent, train_agent
from saliency_jax._src.rl.networks import ActorCritic
from saliency_jax._src.rl.ppo import TrainConfig, gae, make_train, ppo_loss
from saliency_jax._src.rlcam_env import RLCAM
from saliency_jax._src.rlcam_env import EnvParams as RlcamEnvParams
from saliency_jax._src.rlcam_env import EnvState as RlcamEnvState
from saliency_jax._src.rlcam_env import make_env_params as make_rlcam_env_params

make_env_params = make_rexl_env_params
"""Alias of :func:`make_rexl_env_params`."""

__all__ = [
    "REXL",
    "RLCAM",
    "ActorCritic",
    "EnvParams",
    "EnvState",
    "Environment",
    "RlcamEnvParams",
    "RlcamEnvState",
    "TrainConfig",
    "gae",
    "load_agent",
    "make_env_params",
    "make_rexl_env_params",
    "make_rlcam_env_params",
    "make_train",
    "ppo_loss",
    "save_agent",
    "train_agent",
]
