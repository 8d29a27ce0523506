"""Datasets through tensorflow-datasets, read without TensorFlow, as one example dict.

``load(name, ...)`` returns an :class:`ExampleSource`: a random-access sequence
(``len(src)``, ``src[i]``, ``src[a:b]``, iteration) of example dicts, with ``num_classes`` and
``class_names``. Supported names and their default splits:

=====================  ============  =====================================================
name                   split         ground truth
=====================  ============  =====================================================
``saliency_shapes``    ``test``      one target: ``mask``, ``boxes`` (exact, DESIGN §4)
``imagenet2012``       ``validation``  ``label`` only
``voc/2007``           ``test``      ``boxes``, ``box_labels``, ``difficult``
``coco/2014``          ``validation``  ``boxes``, ``box_labels``, ``crowd``; instance masks
                                     from an ``instances_val2014.json`` (``coco_annotations=``)
=====================  ============  =====================================================

and ``folder:PATH``, a folder of image files (one sub-folder per class, or flat with a
``labels.csv``; ``boxes`` and ``mask`` from VOC XML beside an image; :mod:`.folder`).

Every example holds
  * ``image`` uint8[h, w, 3]: resized to ``image_size`` (see below);
  * ``label`` int: the class to explain: the ImageNet label, the synthetic target's shape, and
    for the multi-label VOC/COCO the first annotated object's class (-1 for an image without
    objects); a pointing-game evaluation should loop over ``labels`` instead;
  * ``labels`` int32[m]: the sorted distinct classes present;
  * ``image_full_hw`` (H, W): the original resolution, and ``id`` (str);
  * where the dataset has them: ``boxes`` f32[n, 4] and ``boxes_full`` (original resolution),
    ``box_labels`` int32[n], ``difficult`` bool[n] (VOC), ``crowd`` bool[n] (COCO) — each with a
    ``*_full`` twin aligned with ``boxes_full`` (they differ only when a crop drops boxes),
    ``mask`` bool[h, w] and ``mask_full`` bool[H, W]: pixels of class ``label`` (the synthetic
    target; COCO: the union of that class's instances), ``object_masks_full`` bool[n, H, W]
    (COCO with annotations).

Boxes everywhere are pixel coordinates ``(ymin, xmin, ymax, xmax)``, max exclusive (a box
covers rows ``ymin .. ymax - 1``); TFDS's normalised boxes are these over ``(H, W)``.

Preprocessing (``resize``):
  * ``"direct"`` (default; the reference codes, METHODS §1.4): resize to
    ``image_size × image_size`` with no crop, aspect ratio not kept. Images use PIL bilinear,
    which is what torchvision's ``Resize((224, 224))`` does on PIL images.
  * ``"center_crop"``: resize the shorter side to ``round(image_size / crop_fraction)``
    (``crop_fraction=0.875``: 256 for 224, torchvision's ``Resize(256)``), then take the central
    ``image_size × image_size`` crop (torchvision's ``CenterCrop``). Boxes are clipped to the
    crop and boxes left empty are dropped (with their labels and flags).
  * ``"none"``: the original resolution.
Masks follow the image: resized bilinearly as 0/255 and thresholded at 128, then cropped;
boxes are scaled and shifted. The original-resolution ground truth stays in ``*_full``, as the
pointing game is scored at the original resolution (METHODS §5.2).

Real datasets are read from a TFDS data directory prepared in the ArrayRecord format
(``tfds build <name> --file_format=array_record``; building needs TensorFlow once, reading does
not). The TFDS ``coco`` builder cannot even be constructed without TensorFlow, so COCO is
read from its prepared files (version ``1.1.0``) and never through its code. The TFDS ``coco``
features hold boxes but no segmentations; pass ``coco_annotations=".../instances_val2014.json"``
for instance masks (polygons rasterised at pixel centres, RLE decoded exactly).
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, UnidentifiedImageError

from saliency_jax.data import folder, shapes

RESIZE_MODES = ("direct", "center_crop", "none")
DEFAULT_IMAGE_SIZE = 224
DEFAULT_CROP_FRACTION = 0.875

_DEFAULT_SPLITS = {
    shapes.NAME: "test",
    "photos": "test",
    "imagenet2012": "validation",
    "voc/2007": "test",
    "coco/2014": "validation",
}
_ALIASES = {"voc": "voc/2007", "coco": "coco/2014", "imagenet": "imagenet2012"}
_COCO_VERSION = "1.1.0"


# ----------------------------------------------------------------------------------------------
# Resizing an image and its ground truth consistently.


def _check_size(image_size, name: str = "image_size") -> tuple[int, int]:
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        hw = (int(image_size), int(image_size))
    elif (
        isinstance(image_size, (tuple, list))
        and len(image_size) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in image_size)
    ):
        hw = (int(image_size[0]), int(image_size[1]))
    else:
        raise ValueError(f"{name} must be an int or an (h, w) pair of ints, got {image_size!r}")
    if min(hw) < 1:
        raise ValueError(f"{name} must be positive, got {image_size!r}")
    return hw


def _check_resize(resize: str, crop_fraction: float) -> None:
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    if not (isinstance(crop_fraction, (int, float)) and 0.0 < crop_fraction <= 1.0):
        raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction!r}")


class _Geometry:
    """Maps an (H, W) image onto the output frame: scale to ``scaled_hw``, crop at ``offset``."""

    def __init__(self, full_hw, image_size, resize, crop_fraction):
        h, w = full_hw
        self.full_hw = (int(h), int(w))
        if resize == "none" or image_size is None:
            self.scaled_hw, self.offset, self.out_hw = self.full_hw, (0, 0), self.full_hw
        elif resize == "direct":
            self.scaled_hw, self.offset, self.out_hw = tuple(image_size), (0, 0), tuple(image_size)
        else:  # torchvision Resize(int(round(size / crop_fraction))) then CenterCrop(size)
            th, tw = image_size
            short = int(round(th / crop_fraction))
            if th != tw:  # no torchvision twin: the smallest scaling that covers the crop
                s = max(th / h, tw / w) / crop_fraction
                self.scaled_hw = (max(int(round(h * s)), th), max(int(round(w * s)), tw))
            elif h <= w:
                self.scaled_hw = (short, int(short * w / h))
            else:
                self.scaled_hw = (int(short * h / w), short)
            sh, sw = self.scaled_hw
            self.offset = (int(round((sh - th) / 2.0)), int(round((sw - tw) / 2.0)))
            self.out_hw = (th, tw)

    @property
    def identity(self) -> bool:
        return self.scaled_hw == self.full_hw and self.out_hw == self.full_hw

    def _crop(self, array: np.ndarray) -> np.ndarray:
        (top, left), (oh, ow) = self.offset, self.out_hw
        return array[top : top + oh, left : left + ow]

    def image(self, image: np.ndarray) -> np.ndarray:
        if self.identity:
            return image
        sh, sw = self.scaled_hw
        resized = np.asarray(Image.fromarray(image).resize((sw, sh), Image.BILINEAR))
        return self._crop(resized)

    def mask(self, mask: np.ndarray) -> np.ndarray:
        if self.identity:
            return mask
        sh, sw = self.scaled_hw
        grey = Image.fromarray(mask.astype(np.uint8) * 255).resize((sw, sh), Image.BILINEAR)
        return self._crop(np.asarray(grey) >= 128)

    def boxes(self, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boxes in the output frame and which input boxes are kept (non-empty after cropping)."""
        (h, w), (sh, sw), (top, left), (oh, ow) = (
            self.full_hw,
            self.scaled_hw,
            self.offset,
            self.out_hw,
        )
        scale = np.array([sh / h, sw / w, sh / h, sw / w], np.float64)
        shift = np.array([top, left, top, left], np.float64)
        hi = np.array([oh, ow, oh, ow], np.float64)
        out = np.clip(boxes.astype(np.float64) * scale - shift, 0.0, hi)
        keep = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
        return out[keep].astype(np.float32), keep


