"""Private implementation of saliency-jax; the public API is ``import saliency_jax as sj``."""
