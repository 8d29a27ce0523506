"""Data: the synthetic ``saliency_shapes`` benchmark and real datasets through TFDS.

Every dataset yields the same example dict (DESIGN §3; details in :mod:`.readers`): ``image``
uint8[h, w, 3], ``label``, and where the dataset has them ``mask`` bool[h, w] and ``boxes``
f32[n, 4] in pixels ``(ymin, xmin, ymax, xmax)``, max exclusive.
"""

from saliency_jax.data import readers, shapes
from saliency_jax.data.readers import ExampleSource, load, load_image_file
from saliency_jax.data.shapes import (
    CLASS_NAMES,
    NUM_CLASSES,
    SaliencyShapes,
    generate_arrays,
    render_example,
)
from saliency_jax.data.shapes import prepare as prepare_shapes

__all__ = [
    "CLASS_NAMES",
    "NUM_CLASSES",
    "ExampleSource",
    "SaliencyShapes",
    "generate_arrays",
    "load",
    "load_image_file",
    "prepare_shapes",
    "readers",
    "render_example",
    "shapes",
]
