"""What the registry knows about one architecture.

Every architecture module (``models/resnet.py``, ``models/vgg.py``, ``models/efficientnet.py``)
exports ``SPECS: dict[str, ModelSpec]``. A spec's ``build()`` returns a Flax Linen module
(NHWC) whose call is::

    module.apply(variables, x, train=False)                 -> logits f32[b, k]
    module.apply(variables, x, train=False, features=True)  -> (logits, {stage name: f32[b, h, w, c]})

where ``x`` is the *normalised* input ``(image - mean) / std``. Normalisation and softmax are
composed in by :func:`models.classifier`, never inside the module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[[], object]
    """Returns the Flax Linen module."""
    num_classes: int
    mean_rgb: tuple[float, float, float]
    """Per-channel mean of the input normalisation, in [0, 1] pixel units (= the mean colour)."""
    std_rgb: tuple[float, float, float]
    feature_names: tuple[str, ...]
    """Names of the stage features returned with ``features=True``, shallow to deep."""
    input_hw: tuple[int, int] = (224, 224)
    """The resolution the architecture is meant for (any size >= its minimum works)."""
    torch_to_flax: Callable[[dict[str, np.ndarray]], dict] | None = None
    """Maps a torch ``state_dict`` (numpy arrays) to Flax ``variables``; raises ``ValueError``
    listing missing, unexpected and mis-shaped keys."""
    packaged_checkpoint: Callable[[], object] | None = None
    """For models whose weights ship inside an installed package: returns that file's path."""
    with_num_classes: Callable[[int], ModelSpec] | None = None
    """Returns this architecture's spec with another number of classes (a new classifier head);
    ``None`` when the class count is fixed. Used by ``models.get(name, num_classes=k)``."""
