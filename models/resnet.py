"""ResNet family in Flax Linen (NHWC), layer for layer torchvision's ``resnet.py`` (v1.5).

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016; torchvision's v1.5
puts a bottleneck's stride on its 3x3 conv. Torch padding is reproduced exactly: conv 7x7 s2
pad 3, max-pool 3x3 s2 pad 1 (padded with -inf), 3x3 convs pad 1, projection shortcut =
conv 1x1 stride s + BN. BatchNorm: eps 1e-5, momentum 0.9 (= torch's 0.1; Flax uses the
biased batch variance for the running average where torch uses the unbiased one).

Call (``x`` normalised, ``f32[b, h, w, 3]``)::

    logits = ResNet(...).apply(variables, x, train=False)                       # f32[b, k]
    logits, feats = ResNet(...).apply(variables, x, train=False, features=True)

Feature names (stride relative to the input, channels for ResNet50 / ResNet18):

    "conv1"   conv1 output, before BN and ReLU (IASSA's LRPF-SA level 1)  /2   64 / 64
    "stem"    relu(bn1(conv1(x))), before the max-pool                     /2   64 / 64
    "pool1"   after the 3x3 s2 max-pool                                   /4   64 / 64
    "layer1"  output of torchvision's layer1                              /4  256 / 64
    "layer2"                                                              /8  512 / 128
    "layer3"                                                             /16 1024 / 256
    "layer4"  before global average pooling                              /32 2048 / 512

(spatial sizes follow torch's floor rule, e.g. 112 px -> 56, 56, 28, 28, 14, 7, 4.)
Flax module names mirror torchvision's keys (``layer1_0/downsample_1`` <->
``layer1.0.downsample.1``), so :func:`models.weights.convert_torch` maps a torchvision
``state_dict`` with the default rule.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from . import weights
from .spec import ModelSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FEATURE_NAMES = ("conv1", "stem", "pool1", "layer1", "layer2", "layer3", "layer4")

# torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu") for convs.
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(features, kernel, stride, pad, name):
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        kernel_init=_conv_init,
        name=name,
    )


def _bn(train, name):
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class BasicBlock(nn.Module):
    """Two 3x3 convs; ``expansion`` 1."""

    width: int
    stride: int = 1
    downsample: bool = False
    expansion = 1

    @nn.compact
    def __call__(self, x, train: bool):
        out = nn.relu(_bn(train, "bn1")(_conv(self.width, 3, self.stride, 1, "conv1")(x)))
        out = _bn(train, "bn2")(_conv(self.width, 3, 1, 1, "conv2")(out))
        if self.downsample:
            x = _bn(train, "downsample_1")(_conv(self.width, 1, self.stride, 0, "downsample_0")(x))
        return nn.relu(out + x)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride here: v1.5) -> 1x1 (x4 channels); ``expansion`` 4."""

    width: int
    stride: int = 1
    downsample: bool = False
    expansion = 4

    @nn.compact
    def __call__(self, x, train: bool):
        out = nn.relu(_bn(train, "bn1")(_conv(self.width, 1, 1, 0, "conv1")(x)))
        out = nn.relu(_bn(train, "bn2")(_conv(self.width, 3, self.stride, 1, "conv2")(out)))
        out = _bn(train, "bn3")(_conv(self.width * 4, 1, 1, 0, "conv3")(out))
        if self.downsample:
            x = _bn(train, "downsample_1")(
                _conv(self.width * 4, 1, self.stride, 0, "downsample_0")(x)
            )
        return nn.relu(out + x)


class ResNet(nn.Module):
    """torchvision ``ResNet``: stem, four stages of ``stage_sizes`` blocks, average pool, fc.

    Stage ``i`` has width ``base_width * 2**i`` (``widths`` overrides), stride 1 for the first
    stage and 2 after.
    """

    block: type = Bottleneck
    stage_sizes: Sequence[int] = (3, 4, 6, 3)
    num_classes: int = 1000
    base_width: int = 64
    widths: Sequence[int] | None = None

    @nn.compact
    def __call__(self, x, train: bool = False, features: bool = False):
        widths = self.widths or tuple(self.base_width * 2**i for i in range(len(self.stage_sizes)))
        feats = {}
        x = _conv(widths[0], 7, 2, 3, "conv1")(x)
        feats["conv1"] = x
        x = nn.relu(_bn(train, "bn1")(x))
        feats["stem"] = x
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        feats["pool1"] = x
        in_ch = widths[0]
        for i, (n_blocks, width) in enumerate(zip(self.stage_sizes, widths, strict=True)):
            for j in range(n_blocks):
                stride = 2 if i > 0 and j == 0 else 1
                out_ch = width * self.block.expansion
                x = self.block(
                    width,
                    stride=stride,
                    downsample=j == 0 and (stride != 1 or in_ch != out_ch),
                    name=f"layer{i + 1}_{j}",
                )(x, train)
                in_ch = out_ch
            feats[f"layer{i + 1}"] = x
        logits = nn.Dense(self.num_classes, name="fc")(jnp.mean(x, axis=(1, 2)))
        return (logits, feats) if features else logits


def _spec(name, num_classes, input_hw=(224, 224), **arch) -> ModelSpec:
    build = functools.partial(ResNet, num_classes=num_classes, **arch)

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
        feature_names=FEATURE_NAMES,
        input_hw=input_hw,
        torch_to_flax=torch_to_flax,
        with_num_classes=functools.partial(_spec, name, input_hw=input_hw, **arch),
    )


SPECS = {
    "resnet18": _spec("resnet18", 1000, block=BasicBlock, stage_sizes=(2, 2, 2, 2)),
    "resnet50": _spec("resnet50", 1000, block=Bottleneck, stage_sizes=(3, 4, 6, 3)),
    "resnet_small": _spec(
        "resnet_small",
        1000,
        input_hw=(112, 112),
        block=BasicBlock,
        stage_sizes=(1, 1, 1, 1),
        widths=(16, 32, 64, 128),
    ),
}
