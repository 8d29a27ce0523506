"""The explainers ``evaluate`` and ``explain`` know by name, with settings scaled to the image.

Paper settings are stated at 224 x 224. On an image of side ``s`` every pixel-valued setting
(window sizes, strides, metric step, pointing tolerance) is multiplied by ``s / 224``; grid
counts, probabilities and iteration counts are kept.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from saliency_jax.rise import RiseConfig, rise


@dataclasses.dataclass(frozen=True)
class Method:
    """An explainer bound to its settings: ``explain(key, model_fn, image, target) -> f32[h, w]``."""

    name: str
    explain: Callable
    queries: int
    """Model queries (forward passes of one image) per explanation."""
    description: str


def _random_map(key, model_fn, image, target):
    del model_fn, target
    return jax.random.uniform(key, image.shape[:2])


def build_methods(names, *, image_hw, num_masks: int | None = None) -> list[Method]:
    """Instantiate ``names`` for images of size ``image_hw``; unknown names raise ValueError."""
    registry = method_factories(image_hw, num_masks=num_masks)
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; available: {sorted(registry)}")
    return [registry[n]() for n in names]


def method_factories(image_hw, *, num_masks=None) -> dict[str, Callable[[], Method]]:
    del image_hw  # RISE's settings are resolution-free (a grid count and a probability).

    def make_rise():
        config = RiseConfig(num_masks=num_masks or 4000, grid=7, p_keep=0.5, batch_size=100)
        fn = lambda key, model_fn, image, target: rise(  # noqa: E731
            key, model_fn, image, target, config=config
        )
        return Method("rise", fn, config.num_masks,
                      f"RISE, N={config.num_masks}, s={config.grid}, p={config.p_keep}")

    def make_random():
        return Method("random", _random_map, 0, "uniform random map (sanity floor)")

    return {"rise": make_rise, "random": make_random}


def available_methods() -> list[str]:
    return sorted(method_factories((224, 224)))


def top1(model_fn, image) -> jax.Array:
    """The model's top-1 class for one image."""
    return jnp.argmax(model_fn(image[None])[0])
