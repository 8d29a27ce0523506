"""``folder:PATH``: a folder of image files as a dataset (``data.load("folder:PATH")``).

Two layouts:

* **One sub-folder per class** (ImageNet's, torchvision's ``ImageFolder``). Sub-folders named by
  ImageNet WordNet ids (``n01440764``, ...) get that class's ImageNet index, so a folder with a
  few ImageNet classes keeps the indices an ImageNet model predicts; sub-folders named by
  integers get that integer; any other names get their sorted order (``ImageFolder``'s rule).
  Mixed naming is refused.
* **Flat**, with ``labels.csv`` in the folder: ``filename,label`` lines (a first line
  ``filename,label`` is a header), ``label`` an integer class index or a WordNet id.

Images are ``.jpg``, ``.jpeg`` and ``.png`` (any case), grey, palette and RGBA converted to RGB,
in a fixed order (class folder, then file name), so index ``i`` and the ``i % N`` split over
processes are stable. A Pascal VOC XML beside an image (same stem, ``.xml``) gives its boxes:
every ``<object><bndbox>``, 1-based inclusive pixel corners as VOC writes them, to ``boxes``
f32[n, 4] ``(ymin, xmin, ymax, xmax)`` (max exclusive) in the output frame, and ``mask`` (the
union of the boxes), which the pointing game and IoU/F1 read; images without one have neither.

Every file is checked when the folder is opened, before any computing: Pillow opens and
verifies each image (headers and structure, without decoding the pixels), and a bad file, a
bad labels line or an unknown label is refused with a ValueError naming it.
"""

from __future__ import annotations

import csv
import os
import pathlib
import re
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np
from PIL import Image

PREFIX = "folder:"
EXTENSIONS = (".jpg", ".jpeg", ".png")
LABELS_FILE = "labels.csv"
WNID = re.compile(r"^n\d{8}$")


def _imagenet_wnids() -> list[str]:
    from saliency_jax.models import imagenet_labels

    return imagenet_labels.imagenet_wordnet_ids()


def _is_image(path: pathlib.Path) -> bool:
    return path.is_file() and path.suffix.lower() in EXTENSIONS


def _check_image(path: pathlib.Path) -> None:
    try:
        with Image.open(path) as im:
            im.verify()
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for a bad file
        raise ValueError(f"{path} is not a readable image ({err})") from None


def _class_index(names: list[str], where: pathlib.Path) -> tuple[dict[str, int], list[str]]:
    """Class folder name -> index, and the class names (index order) of the folder."""
    wnid = [bool(WNID.match(n)) for n in names]
    number = [n.isdigit() for n in names]
    if all(wnid):
        ids = _imagenet_wnids()
        where_in = {w: i for i, w in enumerate(ids)}
        unknown = [n for n in names if n not in where_in]
        if unknown:
            raise ValueError(f"{where}: {unknown[0]} is not an ImageNet-1k WordNet id")
        from saliency_jax.models import imagenet_labels

        return {n: where_in[n] for n in names}, list(imagenet_labels.imagenet_class_names())
    if all(number):
        index = {n: int(n) for n in names}
        return index, [str(i) for i in range(max(index.values()) + 1)]
    if any(wnid) or any(number):
        raise ValueError(f"{where}: class folders must all be WordNet ids, all integers or all "
                         f"other names; found {sorted(names)[:6]}")
    ordered = sorted(names)
    return {n: i for i, n in enumerate(ordered)}, ordered


def _flat(root: pathlib.Path) -> tuple[list[tuple[pathlib.Path, int]], list[str]]:
    labels_file = root / LABELS_FILE
    rows = []
    with open(labels_file, newline="") as f:
        for number, row in enumerate(csv.reader(f), start=1):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != 2:
                raise ValueError(f"{labels_file} line {number}: expected 'filename,label', got "
                                 f"{','.join(row)!r}")
            name, label = row[0].strip(), row[1].strip()
            if number == 1 and (name, label) == ("filename", "label"):
                continue
            rows.append((number, name, label))
    if not rows:
        raise ValueError(f"{labels_file} lists no image")
    ids = None
    items = []
    for number, name, label in rows:
        path = root / name
        if not _is_image(path):
            raise ValueError(f"{labels_file} line {number}: {name!r} is not a .jpg/.jpeg/.png "
                             f"file in {root}")
        if label.isdigit():
            index = int(label)
        elif WNID.match(label):
            ids = ids or {w: i for i, w in enumerate(_imagenet_wnids())}
            if label not in ids:
                raise ValueError(f"{labels_file} line {number}: {label} is not an ImageNet-1k "
                                 "WordNet id")
            index = ids[label]
        else:
            raise ValueError(f"{labels_file} line {number}: label {label!r} must be a class "
                             "index (an integer >= 0) or an ImageNet WordNet id")
        items.append((path, index))
    if ids is not None:
        from saliency_jax.models import imagenet_labels

        names = list(imagenet_labels.imagenet_class_names())
    else:
        names = [str(i) for i in range(max(i for _, i in items) + 1)]
    return sorted(items, key=lambda item: item[0].name), names


