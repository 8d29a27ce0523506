"""Metrics: deletion/insertion parity with the reference port, analytic cases, localisation."""

from __future__ import annotations

import functools
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import causal_metric_numpy as ref
from scipy.ndimage import gaussian_filter

from saliency_jax import metrics, testing
from saliency_jax._src.metrics import aggregate, causal

# ----------------------------------------------------------------------------------------------
# Models


def _normalised_linear(weights, images, *, mean_rgb, std_rgb):
    x = (images - mean_rgb.reshape(1, 1, 1, 3)) / std_rgb.reshape(1, 1, 1, 3)
    logits = jnp.einsum("khwc,bhwc->bk", weights, x)
    return jax.nn.softmax(logits, axis=-1)


def _tiny_apply(variables, images, *, mean_rgb):
    x = images - mean_rgb.reshape(1, 1, 1, 3)
    return jax.nn.softmax(testing.TinyCNN().apply(variables, x), axis=-1)


def tiny_cnn(key, hw):
    """testing.tiny_cnn's model (mean colour 0.5), with the mean subtracted rank-explicitly:
    testing._tiny_apply's ``images - mean_rgb`` trips jax_numpy_rank_promotion='raise'."""
    variables = testing.TinyCNN().init(key, jnp.zeros((1, *hw, 3)))
    return jax.tree_util.Partial(_tiny_apply, variables, mean_rgb=jnp.full((3,), 0.5)), variables


def _region(region, images):
    inside = jnp.sum(images.mean(-1) * region[None], axis=(1, 2)) / jnp.sum(region)
    return jnp.stack([inside, 1.0 - inside], axis=-1)


def region_model(region):
    """testing.region_model (score 0 = mean intensity inside ``region``), rank-explicit."""
    return jax.tree_util.Partial(_region, jnp.asarray(region, jnp.float32))


MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def normalised_linear_model(key, hw, k=5):
    """softmax(<w_k, (x - mean) / std>): a classifier normalised like torchvision's."""
    n = hw[0] * hw[1] * 3
    w = jax.random.normal(key, (k, *hw, 3)) * (0.05 / np.sqrt(n))
    return jax.tree_util.Partial(_normalised_linear, w, mean_rgb=jnp.asarray(MEAN),
                                 std_rgb=jnp.asarray(STD))


def model_stats(model_fn):
    mean = model_fn.keywords.get("mean_rgb")
    std = model_fn.keywords.get("std_rgb", None)
    mean = np.asarray(mean, np.float64)
    std = np.ones(3) if std is None else np.asarray(std, np.float64)
    return mean, std


@functools.partial(jax.jit)
def _apply(model_fn, x):
    return model_fn(x)


def reference_model(model_fn):
    """The same model seen by the reference: it takes the *normalised* image."""
    mean, std = model_stats(model_fn)
    return lambda xn: np.asarray(_apply(model_fn, jnp.asarray(xn * std + mean, jnp.float32)))


HW = (64, 64)  # 4096 px: 19 steps of 224, 3 steps of 1792


@pytest.fixture(scope="module")
def setup():
    k = jax.random.split(jax.random.key(42), 4)
    image = np.asarray(jax.random.uniform(k[0], (*HW, 3)), np.float32)
    n = HW[0] * HW[1]
    saliency = (np.asarray(jax.random.permutation(k[1], n)).reshape(HW) / n).astype(np.float32)
    assert np.unique(saliency).size == saliency.size  # tie-free: the reference order is defined
    cnn, _ = tiny_cnn(k[2], HW)
    return {"image": image, "saliency": saliency, "cnn": cnn,
            "linear": normalised_linear_model(k[3], HW)}


# ----------------------------------------------------------------------------------------------
# Deletion / insertion: parity with the numpy port of the reference CausalMetric


