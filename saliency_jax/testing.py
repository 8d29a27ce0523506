"""Toy models with known answers and a compile counter, for tests and doc examples.

Every toy model is a ``jax.tree_util.Partial`` whose parameters are traced leaves, so it obeys
the ``ModelFn`` contract (``f32[b, h, w, 3] -> f32[b, k]``) exactly like a real classifier.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_active_logs: list[list[float]] = []


def _on_event(event: str, duration: float, **_kwargs) -> None:
    if event == _COMPILE_EVENT:
        for log in _active_logs:
            log.append(duration)


jax.monitoring.register_event_duration_secs_listener(_on_event)


@contextlib.contextmanager
def log_compilations():
    """Collect one entry per XLA compilation that happens inside the block.

    Create inputs *before* the block: eager ops such as ``2 * x`` compile too.
    """
    log: list[float] = []
    _active_logs.append(log)
    try:
        yield log
    finally:
        _active_logs.remove(log)


def _linear(weights, images):
    # weights f32[k, h, w, 3]; images f32[b, h, w, 3] -> f32[b, k]
    return jnp.einsum("khwc,bhwc->bk", weights, images)


def linear_model(weights) -> jax.tree_util.Partial:
    """``f_k(x) = <weights_k, x>``; ``weights`` is ``f32[k, h, w, 3]`` (or ``[h, w, 3]``: k=1)."""
    weights = jnp.asarray(weights, jnp.float32)
    if weights.ndim == 3:
        weights = weights[None]
    return jax.tree_util.Partial(_linear, weights)


def _region(region, images):
    inside = jnp.sum(images.mean(-1) * region[None], axis=(1, 2)) / jnp.sum(region)
    return jnp.stack([inside, 1.0 - inside], axis=-1)


def region_model(region) -> jax.tree_util.Partial:
    """Two scores: the mean intensity inside ``region`` (bool ``[h, w]``) and one minus it.

    On a white image with a black baseline, class 0's score is the fraction of the region left
    visible: the model looks at that region only.
    """
    return jax.tree_util.Partial(_region, jnp.asarray(region, jnp.float32))


class TinyCNN(nn.Module):
    """Two conv layers and a dense softmax head: a small nonlinear classifier for tests."""

    num_classes: int = 3
    width: int = 8

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(self.width, (3, 3), strides=2)(x))
        x = nn.relu(nn.Conv(self.width, (3, 3), strides=2)(x))
        x = x.mean(axis=(1, 2))
        return nn.Dense(self.num_classes)(x)


def _tiny_apply(variables, images, *, mean_rgb):
    return jax.nn.softmax(TinyCNN().apply(variables, images - mean_rgb[None, None, None, :]), axis=-1)


def _tiny_trunk(variables, images, *, mean_rgb):
    x = images - mean_rgb[None, None, None, :]
    for name in ("Conv_0", "Conv_1"):
        conv = nn.Conv(TinyCNN.width, (3, 3), strides=2)
        x = jax.nn.relu(conv.apply({"params": variables["params"][name]}, x))
    return x


def _tiny_head(variables, activations):
    dense = nn.Dense(TinyCNN.num_classes)
    return dense.apply({"params": variables["params"]["Dense_0"]}, activations.mean(axis=(1, 2)))


class TinyCam(NamedTuple):
    trunk: jax.tree_util.Partial
    head: jax.tree_util.Partial


def tiny_cam(model_fn):
    """A :func:`tiny_cnn` model split for Grad-CAM: ``(trunk, head)`` sharing its leaves.

    ``trunk(images)`` is the last conv's ReLU output; ``head(activations)`` the logits.
    """
    variables, mean_rgb = model_fn.args[0], model_fn.keywords["mean_rgb"]
    return TinyCam(jax.tree_util.Partial(_tiny_trunk, variables, mean_rgb=mean_rgb),
               jax.tree_util.Partial(_tiny_head, variables))


def tiny_cnn(key, image_hw=(32, 32)) -> tuple[jax.tree_util.Partial, dict]:
    """A random 3-class :class:`TinyCNN` as a ``ModelFn`` with mean colour 0.5 grey.

    Returns ``(model_fn, variables)``; ``model_fn.func`` rebuilt with other variables
    (``jax.tree_util.Partial(model_fn.func, new_variables, mean_rgb=...)``) reuses compilations.
    """
    variables = TinyCNN().init(key, jnp.zeros((1, *image_hw, 3)))
    mean_rgb = jnp.full((3,), 0.5, jnp.float32)
    return jax.tree_util.Partial(_tiny_apply, variables, mean_rgb=mean_rgb), variables