def _finish(ex: dict[str, Any], geometry: _Geometry) -> dict[str, Any]:
    """Adds the output-frame ``image``, ``boxes``, ``mask`` from the ``*_full`` entries."""
    ex["image_full_hw"] = geometry.full_hw
    ex["image"] = geometry.image(ex.pop("image_full"))
    if "boxes_full" in ex:
        ex["boxes"], keep = geometry.boxes(ex["boxes_full"])
        for key in ("box_labels", "difficult", "crowd"):
            if key in ex:
                ex[key + "_full"] = ex[key]
                ex[key] = ex[key][keep]
    if "mask_full" in ex:
        ex["mask"] = geometry.mask(ex["mask_full"])
    return ex


def _labels_of(box_labels: np.ndarray) -> np.ndarray:
    return np.unique(np.asarray(box_labels, np.int32)).astype(np.int32)


def _pixel_boxes(normalised, hw) -> np.ndarray:
    """TFDS normalised boxes (any nesting) -> f32[n, 4] pixel boxes."""
    h, w = hw
    b = np.asarray(normalised, np.float64).reshape(-1, 4)
    return (b * np.array([h, w, h, w], np.float64)).astype(np.float32)


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# ----------------------------------------------------------------------------------------------
# The example sequence.


class ExampleSource(Sequence):
    """Random-access sequence of example dicts (see the module docstring).

    ``src[i]`` reads and converts one example; ``src[a:b:c]`` is a view; iteration is in order.
    """

    def __init__(
        self,
        *,
        name: str,
        split: str,
        records: Sequence[Any],
        convert: Callable[[Any, int], dict[str, Any]],
        class_names: Sequence[str],
        indices: range | None = None,
    ):
        self.name = name
        self.split = split
        self.class_names = tuple(class_names)
        self._records = records
        self._convert = convert
        self._indices = range(len(records)) if indices is None else indices

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return ExampleSource(
                name=self.name,
                split=self.split,
                records=self._records,
                convert=self._convert,
                class_names=self.class_names,
                indices=self._indices[i],
            )
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"index must be an int or a slice, got {type(i).__name__}")
        j = self._indices[i]  # raises IndexError when out of range
        return self._convert(self._records[j], j)

    def __repr__(self) -> str:
        return (
            f"ExampleSource(name={self.name!r}, split={self.split!r}, len={len(self)}, "
            f"num_classes={self.num_classes})"
        )


