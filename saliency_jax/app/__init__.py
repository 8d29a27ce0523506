"""The saliency-jax application, built on the public library ``saliency_jax``.

* :mod:`saliency_jax.app.cli`: the ``saliency-jax`` command (``evaluate``, ``explain``,
  ``train-classifier``, ``train-agent``, ``convert-weights``).
* :mod:`saliency_jax.app.evaluate`: the evaluation runner behind ``saliency-jax evaluate``.
* :mod:`saliency_jax.app.methods`: the method registry (names → explainers with their settings).
* :mod:`saliency_jax.app.classifiers`: the packaged default classifiers and converted weights.
* :mod:`saliency_jax.app.agents`: the packaged default RL agents (train, find, check).
* :mod:`saliency_jax.app.train_classifier`: training the default classifiers with Optax.
* :mod:`saliency_jax.app.plots`: example overlays and mean curves.
"""
