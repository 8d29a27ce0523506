"""The main job: table, figures, resumability, and refusal to mix or overwrite results."""

import json

import jax
import numpy as np
import pytest

from saliency_jax import metrics, testing
from saliency_jax.app import evaluate as ev
from saliency_jax.data import shapes

SIZE = 48


@pytest.fixture(scope="module")
def model_fn():
    return testing.tiny_cnn(jax.random.key(0), (SIZE, SIZE))[0]


@pytest.fixture(scope="module")
def dataset():
    return [shapes.render_example(0, "test", i, image_size=SIZE) for i in range(3)]


def _config(**kw):
    base = dict(model="tiny", methods=("rise", "occlusion", "random"), num_images=3,
                num_masks=32, image_size=SIZE, target="top1")  # the tiny CNN has 3 classes
    return ev.EvaluateConfig(**{**base, **kw})


def _metric_values(summary):
    return {m: s["metrics"] for m, s in summary.items()}


def test_scaled_protocol_settings():
    c = ev.EvaluateConfig(image_size=112)
    assert c.step == 56 and c.tolerance == 7.5  # 224 px and 15 px at 224², scaled
    c = ev.EvaluateConfig(image_size=224)
    assert c.step == 224 and c.tolerance == 15.0


def test_run_writes_table_figures_and_records(tmp_path, model_fn, dataset):
    summary = ev.run_evaluate(_config(), tmp_path, model_fn=model_fn, dataset=dataset,
                              progress=False)
    assert set(summary) == {"rise", "occlusion", "random"}
    for name in ("results.json", "table.md", "examples.png", "curves.png", "run.json"):
        assert (tmp_path / name).stat().st_size > 0
    assert len(list((tmp_path / "records").glob("*.json"))) == 3
    assert len(list((tmp_path / "maps").glob("*.npy"))) == 9
    table = (tmp_path / "table.md").read_text()
    assert "Deletion ↓" in table and "Pointing ↑" in table and "| rise |" in table
    rise = summary["rise"]
    assert rise["queries"] == 32 and rise["num_images"] == 3
    for key in ("deletion", "insertion", "pointing", "iou", "f1", "precision", "recall"):
        m = rise["metrics"][key]
        assert 0.0 <= m["mean"] <= 1.0 and m["n"] == 3
    assert "Precision" in table and "Recall" in table
    # The record's segmentation numbers are those of the saved map, thresholded as documented.
    record = json.loads((tmp_path / "records" / "00000.json").read_text())["methods"]["rise"]
    saved = np.load(tmp_path / "maps" / "00000_rise.npy")
    expected = metrics.overlap(saved, dataset[0]["mask"], threshold=_config().iou_threshold,
                               mode="relative")
    for key in ("iou", "f1", "precision", "recall"):
        assert record[key] == pytest.approx(float(getattr(expected, key)), abs=1e-6)
    # Curves have the 224 * (48/224)^2 ≈ 10 px step: ceil(48*48 / 10) + 1 points.
    assert len(rise["mean_deletion_curve"]) == -(-SIZE * SIZE // _config().step) + 1


def test_resume_skips_finished_images_and_gives_the_same_table(tmp_path, model_fn, dataset,
                                                                 monkeypatch):
    full = ev.run_evaluate(_config(), tmp_path / "full", model_fn=model_fn, dataset=dataset,
                           progress=False)
    calls = []
    real = ev.evaluate_image

    def dies_on_third(model_fn, example, method_list, config, index):
        if index == 2:
            raise KeyboardInterrupt  # the run is killed while image 2 is being computed
        calls.append(index)
        return real(model_fn, example, method_list, config, index)

    monkeypatch.setattr(ev, "evaluate_image", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        ev.run_evaluate(_config(), tmp_path / "cut", model_fn=model_fn, dataset=dataset,
                        progress=False)
    assert calls == [0, 1]
    record0 = (tmp_path / "cut" / "records" / "00000.json").read_text()

    calls.clear()
    monkeypatch.setattr(ev, "evaluate_image",
                        lambda *a: (calls.append(a[-1]), real(*a))[1])
    resumed = ev.run_evaluate(_config(), tmp_path / "cut", model_fn=model_fn, dataset=dataset,
                              progress=False)
    assert calls == [2]  # only the unfinished image is computed
    assert (tmp_path / "cut" / "records" / "00000.json").read_text() == record0
    assert _metric_values(resumed) == _metric_values(full)


def test_other_arguments_in_the_same_directory_are_refused(tmp_path, model_fn, dataset):
    ev.run_evaluate(_config(num_images=1), tmp_path, model_fn=model_fn, dataset=dataset,
                    progress=False)
    with pytest.raises(ValueError, match="different arguments.*num_masks"):
        ev.run_evaluate(_config(num_images=1, num_masks=64), tmp_path, model_fn=model_fn,
                        dataset=dataset, progress=False)


def test_corrupt_record_is_reported_not_overwritten(tmp_path, model_fn, dataset):
    ev.run_evaluate(_config(num_images=1), tmp_path, model_fn=model_fn, dataset=dataset,
                    progress=False)
    record = tmp_path / "records" / "00000.json"
    record.write_text('{"version": 1, "index": 0, "meth')
    with pytest.raises(ValueError, match="corrupt"):
        ev.run_evaluate(_config(num_images=1), tmp_path, model_fn=model_fn, dataset=dataset,
                        progress=False)
    assert record.read_text() == '{"version": 1, "index": 0, "meth'


def test_bad_arguments(tmp_path, model_fn, dataset):
    with pytest.raises(ValueError, match="num_images=5 exceeds"):
        ev.run_evaluate(_config(num_images=5), tmp_path, model_fn=model_fn, dataset=dataset,
                        progress=False)
    with pytest.raises(ValueError, match="unknown method"):
        ev.run_evaluate(_config(methods=("rise", "nope")), tmp_path / "b", model_fn=model_fn,
                        dataset=dataset, progress=False)


def test_random_map_is_worse_than_rise_on_a_region_model(tmp_path):
    # A model that looks at the object only: RISE must beat the random floor on deletion and
    # point inside the object.
    example = shapes.render_example(0, "test", 0, image_size=SIZE)
    model_fn = testing.region_model(example["mask"])
    white = dict(example, image=np.full((SIZE, SIZE, 3), 255, np.uint8), label=0)
    summary = ev.run_evaluate(_config(methods=("rise", "random"), num_images=1, num_masks=256,
                                      target="label"),
                              tmp_path, model_fn=model_fn, dataset=[white], progress=False)
    assert summary["rise"]["metrics"]["deletion"]["mean"] < summary["random"]["metrics"][
        "deletion"]["mean"]
    assert summary["rise"]["metrics"]["pointing"]["mean"] == 1.0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["summary"]["rise"]["queries"] == 256