# ----------------------------------------------------------------------------------------------
# saliency_shapes


class _RenderedShapes(Sequence):
    """Examples of the synthetic dataset rendered on demand (identical to the prepared ones)."""

    def __init__(self, config: shapes.SaliencyShapesConfig, split: str):
        sizes = dict(config.split_sizes)
        if split not in sizes:
            raise ValueError(
                f"split must be one of {sorted(sizes)} for {shapes.NAME}, got {split!r}"
            )
        self._config, self._split, self._n = config, split, sizes[split]

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> dict[str, Any]:
        cfg = self._config
        return shapes.render_example(cfg.seed, self._split, i, image_size=cfg.image_size)


def _shapes_from_tfds(raw: dict[str, Any]) -> dict[str, Any]:
    image = np.asarray(raw["image"])
    hw = image.shape[:2]
    return {
        "image": image,
        "label": int(raw["label"]),
        "mask": np.asarray(raw["mask"])[..., 0] > 0,
        "boxes": np.round(_pixel_boxes(raw["bbox"], hw)),  # exact integers stored as fractions
        "index": int(raw["index"]),
    }


def _convert_shapes(raw, i, *, split, geometry, from_tfds) -> dict[str, Any]:
    ex = _shapes_from_tfds(raw) if from_tfds else raw
    index = ex.get("index", i)
    label = int(ex["label"])
    full = {
        "image_full": ex["image"],
        "label": label,
        "labels": np.array([label], np.int32),
        "id": f"{split}/{index}",
        "mask_full": ex["mask"],
        "boxes_full": np.asarray(ex["boxes"], np.float32).reshape(-1, 4),
        "box_labels": np.array([label], np.int32),
    }
    return _finish(full, _Geometry(ex["image"].shape[:2], *geometry))


_SHAPES_CONFIG = re.compile(r"^(\d+)(?:_seed(\d+))?((?:_[a-z]+\d+)*)$")


