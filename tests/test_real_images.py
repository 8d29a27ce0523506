"""Real photos with ImageNet labels (benchmarks/stamps_imagenet.py), the real-image benchmark's
summary (benchmarks/bench_real.py), and anytime RISE as an ``evaluate`` method."""

import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from saliency_jax.models import imagenet_labels  # noqa: E402

import saliency_jax as sj  # noqa: E402
from benchmarks import bench_real, stamps_imagenet  # noqa: E402
from saliency_jax import data, testing  # noqa: E402
from saliency_jax.app import evaluate as ev  # noqa: E402
from saliency_jax.app import methods  # noqa: E402


def test_every_label_is_the_class_it_names():
    stamps_imagenet.check_labels()
    names = imagenet_labels.imagenet_class_names()
    assert all(names[i] == name for i, name in stamps_imagenet.LABELS.values())
    assert len(stamps_imagenet.LABELS) == 120
    assert len({i for i, _ in stamps_imagenet.LABELS.values()}) == 97


def test_a_mistyped_index_is_caught(monkeypatch):
    labels = dict(stamps_imagenet.LABELS)
    labels["animals/mammals/cats/tiger.png"] = (291, "tiger")  # 291 is lion
    monkeypatch.setattr(stamps_imagenet, "LABELS", labels)
    with pytest.raises(ValueError, match="tiger.png.*291.*lion"):
        stamps_imagenet.check_labels()


def test_square_on_white_composites_exactly():
    rgba = np.zeros((2, 4, 4), np.uint8)
    rgba[..., :3] = [10, 20, 30]
    rgba[0, :, 3] = 255  # opaque row
    rgba[1, 0, 3] = 0  # transparent pixel
    rgba[1, 1:, 3] = 51  # alpha 0.2: 0.2 * c + 0.8 * 255
    out = stamps_imagenet.square_on_white(rgba)
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], 255)  # padding above (1 row) and below (1 row)
    np.testing.assert_array_equal(out[3], 255)
    np.testing.assert_array_equal(out[1], [[10, 20, 30]] * 4)
    np.testing.assert_array_equal(out[2, 0], [255, 255, 255])
    expected = np.rint(np.array([10, 20, 30]) * 0.2 + 255 * 0.8).astype(np.uint8)
    np.testing.assert_array_equal(out[2, 1:], [expected] * 3)


def _fake_stamps(root: pathlib.Path) -> dict[str, tuple[int, int, int]]:
    """A tiny RGBA PNG at every LABELS path, each its own colour (to find it again)."""
    colours = {}
    for k, path in enumerate(sorted(stamps_imagenet.LABELS)):
        colour = (k, 255 - k, (7 * k) % 256)
        rgba = np.zeros((3, 5, 4), np.uint8)
        rgba[..., :3] = colour
        rgba[..., 3] = 255
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgba).save(root / path)
        colours[path] = colour
    return colours


def test_the_folder_loads_with_every_stamps_label_in_a_fixed_shuffle(tmp_path):
    colours = _fake_stamps(tmp_path / "stamps")
    out = tmp_path / "out"
    assert stamps_imagenet.main(["--stamps", str(tmp_path / "stamps"), "--out", str(out)]) == 0
    dataset = data.load(f"folder:{out}", image_size=None, resize="none")
    assert len(dataset) == 120
    paths = sorted(stamps_imagenet.LABELS)
    order = np.random.default_rng(0).permutation(len(paths))
    by_colour = {c: p for p, c in colours.items()}
    for i in range(len(dataset)):
        example = dataset[i]
        assert example["image"].shape == (5, 5, 3)  # padded to a square with white
        np.testing.assert_array_equal(example["image"][0], 255)
        source = by_colour[tuple(int(v) for v in example["image"][2, 2])]
        assert source == paths[order[i]]
        assert example["label"] == stamps_imagenet.LABELS[source][0]
    # A second run into the same folder is refused rather than mixed.
    assert stamps_imagenet.main(["--stamps", str(tmp_path / "stamps"), "--out", str(out)]) == 2


def test_missing_stamps_are_named(tmp_path):
    (tmp_path / "stamps").mkdir()
    with pytest.raises(SystemExit, match="120 stamps missing"):
        stamps_imagenet.write_folder(tmp_path / "stamps", tmp_path / "out")


