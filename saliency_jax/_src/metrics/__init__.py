"""Private: the metrics behind ``saliency_jax.metrics``."""
