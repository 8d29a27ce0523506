"""Registry networks split at their last convolutional stage, for Grad-CAM.

::

    cam = models.cam.cam_model("resnet50", variables)      # CamModel(trunk, head)
    acts = cam.trunk(images)       # images f32[b, h, w, 3] in [0, 1] -> A f32[b, h', w', c]
    logits = cam.head(acts)        # A -> pre-softmax scores f32[b, k]

``cam.head(cam.trunk(x))`` equals ``models.logits_fn(name, variables)(x)``. The split point is
the output of the last convolutional stage, where Grad-CAM (Selvaraju et al., ICCV 2017) takes
its activations:

* ResNet: trunk = everything up to ``layer4`` (the last block's ReLU); head = global average
  pool + ``fc``.
* VGG: trunk = ``features`` up to the last block's last conv ReLU (feature ``block5`` for VGG16
  and ``vgg_small``: conv5_3 for VGG16, *before* the final max-pool); head = that max-pool,
  ``AdaptiveAvgPool2d(pool_size)``, the NCHW flatten and the classifier (dropout off).
* EfficientNet-Lite0: trunk = up to ``head`` (head conv + BN + ReLU6); head = global average
  pool + ``classifier`` (dropout off).

Both halves are ``jax.tree_util.Partial`` s whose weights are traced leaves (the trunk is
:func:`models.features_fn` for the last stage, normalisation inside; the head holds the head's
parameters), and ``CamModel`` is a named tuple, so the pair is a pytree: pass it as an argument
of a jitted function and new weights reuse the compilation.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from . import registry, resnet, vgg


class CamModel(NamedTuple):
    """A network split for Grad-CAM: ``head(trunk(images))`` are its logits.

    ``trunk``: images ``f32[b, h, w, 3]`` in [0, 1] -> activations ``f32[b, h', w', c]``.
    ``head``: activations -> pre-softmax class scores ``f32[b, k]``.
    """

    trunk: jax.tree_util.Partial
    head: jax.tree_util.Partial


def _only_feature(features, images):
    (value,) = features(images).values()
    return value


def _dense(params, x):
    return jnp.dot(x, params["kernel"]) + params["bias"][None, :]


def _gap_dense_head(params, activations):
    """Global average pool then a dense layer (ResNet ``fc``, EfficientNet ``classifier``)."""
    return _dense(params, jnp.mean(activations, axis=(1, 2)))


@functools.cache
def _vgg_head_fn(pool_size: tuple[int, int]):
    def vgg_head(params, activations):
        x = jax.lax.reduce_window(activations, -jnp.inf, jax.lax.max, (1, 2, 2, 1),
                                  (1, 2, 2, 1), "VALID")  # nn.max_pool((2, 2), strides=(2, 2))
        x = vgg.adaptive_avg_pool(x, pool_size)
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)  # torch.flatten of NCHW
        x = jax.nn.relu(_dense(params["classifier_0"], x))
        x = jax.nn.relu(_dense(params["classifier_3"], x))
        return _dense(params["classifier_6"], x)

    vgg_head.__qualname__ = vgg_head.__name__ = f"vgg_head_{pool_size[0]}x{pool_size[1]}"
    return vgg_head


def _efficientnet_class():
    try:
        from . import efficientnet
    except ModuleNotFoundError:  # pragma: no cover - optional while being written
        return None
    return efficientnet.EfficientNetLite0


def cam_model(name: str, variables, *, num_classes: int | None = None) -> CamModel:
    """``name``'s network with ``variables`` split at its last conv stage (see module doc).

    Args:
      name: a registry name (``models.available()``): a ResNet, VGG or EfficientNet-Lite0.
      variables: the Flax variables (``models.init`` or converted weights).
      num_classes: as in :func:`models.classifier` (default: read off ``variables``).
    """
    spec = registry.spec_for(name, variables, num_classes=num_classes)
    module = spec.build()
    params = variables["params"]
    efficientnet_cls = _efficientnet_class()
    if isinstance(module, resnet.ResNet):
        stage, head = "layer4", jax.tree_util.Partial(_gap_dense_head, params["fc"])
    elif efficientnet_cls is not None and isinstance(module, efficientnet_cls):
        stage, head = "head", jax.tree_util.Partial(_gap_dense_head, params["classifier"])
    elif isinstance(module, vgg.VGG):
        if module.cfg[-1] != "M":
            raise ValueError(f"model {name!r}: a VGG cfg must end with a max-pool ('M')")
        stage = spec.feature_names[-1]
        head_params = {k: params[k] for k in ("classifier_0", "classifier_3", "classifier_6")}
        head = jax.tree_util.Partial(_vgg_head_fn(tuple(module.pool_size)), head_params)
    else:
        raise ValueError(
            f"model {name!r} ({type(module).__name__}) has no Grad-CAM split; supported: "
            "ResNet, VGG and EfficientNet-Lite0 families"
        )
    features = registry.features_fn(spec.name, variables, names=(stage,),
                                     num_classes=spec.num_classes)
    return CamModel(jax.tree_util.Partial(_only_feature, features), head)