def _row(index, label, top1, aucs):
    return {"index": index, "label": label, "top1": top1, "p_label": 0.5, "methods": {
        name: {"deletion": d, "insertion": i, "queries": q, "seconds": 1.0 + index}
        for name, (d, i, q) in aucs.items()}}


def test_summary_means_ranking_and_anytime_savings():
    aucs = [
        {"rise": (0.10, 0.70, 4000), "rise_8000": (0.08, 0.72, 8000),
         "rise_anytime": (0.11, 0.69, 500), "gradcam": (0.12, 0.60, 1),
         "occlusion": (0.20, 0.50, 442), "lime": (0.09, 0.65, 1000), "random": (0.3, 0.3, 0)},
        {"rise": (0.20, 0.80, 4000), "rise_8000": (0.18, 0.82, 8000),
         "rise_anytime": (0.21, 0.77, 1500), "gradcam": (0.14, 0.70, 1),
         "occlusion": (0.30, 0.60, 442), "lime": (0.15, 0.75, 1000), "random": (0.4, 0.4, 0)},
    ]
    rows = [_row(0, 5, 5, aucs[0]), _row(1, 6, 7, aucs[1])]
    summary = bench_real.summarize(rows, {})
    assert summary["num_images"] == 2
    assert summary["top1_accuracy"]["mean"] == 0.5
    assert summary["methods"]["rise_8000"]["deletion"]["mean"] == pytest.approx(0.13)
    assert summary["methods"]["lime"]["insertion"]["mean"] == pytest.approx(0.70)
    lo, hi = summary["methods"]["rise"]["deletion"]["ci95"]
    assert 0.10 <= lo <= 0.15 <= hi <= 0.20
    # deletion means: rise_8000 .13, gradcam .13 (tie broken by the listed order), lime .12
    assert summary["ranking"]["deletion_ours"] == ["lime", "rise_8000", "gradcam", "occlusion"]
    assert summary["ranking"]["deletion_paper"] == ["rise_8000", "lime", "gradcam", "occlusion"]
    assert summary["ranking"]["insertion_ours"] == ["rise_8000", "lime", "gradcam", "occlusion"]
    anytime = summary["anytime"]
    assert anytime["masks_mean"] == 1000 and anytime["fewer_than_4000"] == 4.0
    assert anytime["auc_minus_rise_4000"]["insertion"]["mean"] == pytest.approx(-0.02)
    assert summary["methods"]["rise"]["seconds_median"] == 2.0  # the first image left out
    assert "| RISE, N = 8000 | 0.1300" in bench_real.markdown(summary)


def test_a_ranking_step_whose_paired_interval_holds_zero_is_a_tie():
    # lime is 0.002 behind gradcam on average but ±0.02 either way per image: a tie; the other
    # steps are 0.05 apart on every image: resolved.
    rows = []
    for i in range(20):
        e = 0.01 if i % 2 else -0.01
        rows.append(_row(i, 5, 5, {
            "rise": (0.1, 0.7, 4000), "rise_8000": (0.1, 0.7, 8000),
            "rise_anytime": (0.1, 0.7, 500), "gradcam": (0.15 + e, 0.6, 1),
            "occlusion": (0.25, 0.5, 442), "lime": (0.152 - e, 0.6 - 0.05, 1000),
            "random": (0.4, 0.3, 0)}))
    summary = bench_real.summarize(rows, {})
    steps = summary["ranking_steps"]
    assert [s["pair"] for s in steps["deletion"]] == [
        ["rise_8000", "gradcam"], ["gradcam", "lime"], ["lime", "occlusion"]]
    assert steps["deletion"][0]["diff"]["mean"] == pytest.approx(0.05)
    lo, hi = steps["deletion"][1]["diff"]["ci95"]
    assert lo < 0 < hi
    assert steps["insertion"][1]["diff"]["mean"] == pytest.approx(0.05)  # gradcam − lime
    assert bench_real._ranked(summary["ranking"]["deletion_ours"], steps["deletion"], "<") == \
        "RISE < Grad-CAM ≈ LIME < sliding window 64/8"
    assert bench_real._ranked(summary["ranking"]["insertion_ours"], steps["insertion"], ">") == \
        "RISE > Grad-CAM > LIME > sliding window 64/8"


