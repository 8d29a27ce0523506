"""The data layer: the synthetic saliency_shapes generator and TFDS builder, and the readers."""

import io
import json
import pickle
import socket

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from scipy import ndimage

from saliency_jax import data
from saliency_jax.data import readers, shapes

KEYS = ("image", "label", "mask", "boxes")


def _same(a, b):
    return all(np.array_equal(a[k], b[k]) for k in KEYS)


# ----------------------------------------------------------------------------------------------
# Synthetic dataset: determinism, exact masks, boxes, balance, distractors.


def test_render_is_a_pure_function_of_seed_split_index():
    a = shapes.render_example(0, "train", 7)
    b = shapes.render_example(0, "train", 7)
    assert _same(a, b)
    assert a["image"].dtype == np.uint8 and a["image"].shape == (112, 112, 3)
    assert a["mask"].dtype == bool and a["mask"].shape == (112, 112)
    assert a["boxes"].dtype == np.float32 and a["boxes"].shape == (1, 4)
    assert isinstance(a["label"], int)
    for other in (
        shapes.render_example(0, "train", 8),
        shapes.render_example(1, "train", 7),
        shapes.render_example(0, "test", 7),
    ):
        assert not np.array_equal(a["image"], other["image"])
        assert not np.array_equal(a["mask"], other["mask"])


def test_generate_arrays_stacks_render_example():
    arrays = shapes.generate_arrays("test", 3, seed=2, image_size=64, start=5)
    assert arrays["image"].shape == (3, 64, 64, 3) and arrays["image"].dtype == np.uint8
    assert arrays["mask"].shape == (3, 64, 64) and arrays["boxes"].shape == (3, 1, 4)
    assert arrays["label"].dtype == np.int32
    for i in range(3):
        ex = shapes.render_example(2, "test", 5 + i, image_size=64)
        assert all(np.array_equal(arrays[k][i], ex[k]) for k in KEYS)


def _flat_scene(kind, radius, angle=0.0, center=(20.0, 20.0), size=40):
    """A white object on black, no shading, no noise: pixel = round(255 * coverage)."""
    target = shapes.Shape(kind, center, radius, angle, color=(255.0, 255.0, 255.0))
    return shapes.render_scene(np.zeros((size, size, 3), np.float32), target)


@pytest.mark.parametrize("kind", shapes.CLASS_NAMES)
@pytest.mark.parametrize("angle", [0.0, 0.7])
def test_mask_is_exactly_the_object_pixels(kind, angle):
    image, mask = _flat_scene(kind, 13.0, angle, center=(19.3, 21.6))
    # coverage is a multiple of 1/16, so round(255 a) >= 128 exactly when a >= 1/2
    np.testing.assert_array_equal(mask, image[..., 0] >= 128)
    assert np.all(image[..., 0] == image[..., 2])
    assert mask.sum() > 50


def test_axis_aligned_square_covers_whole_pixels():
    # circumradius 10*sqrt(2): half side 10 around (20, 20) -> rows and columns 10..29
    image, mask = _flat_scene("square", 10.0 * np.sqrt(2.0))
    expected = np.zeros((40, 40), bool)
    expected[10:30, 10:30] = True
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(image[..., 1], np.where(expected, 255, 0))


def test_disk_area_and_class_shapes_geometry():
    _, disk = _flat_scene("disk", 15.0)
    assert abs(disk.sum() - np.pi * 15.0**2) < 0.02 * np.pi * 15.0**2

    def at(mask, rho, deg, r=15.0):  # mask value at polar offset (rho * r, deg) from (20, 20)
        t = np.deg2rad(deg)
        return bool(mask[int(20 + rho * r * np.sin(t)), int(20 + rho * r * np.cos(t))])

    _, ring = _flat_scene("ring", 15.0)
    assert not at(ring, 0.0, 0) and not at(ring, 0.4, 90) and at(ring, 0.8, 200)
    _, star = _flat_scene("star", 15.0)  # points at 0, 72, ... degrees, inner radius 0.48
    assert at(star, 0.0, 0) and at(star, 0.7, 72) and not at(star, 0.7, 36)
    _, tri = _flat_scene("triangle", 15.0)  # vertex at 0 degrees, inradius 0.5
    assert at(tri, 0.6, 0) and not at(tri, 0.65, 180) and at(tri, 0.4, 180)
    _, cross = _flat_scene("cross", 15.0)  # arm half-width 0.32
    assert at(cross, 0.9, 90) and not at(cross, 0.8, 45) and at(cross, 0.4, 45)