def scan(root) -> tuple[list[tuple[pathlib.Path, int]], list[str]]:
    """Every ``(image path, class index)`` of the folder in order, and its class names;
    ValueError (naming the file) for anything unreadable, before any image is decoded."""
    root = pathlib.Path(os.path.expanduser(str(root)))
    if not root.exists():
        raise ValueError(f"dataset folder {root} does not exist")
    if not root.is_dir():
        raise ValueError(f"dataset folder {root} is not a folder")
    if (root / LABELS_FILE).exists():
        items, names = _flat(root)
    else:
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        if not classes:
            raise ValueError(f"{root} has no class sub-folders and no {LABELS_FILE}: give one "
                             "sub-folder of images per class, or a flat folder with "
                             f"{LABELS_FILE} ('filename,label' lines)")
        index, names = _class_index(classes, root)
        items = [(path, index[c]) for c in classes
                 for path in sorted((root / c).iterdir()) if _is_image(path)]
    if not items:
        raise ValueError(f"{root} holds no .jpg, .jpeg or .png image")
    for path, _ in items:
        _check_image(path)
        xml = path.with_suffix(".xml")
        if xml.exists():
            _voc_boxes(xml)  # refused now, not in the middle of a run
    return items, names


def _voc_boxes(path: pathlib.Path) -> np.ndarray:
    """``f32[n, 4]`` ``(ymin, xmin, ymax, xmax)``, max exclusive, in the image's pixels, from a
    Pascal VOC annotation (1-based inclusive corners: ``xmin - 1 .. xmax``)."""
    try:
        tree = ET.parse(path)
        boxes = []
        for box in tree.getroot().iter("bndbox"):
            x0, y0, x1, y1 = (float(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
            if not (x1 >= x0 and y1 >= y0):
                raise ValueError(f"a box with max < min ({x0}, {y0}, {x1}, {y1})")
            boxes.append((y0 - 1.0, x0 - 1.0, y1, x1))
    except (ET.ParseError, AttributeError, TypeError, ValueError) as err:
        raise ValueError(f"{path} is not a Pascal VOC annotation with bndbox corners ({err})"
                         ) from None
    return np.asarray(boxes, np.float32).reshape(-1, 4)


def _box_mask(boxes: np.ndarray, hw) -> np.ndarray:
    """The union of ``boxes`` (pixel boxes, max exclusive) as ``bool[h, w]``: a pixel is in a
    box when its centre is."""
    h, w = hw
    ys, xs = np.arange(h) + 0.5, np.arange(w) + 0.5
    mask = np.zeros((h, w), bool)
    for y0, x0, y1, x1 in boxes:
        mask |= ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]
    return mask


def convert(item, i, *, geometry) -> dict[str, Any]:
    """One example dict (``data.readers`` contract) of the folder's item ``i``."""
    from saliency_jax.data import readers

    path, label = item
    try:
        with Image.open(path) as im:
            image = np.asarray(im.convert("RGB"))
    except Exception as err:  # noqa: BLE001 - changed since the scan
        raise ValueError(f"{path} is not a readable image ({err})") from None
    full = {"image_full": image, "label": int(label), "labels": np.array([label], np.int32),
            "id": str(path)}
    xml = path.with_suffix(".xml")
    if xml.exists():
        full["boxes_full"] = _voc_boxes(xml)
    ex = readers._finish(full, readers._Geometry(image.shape[:2], *geometry))
    if "boxes" in ex and len(ex["boxes"]):
        ex["mask"] = _box_mask(ex["boxes"], ex["image"].shape[:2])
    return ex
