"""Type aliases shared by every explainer and metric.

The model contract (DESIGN §3): a ``ModelFn`` maps images ``f32[b, h, w, 3]`` in [0, 1] to the
scores being explained ``f32[b, k]`` (class probabilities for classifiers, softmax composed in).
It is built as a :class:`jax.tree_util.Partial` so that weights are traced leaves; it may carry
its mean colour as the keyword ``mean_rgb`` (``f32[3]`` in [0, 1]), which explainers and metrics
use as the default masking baseline (see :func:`saliency_jax.baselines.resolve_baseline`).
"""

from __future__ import annotations

from typing import Callable

import jax

Array = jax.Array
PRNGKey = jax.Array
ModelFn = Callable[[Array], Array]
"""``(images: f32[b, h, w, 3] in [0, 1]) -> scores f32[b, k]``."""

FeaturesFn = Callable[[Array], dict]
"""``(images: f32[b, h, w, 3] in [0, 1]) -> {stage name: f32[b, h_s, w_s, c_s]}``."""