def test_rows_resume_past_a_torn_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"index": 3, "x": 1}) + "\n" + '{"index": 4, "x"')
    assert list(bench_real.read_rows(path)) == [3]
    assert bench_real.read_rows(tmp_path / "none.jsonl") == {}


SIZE = 16


def _anytime_method(num_masks=None):
    return methods.build_methods(("rise_anytime",), methods.ModelContext("tiny", {}, (SIZE, SIZE)),
                                 num_masks=num_masks)[0]


def test_rise_anytime_method_is_the_librarys_call():
    region = jnp.zeros((SIZE, SIZE), bool).at[4:10, 6:12].set(True)
    model_fn = testing.region_model(region)
    image = jnp.ones((SIZE, SIZE, 3))
    method = _anytime_method(1000)
    assert method.queries == 1000 and not method.vmappable
    key = jax.random.key(3)
    saliency, used = method.explain_counted(key, model_fn, image, 0)
    config = sj.RiseAnytimeConfig(max_masks=1000, check_every=250, min_masks=500)
    expected = sj.rise_anytime(key, model_fn, image, 0, config=config)
    np.testing.assert_array_equal(np.asarray(saliency), np.asarray(expected.saliency))
    assert int(used) == int(expected.num_masks) and 500 <= int(used) <= 1000
    np.testing.assert_array_equal(np.asarray(method.explain(key, model_fn, image, 0)),
                                  np.asarray(saliency))
    assert _anytime_method().queries == sj.RiseAnytimeConfig().max_masks


@pytest.mark.parametrize("bad", [0, -5, 2.5, True])
def test_rise_anytime_method_refuses_bad_num_masks(bad):
    with pytest.raises(ValueError, match="num_masks"):
        _anytime_method(bad)


def test_evaluate_records_each_images_own_mask_count(tmp_path):
    from saliency_jax.data import shapes

    model_fn = testing.tiny_cnn(jax.random.key(0), (48, 48))[0]
    dataset = [shapes.render_example(0, "test", i, image_size=48) for i in range(2)]
    config = ev.EvaluateConfig(model="tiny", methods=("rise_anytime",), num_images=2,
                               num_masks=1000, image_size=48, target="top1")
    summary = ev.run_evaluate(config, tmp_path, model_fn=model_fn, dataset=dataset,
                              progress=False)
    records = ev.read_records(tmp_path)
    anytime = methods.build_methods(("rise_anytime",),
                                    methods.ModelContext("tiny", {}, (48, 48)),
                                    num_masks=1000)[0]
    for i in range(2):
        image = jnp.asarray(dataset[i]["image"], jnp.float32) / 255.0
        target = records[(i, "rise_anytime")]["target"]
        _, used = anytime.explain_counted(ev.method_key(0, i, "rise_anytime"), model_fn,
                                          image, target)
        assert records[(i, "rise_anytime")]["queries"] == int(used)
    assert "rise_anytime" in summary


def test_the_table_section_says_when_the_run_is_partial(tmp_path, monkeypatch):
    from benchmarks import common

    rows = [_row(i, 5, 5, {"rise": (0.1, 0.7, 4000), "rise_8000": (0.1, 0.7, 8000),
                           "rise_anytime": (0.1, 0.7, 750), "gradcam": (0.2, 0.6, 1),
                           "occlusion": (0.3, 0.5, 442), "lime": (0.15, 0.65, 1000),
                           "random": (0.4, 0.3, 0)}) for i in range(3)]
    summary = bench_real.summarize(rows, {})
    payload = {"what": "w", "complete": False, "num_images_planned": 120, "summary": summary,
               "table_md": bench_real.markdown(summary), "command": "c",
               "environment": {"device_kind": "cpu", "cpu_count": 2,
                               "versions": {"jax": "x"}}}
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    (tmp_path / "real_stamps.json").write_text(json.dumps(payload))
    lines = []
    bench_real.table_section(lines)
    text = "\n".join(lines)
    assert "**Partial: 3 of 120 images so far**" in text
    assert "ours RISE < LIME < Grad-CAM < sliding window 64/8" in text
    assert "ours RISE > LIME > Grad-CAM > sliding window 64/8" in text
    assert "5.3x fewer than N = 4000" in text
    bench_real.table_section(lines := [], name="missing")
    assert lines == []