def _parse_shapes_config(config_name: str | None) -> shapes.SaliencyShapesConfig:
    """Inverts :func:`shapes.shapes_config`'s naming: ``"112"``, ``"64_seed3_train60_test12"``."""
    if config_name is None:
        return shapes.shapes_config()
    m = _SHAPES_CONFIG.match(config_name)
    if m is None:
        raise ValueError(
            f"unknown {shapes.NAME} config {config_name!r}: expected '<size>[_seed<s>]"
            "[_<split><n>...]', e.g. '112' or '64_seed1_train600_test60'"
        )
    sizes = None
    if m.group(3):
        sizes = {k: int(v) for k, v in re.findall(r"_([a-z]+)(\d+)", m.group(3))}
    seed = int(m.group(2)) if m.group(2) else shapes.DEFAULT_SEED
    return shapes.shapes_config(int(m.group(1)), seed=seed, split_sizes=sizes)


# ----------------------------------------------------------------------------------------------
# ImageNet, VOC, COCO


PHOTOS = ("coffee", "chelsea", "astronaut", "rocket", "stereo_motorcycle", "camera")
"""Photos bundled inside the scikit-image wheel (nothing is downloaded); no labels."""


def _convert_photo(name, i, *, geometry) -> dict[str, Any]:
    from skimage import data as skdata

    image = getattr(skdata, name)()
    if name == "stereo_motorcycle":
        image = image[0]  # the left view
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    full = {"image_full": np.ascontiguousarray(image[..., :3]), "label": -1,
            "labels": np.zeros((0,), np.int32), "id": name}
    return _finish(full, _Geometry(image.shape[:2], *geometry))


def _convert_imagenet(raw, i, *, geometry) -> dict[str, Any]:
    image = np.asarray(raw["image"])
    label = int(raw["label"])
    full = {
        "image_full": image,
        "label": label,
        "labels": np.array([label], np.int32),
        "id": _text(raw.get("file_name", i)),
    }
    return _finish(full, _Geometry(image.shape[:2], *geometry))


def _convert_voc(raw, i, *, geometry) -> dict[str, Any]:
    image = np.asarray(raw["image"])
    objects = raw["objects"]
    box_labels = np.asarray(objects["label"], np.int32).reshape(-1)
    full = {
        "image_full": image,
        "label": int(box_labels[0]) if box_labels.size else -1,
        "labels": _labels_of(box_labels),
        "id": _text(raw.get("image/filename", i)),
        "boxes_full": _pixel_boxes(objects["bbox"], image.shape[:2]),
        "box_labels": box_labels,
        "difficult": np.asarray(objects["is_difficult"], bool).reshape(-1),
    }
    return _finish(full, _Geometry(image.shape[:2], *geometry))


def _rle_counts(counts, size) -> np.ndarray:
    """COCO RLE (``counts`` list or compressed string, column-major) -> bool[h, w]."""
    h, w = size
    if isinstance(counts, (str, bytes)):  # pycocotools' rleFrString
        s = counts.decode("ascii") if isinstance(counts, bytes) else counts
        runs: list[int] = []
        p = 0
        while p < len(s):
            x, k, more = 0, 0, True
            while more:
                c = ord(s[p]) - 48
                x |= (c & 0x1F) << (5 * k)
                more = bool(c & 0x20)
                p, k = p + 1, k + 1
                if not more and (c & 0x10):
                    x |= -1 << (5 * k)
            if len(runs) > 2:
                x += runs[-2]
            runs.append(x)
        counts = runs
    values = np.zeros(len(counts), bool)
    values[1::2] = True  # runs alternate, starting with zeros
    flat = np.repeat(values, np.asarray(counts, np.int64))
    if flat.size != h * w:
        raise ValueError(f"RLE counts sum to {flat.size}, expected {h}*{w}")
    return flat.reshape(w, h).T


def _polygons_mask(polygons, size) -> np.ndarray:
    """COCO polygons ``[[x0, y0, x1, y1, ...], ...]`` -> bool[h, w] (pixel centres inside)."""
    from skimage.draw import polygon as draw_polygon

    mask = np.zeros(size, bool)
    for poly in polygons:
        xy = np.asarray(poly, np.float64).reshape(-1, 2)
        # Pixel (i, j) covers [j, j+1) x [i, i+1); skimage puts pixel centres at integers.
        rr, cc = draw_polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, shape=size)
        mask[rr, cc] = True
    return mask