def test_box_is_the_tight_box_of_the_mask():
    for i in range(12):
        ex = shapes.render_example(3, "test", i)
        rows, cols = np.nonzero(ex["mask"])
        expected = [rows.min(), cols.min(), rows.max() + 1, cols.max() + 1]
        np.testing.assert_array_equal(ex["boxes"][0], np.asarray(expected, np.float32))
        side = max(expected[2] - expected[0], expected[3] - expected[1])
        assert 0.12 * 112 <= side <= 0.46 * 112  # the target's extent, 20-45 % of the side


def test_labels_are_exactly_balanced_in_blocks():
    for split in ("train", "test"):
        labels = [shapes.label_of(0, split, i) for i in range(60)]
        np.testing.assert_array_equal(np.bincount(labels, minlength=6), np.full(6, 10))
    labels = [shapes.render_example(0, "train", i)["label"] for i in range(12)]
    assert sorted(labels[:6]) == list(range(6)) and sorted(labels[6:]) == list(range(6))


def test_distractors_never_touch_the_target():
    n_with = 0
    for i in range(8):
        scene = shapes.sample_scene(0, "train", i)
        image, mask = shapes.render_scene(
            scene.background, scene.target, scene.distractors, noise=scene.noise
        )
        ex = shapes.render_example(0, "train", i)
        np.testing.assert_array_equal(image, ex["image"])
        np.testing.assert_array_equal(mask, ex["mask"])
        assert all(d.kind in shapes.DISTRACTOR_KINDS for d in scene.distractors)
        assert scene.target.kind == shapes.CLASS_NAMES[ex["label"]]
        clean, clean_mask = shapes.render_scene(scene.background, scene.target, ())
        with_d, _ = shapes.render_scene(scene.background, scene.target, scene.distractors)
        changed = np.any(clean != with_d, axis=-1)
        np.testing.assert_array_equal(clean_mask, ex["mask"])
        assert not (changed & ndimage.binary_dilation(ex["mask"], iterations=2)).any()
        n_with += bool(changed.any())
    assert n_with >= 6


def test_render_example_rejects_bad_arguments():
    with pytest.raises(ValueError, match="index"):
        shapes.render_example(0, "train", -1)
    with pytest.raises(ValueError, match="image_size"):
        shapes.render_example(0, "train", 0, image_size=8)
    with pytest.raises(ValueError, match="split"):
        shapes.render_example(0, "", 0)


# ----------------------------------------------------------------------------------------------
# TFDS builder: offline preparation, read back without TensorFlow.


