"""Optional dependencies: the library needs only jax, flax, optax, numpy and orbax-checkpoint.

A feature that needs more (LIME's quickshift superpixels, ``.safetensors`` weights, progress
bars, ImageNet's WordNet ids) imports it through :func:`require`, which names the package and
the extra that installs it when it is missing.
"""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRA = "app"
"""The extra that installs every optional package: ``pip install 'saliency-jax[app]'``."""


def require(module: str, *, package: str, feature: str) -> ModuleType:
    """``importlib.import_module(module)``, or a ModuleNotFoundError that says what to install.

    Args:
      module: the module to import, e.g. ``"skimage.segmentation"``.
      package: its PyPI distribution, e.g. ``"scikit-image"``.
      feature: what needs it, for the message, e.g. ``"sj.lime's default superpixels"``.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        top = module.split(".")[0]
        if err.name is not None and err.name.split(".")[0] != top:
            raise  # the package is there but one of its own imports failed
        raise ModuleNotFoundError(
            f"{feature} needs {package}, which is not installed: "
            f"pip install {package} (or pip install 'saliency-jax[{EXTRA}]')",
            name=err.name or top,
        ) from None
