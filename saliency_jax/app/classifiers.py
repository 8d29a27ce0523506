"""Where the embedded defaults live: packaged classifiers and converted weights.

The default classifiers of the synthetic benchmark ship inside the package
(``saliency_jax/assets/classifiers/<model>/variables``, orbax). Weights converted by
``saliency-jax convert-weights`` go to ``$SALIENCY_JAX_HOME`` (default
``~/.cache/saliency-jax``), one folder per model.
"""

from __future__ import annotations

import os
import pathlib
import sys

from saliency_jax import models

ASSETS = pathlib.Path(__file__).parent.parent / "assets"
DEFAULT_MODELS = ("resnet_small", "vgg_small")


def packaged_classifier_dir(model: str) -> pathlib.Path:
    return ASSETS / "classifiers" / model


def weights_home() -> pathlib.Path:
    return pathlib.Path(os.environ.get("SALIENCY_JAX_HOME", "~/.cache/saliency-jax")).expanduser()


def converted_weights_dir(model: str) -> pathlib.Path:
    return weights_home() / model


def resolve_checkpoint(model: str, checkpoint: str | None) -> pathlib.Path:
    """The variables folder to load for ``model``: the given one, the packaged default, or the
    converted weights; a ValueError that says how to get them otherwise."""
    models.get(model)  # an unknown name fails first, listing the known ones
    if checkpoint is not None:
        path = pathlib.Path(checkpoint).expanduser().resolve()
        if not path.exists():
            raise ValueError(f"checkpoint {path} does not exist")
        return path
    packaged = packaged_classifier_dir(model) / "variables"
    if packaged.exists():
        return packaged
    converted = converted_weights_dir(model)
    if converted.exists():
        return converted
    finder = getattr(models.get(model), "packaged_checkpoint", None)
    if finder is not None:  # weights shipped in a package (EfficientNet-Lite0): convert now
        src = finder()
        print(f"converting {model}'s weights at first use: {src} -> {converted} (once)",
              file=sys.stderr, flush=True)
        models.convert_file(src, converted, name=model)
        return converted
    if model in DEFAULT_MODELS:
        raise ValueError(
            f"no packaged checkpoint for {model} at {packaged}; "
            f"train one with: saliency-jax train-classifier --model {model}"
        )
    raise ValueError(
        f"no weights for {model}: convert them first with "
        f"`saliency-jax convert-weights --model {model} [SRC]` (they go to {converted}), "
        "or pass --checkpoint"
    )


def load_classifier(model: str, checkpoint: str | None = None):
    """``(model_fn, variables)`` for a registry model from its resolved checkpoint."""
    variables = models.load_variables(resolve_checkpoint(model, checkpoint), name=model)
    return models.classifier(model, variables), variables
