"""Grad-CAM (Selvaraju et al., ICCV 2017): the white-box baseline of RISE Table 1.

The network is split at its last convolutional stage into a ``trunk`` (image -> activations
``A f32[h', w', c]``) and a ``head`` (``A`` -> pre-softmax class scores ``y``). Then

    α_k = (1 / (h' w')) Σ_{i,j} ∂y_c / ∂A_{ij}^k          (gradients global-average-pooled)
    L   = ReLU(Σ_k α_k A^k)                                 (f32[h', w'])

and ``L`` is up-sampled bilinearly to the image size. The trunk runs once; ``jax.grad`` goes
through the head only. The class score ``y_c`` is the logit, not the probability, as in the
paper. The map is not normalised (deletion/insertion and the pointing game only use its order).

**Up-sampling** (``GradCamConfig.upsample``):

* ``"linear"`` (default): ``jax.image.resize(method="linear")``, half-pixel centres with the
  edge sample repeated (clamped) outside the feature map. This is what common Grad-CAM code
  does: ``cv2.resize(cam, (w, h))`` (``INTER_LINEAR``) in pytorch-grad-cam and
  ``F.interpolate(mode="bilinear", align_corners=False)`` in torch ports.
* ``"mirror"``: the mirror-boundary bilinear resize of RISE's masks
  (:func:`saliency_jax.masks.mirror_bilinear_resize`, = ``skimage.transform.resize(order=1)``).

**The model split.** ``cam_model`` is any pytree with callable attributes ``trunk`` and
``head``, e.g. ``models.cam.cam_model(name, variables)`` (a ``CamModel`` named tuple of
``jax.tree_util.Partial``\\ s, so the weights are traced: new weights do not recompile):
``trunk(images f32[b, h, w, 3] in [0, 1]) -> A f32[b, h', w', c]`` (normalisation inside) and
``head(A) -> y f32[b, k]``. ``model_fn`` is only used to check ``target`` against its number of
classes (it must be the same network; this is not checked numerically).

Cost: one trunk forward, one head forward and one head backward per map. Deterministic:
``key`` is accepted for the explainers' shared signature and ignored.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from saliency_jax._src import masks, sharding, validation
from saliency_jax._src.model_fn import ModelFn

UPSAMPLE_METHODS = ("linear", "mirror")


@dataclasses.dataclass(frozen=True)
class GradCamConfig:
    """Grad-CAM settings (hashable: static under ``jit``).

    Attributes:
      upsample: how the ``h' x w'`` map is resized to the image, ``"linear"``
        (``jax.image.resize``, clamped edges, as cv2/torch) or ``"mirror"`` (see module doc).
    """

    upsample: str = "linear"

    def __post_init__(self):
        if self.upsample not in UPSAMPLE_METHODS:
            raise ValueError(f"upsample must be one of {UPSAMPLE_METHODS}, got {self.upsample!r}")


def cam_from_activations(activations, gradients):
    """``ReLU(Σ_k α_k A^k)`` with ``α_k`` the spatial mean of the gradients: ``f32[h', w']``.

    ``activations`` and ``gradients`` are ``f32[h', w', c]`` (one image).
    """
    alpha = jnp.mean(gradients, axis=(0, 1))  # f32[c]
    cam = jnp.einsum("hwc,c->hw", activations, alpha, precision=jax.lax.Precision.HIGHEST)
    return jax.nn.relu(cam)


def _resize(cam, image_hw, method):
    if method == "mirror":
        return masks.mirror_bilinear_resize(cam, image_hw)
    return jax.image.resize(cam, tuple(image_hw), method="linear")


@functools.partial(jax.jit, static_argnames=("upsample",))
def _gradcam(cam_model, image, target, *, upsample):
    activations = cam_model.trunk(image[None]).astype(jnp.float32)  # f32[1, h', w', c]
    gradients = jax.grad(lambda a: cam_model.head(a)[0, target].astype(jnp.float32))(activations)
    cam = cam_from_activations(activations[0], gradients[0])
    return _resize(cam, image.shape[:2], upsample)


def gradcam(key, model_fn: ModelFn, image, target, *, cam_model, config: GradCamConfig = GradCamConfig()):
    """The Grad-CAM map of class ``target``, up-sampled to the image: ``f32[h, w]`` (>= 0).

    Args:
      key: PRNG key, unused (the method is deterministic); kept for the explainers' signature.
      model_fn: the same network as a ``ModelFn``; only its number of classes is used, to
        validate ``target``.
      image: ``f32[h, w, 3]`` in [0, 1].
      target: integer class index in ``[0, k)`` (traced; may be vmapped).
      cam_model: the network split at its last conv stage: an object with ``trunk`` and
        ``head`` (see the module docstring), a pytree (e.g. ``models.cam.cam_model``).
      config: :class:`GradCamConfig` (static).

    Returns:
      ``f32[h, w]``: ``ReLU(Σ_k α_k A^k)`` up-sampled.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from typing import NamedTuple
      >>> class Split(NamedTuple):
      ...     trunk: jax.tree_util.Partial
      ...     head: jax.tree_util.Partial
      >>> trunk = jax.tree_util.Partial(lambda x: x[:, ::4, ::4, :])          # A: 8x8x3
      >>> head = jax.tree_util.Partial(lambda a: a.mean(axis=(1, 2)))          # 3 logits
      >>> model_fn = jax.tree_util.Partial(lambda x: jax.nn.softmax(x.mean(axis=(1, 2))))
      >>> image = jnp.full((32, 32, 3), 0.5)
      >>> import saliency_jax as sj
      >>> sj.gradcam(jax.random.key(0), model_fn, image, 1, cam_model=Split(trunk, head)).shape
      (32, 32)

    References:
      Selvaraju et al., *Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
      Localization*, ICCV 2017.
    """
    del key
    if not isinstance(config, GradCamConfig):
        raise ValueError(f"config must be a GradCamConfig, got {type(config).__name__}")
    if not (callable(getattr(cam_model, "trunk", None))
            and callable(getattr(cam_model, "head", None))):
        raise ValueError(
            "cam_model must have callable attributes trunk (images -> activations "
            "f32[b, h', w', c]) and head (activations -> class scores f32[b, k]), got "
            f"{type(cam_model).__name__}"
        )
    validation.check_image(image)
    num_classes = validation.num_classes_of(model_fn, image)
    validation.check_target(target, num_classes)
    image = jnp.asarray(image, jnp.float32)
    acts = jax.eval_shape(cam_model.trunk, jax.ShapeDtypeStruct((1, *image.shape), jnp.float32))
    if len(acts.shape) != 4 or acts.shape[0] != 1:
        raise ValueError(
            f"cam_model.trunk must map f32[b, h, w, 3] to activations f32[b, h', w', c], got "
            f"output shape {acts.shape} for input {(1, *image.shape)}"
        )
    scores = jax.eval_shape(cam_model.head, acts)
    if tuple(scores.shape) != (1, num_classes):
        raise ValueError(
            f"cam_model.head must map activations to f32[b, k] with k = {num_classes} (the "
            f"classes of model_fn), got output shape {scores.shape}"
        )
    operands = sharding.replicate((cam_model, image, jnp.asarray(target, jnp.int32)))
    return _gradcam(*operands, upsample=config.upsample)
