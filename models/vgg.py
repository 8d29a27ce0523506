"""VGG family in Flax Linen (NHWC), layer for layer torchvision's ``vgg.py``.

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
ICLR 2015. ``features``: 3x3 convs (pad 1) + ReLU, optionally with BatchNorm (eps 1e-5, momentum
0.9 = torch's 0.1) between conv and ReLU, and 2x2 stride-2 max-pools (floor); then torch's
``AdaptiveAvgPool2d(pool_size)`` (bin ``i`` of ``n`` over a length-``L`` axis averages
``[floor(i L / n), ceil((i + 1) L / n))``, so bins overlap or repeat when ``L < n``), a flatten in
torch's NCHW order (the first Linear's weights load unmodified), and the classifier
Linear-ReLU-Dropout-Linear-ReLU-Dropout-Linear. Dropout is active only with ``train=True``
(pass ``rngs={"dropout": key}``).

Call (``x`` normalised, ``f32[b, h, w, 3]``)::

    logits = VGG(...).apply(variables, x, train=False)                        # f32[b, k]
    logits, feats = VGG(...).apply(variables, x, train=False, features=True)

Feature names: ``"block1"`` ... ``"block5"`` (one per max-pool), each the output of the last
conv's ReLU of a block, *before* its max-pool (VGG16: conv1_2, conv2_2, conv3_3, conv4_3,
conv5_3; stride 1, 2, 4, 8, 16; channels 64, 128, 256, 512, 512).

Flax module names are torchvision's with ``_`` for ``.`` (``features_28`` <-> ``features.28``,
``classifier_6`` <-> ``classifier.6``), so :func:`models.weights.convert_torch` maps a
torchvision ``state_dict`` with the default rule.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from . import weights
from .spec import ModelSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
SMALL_CFG = (16, "M", 32, "M", 64, 64, "M", 128, 128, "M", 128, 128, "M")

# torchvision's init: kaiming_normal_(fan_out, relu) for convs, N(0, 0.01) for Linear, zero biases.
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
_dense_init = nn.initializers.normal(0.01)


def adaptive_pool_matrix(length: int, bins: int) -> np.ndarray:
    """``f32[bins, length]``: row ``i`` averages torch's adaptive-pool bin
    ``[floor(i * length / bins), ceil((i + 1) * length / bins))``."""
    m = np.zeros((bins, length), np.float32)
    for i in range(bins):
        start = (i * length) // bins
        end = -(-((i + 1) * length) // bins)
        m[i, start:end] = 1.0 / (end - start)
    return m


def adaptive_avg_pool(x, output_hw: tuple[int, int]):
    """torch ``AdaptiveAvgPool2d(output_hw)`` on NHWC ``x`` (static shapes)."""
    _, h, w, _ = x.shape
    if (h, w) == tuple(output_hw):
        return x
    ph = jnp.asarray(adaptive_pool_matrix(h, output_hw[0]))
    pw = jnp.asarray(adaptive_pool_matrix(w, output_hw[1]))
    return jnp.einsum("ih,bhwc,jw->bijc", ph, x, pw)


def feature_names(cfg: Sequence) -> tuple[str, ...]:
    return tuple(f"block{i + 1}" for i in range(sum(v == "M" for v in cfg)))


class VGG(nn.Module):
    """torchvision ``VGG(make_layers(cfg, batch_norm))`` with a configurable head."""

    cfg: Sequence = VGG16_CFG
    batch_norm: bool = False
    num_classes: int = 1000
    pool_size: tuple[int, int] = (7, 7)
    hidden: int = 4096
    dropout_rate: float = 0.5

    @nn.compact
    def __call__(self, x, train: bool = False, features: bool = False):
        feats = {}
        index = 0  # torch's index in nn.Sequential `features`
        for v in self.cfg:
            if v == "M":
                feats[f"block{len(feats) + 1}"] = x
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
                index += 1
                continue
            x = nn.Conv(
                v,
                (3, 3),
                padding=((1, 1), (1, 1)),
                kernel_init=_conv_init,
                name=f"features_{index}",
            )(x)
            if self.batch_norm:
                x = nn.BatchNorm(
                    use_running_average=not train,
                    momentum=0.9,
                    epsilon=1e-5,
                    name=f"features_{index + 1}",
                )(x)
            x = nn.relu(x)
            index += 3 if self.batch_norm else 2
        x = adaptive_avg_pool(x, self.pool_size)
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)  # torch.flatten of NCHW
        for i in (0, 3):
            x = nn.Dense(self.hidden, kernel_init=_dense_init, name=f"classifier_{i}")(x)
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(nn.relu(x))
        logits = nn.Dense(self.num_classes, kernel_init=_dense_init, name="classifier_6")(x)
        return (logits, feats) if features else logits


def _spec(name, num_classes, input_hw=(224, 224), **arch) -> ModelSpec:
    build = functools.partial(VGG, num_classes=num_classes, **arch)

    @functools.cache
    def shapes():
        return weights.module_variable_shapes(build(), input_hw)

    def torch_to_flax(state_dict):
        return weights.convert_torch(state_dict, shapes(), model=name)

    return ModelSpec(
        name=name,
        build=build,
        num_classes=num_classes,
        mean_rgb=IMAGENET_MEAN,
        std_rgb=IMAGENET_STD,
        feature_names=feature_names(arch.get("cfg", VGG16_CFG)),
        input_hw=input_hw,
        torch_to_flax=torch_to_flax,
        with_num_classes=functools.partial(_spec, name, input_hw=input_hw, **arch),
    )


SPECS = {
    "vgg16": _spec("vgg16", 1000, cfg=VGG16_CFG, batch_norm=False),
    "vgg16_bn": _spec("vgg16_bn", 1000, cfg=VGG16_CFG, batch_norm=True),
    # For the embedded synthetic benchmark (112 px): BatchNorm for fast training from scratch,
    # global average pooling and a 256-256-k head (~0.7 M parameters at k=6).
    "vgg_small": _spec(
        "vgg_small",
        1000,
        input_hw=(112, 112),
        cfg=SMALL_CFG,
        batch_norm=True,
        pool_size=(1, 1),
        hidden=256,
        dropout_rate=0.2,
    ),
}
