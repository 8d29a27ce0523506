"""Private: PPO, the actor-critic and agent checkpoints behind ``saliency_jax.rl``."""