def coco_segmentation_mask(segmentation, size) -> np.ndarray:
    """One COCO annotation's ``segmentation`` (polygons or RLE) -> bool[h, w]."""
    if isinstance(segmentation, dict):
        return _rle_counts(segmentation["counts"], tuple(segmentation["size"]))
    return _polygons_mask(segmentation, size)


def _read_coco_annotations(path: str) -> dict[int, Any]:
    """annotation id -> segmentation, from a COCO ``instances_*.json``."""
    if not os.path.isfile(path):
        raise ValueError(f"coco_annotations file {path!r} does not exist")
    with open(path) as f:
        data = json.load(f)
    return {int(a["id"]): a["segmentation"] for a in data["annotations"]}


def _convert_coco(raw, i, *, geometry, segmentations) -> dict[str, Any]:
    image = np.asarray(raw["image"])
    hw = image.shape[:2]
    objects = raw["objects"]
    box_labels = np.asarray(objects["label"], np.int32).reshape(-1)
    label = int(box_labels[0]) if box_labels.size else -1
    full = {
        "image_full": image,
        "label": label,
        "labels": _labels_of(box_labels),
        "id": _text(raw.get("image/filename", i)),
        "boxes_full": _pixel_boxes(objects["bbox"], hw),
        "box_labels": box_labels,
        "crowd": np.asarray(objects["is_crowd"], bool).reshape(-1),
    }
    if segmentations is not None:
        ids = np.asarray(objects["id"], np.int64).reshape(-1)
        masks = np.zeros((len(ids), *hw), bool)
        for k, ann_id in enumerate(ids.tolist()):
            if ann_id not in segmentations:
                raise ValueError(
                    f"annotation id {ann_id} of {full['id']} is not in coco_annotations: "
                    "pass the instances file of the same split and year"
                )
            masks[k] = coco_segmentation_mask(segmentations[ann_id], hw)
        full["object_masks_full"] = masks
        full["mask_full"] = masks[box_labels == label].any(axis=0)
    return _finish(full, _Geometry(hw, *geometry))


# ----------------------------------------------------------------------------------------------
# load


def _data_dir_text(data_dir) -> str:
    if data_dir is not None:
        return os.fspath(data_dir)
    return tfds.core.constants.get_default_data_dir()


def _how_to_prepare(name: str, data_dir) -> str:
    d = _data_dir_text(data_dir)
    build = f"tfds build {name} --data_dir={d} --file_format=array_record"
    if name == "imagenet2012":
        return (
            "ImageNet must be downloaded by hand: put ILSVRC2012_img_train.tar and "
            f"ILSVRC2012_img_val.tar in {d}/downloads/manual/, then run (once, with TensorFlow "
            f"installed: pip install tensorflow-cpu) `{build}`"
        )
    if name == "coco/2014":
        return (
            "run (once, with TensorFlow installed: pip install tensorflow-cpu; the TFDS coco "
            f"builder imports TensorFlow; ~20 GB download) `{build}`"
        )
    if name.startswith(shapes.NAME):
        cfg = _parse_shapes_config(name.partition("/")[2] or None)
        sizes = dict(cfg.split_sizes)
        flags = f"--image_size={cfg.image_size} --seed={cfg.seed}"
        flags += f" --train={sizes.get('train', 0)} --test={sizes.get('test', 0)}"
        return (
            f"run `python -m saliency_jax.data.shapes --data_dir={d} {flags}` (or "
            "saliency_jax.data.shapes.prepare(data_dir, ...)), or pass data_dir=None to render "
            "the examples on the fly"
        )
    return f"run (once, with TensorFlow installed: pip install tensorflow-cpu) `{build}`"


def _not_prepared(name: str, split: str, data_dir, where: str) -> ValueError:
    return ValueError(
        f"dataset {name!r} (split {split!r}) is not prepared in the TFDS data directory "
        f"{_data_dir_text(data_dir)!r}: {where} does not exist. To prepare it, "
        f"{_how_to_prepare(name, data_dir)}. Reading it needs no TensorFlow."
    )


