"""The main job: table, figures, resumability, and refusal to mix or overwrite results."""

import json
import re

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
    records = ev.read_records(tmp_path)
    assert set(records) == {(i, m) for i in range(3) for m in ("rise", "occlusion", "random")}
    assert sorted(p.name for p in (tmp_path / "records").iterdir()) == [
        "process-00000.jsonl", "process-00000.lock"]
    table = (tmp_path / "table.md").read_text()
    assert "Deletion ↓" in table and "Pointing ↑" in table and "| rise |" in table
    rise = summary["rise"]
    assert rise["queries"] == 32 and rise["num_images"] == 3
    for key in ("deletion", "insertion", "pointing", "iou", "f1", "precision", "recall"):
        m = rise["metrics"][key]
        assert 0.0 <= m["mean"] <= 1.0 and m["n"] == 3
    assert "Precision" in table and "Recall" in table
    # The record's segmentation numbers are those of the stored map, thresholded as documented.
    saved = ev.read_map(tmp_path, "rise", 0)
    assert saved.shape == (SIZE, SIZE) and saved.dtype == np.float32
    expected = metrics.overlap(saved, dataset[0]["mask"], threshold=_config().iou_threshold,
                               mode="relative")
    for key in ("iou", "f1", "precision", "recall"):
        assert records[(0, "rise")][key] == pytest.approx(float(getattr(expected, key)), abs=1e-6)
    # Curves have the 224 * (48/224)^2 ≈ 10 px step: ceil(48*48 / 10) + 1 points.
    assert len(rise["mean_deletion_curve"]) == -(-SIZE * SIZE // _config().step) + 1


def test_batched_equals_the_per_image_loop(tmp_path, model_fn, dataset):
    # Batches of 2 over 3 images: the second batch is padded. Every map, curve and metric
    # equals the one-image-at-a-time reference path with the same keys.
    ev.run_evaluate(_config(batch_size=2), tmp_path, model_fn=model_fn, dataset=dataset,
                    progress=False)
    records = ev.read_records(tmp_path)
    config = _config()
    method_list = ev.methods.build_methods(
        config.methods, ev.methods.ModelContext("tiny", {}, (SIZE, SIZE)),
        num_masks=config.num_masks)
    for i in range(3):
        reference, maps = ev.evaluate_image(model_fn, dataset[i], method_list, config, i)
        for name, expected in reference["methods"].items():
            got = records[(i, name)]
            np.testing.assert_allclose(ev.read_map(tmp_path, name, i), maps[name], atol=1e-5)
            assert got["target"] == reference["target"] and got["queries"] == expected["queries"]
            for key in ("deletion_curve", "insertion_curve"):
                np.testing.assert_allclose(got[key], expected[key], atol=1e-5)
            for key in ("deletion", "insertion", "iou", "f1", "precision", "recall"):
                assert got[key] == pytest.approx(expected[key], abs=1e-5), (i, name, key)
            assert got["pointing"] == expected["pointing"]


def _lines(out):
    return (out / "records" / "process-00000.jsonl").read_text().splitlines()


def test_resume_after_a_kill_and_a_torn_line(tmp_path, model_fn, dataset, monkeypatch):
    two = dict(batch_size=2, methods=("rise", "random"))
    full = ev.run_evaluate(_config(**two), tmp_path / "full", model_fn=model_fn,
                           dataset=dataset, progress=False)
    real = ev._RecordWriter.write
    writes = []

    def dies_on_second_batch(self, records):
        if len(writes) == 2:  # the run is killed in the second batch, after 2 methods' records
            raise KeyboardInterrupt
        writes.append([(r["index"], r["method"]) for r in records])
        return real(self, records)

    monkeypatch.setattr(ev._RecordWriter, "write", dies_on_second_batch)
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        ev.run_evaluate(_config(**two), cut, model_fn=model_fn, dataset=dataset,
                        progress=False)
    assert len(_lines(cut)) == 4 and not (cut / "results.json").exists()  # images 0, 1
    with open(cut / "records" / "process-00000.jsonl", "a") as f:
        f.write('{"v": 4, "index": 2, "method": "ri')  # a write torn by the kill
    writes.clear()
    monkeypatch.setattr(ev._RecordWriter, "write",
                        lambda self, records: (writes.append(
                            [(r["index"], r["method"]) for r in records]), real(self, records)))
    resumed = ev.run_evaluate(_config(**two), cut, model_fn=model_fn, dataset=dataset,
                              progress=False)
    assert sorted(k for w in writes for k in w) == [(2, "random"), (2, "rise")]
    lines = _lines(cut)
    assert len(lines) == 6 and all(json.loads(line) for line in lines)  # torn line cut off
    assert _metric_values(resumed) == _metric_values(full)


def test_more_methods_and_images_reuse_what_is_done(tmp_path, model_fn, dataset):
    ev.run_evaluate(_config(methods=("random",), num_images=2), tmp_path,
                    model_fn=model_fn, dataset=dataset, progress=False)
    first = _lines(tmp_path)
    assert len(first) == 2
    summary = ev.run_evaluate(_config(methods=("rise", "random"), num_images=3),
                              tmp_path, model_fn=model_fn, dataset=dataset, progress=False)
    lines = _lines(tmp_path)
    assert lines[:2] == first  # kept, not recomputed
    added = sorted((json.loads(x)["index"], json.loads(x)["method"]) for x in lines[2:])
    assert added == [(0, "rise"), (1, "rise"), (2, "random"), (2, "rise")]
    assert all(s["num_images"] == 3 for s in summary.values())
    # Fewer images again: the table is of the first num_images, from the records already there.
    again = ev.run_evaluate(_config(methods=("rise",), num_images=2), tmp_path,
                            model_fn=model_fn, dataset=dataset, progress=False)
    assert _lines(tmp_path) == lines and again["rise"]["num_images"] == 2
    # The same methods in another order: nothing is computed, the table follows the order.
    swapped = ev.run_evaluate(_config(methods=("random", "rise"), num_images=3), tmp_path,
                              model_fn=model_fn, dataset=dataset, progress=False)
    assert _lines(tmp_path) == lines and list(swapped) == ["random", "rise"]
    assert swapped["rise"]["metrics"] == summary["rise"]["metrics"]


def test_other_arguments_in_the_same_directory_are_refused(tmp_path, model_fn, dataset):
    ev.run_evaluate(_config(num_images=1, methods=("random",)), tmp_path, model_fn=model_fn,
                    dataset=dataset, progress=False)
    with pytest.raises(ValueError, match="other settings.*num_masks: 32 there, 64 now"):
        ev.run_evaluate(_config(num_images=1, num_masks=64), tmp_path, model_fn=model_fn,
                        dataset=dataset, progress=False)
    with pytest.raises(ValueError, match="other settings.*seed: 0 there, 1 now"):
        ev.run_evaluate(_config(num_images=1, seed=1), tmp_path, model_fn=model_fn,
                        dataset=dataset, progress=False)


def test_corrupt_record_is_reported_not_overwritten(tmp_path, model_fn, dataset):
    ev.run_evaluate(_config(num_images=1, methods=("random",)), tmp_path, model_fn=model_fn,
                    dataset=dataset, progress=False)
    path = tmp_path / "records" / "process-00000.jsonl"
    text = '{"v": 4, "index": 0, "meth\n' + path.read_text()  # a complete but broken line
    path.write_text(text)
    with pytest.raises(ValueError, match="corrupt at line 1"):
        ev.run_evaluate(_config(num_images=1, methods=("random",)), tmp_path,
                        model_fn=model_fn, dataset=dataset, progress=False)
    assert path.read_text() == text


def test_merge_only_needs_every_record(tmp_path, model_fn, dataset):
    config = _config(methods=("random",), num_images=3)
    for p in (0, 1):  # two uncoordinated shards: the last one merges
        summary = ev.run_evaluate(config, tmp_path, model_fn=model_fn, dataset=dataset,
                                  progress=False, process_index=p, process_count=2)
        assert (summary is None) == (p == 0)
    assert sorted(r.name for r in (tmp_path / "records").glob("*.jsonl")) == [
        "process-00000.jsonl", "process-00001.jsonl"]
    merged = ev.run_evaluate(config, tmp_path, model_fn=model_fn, dataset=dataset,
                             progress=False, merge_only=True)
    one = ev.run_evaluate(config, tmp_path / "one", model_fn=model_fn, dataset=dataset,
                          progress=False)
    assert merged["random"]["metrics"] == one["random"]["metrics"]
    # Two of three shards done: not merged, and --merge says what is missing.
    for p in (0, 1):
        assert ev.run_evaluate(config, tmp_path / "part", model_fn=model_fn, dataset=dataset,
                               progress=False, process_index=p, process_count=3) is None
    with pytest.raises(ValueError, match="1 of 3 image x method records are missing"):
        ev.run_evaluate(config, tmp_path / "part", model_fn=model_fn, dataset=dataset,
                        progress=False, merge_only=True)


def test_bad_arguments(tmp_path, model_fn, dataset):
    with pytest.raises(ValueError, match="num_images=5 exceeds"):
        ev.run_evaluate(_config(num_images=5), tmp_path, model_fn=model_fn, dataset=dataset,
                        progress=False)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        ev.run_evaluate(_config(batch_size=0), tmp_path / "c", model_fn=model_fn,
                        dataset=dataset, progress=False)
    with pytest.raises(ValueError, match="unknown method"):
        ev.run_evaluate(_config(methods=("rise", "nope")), tmp_path / "b", model_fn=model_fn,
                        dataset=dataset, progress=False)
    for field, value, message in (("num_masks", 0, "num_masks must be None"),
                                  ("num_images", 0, "num_images must be a positive int"),
                                  ("image_size", 0, "image_size must be a positive int"),
                                  ("seed", -1, "seed must be an int >= 0")):
        with pytest.raises(ValueError, match=message):
            ev.run_evaluate(_config(**{field: value}), tmp_path / "d", model_fn=model_fn,
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


def test_unset_num_masks_is_the_default_n(tmp_path, model_fn, dataset):
    from saliency_jax.app import methods

    default = methods.FACTORIES["rise"](methods.ModelContext("tiny", {}, (SIZE, SIZE)), None)
    ev.run_evaluate(_config(num_images=1, methods=("random",), num_masks=None), tmp_path,
                    model_fn=model_fn, dataset=dataset, progress=False)
    # The same N given explicitly is the same setting; another N is refused.
    ev.run_evaluate(_config(num_images=1, methods=("random",), num_masks=default.queries),
                    tmp_path, model_fn=model_fn, dataset=dataset, progress=False)
    with pytest.raises(ValueError, match=f"num_masks: {default.queries} there, 7 now"):
        ev.run_evaluate(_config(num_images=1, methods=("random",), num_masks=7), tmp_path,
                        model_fn=model_fn, dataset=dataset, progress=False)


@pytest.mark.slow  # ~10 s: keeps the default suite's time (issue 19)
def test_constant_maps_get_a_warning_that_says_why(tmp_path, dataset, capsys):
    import jax.numpy as jnp

    def flat_model(images):  # ignores its input: every perturbation gives the same score
        return jnp.full((images.shape[0], 3), 1 / 3) + 0 * jnp.mean(images)

    ev.run_evaluate(_config(num_images=2, methods=("occlusion", "random")), tmp_path,
                    model_fn=flat_model, dataset=dataset, progress=False)
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("warning:")]
    assert lines == ["warning: 2 occlusion map(s) are constant (they rank no pixel above "
                     "another): no occluding window changed the score"]


def test_progress_prints_an_estimate_and_compiling_notes(tmp_path, model_fn, dataset, capsys):
    ev.run_evaluate(_config(num_images=1, methods=("random",)), tmp_path, model_fn=model_fn,
                    dataset=dataset, progress=True)
    err = capsys.readouterr().err
    assert "measuring tiny's forward rate" in err
    assert re.search(r"estimate: about \d+ s of model queries for 1 image\(s\) at \d+ images/s",
                     err)
    assert re.search(r"compilation is not included: 3 programs compile first .* at least the "
                     r"\d+ s the bare forward pass took to compile here", err)
    assert "compiling and running random" in err


def test_estimate_is_queries_over_throughput():
    from saliency_jax.app import methods

    config = _config()
    method_list = methods.build_methods(("rise", "random"), methods.ModelContext(
        "tiny", {}, (SIZE, SIZE)), num_masks=32)
    est = ev.estimate(config, method_list, 10, throughput=100.0)
    curves = 2 * (-(-SIZE * SIZE // config.step) + 1)
    assert est["per_image"] == {"rise": (32 + curves) / 100.0, "random": curves / 100.0}
    assert est["total"] == pytest.approx(10 * (32 + 2 * curves) / 100.0)


@pytest.mark.slow  # ~10 s: keeps the default suite's time (issue 19)
def test_examples_figure_shows_every_image(tmp_path, model_fn):
    from PIL import Image

    many = [shapes.render_example(0, "test", i, image_size=SIZE) for i in range(8)]
    ev.run_evaluate(_config(num_images=8, methods=("random",)), tmp_path, model_fn=model_fn,
                    dataset=many, progress=False)
    with Image.open(tmp_path / "examples.png") as im:
        assert im.height >= 8 * 2.0 * 100  # eight rows of 2-inch panels at 100 dpi


def test_figure_class_names_come_from_the_dataset_or_the_model():
    from saliency_jax import data

    photos = ev._class_names(ev.EvaluateConfig(model="efficientnet_lite0"), data.load("photos"))
    assert photos[281] == "tabby"  # unlabelled photos, an ImageNet model
    assert ev._class_names(ev.EvaluateConfig(), data.load("saliency_shapes")) == \
        shapes.CLASS_NAMES
    assert ev._class_names(_config(), dataset=[]) is None  # not a registry model
