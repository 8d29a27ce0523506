"""Actor-critic MLPs on a flattened observation, for discrete actions with an optional mask.

RExL's policy (METHODS §3.2) is stable-baselines' ``FeedForwardPolicy`` with
``net_arch=[dict(pi=[256, 128], vf=[256, 128])]`` and ReLU: the observation is **flattened** and
fed to two separate MLP branches, one for the action logits and one for the value; no shared
layers. :class:`ActorCritic` is that network for ONE observation (any pytree of arrays; the
leaves are flattened and concatenated); batch it with ``jax.vmap``.

Initialisation follows purejaxrl: orthogonal weights (gain √2 in hidden layers, 0.01 for the
logits, 1 for the value), zero biases.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

MASKED_LOGIT = -1e9
"""The logit given to a forbidden action (finite, so entropies stay finite)."""


def flatten_observation(obs) -> jax.Array:
    """All leaves of one observation, flattened and concatenated: ``f32[d]``."""
    return jnp.concatenate([jnp.ravel(x).astype(jnp.float32) for x in jax.tree.leaves(obs)])


def mask_logits(logits, action_mask=None) -> jax.Array:
    """``logits`` with forbidden actions (``action_mask`` False) set to :data:`MASKED_LOGIT`."""
    if action_mask is None:
        return logits
    return jnp.where(action_mask, logits, MASKED_LOGIT)


class ActorCritic(nn.Module):
    """``(obs, action_mask=None) -> (logits f32[num_actions], value f32[])`` for one observation."""

    num_actions: int
    pi_layers: Sequence[int] = (256, 128)
    vf_layers: Sequence[int] = (256, 128)

    @nn.compact
    def __call__(self, obs, action_mask=None):
        x = flatten_observation(obs)
        hidden = nn.initializers.orthogonal(np.sqrt(2))
        zeros = nn.initializers.zeros

        pi = x
        for i, width in enumerate(self.pi_layers):
            pi = nn.relu(nn.Dense(width, kernel_init=hidden, bias_init=zeros, name=f"pi_{i}")(pi))
        logits = nn.Dense(self.num_actions, kernel_init=nn.initializers.orthogonal(0.01),
                          bias_init=zeros, name="pi_out")(pi)

        v = x
        for i, width in enumerate(self.vf_layers):
            v = nn.relu(nn.Dense(width, kernel_init=hidden, bias_init=zeros, name=f"vf_{i}")(v))
        value = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0), bias_init=zeros,
                         name="vf_out")(v)[0]
        return mask_logits(logits, action_mask), value


def log_prob(logits, action) -> jax.Array:
    """``log π(action)`` of a categorical with ``logits f32[A]``."""
    return jax.nn.log_softmax(logits)[action]


def entropy(logits) -> jax.Array:
    """``-Σ π log π`` of a categorical with ``logits f32[A]`` (masked actions contribute 0)."""
    logp = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.exp(logp) * logp)