def _open_tfds(name: str, tfds_name: str, split: str, data_dir, *, check_dir: bool = False):
    """``(records, info)`` of a prepared TFDS dataset, or a ValueError saying how to prepare it.

    ``check_dir`` looks for the dataset's folder before asking TFDS (needed where TFDS would
    fall back to code that imports TensorFlow); without it, ``tfds.testing.mock_data`` works.
    """
    folder = os.path.join(_data_dir_text(data_dir), tfds_name.split(":")[0])
    if check_dir and not os.path.isdir(os.path.expanduser(folder)):
        raise _not_prepared(name, split, data_dir, folder)
    try:
        builder = tfds.builder(tfds_name, data_dir=data_dir, try_gcs=False)
        records = builder.as_data_source(split=split)
        info = builder.info
    except Exception as e:  # TFDS raises many types here: explain them all as a ValueError
        if not os.path.isdir(os.path.expanduser(folder)):
            raise _not_prepared(name, split, data_dir, folder) from e
        cause = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ValueError(
            f"dataset {name!r} (split {split!r}) could not be opened from {folder!r} "
            f"({type(e).__name__}: {cause}). It must be prepared in the ArrayRecord format: "
            f"{_how_to_prepare(name, data_dir)}; a copy prepared as TFRecord converts with "
            "`tfds convert_format --dataset_version_dir=<dir> --out_file_format=array_record`."
        ) from e
    return records, info


def load(
    name: str = shapes.NAME,
    *,
    split: str | None = None,
    data_dir: str | os.PathLike | None = None,
    image_size: int | tuple[int, int] | None = None,
    resize: str = "direct",
    crop_fraction: float = DEFAULT_CROP_FRACTION,
    coco_annotations: str | os.PathLike | None = None,
) -> ExampleSource:
    """Opens a dataset as an :class:`ExampleSource` of example dicts (module docstring).

    Args:
        name: ``"saliency_shapes"`` (or ``"saliency_shapes/<config>"``, e.g. ``"…/224"``),
            ``"imagenet2012"``, ``"voc/2007"``, ``"coco/2014"``, or ``"photos"`` (the photos
            bundled in scikit-image, :data:`PHOTOS`, unlabelled: label -1).
        split: defaults to ``test`` (shapes, VOC) or ``validation`` (ImageNet, COCO).
        data_dir: the TFDS data directory. For ``saliency_shapes``, ``None`` renders the
            examples on the fly (identical to a prepared copy); other datasets use TFDS's
            default (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
        image_size: output size, int or ``(h, w)``; ``None`` means the dataset's reference size:
            224 for the real datasets, the generated size for ``saliency_shapes``.
        resize: ``"direct"``, ``"center_crop"`` or ``"none"`` (module docstring).
        crop_fraction: for ``"center_crop"``: crop side / resized shorter side.
        coco_annotations: a COCO ``instances_<split><year>.json`` for instance masks.

    Raises:
        ValueError: unknown name, bad options, or a dataset that is not prepared in
            ``data_dir`` (the message says how to prepare it).
    """
    if not isinstance(name, str):
        raise ValueError(f"name must be a string, got {name!r}")
    _check_resize(resize, crop_fraction)
    size = None if image_size is None else _check_size(image_size)
    if name.startswith(folder.PREFIX):
        return _load_folder(name, split=split, data_dir=data_dir, size=size, resize=resize,
                            crop_fraction=crop_fraction, coco_annotations=coco_annotations)
    base, _, config = name.partition("/")
    canonical = _ALIASES.get(name, name)
    if base == shapes.NAME:
        canonical = shapes.NAME
    if canonical not in _DEFAULT_SPLITS:
        raise ValueError(
            f"unknown dataset {name!r}: supported are {sorted(_DEFAULT_SPLITS)} "
            f"(and aliases {sorted(_ALIASES)})"
        )
    if coco_annotations is not None and canonical != "coco/2014":
        raise ValueError("coco_annotations is only used with coco/2014")
    split = _DEFAULT_SPLITS[canonical] if split is None else split
    if not isinstance(split, str) or not split:
        raise ValueError(f"split must be a non-empty string, got {split!r}")

    if canonical == shapes.NAME:
        cfg = _parse_shapes_config(config or None)
        if data_dir is None:
            records = _RenderedShapes(cfg, split)
        else:
            records, _ = _open_tfds(name, f"{shapes.NAME}/{cfg.name}", split, data_dir)
        convert = functools.partial(
            _convert_shapes,
            split=split,
            geometry=(size, resize, crop_fraction),
            from_tfds=data_dir is not None,
        )
        return ExampleSource(
            name=f"{shapes.NAME}/{cfg.name}",
            split=split,
            records=records,
            convert=convert,
            class_names=shapes.CLASS_NAMES,
        )

    size = (DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE) if size is None else size
    if canonical == "photos":
        convert = functools.partial(_convert_photo, geometry=(size, resize, crop_fraction))
        return ExampleSource(name="photos", split=split, records=PHOTOS, convert=convert,
                             class_names=())
    if canonical == "imagenet2012":
        records, info = _open_tfds(canonical, canonical, split, data_dir)
        class_names = info.features["label"].names
        convert = functools.partial(_convert_imagenet, geometry=(size, resize, crop_fraction))
    elif canonical == "voc/2007":
        records, info = _open_tfds(canonical, canonical, split, data_dir)
        class_names = info.features["objects"]["label"].names
        convert = functools.partial(_convert_voc, geometry=(size, resize, crop_fraction))
    else:  # coco/2014: read from files by version, as its code needs TensorFlow
        records, info = _open_tfds(
            canonical, f"{canonical}:{_COCO_VERSION}", split, data_dir, check_dir=True
        )
        class_names = info.features["objects"]["label"].names
        segmentations = (
            None
            if coco_annotations is None
            else _read_coco_annotations(os.fspath(coco_annotations))
        )
        convert = functools.partial(
            _convert_coco, geometry=(size, resize, crop_fraction), segmentations=segmentations
        )
    return ExampleSource(
        name=canonical, split=split, records=records, convert=convert, class_names=class_names
    )