@pytest.mark.parametrize("model_name", ["linear", "cnn"])
@pytest.mark.parametrize("step", [224, 1792])
@pytest.mark.parametrize("mode", ["del", "ins"])
def test_causal_matches_reference(setup, model_name, step, mode):
    model_fn, image, sal = setup[model_name], setup["image"], setup["saliency"]
    mean, std = model_stats(model_fn)
    img_norm = (image.astype(np.float64) - mean) / std
    substrate_fn = np.zeros_like if mode == "del" else ref.blur
    expected = ref.causal_metric(reference_model(model_fn), img_norm, sal, mode, step,
                                 substrate_fn)
    fn = metrics.deletion if mode == "del" else metrics.insertion
    curve = fn(model_fn, image, sal, step=step, batch_size=8)
    n_steps = -(-HW[0] * HW[1] // step)
    assert curve.scores.shape == (n_steps + 1,)
    np.testing.assert_allclose(curve.scores, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(curve.auc, ref.auc(expected), atol=1e-5, rtol=0)
    assert np.ptp(expected) > 1e-3  # the curve is not flat, so the comparison has teeth


def test_noise_deletion_matches_reference(setup):
    """RExL's substrate: rand - 0.5 in normalised space (documented draw), step 1792."""
    model_fn, image, sal = setup["linear"], setup["image"], setup["saliency"]
    key = jax.random.key(7)
    u = np.asarray(jax.random.uniform(key, image.shape, jnp.float32, -0.5, 0.5), np.float64)
    mean, std = model_stats(model_fn)
    expected = ref.causal_metric(reference_model(model_fn), (image - mean) / std, sal, "del",
                                 1792, lambda x: u)
    curve = metrics.deletion(model_fn, image, sal, step=1792, substrate="noise", key=key)
    np.testing.assert_allclose(curve.scores, expected, atol=1e-5, rtol=0)
    other = metrics.deletion(model_fn, image, sal, step=1792, substrate="noise",
                             key=jax.random.key(8))
    assert abs(float(other.scores[-1]) - float(curve.scores[-1])) > 1e-6


def test_gkern_taps_are_scipy_not_gaussian():
    delta = np.zeros(11)
    delta[5] = 1
    np.testing.assert_allclose(metrics.GKERN_TAPS, gaussian_filter(delta, 5), rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.outer(metrics.GKERN_TAPS, metrics.GKERN_TAPS), ref.gkern(11, 5),
                               rtol=0, atol=1e-12)
    listed = [0.087958, 0.088896, 0.090474, 0.092191, 0.093489, 0.093982, 0.093489, 0.092191,
              0.090474, 0.088896, 0.087958]  # METHODS §5.1
    np.testing.assert_allclose(metrics.GKERN_TAPS, listed, atol=1e-6)
    x = np.arange(-5, 6)
    true_gaussian = np.exp(-0.5 * (x / 5.0) ** 2)
    true_gaussian /= true_gaussian.sum()
    assert np.abs(metrics.GKERN_TAPS - true_gaussian).max() > 0.01


def test_blur_is_reference_blur_in_normalised_space(setup):
    image = setup["image"]
    out = metrics.blur(jnp.asarray(image), jnp.asarray(MEAN))
    expected = ref.blur((image - MEAN).astype(np.float64)) + MEAN
    np.testing.assert_allclose(out, expected, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------------------------
# Analytic cases


def test_deletion_and_insertion_region_model_closed_form():
    """Score = visible fraction of the region; saliency = region indicator (white image, black)."""
    h, w, step = 16, 16, 7
    region = np.zeros((h, w), bool)
    region[3:8, 4:12] = True  # R = 40 pixels
    model_fn = region_model(region)
    image = np.ones((h, w, 3), np.float32)
    sal = region.astype(np.float32)
    n = -(-h * w // step)  # 37
    counts = np.minimum(np.arange(n + 1) * step, h * w)
    deleted_in_region = np.minimum(counts, region.sum())  # region pixels come first
    expected_del = 1.0 - deleted_in_region / region.sum()
    for target in (None, 0):
        curve = metrics.deletion(model_fn, image, sal, target, step=step)
        np.testing.assert_allclose(curve.scores, expected_del, atol=1e-6)
        np.testing.assert_allclose(curve.auc, np.trapezoid(expected_del, dx=1.0 / n), atol=1e-6)
    ins = metrics.insertion(model_fn, image, sal, 0, step=step, substrate="baseline")
    np.testing.assert_allclose(ins.scores, 1.0 - expected_del, atol=1e-6)
    # class 1 (= 1 - visible fraction) tracked explicitly
    other = metrics.deletion(model_fn, image, sal, 1, step=step)
    np.testing.assert_allclose(other.scores, deleted_in_region / region.sum(), atol=1e-6)


def test_tie_rule_lower_flat_index_first():
    """A plateau map deletes pixels in row-major order: a one-pixel model drops at its index."""
    h, w, p = 4, 5, 13
    weights = np.zeros((h, w, 3), np.float32)
    weights.reshape(-1, 3)[p] = 1.0 / 3
    model_fn = testing.linear_model(weights)
    image = np.ones((h, w, 3), np.float32)
    curve = metrics.deletion(model_fn, image, np.zeros((h, w), np.float32), 0, step=1)
    expected = (np.arange(h * w + 1) <= p).astype(np.float32)
    np.testing.assert_allclose(curve.scores, expected, atol=1e-6)
    sal = np.array([[1.0, 2.0, 2.0], [1.0, 2.0, 0.0]], np.float32)
    np.testing.assert_array_equal(metrics.pixel_rank(sal), [[3, 0, 1], [4, 2, 5]])


def test_auc_formula_hand_computed():
    s = np.array([1.0, 0.5, 0.25, 0.0])
    # (1.75 - 0.5 - 0.0) / 3
    np.testing.assert_allclose(metrics.auc(s), 1.25 / 3, rtol=1e-6)
    np.testing.assert_allclose(metrics.auc([0.2, 0.6]), 0.4, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Contracts


def test_vmap_equals_loop_and_batch_size_independent():
    hw = (24, 24)
    k = jax.random.split(jax.random.key(3), 3)
    model_fn, _ = tiny_cnn(k[0], hw)
    images = jax.random.uniform(k[1], (3, *hw, 3))
    sals = jax.random.uniform(k[2], (3, *hw))
    f = functools.partial(metrics.insertion, model_fn, step=40, batch_size=5)
    batched = jax.vmap(f)(images, sals)
    for i in range(3):
        single = f(images[i], sals[i])
        np.testing.assert_allclose(batched.scores[i], single.scores, atol=1e-6)
        np.testing.assert_allclose(batched.auc[i], single.auc, atol=1e-6)
    other = metrics.insertion(model_fn, images[0], sals[0], step=40, batch_size=32)
    np.testing.assert_allclose(other.scores, batched.scores[0], atol=1e-6)
    jitted = jax.jit(f)(images[1], sals[1])
    np.testing.assert_allclose(jitted.scores, batched.scores[1], atol=1e-6)


_MULTI_DEVICE_SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax, numpy as np
    sys.path.insert(0, sys.argv[1])
    from test_metrics import multi_device_curves
    assert jax.device_count() == 4, jax.devices()
    np.savez(sys.argv[2], **multi_device_curves())
    """
)


def multi_device_curves():
    """Deletion (single image, committed to one device) and vmapped insertion curves, and
    whether the compiled deletion has an all-reduce (i.e. its steps are split over devices)."""
    hw = (24, 24)
    k = jax.random.split(jax.random.key(5), 3)
    model_fn, _ = tiny_cnn(k[0], hw)
    images = jax.random.uniform(k[1], (2, *hw, 3))
    sals = jax.random.uniform(k[2], (2, *hw))
    # 576 px / step 40 = 15 steps, 16 points: 4 chunks of 4 (batch_size 5), 1 per device.
    delete = jax.jit(lambda x, s: metrics.deletion(model_fn, x, s, 1, step=40, batch_size=5))
    compiled = delete.lower(images[0], sals[0]).compile()
    committed = jax.device_put(images[1], jax.devices()[-1])
    insert = jax.jit(jax.vmap(functools.partial(metrics.insertion, model_fn, step=40,
                                                batch_size=5)))
    return dict(deletion=np.asarray(compiled(images[0], sals[0]).scores),
                committed=np.asarray(metrics.deletion(model_fn, committed, sals[1], 1, step=40,
                                                      batch_size=5).scores),
                insertion=np.asarray(insert(images, sals).scores),
                all_reduce=np.array("all-reduce" in compiled.as_text()))


def test_one_and_four_devices_give_the_same_curves(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(_MULTI_DEVICE_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).resolve().parents[1]))
    env.pop("XLA_FLAGS", None)
    subprocess.run([sys.executable, str(script), str(pathlib.Path(__file__).parent),
                    str(tmp_path / "out.npz")], env=env, check=True, timeout=300)
    four = np.load(tmp_path / "out.npz")
    one = multi_device_curves()
    assert four["all_reduce"]
    for name in ("deletion", "committed", "insertion"):
        np.testing.assert_allclose(four[name], one[name], rtol=1e-5, atol=1e-7)


def test_localization_vmaps():
    sals = jax.random.uniform(jax.random.key(9), (3, 12, 12))
    gt = np.zeros((12, 12), bool)
    gt[2:6, 3:9] = True
    hits = jax.vmap(lambda s: metrics.pointing_game(s, gt, tolerance=2))(sals)
    ious = jax.vmap(lambda s: metrics.iou(s, gt, threshold=0.3, mode="top_k"))(sals)
    for i in range(3):
        assert bool(hits[i]) == bool(metrics.pointing_game(sals[i], gt, tolerance=2))
        np.testing.assert_allclose(ious[i], metrics.iou(sals[i], gt, threshold=0.3, mode="top_k"))


def test_no_recompile_with_new_weights_or_image():
    hw = (24, 24)
    k = jax.random.split(jax.random.key(4), 6)
    model_a, _ = tiny_cnn(k[0], hw)
    model_b, _ = tiny_cnn(k[1], hw)
    img_a, img_b = jax.random.uniform(k[2], (*hw, 3)), jax.random.uniform(k[3], (*hw, 3))
    sal_a, sal_b = jax.random.uniform(k[4], hw), jax.random.uniform(k[5], hw)
    for fn in (metrics.deletion, metrics.insertion):
        fn(model_a, img_a, sal_a, step=100).auc.block_until_ready()
        with testing.log_compilations() as log:
            fn(model_b, img_b, sal_b, step=100).auc.block_until_ready()
        assert len(log) == 0, fn.__name__


def test_memory_flat_in_number_of_steps():
    hw = (32, 32)
    model_fn, _ = tiny_cnn(jax.random.key(5), hw)
    image, sal = jnp.full((*hw, 3), 0.3), jnp.zeros(hw)
    substrate = jnp.full((*hw, 3), 0.5)

    def temp_bytes(step):
        lowered = jax.jit(
            functools.partial(causal._causal_curve, step=step, batch_size=8, insert=False)
        ).lower(model_fn, image, sal, None, substrate)
        return lowered.compile().memory_analysis().temp_size_in_bytes

    many, few = temp_bytes(1), temp_bytes(64)  # 1025 vs 17 evaluations
    assert many < 1.5 * few
    assert many < 1025 * 32 * 32 * 3 * 4 / 10  # far below materialising every step's image


# ----------------------------------------------------------------------------------------------
# Pointing game


def _peak(hw, at):
    s = np.zeros(hw, np.float32)
    s[at] = 1.0
    return s


def _gt(hw, *pixels):
    m = np.zeros(hw, bool)
    for p in pixels:
        m[p] = True
    return m


def test_pointing_game_tolerance_edge():
    hw, peak = (40, 40), (5, 5)
    sal = _peak(hw, peak)
    pg = metrics.pointing_game
    assert pg(sal, _gt(hw, (20, 5)), tolerance=15)  # distance exactly 15
    assert pg(sal, _gt(hw, (14, 17)), tolerance=15)  # (9, 12): exactly 15
    assert not pg(sal, _gt(hw, (20, 5)), tolerance=14.99)
    assert not pg(sal, _gt(hw, (20, 6)), tolerance=15)  # sqrt(226) = 15.033
    assert pg(sal, _gt(hw, (20, 6)), tolerance=15.04)
    assert pg(sal, _gt(hw, (5, 5)), tolerance=0)
    assert pg(sal, _gt(hw, (5, 5), (39, 39)), tolerance=0)  # any GT pixel may be hit


def test_boxes_convention_and_masks_vs_boxes():
    hw = (30, 40)
    boxes = np.array([[10.0, 20.0, 15.0, 30.0], [0.0, 0.0, 0.0, 0.0]], np.float32)  # + padding
    expected = np.zeros(hw, bool)
    expected[10:15, 20:30] = True  # rows 10..14, cols 20..29
    np.testing.assert_array_equal(metrics.boxes_to_mask(boxes, hw), expected)
    for peak, hit in [((12, 25), True), ((14, 29), True), ((15, 25), False), ((12, 30), False)]:
        sal = _peak(hw, peak)
        assert bool(metrics.pointing_game(sal, boxes, gt_hw=hw, tolerance=0)) is hit
        assert bool(metrics.pointing_game(sal, expected, tolerance=0)) is hit
    assert metrics.pointing_game(_peak(hw, (12, 0)), boxes, gt_hw=hw, tolerance=20)  # 20 px left


def test_pointing_game_resizes_map_to_gt_resolution():
    """8x8 map, peak at (1, 6); bilinear x4 (half-pixel centres) puts equal maxima at rows 5-6,
    cols 25-26 (input coordinate 1 = output 5.5); the argmax takes the first: (5, 25)."""
    sal = _peak((8, 8), (1, 6))
    gt_hw = (32, 32)
    assert metrics.pointing_game(sal, _gt(gt_hw, (5, 25)), tolerance=0)
    assert not metrics.pointing_game(sal, _gt(gt_hw, (5, 24)), tolerance=0)
    assert not metrics.pointing_game(sal, _gt(gt_hw, (1, 6)), tolerance=0)  # not map coordinates
    boxes = np.array([[5.0, 25.0, 6.0, 26.0]], np.float32)  # exactly pixel (5, 25)
    assert metrics.pointing_game(sal, boxes, gt_hw=gt_hw, tolerance=0)


# ----------------------------------------------------------------------------------------------
# IoU / F1 / precision / recall


def test_binarize_modes_hand_computed():
    s = (np.arange(16, dtype=np.float32) / 15).reshape(4, 4)
    rel = metrics.binarize(s, threshold=0.3, mode="relative")  # s > 0.3: 5/15 ... 15/15
    np.testing.assert_array_equal(rel.reshape(-1), np.arange(16) >= 5)
    absolute = metrics.binarize(s * 2, threshold=1.0, mode="absolute")  # 2k/15 > 1: k >= 8
    np.testing.assert_array_equal(absolute.reshape(-1), np.arange(16) >= 8)
    top = metrics.binarize(s, threshold=0.25, mode="top_k")  # 4 most salient
    np.testing.assert_array_equal(top.reshape(-1), np.arange(16) >= 12)
    flat = metrics.binarize(np.ones((4, 4), np.float32), threshold=0.25, mode="top_k")
    np.testing.assert_array_equal(flat.reshape(-1), np.arange(16) < 4)  # ties: lower index
    assert not metrics.binarize(np.ones((4, 4), np.float32), threshold=0.3).any()


def test_overlap_metrics_hand_computed():
    pred = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0]], bool)
    gt = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0]], bool)
    # TP = 2, FP = 1, FN = 2, TN = 4
    np.testing.assert_allclose(metrics.iou(pred, gt), 2 / 5, rtol=1e-6)
    np.testing.assert_allclose(metrics.precision(pred, gt), 2 / 3, rtol=1e-6)
    np.testing.assert_allclose(metrics.recall(pred, gt), 2 / 4, rtol=1e-6)
    np.testing.assert_allclose(metrics.f1(pred, gt), 4 / 7, rtol=1e-6)
    np.testing.assert_allclose(metrics.iassa_micro_f1(pred, gt), 6 / 9, rtol=1e-6)
    # the same from a float map with a relative threshold
    sal = np.where(pred, 0.9, 0.1).astype(np.float32)
    np.testing.assert_allclose(metrics.iou(sal, gt, threshold=0.3, mode="relative"), 0.4,
                               rtol=1e-6)
    # an empty prediction: precision 0 by convention, IoU 0
    empty = np.zeros((3, 3), bool)
    assert float(metrics.precision(empty, gt)) == 0.0
    assert float(metrics.iou(empty, gt)) == 0.0


def test_fractional_gt_nonzero_is_foreground_but_micro_f1_rounds():
    pred = np.array([[1, 1], [0, 0]], bool)
    gt = np.array([[1.0, 0.2], [0.0, 0.0]], np.float32)  # 0.2: a resized edge
    np.testing.assert_allclose(metrics.iou(pred, gt), 1.0, rtol=1e-6)  # 0.2 counts
    # IASSA's micro-F1 compares with gt.round(): [[1, 0], [0, 0]] -> 3 of 4 pixels agree
    np.testing.assert_allclose(metrics.iassa_micro_f1(pred, gt), 0.75, rtol=1e-6)


def test_micro_f1_equals_pixel_accuracy():
    rng = np.random.default_rng(0)
    sal = rng.random((20, 20)).astype(np.float32)
    gt = rng.random((20, 20)) > 0.6
    pred = sal > sal.min() + 0.3 * (sal.max() - sal.min())
    # sklearn micro-F1 for binary labels: micro precision = micro recall = accuracy
    tp = (pred & gt).sum() + (~pred & ~gt).sum()  # summed over both classes
    fp = (pred & ~gt).sum() + (~pred & gt).sum()
    micro_f1 = tp / (tp + fp)
    got = metrics.iassa_micro_f1(sal, gt, threshold=0.3)
    np.testing.assert_allclose(got, micro_f1, rtol=1e-6)
    np.testing.assert_allclose(got, np.mean(pred == gt), rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Aggregation


def test_mean_std_hand_table():
    table = {"deletion": [0.1, 0.3, 0.2, 0.6], "pointing": [True, False, True, True]}
    out = aggregate.mean_std(table, classes=["a", "b", "a", "b"])
    assert out["deletion"]["mean"] == pytest.approx(0.3)
    assert out["deletion"]["std"] == pytest.approx(np.sqrt((0.04 + 0 + 0.01 + 0.09) / 4))
    assert out["deletion"]["n"] == 4
    assert out["deletion"]["per_class"]["a"]["mean"] == pytest.approx(0.15)
    assert out["deletion"]["per_class"]["b"]["std"] == pytest.approx(0.15)
    assert out["pointing"]["mean"] == pytest.approx(0.75)
    sample = aggregate.mean_std({"x": [1.0, 3.0]}, ddof=1)
    assert sample["x"]["std"] == pytest.approx(np.sqrt(2.0))


def test_pointing_game_accuracy_per_category_mean():
    hits = [True, False, True, True, False, True]
    cats = [0, 0, 0, 1, 1, 2]
    difficult = [False, True, True, False, True, False]
    res = aggregate.pointing_game_accuracy(hits, cats)
    assert res.per_category == {0: pytest.approx(2 / 3), 1: 0.5, 2: 1.0}
    assert res.accuracy == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)  # not the pooled 4/6
    assert res.hits == {0: 2, 1: 1, 2: 1} and res.totals == {0: 3, 1: 2, 2: 1}
    hard = aggregate.pointing_game_accuracy(hits, cats, difficult=difficult, subset="difficult")
    assert hard.per_category == {0: 0.5, 1: 0.0}
    assert hard.accuracy == pytest.approx(0.25)


# ----------------------------------------------------------------------------------------------
# Bad inputs


def test_bad_inputs_causal(setup):
    model_fn, image, sal = setup["cnn"], setup["image"], setup["saliency"]
    with pytest.raises(ValueError, match="saliency"):
        metrics.deletion(model_fn, image, sal[:32])
    bad = sal.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="saliency"):
        metrics.insertion(model_fn, image, bad)
    with pytest.raises(ValueError, match="step"):
        metrics.deletion(model_fn, image, sal, step=0)
    with pytest.raises(ValueError, match="batch_size"):
        metrics.deletion(model_fn, image, sal, batch_size=0)
    with pytest.raises(ValueError, match="substrate"):
        metrics.deletion(model_fn, image, sal, substrate="zeros")
    with pytest.raises(ValueError, match="substrate"):
        metrics.insertion(model_fn, image, sal, substrate=np.zeros((3, 3, 3), np.float32))
    with pytest.raises(ValueError, match="key"):
        metrics.deletion(model_fn, image, sal, substrate="noise")
    with pytest.raises(ValueError, match="target"):
        metrics.deletion(model_fn, image, sal, 3)  # 3 classes
    with pytest.raises(ValueError, match="image"):
        metrics.deletion(model_fn, image * 2, sal)
    with pytest.raises(ValueError, match="scores"):
        metrics.auc([1.0])


def test_bad_inputs_localization():
    sal = np.random.default_rng(1).random((6, 6)).astype(np.float32)
    gt = np.zeros((6, 6), bool)
    gt[2:4, 2:4] = True
    with pytest.raises(ValueError, match="gt_mask"):
        metrics.iou(sal, np.zeros((6, 6), bool), threshold=0.3)
    with pytest.raises(ValueError, match="gt_mask"):
        metrics.iou(sal, gt[:5], threshold=0.3)
    with pytest.raises(ValueError, match="mode"):
        metrics.f1(sal, gt, threshold=0.3, mode="otsu")
    with pytest.raises(ValueError, match="threshold"):
        metrics.iou(sal, gt, threshold=1.5, mode="relative")
    with pytest.raises(ValueError, match="threshold"):
        metrics.binarize(sal, threshold=-0.1, mode="top_k")
    with pytest.raises(ValueError, match="threshold"):
        metrics.iou(sal, gt)  # a float map needs a threshold
    with pytest.raises(ValueError, match="threshold"):
        metrics.iou(sal > 0.5, gt, threshold=0.3)  # a bool map must not get one
    nan = sal.copy()
    nan[1, 1] = np.nan
    with pytest.raises(ValueError, match="saliency"):
        metrics.precision(nan, gt, threshold=0.3)
    with pytest.raises(ValueError, match="saliency"):
        metrics.recall(sal[None], gt, threshold=0.3)
    with pytest.raises(ValueError, match="gt"):
        metrics.pointing_game(sal, np.zeros((10, 10), bool))
    with pytest.raises(ValueError, match="gt_hw"):
        metrics.pointing_game(sal, np.array([[1.0, 1.0, 3.0, 3.0]], np.float32))  # boxes, no size
    with pytest.raises(ValueError, match="gt"):
        metrics.pointing_game(sal, np.zeros((2, 4), np.float32), gt_hw=(10, 10))  # empty boxes
    with pytest.raises(ValueError, match="gt_hw"):
        metrics.pointing_game(sal, np.ones((1, 4), np.float32), gt_hw=(10, 0))
    with pytest.raises(ValueError, match="tolerance"):
        metrics.pointing_game(sal, gt, tolerance=-1)
    with pytest.raises(ValueError, match="saliency"):
        metrics.pointing_game(nan, gt)
    with pytest.raises(ValueError, match="subset"):
        aggregate.pointing_game_accuracy([True], [0], subset="hard")
    with pytest.raises(ValueError, match="difficult"):
        aggregate.pointing_game_accuracy([True], [0], subset="difficult")
    with pytest.raises(ValueError, match="categories"):
        aggregate.pointing_game_accuracy([True, False], [0])
    with pytest.raises(ValueError, match="non-finite"):
        aggregate.mean_std({"iou": [0.1, float("nan")]})
