"""Flax base models (torchvision ResNet and VGG ports, EfficientNet-Lite0), their registry and
weight import.

::

    from saliency_jax import models
    spec = models.get("resnet_small", num_classes=6)     # ModelSpec
    variables = models.init("resnet_small", key, num_classes=6)
    model_fn = models.classifier("resnet_small", variables)   # ModelFn: images in [0, 1] -> probs
    feats = models.features_fn("resnet50", variables50, names=("layer4",))(images)

    variables50 = models.convert_file("resnet50.pth", "ckpt/resnet50", name="resnet50")
    variables50 = models.load_variables("ckpt/resnet50", name="resnet50")

The weight functions (``read_state_dict``, ``convert_state_dict``, ``convert_file``,
``save_variables``, ``load_variables``, ``checkpoint_info``) live in :mod:`models.weights` and
are re-exported here.

``models`` imports nothing from ``saliency_jax``.
"""

from . import weights
from .registry import (
    available,
    classifier,
    features_fn,
    get,
    init,
    logits_fn,
)
from .spec import ModelSpec
from .weights import (
    checkpoint_info,
    convert_file,
    convert_state_dict,
    load_variables,
    read_state_dict,
    save_variables,
)

__all__ = [
    "ModelSpec",
    "available",
    "checkpoint_info",
    "classifier",
    "convert_file",
    "convert_state_dict",
    "features_fn",
    "get",
    "init",
    "load_variables",
    "logits_fn",
    "read_state_dict",
    "save_variables",
    "weights",
]
