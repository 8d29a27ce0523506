"""``folder:PATH``: a folder of real images as a dataset, checked before any computing."""

import json

import jax
import numpy as np
import pytest
from PIL import Image

from saliency_jax import data
from saliency_jax.app import evaluate as ev
from saliency_jax.models import imagenet_labels


def _photo(path, size=(40, 60), mode="RGB", value=(200, 30, 30)):
    h, w = size
    array = np.zeros((h, w, 3), np.uint8) + np.asarray(value, np.uint8)
    array[: h // 2, : w // 3] = 0  # some structure
    image = Image.fromarray(array)
    if mode != "RGB":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def _voc(path, boxes):
    objects = "".join(
        f"<object><name>x</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
        f"<ymax>{y1}</ymax></bndbox></object>" for x0, y0, x1, y1 in boxes)
    path.write_text(f"<annotation><size><width>60</width><height>40</height></size>{objects}"
                    "</annotation>")


@pytest.fixture
def imagenet_folder(tmp_path):
    wnids = imagenet_labels.imagenet_wordnet_ids()
    root = tmp_path / "val"
    _photo(root / wnids[281] / "cat_b.JPEG")                 # tabby cat: class 281
    _photo(root / wnids[281] / "cat_a.png", mode="RGBA")
    _photo(root / wnids[1] / "fish.jpg", mode="L")           # goldfish: class 1
    _voc(root / wnids[1] / "fish.xml", [(1, 1, 30, 20), (41, 21, 60, 40)])
    (root / wnids[1] / "notes.txt").write_text("not an image")
    return root


def test_imagenet_layout_keeps_imagenet_indices(imagenet_folder):
    source = data.load(f"folder:{imagenet_folder}", image_size=20)
    assert len(source) == 3 and source.num_classes == 1000
    examples = [source[i] for i in range(3)]
    assert [e["label"] for e in examples] == [1, 281, 281]  # class folder, then file name
    assert [e["id"].rsplit("/", 1)[-1] for e in examples] == ["fish.jpg", "cat_a.png",
                                                              "cat_b.JPEG"]
    for e in examples:
        assert e["image"].shape == (20, 20, 3) and e["image"].dtype == np.uint8
        assert e["image_full_hw"] == (40, 60)
    assert "mask" not in examples[1] and "boxes" not in examples[1]


def test_voc_boxes_are_scaled_exactly_and_give_the_pointing_mask(imagenet_folder):
    fish = data.load(f"folder:{imagenet_folder}", image_size=20)[0]
    # VOC (1, 1, 30, 20) is 1-based inclusive: pixels x 0..29, y 0..19 -> (0, 0, 20, 30) max
    # exclusive at 40 x 60; direct resize to 20 x 20 scales y by 1/2, x by 1/3.
    np.testing.assert_allclose(fish["boxes_full"], [[0, 0, 20, 30], [20, 40, 40, 60]])
    np.testing.assert_allclose(fish["boxes"], [[0, 0, 10, 10], [10, 40 / 3, 20, 20]], atol=1e-5)
    mask = fish["mask"]
    assert mask.shape == (20, 20) and mask[:10, :10].all() and mask[10:, 14:].all()
    assert not mask[:10, 10:].any() and not mask[10:, :13].any()


def test_grey_and_rgba_images_are_converted_to_rgb(imagenet_folder):
    fish = data.load(f"folder:{imagenet_folder}", resize="none")[0]
    assert fish["image"].shape == (40, 60, 3)
    assert np.all(fish["image"][..., 0] == fish["image"][..., 1])  # grey: equal channels


def test_integer_and_named_class_folders(tmp_path):
    _photo(tmp_path / "ints" / "7" / "a.png")
    _photo(tmp_path / "ints" / "3" / "b.png")
    source = data.load(f"folder:{tmp_path / 'ints'}", image_size=8)
    assert [source[i]["label"] for i in range(2)] == [3, 7] and source.num_classes == 8
    _photo(tmp_path / "named" / "zebra" / "a.png")
    _photo(tmp_path / "named" / "apple" / "b.png")
    source = data.load(f"folder:{tmp_path / 'named'}", image_size=8)
    assert source.class_names == ("apple", "zebra")
    assert [source[i]["label"] for i in range(2)] == [0, 1]


def test_a_flat_folder_with_a_labels_file(tmp_path):
    wnids = imagenet_labels.imagenet_wordnet_ids()
    _photo(tmp_path / "b.jpg")
    _photo(tmp_path / "a.png")
    (tmp_path / "labels.csv").write_text(f"filename,label\nb.jpg,{wnids[2]}\na.png,5\n")
    source = data.load(f"folder:{tmp_path}", image_size=8)
    assert [source[i]["label"] for i in range(2)] == [5, 2]  # sorted by file name
    assert source.num_classes == 1000


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("empty", "has no class sub-folders and no labels.csv"),
    ("no_images", "holds no .jpg, .jpeg or .png image"),
    ("corrupt", r"broken\.jpg is not a readable image"),
    ("mixed", "must all be WordNet ids, all integers or all other names"),
    ("bad_wnid", "n99999999 is not an ImageNet-1k WordNet id"),
    ("csv_line", r"labels\.csv line 2: expected 'filename,label'"),
    ("csv_file", r"labels\.csv line 1: 'gone\.png' is not"),
    ("csv_label", r"labels\.csv line 1: label 'cat' must be a class index"),
    ("bad_xml", r"a\.xml is not a Pascal VOC annotation"),
])
def test_bad_folders_are_refused_naming_the_file(tmp_path, case, message):
    root = tmp_path / "d"
    if case != "missing":
        root.mkdir()
    if case == "no_images":
        (root / "cls").mkdir()
        (root / "cls" / "x.txt").write_text("")
    elif case == "corrupt":
        _photo(root / "cls" / "good.png")
        (root / "cls" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    elif case == "mixed":
        _photo(root / "3" / "a.png")
        _photo(root / "dog" / "b.png")
    elif case == "bad_wnid":
        _photo(root / "n99999999" / "a.png")
    elif case.startswith("csv"):
        _photo(root / "a.png")
        text = {"csv_line": "a.png,1\na.png\n", "csv_file": "gone.png,1\n",
                "csv_label": "a.png,cat\n"}[case]
        (root / "labels.csv").write_text(text)
    elif case == "bad_xml":
        _photo(root / "c" / "a.png")
        (root / "c" / "a.xml").write_text("<annotation><object><bndbox><xmin>3</xmin>"
                                          "</bndbox></object></annotation>")
    with pytest.raises(ValueError, match=message):
        data.load(f"folder:{root}")


def test_a_split_is_refused():
    with pytest.raises(ValueError, match="a folder dataset has no splits"):
        data.load("folder:/tmp", split="train")


def test_evaluate_runs_resumes_and_shards_a_folder(tmp_path):
    from saliency_jax import testing

    for c in range(3):
        for k in range(2):
            _photo(tmp_path / "imgs" / str(c) / f"{k}.png", value=(60 * c + 20 * k, 90, 150))
    _voc(tmp_path / "imgs" / "0" / "0.xml", [(1, 1, 20, 20)])
    dataset = data.load(f"folder:{tmp_path / 'imgs'}", image_size=32)
    model_fn = testing.tiny_cnn(jax.random.key(0), (32, 32))[0]
    config = ev.EvaluateConfig(dataset=f"folder:{tmp_path / 'imgs'}", model="tiny",
                               methods=("random", "rise"), num_images=6, num_masks=16,
                               image_size=32, target="label", batch_size=4)
    one = ev.run_evaluate(config, tmp_path / "one", model_fn=model_fn, dataset=dataset,
                          progress=False)
    records = ev.read_records(tmp_path / "one")
    assert sorted(r["target"] for (i, m), r in records.items() if m == "rise") == [0, 0, 1, 1,
                                                                                   2, 2]
    assert "pointing" in records[(0, "rise")] and "pointing" not in records[(1, "rise")]
    lines = (tmp_path / "one" / "records" / "process-00000.jsonl").read_text()
    again = ev.run_evaluate(config, tmp_path / "one", model_fn=model_fn, dataset=dataset,
                            progress=False)
    assert (tmp_path / "one" / "records" / "process-00000.jsonl").read_text() == lines
    assert again == one
    for p in (0, 1):
        ev.run_evaluate(config, tmp_path / "two", model_fn=model_fn, dataset=dataset,
                        progress=False, process_index=p, process_count=2)
    two = json.loads((tmp_path / "two" / "results.json").read_text())["summary"]
    for name in ("random", "rise"):
        assert two[name]["metrics"] == one[name]["metrics"]
