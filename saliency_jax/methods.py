"""The explainers ``evaluate`` and ``explain`` know by name, with settings scaled to the image.

Paper settings are stated at 224 x 224. On an image of side ``s`` every pixel-valued setting
(window sizes, strides, metric step, pointing tolerance) is multiplied by ``s / 224``; grid
counts, probabilities, sample and iteration counts are kept.

A method is built from a :class:`ModelContext` (the registry name and variables of the model
being explained) because some need more than the black box: Grad-CAM its gradients, IASSA and
the RL agents its stage features.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

import models
from saliency_jax.gradcam import gradcam
from saliency_jax.iassa import REFERENCE_LEVELS, IassaConfig, iassa, iassa_num_queries
from saliency_jax.lime import LimeConfig, lime
from saliency_jax.occlusion import OcclusionConfig, occlusion
from saliency_jax.rise import RiseConfig, rise


@dataclasses.dataclass(frozen=True)
class ModelContext:
    """The model under explanation: registry ``name`` and its ``variables``."""

    name: str
    variables: dict = dataclasses.field(repr=False, hash=False, compare=False)
    image_hw: tuple[int, int] = (224, 224)


@dataclasses.dataclass(frozen=True)
class Method:
    """An explainer bound to its settings: ``explain(key, model_fn, image, target) -> f32[h, w]``."""

    name: str
    explain: Callable
    queries: int
    """Black-box model queries (forward passes of one image) per explanation."""
    description: str


def _random_map(key, model_fn, image, target):
    del model_fn, target
    return jax.random.uniform(key, image.shape[:2])


def _rise(ctx: ModelContext, num_masks: int | None) -> Method:
    config = RiseConfig(num_masks=num_masks or 4000, grid=7, p_keep=0.5, batch_size=100)

    def explain(key, model_fn, image, target):
        return rise(key, model_fn, image, target, config=config)

    return Method("rise", explain, config.num_masks,
                  f"RISE, N={config.num_masks}, s={config.grid}, p={config.p_keep}")


def _occlusion(ctx: ModelContext, num_masks: int | None) -> Method:
    config = OcclusionConfig.for_image_size(ctx.image_hw)

    def explain(key, model_fn, image, target):
        return occlusion(key, model_fn, image, target, config=config)

    return Method("occlusion", explain, config.num_windows(ctx.image_hw) + 1,
                  f"sliding-window occlusion, window {config.window}, stride {config.stride}")


def _gradcam(ctx: ModelContext, num_masks: int | None) -> Method:
    from models.cam import cam_model

    split = cam_model(ctx.name, ctx.variables)

    def explain(key, model_fn, image, target):
        return gradcam(key, model_fn, image, target, cam_model=split)

    return Method("gradcam", explain, 1, "Grad-CAM (white-box: one forward and backward pass)")


def _lime(ctx: ModelContext, num_masks: int | None) -> Method:
    config = LimeConfig(num_samples=1000)

    def explain(key, model_fn, image, target):
        return lime(key, model_fn, image, target, config=config)

    return Method("lime", explain, config.num_samples,
                  f"LIME, {config.num_samples} samples, quickshift superpixels")


def _iassa_method(name: str, config: IassaConfig, ctx: ModelContext, description: str) -> Method:
    features = models.features_fn(ctx.name, ctx.variables, names=config.feature_names)

    def explain(key, model_fn, image, target):
        return iassa(key, model_fn, image, target, config=config, features_fn=features)

    return Method(name, explain, iassa_num_queries(config, ctx.image_hw), description)


def _iassa(ctx: ModelContext, num_masks: int | None) -> Method:
    """Paper variant; LRPF-SA on the model's four deepest stages (the paper's Φ1..Φ4)."""
    levels = models.get(ctx.name).feature_names[-4:]
    config = IassaConfig.for_image_size(ctx.image_hw[0], feature_names=levels)
    return _iassa_method("iassa", config, ctx,
                         f"IASSA (paper variant), k={config.iterations}, stages {levels}")


def _iassa_reference(ctx: ModelContext, num_masks: int | None) -> Method:
    """The released code's behaviour; its five ResNet levels where the model has them."""
    names = models.get(ctx.name).feature_names
    levels = REFERENCE_LEVELS if set(REFERENCE_LEVELS) <= set(names) else names[-5:]
    config = IassaConfig.reference(ctx.image_hw[0], feature_names=levels)
    return _iassa_method("iassa_reference", config, ctx,
                         f"IASSA (released-code variant), k={config.iterations}")


def _random(ctx: ModelContext, num_masks: int | None) -> Method:
    return Method("random", _random_map, 0, "uniform random map (sanity floor)")


FACTORIES: dict[str, Callable[[ModelContext, int | None], Method]] = {
    "rise": _rise,
    "occlusion": _occlusion,
    "gradcam": _gradcam,
    "lime": _lime,
    "iassa": _iassa,
    "iassa_reference": _iassa_reference,
    "random": _random,
}
DEFAULT_METHODS = ("rise", "iassa", "iassa_reference", "occlusion", "gradcam", "lime", "random")


def available_methods() -> list[str]:
    return list(FACTORIES)


def build_methods(names, ctx: ModelContext, *, num_masks: int | None = None) -> list[Method]:
    """Instantiate ``names`` for ``ctx``; unknown names raise ValueError listing the known."""
    unknown = [n for n in names if n not in FACTORIES]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; available: {available_methods()}")
    if len(set(names)) != len(names):
        raise ValueError(f"methods must not repeat, got {list(names)}")
    return [FACTORIES[n](ctx, num_masks) for n in names]


def top1(model_fn, image) -> jax.Array:
    """The model's top-1 class for one image."""
    return jnp.argmax(model_fn(image[None])[0])


def model_context(name: str, variables, image_hw) -> ModelContext:
    models.get(name)  # unknown names fail here, with the list of known ones
    return ModelContext(name, variables, tuple(image_hw))
