"""saliency-jax: black-box saliency for image classifiers, compiled with JAX."""