def _load_folder(name, *, split, data_dir, size, resize, crop_fraction, coco_annotations):
    """``folder:PATH`` (:mod:`saliency_jax.data.folder`): every image checked now."""
    path = name[len(folder.PREFIX):]
    if not path:
        raise ValueError("give the folder after 'folder:', e.g. folder:~/imagenet/val")
    if split not in (None, "all"):
        raise ValueError(f"split {split!r}: a folder dataset has no splits (give none, or "
                         "point folder: at the split's own folder)")
    if data_dir is not None or coco_annotations is not None:
        raise ValueError("data_dir and coco_annotations do not apply to a folder dataset")
    items, class_names = folder.scan(path)
    size = (DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE) if size is None else size
    convert = functools.partial(folder.convert, geometry=(size, resize, crop_fraction))
    return ExampleSource(name=name, split="all", records=items, convert=convert,
                         class_names=class_names)


# ----------------------------------------------------------------------------------------------
# Image files


def load_image_file(
    path: str | os.PathLike,
    *,
    image_size: int | tuple[int, int] | None,
    resize: str = "direct",
    crop_fraction: float = DEFAULT_CROP_FRACTION,
) -> np.ndarray:
    """Reads an image file as f32[h, w, 3] in [0, 1], preprocessed like :func:`load`.

    Args:
        path: any format Pillow reads; grey, palette and alpha images are converted to RGB.
        image_size: int or ``(h, w)``; ``None`` keeps the original size.
        resize: ``"direct"`` (reference; no crop), ``"center_crop"`` or ``"none"``.

    Raises:
        ValueError: the file does not exist, is a directory, or is not a readable image.
    """
    _check_resize(resize, crop_fraction)
    size = None if image_size is None else _check_size(image_size)
    try:
        p = os.fspath(path)
    except TypeError:
        raise ValueError(f"path must be a string or os.PathLike, got {path!r}") from None
    if not os.path.exists(p):
        raise ValueError(f"path {p!r} does not exist")
    if os.path.isdir(p):
        raise ValueError(f"path {p!r} is a directory, not an image file")
    try:
        with Image.open(p) as im:
            image = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ValueError(f"path {p!r} is not a readable image file ({e})") from e
    image = _Geometry(image.shape[:2], size, resize, crop_fraction).image(image)
    return image.astype(np.float32) / np.float32(255.0)