def test_tfds_builder_round_trip(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("preparing saliency_shapes tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    builder = shapes.prepare(tmp_path, image_size=64, seed=1, split_sizes={"train": 4, "test": 3})
    monkeypatch.undo()
    assert builder.info.full_name == "saliency_shapes/64_seed1_train4_test3/1.0.0"
    test = tfds.data_source(
        "saliency_shapes/64_seed1_train4_test3", split="test", data_dir=tmp_path, download=False
    )
    assert len(test) == 3
    for i in range(3):
        raw, ex = test[i], shapes.render_example(1, "test", i, image_size=64)
        assert raw["index"] == i and raw["label"] == ex["label"]
        np.testing.assert_array_equal(raw["image"], ex["image"])
        np.testing.assert_array_equal(raw["mask"][..., 0] > 0, ex["mask"])
        np.testing.assert_allclose(raw["bbox"] * 64, ex["boxes"][0], atol=1e-4)
    # The reader gives the same example dicts from the prepared copy and rendered on the fly.
    prepared = data.load("saliency_shapes/64_seed1_train4_test3", split="train", data_dir=tmp_path)
    rendered = data.load("saliency_shapes/64_seed1_train4_test3", split="train")
    assert len(prepared) == len(rendered) == 4
    for a, b in zip(prepared, rendered, strict=False):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_shapes_reader_example_dict_and_resizing():
    src = data.load()
    assert (src.name, src.split, len(src), src.num_classes) == (
        "saliency_shapes/112",
        "test",
        600,
        6,
    )
    assert src.class_names == shapes.CLASS_NAMES
    ex, ref = src[4], shapes.render_example(0, "test", 4)
    np.testing.assert_array_equal(ex["image"], ref["image"])
    np.testing.assert_array_equal(ex["mask"], ref["mask"])
    np.testing.assert_array_equal(ex["boxes"], ref["boxes"])
    assert ex["label"] == ref["label"] and ex["box_labels"].tolist() == [ref["label"]]
    assert ex["image_full_hw"] == (112, 112) and ex["id"] == "test/4"
    assert [e["id"] for e in src[2:8:3]] == ["test/2", "test/5"] and len(src[-3:]) == 3
    with pytest.raises(IndexError):
        src[600]
    again = pickle.loads(pickle.dumps(src[3:6]))  # picklable, for multiprocess loaders
    np.testing.assert_array_equal(again[1]["image"], ref["image"])
    big = data.load(image_size=224)[4]  # direct resize x2: boxes scale, mask follows the image
    assert big["image"].shape == (224, 224, 3) and big["mask"].shape == (224, 224)
    np.testing.assert_array_equal(big["boxes"], ref["boxes"] * 2)
    np.testing.assert_array_equal(big["mask_full"], ref["mask"])
    m = ref["mask"]
    edge = ndimage.binary_dilation(m) & ~ndimage.binary_erosion(m)
    up = lambda a: np.kron(a, np.ones((2, 2), bool)).astype(bool)  # noqa: E731
    assert not ((big["mask"] != up(m)) & ~up(edge)).any()  # they differ only on the boundary


# ----------------------------------------------------------------------------------------------
# Real datasets on mock data (no files, no TensorFlow).


def test_imagenet_reader_on_mock_data():
    with tfds.testing.mock_data(num_examples=3):
        for resize in ("direct", "center_crop"):
            src = data.load("imagenet2012", image_size=32, resize=resize)
            assert len(src) == 3 and src.num_classes == 1000 and src.class_names[0] == "n01440764"
            ex = src[1]
            assert ex["image"].shape == (32, 32, 3) and ex["image"].dtype == np.uint8
            assert isinstance(ex["label"], int) and 0 <= ex["label"] < 1000
            assert ex["labels"].tolist() == [ex["label"]] and "boxes" not in ex


def _voc_record():
    image = np.arange(40 * 60 * 3, dtype=np.uint32).reshape(40, 60, 3).astype(np.uint8)
    return image, {
        "image": image,
        "image/filename": b"000001.jpg",
        "objects": {
            "bbox": np.array([[0.25, 0.5, 0.75, 1.0], [0.0, 0.0, 0.5, 0.05]], np.float32),
            "label": np.array([14, 2]),
            "is_difficult": np.array([False, True]),
            "is_truncated": np.array([False, False]),
            "pose": np.array([0, 0]),
        },
        "labels": np.array([14, 2]),
        "labels_no_difficult": np.array([14]),
    }


def test_voc_reader_boxes_and_both_resize_modes():
    image, record = _voc_record()

    def as_data_source(self, split, **kwargs):
        return [record]

    with tfds.testing.mock_data(as_data_source_fn=as_data_source):
        direct = data.load("voc/2007", image_size=20)
        crop = data.load("voc", image_size=20, resize="center_crop", crop_fraction=1.0)
        assert direct.split == "test" and direct.num_classes == 20
        assert direct.class_names[14] == "person"
        ex = direct[0]
        # direct: 40x60 -> 20x20, y scaled by 1/2, x by 1/3
        np.testing.assert_allclose(ex["boxes_full"], [[10, 30, 30, 60], [0, 0, 20, 3]])
        np.testing.assert_allclose(ex["boxes"], [[5, 10, 15, 20], [0, 0, 10, 1]], rtol=1e-6)
        expected = np.asarray(Image.fromarray(image).resize((20, 20), Image.BILINEAR))
        np.testing.assert_array_equal(ex["image"], expected)
        assert ex["label"] == 14 and ex["labels"].tolist() == [2, 14]
        assert ex["box_labels"].tolist() == [14, 2] and ex["difficult"].tolist() == [False, True]
        assert ex["image_full_hw"] == (40, 60) and ex["id"] == "000001.jpg"
        assert ex["boxes"].dtype == np.float32 and ex["difficult"].dtype == bool
        # centre crop: shorter side 20 -> 20x30, columns 5..24 kept; the thin box is cut away
        ex = crop[0]
        expected = np.asarray(Image.fromarray(image).resize((30, 20), Image.BILINEAR))[:, 5:25]
        np.testing.assert_array_equal(ex["image"], expected)
        np.testing.assert_allclose(ex["boxes"], [[5, 10, 15, 20]])
        assert ex["box_labels"].tolist() == [14] and ex["difficult"].tolist() == [False]
        assert ex["box_labels_full"].tolist() == [14, 2] and len(ex["boxes_full"]) == 2


# ----------------------------------------------------------------------------------------------
# COCO: the TFDS coco builder needs TensorFlow, so a copy with its exact feature layout is
# prepared here without it and read back from files, the way readers.load reads coco.


def _jpeg(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


class _CocoLayout(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    name = "coco"
    VERSION = tfds.core.Version("1.1.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="2014")]
    url_infos = None

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(encoding_format="jpeg"),
                    "image/filename": tfds.features.Text(),
                    "image/id": np.int64,
                    "objects": tfds.features.Sequence(
                        {
                            "id": np.int64,
                            "area": np.int64,
                            "bbox": tfds.features.BBoxFeature(),
                            "label": tfds.features.ClassLabel(num_classes=80),
                            "is_crowd": np.bool_,
                        }
                    ),
                }
            ),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        return {"validation": self._generate_examples()}

    def _generate_examples(self):
        bbox = tfds.features.BBox
        yield (
            0,
            {
                "image": _jpeg(np.full((10, 20, 3), 90, np.uint8)),
                "image/filename": "COCO_val2014_000000000001.jpg",
                "image/id": 1,
                "objects": {
                    "id": [11, 12, 13],
                    "area": [12, 9, 33],
                    "bbox": [
                        bbox(0.1, 0.1, 0.4, 0.3),
                        bbox(0.0, 0.0, 0.3, 0.15),
                        bbox(0.0, 0.0, 1.0, 1.0),
                    ],
                    "label": [5, 7, 5],
                    "is_crowd": [False, True, False],
                },
            },
        )


def test_coco_reader_reads_prepared_files_with_instance_masks(tmp_path):
    builder = _CocoLayout(data_dir=tmp_path, file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
    annotations = {
        "annotations": [
            # polygon: the rectangle x in [2, 6], y in [1, 4] -> pixel centres rows 1-3, cols 2-5
            {"id": 11, "segmentation": [[2, 1, 6, 1, 6, 4, 2, 4]]},
            # uncompressed RLE, column-major, starting with zeros: column 0 rows 0-2, column 1 row 0
            {"id": 12, "segmentation": {"size": [10, 20], "counts": [0, 3, 7, 1, 189]}},
            # compressed RLE "151M" = runs [1, 5, 1, 2] (hand-encoded): only for 3x3 masks
            {"id": 13, "segmentation": [[0, 0, 1, 0, 1, 1, 0, 1]]},
        ]
    }
    path = tmp_path / "instances_val2014.json"
    path.write_text(json.dumps(annotations))
    src = data.load("coco/2014", data_dir=tmp_path, image_size=40, coco_annotations=path)
    assert len(src) == 1 and src.split == "validation" and src.num_classes == 80
    ex = src[0]
    assert ex["image"].shape == (40, 40, 3) and ex["image_full_hw"] == (10, 20)
    assert ex["label"] == 5 and ex["labels"].tolist() == [5, 7]
    assert ex["box_labels"].tolist() == [5, 7, 5] and ex["crowd"].tolist() == [False, True, False]
    np.testing.assert_allclose(ex["boxes_full"][0], [1, 2, 4, 6], atol=1e-5)
    np.testing.assert_allclose(ex["boxes"][0], [4, 4, 16, 12], atol=1e-4)
    polygon = np.zeros((10, 20), bool)
    polygon[1:4, 2:6] = True
    rle = np.zeros((10, 20), bool)
    rle[0:3, 0] = rle[0, 1] = True
    square = np.zeros((10, 20), bool)
    square[0, 0] = True
    np.testing.assert_array_equal(ex["object_masks_full"], [polygon, rle, square])
    np.testing.assert_array_equal(ex["mask_full"], polygon | square)  # the label's instances
    assert ex["mask"].shape == (40, 40) and ex["mask"][6:14, 5:11].all()
    assert not ex["mask"][20:].any() and not ex["mask"][:, 14:].any()
    # without annotations: boxes only
    assert "mask" not in data.load("coco/2014", data_dir=tmp_path)[0]


def test_coco_rle_decoding():
    np.testing.assert_array_equal(
        readers.coco_segmentation_mask({"size": [3, 3], "counts": "151M"}, (3, 3)),
        np.array([[0, 1, 1], [1, 1, 1], [0, 1, 1]], bool).T,  # column-major runs 0,11111,0,11
    )
    # "111m0": runs [1, 1, 1, 30] (the 4th run stored as 30 - 1 = 29 over two characters)
    mask = readers.coco_segmentation_mask({"size": [3, 11], "counts": "111m0"}, (3, 11))
    assert mask.sum() == 31 and not mask[0, 0] and mask[1, 0] and not mask[2, 0]


# ----------------------------------------------------------------------------------------------
# Errors and image files.


@pytest.mark.parametrize(
    "name, hint",
    [
        ("imagenet2012", "tfds build imagenet2012"),
        ("voc/2007", "tfds build voc/2007"),
        ("coco/2014", "tfds build coco/2014"),
        ("saliency_shapes", "python -m saliency_jax.data.shapes"),
    ],
)
def test_missing_dataset_says_how_to_prepare_it(tmp_path, name, hint):
    with pytest.raises(ValueError, match="not prepared") as info:
        data.load(name, data_dir=tmp_path)
    assert hint in str(info.value) and str(tmp_path) in str(info.value)


def test_load_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load("mnist")
    with pytest.raises(ValueError, match="resize"):
        data.load(resize="crop")
    with pytest.raises(ValueError, match="image_size"):
        data.load(image_size=0)
    with pytest.raises(ValueError, match="split"):
        data.load(split="validation")
    with pytest.raises(ValueError, match="crop_fraction"):
        data.load(resize="center_crop", crop_fraction=1.5)
    with pytest.raises(ValueError, match="coco_annotations"):
        data.load("voc/2007", coco_annotations="x.json")


def test_load_image_file(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    full = data.load_image_file(tmp_path / "a.png", image_size=None)
    assert full.dtype == np.float32 and full.shape == (30, 50, 3)
    np.testing.assert_array_equal(full, rgb / np.float32(255))
    small = data.load_image_file(str(tmp_path / "a.png"), image_size=16)
    expected = np.asarray(Image.fromarray(rgb).resize((16, 16), Image.BILINEAR)) / np.float32(255)
    np.testing.assert_array_equal(small, expected)
    wide = data.load_image_file(tmp_path / "a.png", image_size=(10, 40), resize="center_crop")
    assert wide.shape == (10, 40, 3)
    crop = data.load_image_file(tmp_path / "a.png", image_size=(20, 20), resize="center_crop")
    assert crop.shape == (20, 20, 3) and crop.min() >= 0.0 and crop.max() <= 1.0
    grey = data.load_image_file(tmp_path / "grey.png", image_size=8)
    assert grey.shape == (8, 8, 3) and np.array_equal(grey[..., 0], grey[..., 2])
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="does not exist"):
        data.load_image_file(tmp_path / "missing.png", image_size=8)
    with pytest.raises(ValueError, match="directory"):
        data.load_image_file(tmp_path, image_size=8)
    with pytest.raises(ValueError, match="not a readable image"):
        data.load_image_file(tmp_path / "bad.jpg", image_size=8)
    with pytest.raises(ValueError, match="image_size"):
        data.load_image_file(tmp_path / "a.png", image_size=(8,))


def test_bundled_photos_dataset():
    from saliency_jax.data import load

    photos = load("photos", image_size=64)
    assert len(photos) == 6 and photos.num_classes == 0
    example = photos[1]
    assert example["id"] == "chelsea" and example["label"] == -1
    assert example["image"].shape == (64, 64, 3) and example["image"].dtype == np.uint8
    assert photos[5]["image"].shape == (64, 64, 3)  # the greyscale camera, as RGB
