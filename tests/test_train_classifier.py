"""The default-classifier trainer: learns, checkpoints, and resumes to identical parameters."""

import dataclasses

import jax
import numpy as np
import pytest

from saliency_jax.app.train_classifier import (
    ClassifierTrainConfig,
    dihedral_augment,
    train_classifier,
)

CONFIG = ClassifierTrainConfig(model="resnet_small", num_train=32, num_test=12, batch_size=8,
                               num_steps=4, steps_per_checkpoint=2, warmup_steps=1)


def test_resumed_run_ends_with_the_same_parameters(tmp_path):
    full, metrics = train_classifier(CONFIG, tmp_path / "full", progress=False)
    assert metrics["config"]["num_steps"] == 4 and len(metrics["history_this_run"]) == 2
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert np.isfinite(metrics["history_this_run"][-1]["loss"])

    assert train_classifier(CONFIG, tmp_path / "cut", progress=False, max_steps=2) == (None, None)
    resumed, metrics = train_classifier(CONFIG, tmp_path / "cut", progress=False)
    assert [h["step"] for h in metrics["history_this_run"]] == [4]  # only steps 3-4 ran
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert (tmp_path / "cut" / "variables").exists()


def test_training_changes_the_parameters_and_lowers_the_loss(tmp_path):
    config = ClassifierTrainConfig(model="resnet_small", num_train=16, num_test=6, batch_size=16,
                                   num_steps=6, steps_per_checkpoint=3, warmup_steps=1,
                                   learning_rate=1e-2, augment=False)
    _, metrics = train_classifier(config, tmp_path, progress=False)
    first, last = metrics["history_this_run"]
    assert last["loss"] < first["loss"]  # fitting 16 images: the loss must fall


def test_dihedral_augment_gives_the_eight_symmetries_of_each_image():
    image = np.arange(4 * 4 * 1, dtype=np.float32).reshape(1, 4, 4, 1)
    a = image[0, ..., 0]
    group = {m.tobytes() for m in (a, a.T, a[::-1], a[:, ::-1], a.T[::-1], a.T[:, ::-1],
                                   a[::-1, ::-1], a.T[::-1, ::-1])}
    assert len(group) == 8
    batch = np.repeat(image, 64, axis=0)
    out = np.asarray(dihedral_augment(jax.random.key(0), batch))
    seen = {o[..., 0].tobytes() for o in out}
    assert seen <= group and len(seen) == 8  # 64 draws cover all 8 with overwhelming odds
    again = np.asarray(dihedral_augment(jax.random.key(0), batch))
    np.testing.assert_array_equal(out, again)
    with pytest.raises(ValueError, match="square"):
        dihedral_augment(jax.random.key(0), np.zeros((1, 4, 5, 1), np.float32))


def test_a_run_directory_refuses_another_config(tmp_path):
    assert train_classifier(CONFIG, tmp_path, progress=False, max_steps=2) == (None, None)
    other = dataclasses.replace(CONFIG, learning_rate=0.5)
    with pytest.raises(ValueError, match="another config.*learning_rate"):
        train_classifier(other, tmp_path, progress=False)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        train_classifier(CONFIG, tmp_path, progress=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"num_steps": 5, "steps_per_checkpoint": 2}, "multiple of steps_per_checkpoint"),
     ({"batch_size": 0}, "batch_size"),
     ({"batch_size": 64, "num_train": 32}, "exceeds num_train"),
     ({"num_steps": 100, "steps_per_checkpoint": 50}, r"warmup_steps \(--warmup-steps\) must "
      r"be an integer in \[0, num_steps\), got 100 with num_steps \(--steps\) 100"),
     ({"warmup_steps": -1}, "warmup_steps")],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ClassifierTrainConfig(**kwargs)


def test_same_area_elsewhere_is_disjoint_and_of_equal_area():
    from saliency_jax.app.train_classifier import same_area_elsewhere

    mask = np.zeros((40, 40), bool)
    mask[5:15, 8:20] = True
    rng = np.random.default_rng(0)
    for _ in range(5):
        region = same_area_elsewhere(mask, rng)
        assert region.sum() == mask.sum()
        assert not (region & mask).any()
    with pytest.raises(ValueError, match="too much"):
        same_area_elsewhere(np.ones((10, 10), bool) ^ np.eye(10, dtype=bool), rng)


def test_object_reliance_on_a_model_that_looks_at_the_object_only():
    from saliency_jax import testing
    from saliency_jax.app.train_classifier import object_reliance

    mask = np.zeros((32, 32), bool)
    mask[4:12, 4:12] = True
    model_fn = testing.region_model(mask)  # class 0 = brightness inside the object
    images = np.full((2, 32, 32, 3), 255, np.uint8)
    out = object_reliance(model_fn, images, np.zeros(2, int), np.stack([mask, mask]))
    assert out["original"]["true_class_prob"] == pytest.approx(1.0)
    assert out["object_box_occluded"]["true_class_prob"] == pytest.approx(0.0)  # black baseline
    assert out["object_silhouette_occluded"]["true_class_prob"] == pytest.approx(0.0)
    assert out["mean_box_fraction"] == pytest.approx(64 / 1024)
    assert out["same_area_elsewhere_occluded"]["true_class_prob"] == pytest.approx(1.0)
