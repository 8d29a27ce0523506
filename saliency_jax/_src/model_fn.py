"""The model contract shared by every explainer and metric, and the one helper that takes it in.

A ``ModelFn`` maps images ``f32[b, h, w, 3]`` in [0, 1] to the scores being explained
``f32[b, k]`` (class probabilities for classifiers, softmax composed in). It may carry its mean
colour as the keyword ``mean_rgb`` (``f32[3]`` in [0, 1]), which explainers and metrics use as
the default masking baseline.

Pass either a :class:`jax.tree_util.Partial` or a plain callable. Every public function calls
:func:`as_pytree_fn` on it, so both enter ``jit`` as a pytree argument. They differ in what is
traced:

* ``jax.tree_util.Partial(apply, variables)`` (what :func:`saliency_jax.models.classifier`
  builds): the weights are traced leaves. New weights of the same shapes reuse the compiled
  program.
* a plain callable (``lambda x: ...``, a closure over weights): the function object is the
  static part of the pytree, so whatever it closes over is baked into the program as a constant,
  and each *new function object* compiles again (the same object is cached). Fine for a fixed
  model; wrap weights in a ``Partial`` when they change.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

Array = jax.Array
PRNGKey = jax.Array
ModelFn = Callable[[Array], Array]
"""``(images: f32[b, h, w, 3] in [0, 1]) -> scores f32[b, k]``."""

FeaturesFn = Callable[[Array], dict]
"""``(images: f32[b, h, w, 3] in [0, 1]) -> {stage name: f32[b, h_s, w_s, c_s]}``."""


def as_pytree_fn(fn, name: str = "model_fn") -> jax.tree_util.Partial:
    """``fn`` as a ``jax.tree_util.Partial`` (unchanged if it is one), so that it can be an
    argument of a jitted function; ``ValueError`` naming ``name`` if it is not callable."""
    if isinstance(fn, jax.tree_util.Partial):
        return fn
    if not callable(fn):
        raise ValueError(f"{name} must be callable (a ModelFn or a jax.tree_util.Partial), "
                         f"got {type(fn).__name__}")
    return jax.tree_util.Partial(fn)
