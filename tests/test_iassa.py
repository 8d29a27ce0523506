"""IASSA (saliency_jax._src.iassa) and its LRPF-SA attention (saliency_jax._src.attention).

Expected values come from hand computation, from METHODS §2 (window counts, the bound on the
reference attention) or from the loop-level numpy port ``tests/reference/iassa_numpy.py``.
"""

import dataclasses
import math
import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import iassa_numpy as ref

from saliency_jax import testing
from saliency_jax._src import attention as lrpf
from saliency_jax._src.iassa import (
    IassaConfig,
    iassa,
    iassa_num_queries,
    window_schedule,
)

HW = (32, 32)
# 32 px images: W 12 -> 10 -> 8, S 4 -> 3 -> 2 (paper variant), 100 + 169 + 361 windows.
SMALL = IassaConfig(window=12, stride=4, window_step=2, stride_step=1, iterations=2,
                    feature_names=None, batch_size=32)


# --------------------------------------------------------------------------- toy models


def _tiny_apply(variables, images, *, mean_rgb):
    return jax.nn.softmax(
        testing.TinyCNN().apply(variables, images - mean_rgb[None, None, None, :]), axis=-1
    )


def _tiny_model(seed):
    variables = testing.TinyCNN().init(jax.random.key(seed), jnp.zeros((1, *HW, 3)))
    return jax.tree_util.Partial(_tiny_apply, variables, mean_rgb=jnp.full((3,), 0.5))


def _pool(images, k):
    b, h, w, c = images.shape
    return images.reshape(b, h // k, k, w // k, k, c).mean(axis=(2, 4))


def _pooled_features(proj, images):
    """Two levels: 2x and 4x average-pooled colours through a random projection and ReLU."""
    return {
        "fine": jax.nn.relu(jnp.einsum("bhwc,cd->bhwd", _pool(images, 2), proj["fine"])),
        "coarse": jax.nn.relu(jnp.einsum("bhwc,cd->bhwd", _pool(images, 4), proj["coarse"])),
    }


def _features_fn(seed):
    k1, k2 = jax.random.split(jax.random.key(seed))
    proj = {"fine": jax.random.normal(k1, (3, 4)), "coarse": jax.random.normal(k2, (3, 6))}
    return jax.tree_util.Partial(_pooled_features, proj)


def _constant_features(levels, images):
    return {k: jnp.broadcast_to(v[None], (images.shape[0], *v.shape)) for k, v in levels.items()}


def _const_model(value, images):
    return jnp.broadcast_to(value[None, :], (images.shape[0], value.shape[0]))


@pytest.fixture(scope="module")
def model_fn():
    return _tiny_model(1)


@pytest.fixture(scope="module")
def features_fn():
    return _features_fn(0)


@pytest.fixture(scope="module")
def images():
    return jax.random.uniform(jax.random.key(2), (3, *HW, 3))


# --------------------------------------------------------------------------- windows


def test_reference_schedule_and_window_counts_match_methods():
    # METHODS §2.2: n=0 -> (43, 8), 1 -> (42, 7), 2 -> (40, 7), 10 -> (28, 6), 11 -> (27, 5),
    # 16 -> (19, 4), 21 -> (12, 3), 24 -> (7, 3); iteration t = n + 1.
    plan = window_schedule(IassaConfig.reference(iterations=25), (224, 224))
    assert plan[0] == (45, 8, 1089)
    for n, (w, s) in {0: (43, 8), 1: (42, 7), 2: (40, 7), 10: (28, 6), 11: (27, 5),
                      16: (19, 4), 21: (12, 3), 24: (7, 3)}.items():
        assert plan[n + 1][:2] == (w, s)
    # METHODS §2.4: 1089 (45/8), 1369 (S=7), 1764 (S=6), 2401-2500 (S=5), 3481-3600 (S=4),
    # 5776-6084 (S=3); cumulative 7,654 for k=5 and 71,128 for k=25. The list is not
    # exhaustive: (28, 6) gives 41^2 = 1681 and (21, 5) 48^2 = 2304, which its 71,128 includes.
    allowed = {8: {1089}, 7: {1369}, 6: {1681, 1764}, 5: {2304, 2401, 2500}, 4: {3481, 3600},
               3: {5776, 5929, 6084}}
    for w, s, n in plan:
        assert n in allowed[s]
        assert n == len(np.arange(s - w, 224, s)) ** 2  # generate_b_masks' origins
    assert sum(n for *_, n in plan) == 71128
    plan5 = window_schedule(IassaConfig.reference(), (224, 224))
    assert [n for *_, n in plan5] == [1089, 1089, 1369, 1369, 1369, 1369]
    assert iassa_num_queries(IassaConfig.reference(batch_size=1), (224, 224)) == 7654
    # Batches of 64: each iteration's last chunk is padded (18 + 18 + 4 * 22 chunks).
    assert iassa_num_queries(IassaConfig.reference(batch_size=64), (224, 224)) == 124 * 64


def test_reference_windows_are_the_released_masks():
    # The coverage of the windows built inside iassa (by a constant model: sal = mean of the
    # occlusion masks) equals the mean of generate_b_masks' masks, at 224 px and (45, 8).
    cfg = IassaConfig.reference(iterations=1, batch_size=128, feature_names=("f",))
    image = jnp.full((224, 224, 3), 0.5)
    model = jax.tree_util.Partial(_const_model, jnp.array([1.0, 0.0]))
    feats = jax.tree_util.Partial(_constant_features, {"f": jnp.zeros((4, 4, 1))})
    _, maps = iassa(jax.random.key(0), model, image, 0, config=dataclasses.replace(cfg, beta=1.0),
                    features_fn=feats, return_iterations=True)
    expected = ref.generate_b_masks(45, 8, (224, 224)).mean(axis=0)
    np.testing.assert_allclose(np.asarray(maps[0]), expected, atol=1e-6)
    # W mod S != 0: pixels are covered by 5 or 6 windows (METHODS §2.2), hence stripes.
    assert set(np.unique(np.round((1 - expected) * 1089)).astype(int)) == {25, 30, 36}


def test_for_image_size_scales_the_schedule():
    assert IassaConfig.for_image_size(224).schedule() == IassaConfig().schedule()
    assert IassaConfig.reference(112).schedule()[:3] == ((23, 4), (22, 4), (21, 4))
    # About the same number of windows as at 224 px.
    assert window_schedule(IassaConfig.reference(112), (112, 112))[0][2] == 1089


# --------------------------------------------------------------------------- attention


def test_resampling_helpers():
    np.testing.assert_array_equal(lrpf.nearest_indices(224, 112), np.arange(0, 224, 2))
    np.testing.assert_array_equal(lrpf.nearest_indices(7, 112), np.arange(112) // 16)
    # grid_sample of ones, zero padding: the outer ring halved, corners quartered.
    up = lrpf.grid_sample_matrix(6, 12) @ np.ones((6, 6)) @ lrpf.grid_sample_matrix(6, 12).T
    expected = np.ones((12, 12))
    expected[[0, -1], :] *= 0.5
    expected[:, [0, -1]] *= 0.5
    np.testing.assert_allclose(up, expected, atol=1e-6)
    x = np.random.default_rng(0).normal(size=(5, 7))
    got = lrpf.grid_sample_matrix(5, 11) @ x @ lrpf.grid_sample_matrix(7, 9).T
    np.testing.assert_allclose(got, ref.grid_sample_zeros(x, (11, 9)), atol=1e-5)


def _twin_regions(side):
    """One-hot features: category 0 on two blocks R1 (top-left) and R2 (bottom-right)."""
    q = side // 4
    r1 = np.zeros((side, side), bool)
    r1[:q, :q] = True
    r2 = np.zeros((side, side), bool)
    r2[-q:, -q:] = True
    obj = r1 | r2
    feats = np.stack([obj, ~obj], axis=-1).astype(np.float32)
    return feats, r1, r2


def test_paper_attention_moves_saliency_to_similar_pixels():
    feats, r1, r2 = _twin_regions(8)
    s = r1.astype(np.float32)
    att = lrpf.lrpf_attention([feats], out_hw=(8, 8), variant="paper", temperature=0.1)
    got = np.asarray(lrpf.apply_attention(s, att))
    # Cosine similarity 1 within a category, 0 across: (A s)_i in closed form.
    e, n_obj, n_bg, n_r1 = math.exp(10.0), (r1 | r2).sum(), (~(r1 | r2)).sum(), r1.sum()
    expected = np.where(r1 | r2, e * n_r1 / (e * n_obj + n_bg), n_r1 / (n_obj + e * n_bg))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert got[r2].min() > 0.45  # half of R1's saliency reaches its twin R2
    adjusted = np.asarray(lrpf.attend(s, att, beta=0.5))
    assert adjusted[r2].mean() > 0.2 and adjusted[~(r1 | r2)].max() < 0.01


def test_reference_attention_is_nearly_constant():
    # METHODS §2.2: A_ij in [1/(e n), e/n], so s^T A = c + delta, 0 <= delta <= (e-1) max(s)/n.
    feats, r1, r2 = _twin_regions(24)
    feats = 10.0 * feats  # strongly separated categories: affinities 100 vs 0
    s = r1.astype(np.float32)
    att = lrpf.lrpf_attention([feats], out_hw=(24, 24), variant="reference", chunk=100)
    new = np.asarray(lrpf.apply_attention(s, att))
    n = 24 * 24
    assert np.ptp(new) <= (math.e - 1) * s.max() / n * (1 + 1e-4)
    assert new[r2].mean() - new[~(r1 | r2)].mean() < 0.003  # the twin gets (almost) nothing
    a = np.asarray(lrpf.attention_matrix(att))
    assert a.min() >= 1 / (math.e * n) * (1 - 1e-5) and a.max() <= math.e / n * (1 + 1e-5)
    # On the 48 px image: adj - S/2 is constant inside, lower on the zero-padded ring.
    sal = np.kron(s, np.ones((2, 2), np.float32))
    rest = np.asarray(lrpf.attend(sal, att, beta=0.5)) - 0.5 * sal
    assert np.ptp(rest[1:-1, 1:-1]) <= (math.e - 1) / n
    assert rest[0, 5] < 0.6 * rest[5, 5] and rest[0, 0] < 0.3 * rest[5, 5]


@pytest.mark.parametrize("dense_max", [0, lrpf.DENSE_MAX])
@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_chunked_attention_equals_dense(variant, dense_max):
    rng = np.random.default_rng(1)
    levels = [rng.normal(size=(10, 10, 4)), rng.normal(size=(5, 5, 3)), rng.normal(size=(3, 3, 5))]
    levels = [x.astype(np.float32) for x in levels]
    s = rng.uniform(size=(10, 10)).astype(np.float32)
    att = lrpf.lrpf_attention(levels, out_hw=(10, 10), variant=variant, chunk=32,
                              dense_max=dense_max)
    assert (att.weights is None) == (dense_max == 0)  # formed once only when n <= dense_max
    a = np.asarray(lrpf.attention_matrix(att), np.float64)
    if variant == "paper":  # the row softmax of eq. 10, from the features in numpy
        phi = np.asarray(att.features, np.float64)
        logits = phi @ phi.T / float(att.temperature)
        expected = np.exp(logits - logits.max(axis=1, keepdims=True))
        np.testing.assert_allclose(a, expected / expected.sum(axis=1, keepdims=True), rtol=1e-4,
                                   atol=1e-7)
    got = np.asarray(lrpf.apply_attention(s, att))
    if variant == "paper":
        np.testing.assert_allclose(got.ravel(), a @ s.ravel(), rtol=1e-5)
        np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-5)
    else:
        np.testing.assert_allclose(got.ravel(), s.ravel() @ a, rtol=1e-5)
        # The numpy port of LRPF_SA.forward (float64, dense double softmax).
        adj, _ = ref.lrpf_forward(levels, np.kron(s, np.ones((2, 2))), 0.5, 0.3, (10, 10))
        mine = lrpf.attend(jnp.asarray(np.kron(s, np.ones((2, 2)))), att, beta=0.5)
        np.testing.assert_allclose(np.asarray(mine), adj, rtol=1e-5)


def test_paper_attention_normalisation_matters():
    # Raw ReLU-like features rank pixels by norm: object pixels (norm ~1) are more similar to
    # the bright background (norm ~5) than to themselves, and the saliency leaks away.
    # Per-level L2 normalisation compares directions: the saliency spreads to the twin.
    feats, r1, r2 = _twin_regions(8)
    obj = (r1 | r2)[..., None]
    raw = np.where(obj, np.array([1.0, 0.2]), 5.0 * np.array([0.2, 1.0])).astype(np.float32)
    s = r1.astype(np.float32)
    normed = lrpf.lrpf_attention([raw], out_hw=(8, 8), temperature=0.1, normalize=True)
    unnormed = lrpf.lrpf_attention([raw], out_hw=(8, 8), temperature=0.1, normalize=False)
    with_norm = np.asarray(lrpf.apply_attention(s, normed))
    without = np.asarray(lrpf.apply_attention(s, unnormed))
    assert with_norm[r2].min() > 0.4 and with_norm[~obj[..., 0]].max() < 0.01
    assert without[r2].max() < 0.01 and without[r1].max() < 0.01


def test_highest_activated_region():
    s = jnp.array([[0.0, 1.0], [2.0, 10.0]])
    np.testing.assert_array_equal(lrpf.highest_activated_region(s, threshold=0.3),
                                  [[False, False], [False, True]])  # > 0 + 0.3 * 10 = 3
    np.testing.assert_array_equal(lrpf.highest_activated_region(s, threshold=0.1),
                                  [[False, False], [True, True]])  # > 1: strict
    np.testing.assert_array_equal(lrpf.highest_activated_region(s + 5.0, threshold=0.1),
                                  [[False, False], [True, True]])  # relative to the minimum
    assert not lrpf.highest_activated_region(jnp.full((3, 3), 2.0)).any()


# --------------------------------------------------------------------------- reference parity


def _linear(weights, images):
    return jnp.einsum("khwc,bhwc->bk", weights, images)


@pytest.mark.parametrize("beta, threshold", [(0.5, 0.3), (1.0, 0.77)])
def test_reference_variant_matches_numpy_port(beta, threshold):
    # (1.0, 0.77): no attention and a high threshold make HAR small enough that the
    # find_intersection filter drops masks (checked on the port below).
    h = 24
    rng = np.random.default_rng(0)
    w = np.zeros((2, h, h, 3), np.float32)
    w[0, 5:8, 14:17] = np.abs(rng.normal(size=(3, 3, 3))) * 1.3
    w[0] += rng.uniform(size=(h, h, 3)).astype(np.float32) * 0.01
    w[1] = rng.normal(size=(h, h, 3)) * 0.05
    levels = {"l1": rng.normal(size=(12, 12, 4)), "l2": rng.normal(size=(6, 6, 6)),
              "l3": rng.normal(size=(3, 3, 8))}
    levels = {k: v.astype(np.float32) for k, v in levels.items()}
    image = rng.uniform(size=(h, h, 3)).astype(np.float32)
    baseline = np.full(3, 0.5)
    cfg = IassaConfig(variant="reference", window=9, stride=3, iterations=3, beta=beta,
                      threshold=threshold, feature_names=("l1", "l2", "l3"), batch_size=16)
    _, maps = iassa(jax.random.key(0), jax.tree_util.Partial(_linear, jnp.asarray(w)), image, 0,
                    config=cfg, features_fn=jax.tree_util.Partial(_constant_features, levels),
                    baseline=jnp.asarray(baseline, jnp.float32), return_iterations=True)
    model = lambda x: np.einsum("khwc,bhwc->bk", w.astype(np.float64), x)  # noqa: E731
    level_list = [levels[k] for k in ("l1", "l2", "l3")]
    expected = ref.iassa_reference(model, image.astype(np.float64), 0, level_list,
                                   baseline=baseline, window=9, stride=3, iteration_k=3,
                                   lambda_fac=beta, t_thresh=threshold)
    np.testing.assert_allclose(np.asarray(maps), expected, rtol=1e-5, atol=1e-5)
    if beta == 1.0:
        _, har = ref.lrpf_forward(level_list, expected[0], beta, threshold, (12, 12))
        masks = ref.generate_b_masks(7, 3, (h, h))
        assert len(ref.find_intersection(masks, har)) < len(masks)


# --------------------------------------------------------------------------- paper variant


def test_coverage_normalisation_removes_stripes(features_fn):
    # A constant model: every pixel's mean score given it is visible is the constant, so the
    # paper variant's maps are constant although W mod S != 0 (10 mod 4; the reference
    # variant's sum / N shows the coverage stripes: test_reference_windows_are_...). For
    # t >= 1, f_out = 0.7 and every window inside HAR scores f_out: the estimate is f_out.
    model = jax.tree_util.Partial(_const_model, jnp.array([0.7, 0.3]))
    cfg = dataclasses.replace(SMALL, window=10, stride=4)
    _, maps = iassa(jax.random.key(0), model, jnp.full((*HW, 3), 0.5), 0, config=cfg,
                    features_fn=features_fn, return_iterations=True)
    np.testing.assert_allclose(np.asarray(maps), 0.7, rtol=1e-5)


def _region_scores(region, images):
    # testing.region_model's function with explicit broadcasting (rank promotion raises).
    inside = jnp.sum(images.mean(-1) * region[None], axis=(1, 2)) / jnp.sum(region)
    return jnp.stack([inside, 1.0 - inside], axis=-1)


def _quadrant_case():
    """Class 0 = mean intensity inside the top-right quadrant; white image, black baseline."""
    region = np.zeros(HW, bool)
    region[:16, 16:] = True
    model = jax.tree_util.Partial(_region_scores, jnp.asarray(region, jnp.float32))
    return model, jnp.ones((*HW, 3)), region


@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_region_model_is_explained_inside_its_quadrant(variant, features_fn):
    model, image, region = _quadrant_case()
    cfg = dataclasses.replace(SMALL, variant=variant)
    if variant == "reference":
        # W mod S = 0 throughout ((12, 4), (8, 4), (4, 2)): with W mod S != 0 the coverage
        # stripes of the occlusion sum (amplitude (9 - 4) / N) swamp this weak model's signal.
        cfg = dataclasses.replace(cfg, window_step=4.0, stride_step=2.0)
    sal, maps = iassa(jax.random.key(0), model, image, 0, config=cfg, features_fn=features_fn,
                      return_iterations=True)  # as the other region-model tests: one compilation
    assert maps.shape == (3, *HW) and np.all(np.isfinite(np.asarray(maps)))
    np.testing.assert_array_equal(np.asarray(maps[-1]), np.asarray(sal))
    sal = np.asarray(sal)
    assert region.ravel()[np.argmax(sal)]
    assert sal[region].mean() > sal[~region].mean()
    top = sal >= np.quantile(sal, 0.8)
    assert (top & region).sum() / top.sum() > 0.9


def _chebyshev_dilate(region, reach):
    """Pixels within ``reach`` (max-norm) of ``region``."""
    out = np.zeros_like(region)
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            out |= np.roll(np.roll(region, dy, 0), dx, 1) & _shift_valid(region.shape, dy, dx)
    return out


def _shift_valid(shape, dy, dx):
    ok = np.zeros(shape, bool)
    ok[max(dy, 0): shape[0] + min(dy, 0), max(dx, 0): shape[1] + min(dx, 0)] = True
    return ok


def test_paper_windows_touch_har_and_uncovered_pixels_hold_f_out(features_fn):
    # beta = 1 (no attention): S'_t = S_t. The windows of iteration t that build the map show
    # some pixel of HAR(S_{t-1}), so they cover only pixels within W_t - 1 (max-norm) of it;
    # the others all hold one value, f_out (no merge with S_{t-1}): the quadrant model's score
    # of a window away from the quadrant, 0 here up to the windows drawn outside R_t that
    # reach into it.
    # (Keep masks: with occlusion the value of such a pixel also depends on |C(λ)|.)
    model, image, _ = _quadrant_case()
    cfg = dataclasses.replace(SMALL, beta=1.0, threshold=0.6, masks="keep")
    _, maps = iassa(jax.random.key(3), model, image, 0, config=cfg, features_fn=features_fn,
                    return_iterations=True)
    maps = np.asarray(maps)
    plan = cfg.schedule()
    for t in (1, 2):
        har = np.asarray(lrpf.highest_activated_region(maps[t - 1], threshold=0.6))
        near = _chebyshev_dilate(har, plan[t][0] - 1)
        assert (~near).sum() > 0
        far = maps[t][~near]
        np.testing.assert_array_equal(far, far[0])
        assert 0.0 <= far[0] < 0.05
        assert np.ptp(maps[t][near]) > 0.1


# ---- analytic region models: f = Σ_j a_j · (visible fraction of box j), white image, black
# baseline, so f(baseline) = 0 and a keep-window centred at c scores Σ_j a_j |win(c) ∩ B_j| / |B_j|.

AHW = (48, 48)
# W 16 -> 14 -> 12 -> 10 -> 8 -> 6, stride 4 (225 lattice windows at t = 0); no attention.
ANALYTIC = IassaConfig(window=16, stride=4, window_step=2, stride_step=0, iterations=5,
                       beta=1.0, feature_names=None, batch_size=64)
BOX = (slice(20, 26), slice(12, 18))  # 6 x 6: smaller than every window but the last
WEAK = (slice(30, 36), slice(32, 38))


def _boxes_scores(regions, strengths, offset, images):
    vis = jnp.einsum("bhw,khw->bk", images.mean(-1), regions) / jnp.sum(regions, axis=(1, 2))[None]
    score = offset + vis @ strengths
    return jnp.stack([score, 1.0 - score], axis=-1)


def _boxes_model(boxes, strengths, offset=0.0):
    regions = np.zeros((len(boxes), *AHW), np.float32)
    for j, box in enumerate(boxes):
        regions[j][box] = 1.0
    model = jax.tree_util.Partial(_boxes_scores, jnp.asarray(regions),
                                  jnp.asarray(strengths, jnp.float32), jnp.float32(offset))
    return model, regions.astype(bool)


def _flat_features(images):
    return {"f": jnp.ones_like(images[:, ::2, ::2, :1])}


def _spread(sal, region, ring_px):
    """Mean of the map over a ring of ``ring_px`` around ``region`` ÷ its mean inside, both
    above the map's minimum (occlusion maps sit on a large offset)."""
    ring = _chebyshev_dilate(region, ring_px) & ~region
    return (sal[ring].mean() - sal.min()) / (sal[region].mean() - sal.min())


def _top_inside(sal, region):
    """Fraction of the ``|region|`` highest pixels of the map that lie in ``region``."""
    top = np.argsort(-sal.ravel(), kind="stable")[: region.sum()]
    return region.ravel()[top].mean()


MASKS = ["keep", "occlude"]


def _analytic_maps(boxes, strengths, key=0, config=ANALYTIC):
    model, regions = _boxes_model(boxes, strengths)
    _, maps = iassa(jax.random.key(key), model, jnp.ones((*AHW, 3)), 0, config=config,
                    features_fn=_flat_features, baseline=0.0, return_iterations=True)
    return np.asarray(maps), regions


@pytest.mark.parametrize("masks", MASKS)
def test_refinement_sharpens_a_box_smaller_than_the_window(masks):
    maps, regions = _analytic_maps([BOX], [1.0], config=dataclasses.replace(ANALYTIC, masks=masks))
    box = regions[0]
    spread = [_spread(m, box, 4) for m in maps]
    assert spread[-1] < 0.75 * spread[0], spread
    assert spread[1] <= spread[0] * 1.02, spread  # the first refinement does not blur it
    assert _top_inside(maps[-1], box) >= _top_inside(maps[0], box)
    assert box.ravel()[np.argmax(maps[-1])]


@pytest.mark.parametrize("masks", MASKS)
def test_refinement_sharpens_two_boxes_of_different_strengths(masks):
    maps, regions = _analytic_maps([BOX, WEAK], [1.0, 0.5],
                                   config=dataclasses.replace(ANALYTIC, masks=masks))
    both = regions[0] | regions[1]
    assert _spread(maps[-1], both, 4) < 0.75 * _spread(maps[0], both, 4)
    assert _top_inside(maps[-1], both) >= _top_inside(maps[0], both)
    for m in (maps[0], maps[-1]):  # the strong box stays above the weak one, the weak above 0
        strong, weak = m[regions[0]].mean() - m.min(), m[regions[1]].mean() - m.min()
        assert strong > 1.5 * weak and weak > 0.2 * strong


def _window_scores(regions, strengths, win, keep=True):
    """``f(c)`` for every centre ``c`` (window ``[c − ⌊W/2⌋, c − ⌊W/2⌋ + W)²``, clipped) shown
    alone (``keep``) or hidden."""
    h, w = AHW
    f = np.zeros(AHW)
    for cy in range(h):
        for cx in range(w):
            y0, x0 = max(cy - win // 2, 0), max(cx - win // 2, 0)
            y1, x1 = min(cy - win // 2 + win, h), min(cx - win // 2 + win, w)
            seen = [r[y0:y1, x0:x1].sum() / r.sum() for r in regions]
            f[cy, cx] = sum(a * (v if keep else 1.0 - v)
                            for a, v in zip(strengths, seen, strict=True))
    return f


def _counts(win):
    """``|C(λ)|``: centres whose window covers λ."""
    count = np.zeros(AHW)
    for cy in range(AHW[0]):
        for cx in range(AHW[1]):
            y0, x0 = max(cy - win // 2, 0), max(cx - win // 2, 0)
            count[y0: cy - win // 2 + win, x0: cx - win // 2 + win] += 1
    return count


def _closed_form(scores, allowed, win):
    """``Σ_{c ∈ C(λ), allowed} f(c) / |C(λ)|``: loops over centres (numpy)."""
    h, w = AHW
    num, count = np.zeros(AHW), np.zeros(AHW)
    for cy in range(h):
        for cx in range(w):
            y0, x0 = max(cy - win // 2, 0), max(cx - win // 2, 0)
            y1, x1 = min(cy - win // 2 + win, h), min(cx - win // 2 + win, w)
            count[y0:y1, x0:x1] += 1
            if allowed[cy, cx]:
                num[y0:y1, x0:x1] += scores[cy, cx]
    return num / count


@pytest.mark.parametrize("masks, offset", [("keep", 0.0), ("keep", 0.2), ("occlude", 0.0)])
def test_refined_estimate_is_unbiased_for_the_uniform_window_design(masks, offset):
    # t = 1: HAR(S_0) is deterministic (the t = 0 lattice). Over 48 keys, the mean of S_1 is
    # f_out + Σ_{c ∈ C(λ) ∩ R} (f(c) − f_out) / |C(λ)|, R the centres whose window touches
    # HAR and f_out the mean score of the others; on HAR it is the full uniform design's
    # E[f | λ visible] (all of C(λ) lies in R). Here the windows outside R see no evidence
    # and all score alike, so it is that everywhere. Occlusion: E[f | λ visible] =
    # (Σ_U f − Σ_{C(λ)} f) / (|U| − |C(λ)|), from the same two estimates.
    strengths = [1.0, 0.5]
    cfg = dataclasses.replace(ANALYTIC, iterations=1, windows_per_iteration=96,
                              outside_windows=16, masks=masks)
    model, regions = _boxes_model([BOX, WEAK], strengths, offset)

    def one(key):
        return iassa(key, model, jnp.ones((*AHW, 3)), 0, config=cfg, features_fn=_flat_features,
                     baseline=0.0, return_iterations=True)[1]

    maps = np.asarray(jax.vmap(one)(jax.random.split(jax.random.key(5), 48)), np.float64)
    s0 = maps[0, 0]
    har = s0 > s0.min() + 0.3 * (s0.max() - s0.min())
    win = cfg.schedule()[1][0]
    allowed = np.zeros(AHW, bool)  # centres whose window shows a HAR pixel
    for cy, cx in zip(*np.nonzero(_chebyshev_dilate(har, win)), strict=True):
        y0, x0 = max(cy - win // 2, 0), max(cx - win // 2, 0)
        allowed[cy, cx] = har[y0: cy - win // 2 + win, x0: cx - win // 2 + win].any()
    assert 0 < allowed.sum() < 0.8 * allowed.size  # sampling is restricted
    scores = offset + _window_scores(regions, strengths, win, keep=masks == "keep")
    f_out = scores[~allowed].mean()
    full = _closed_form(scores, np.ones(AHW, bool), win)
    expected = f_out + _closed_form(scores - f_out, allowed, win)
    np.testing.assert_allclose(expected[har], full[har], rtol=1e-12)
    np.testing.assert_allclose(expected, full, atol=1e-3)  # outside R: f = offset = f_out
    if masks == "occlude":
        counts = _counts(win)
        expected = (scores.sum() - expected * counts) / (scores.size - counts)
    mean = maps[:, 1].mean(axis=0)
    se = maps[:, 1].std(axis=0, ddof=1) / np.sqrt(maps.shape[0])
    # Per pixel within 5 standard errors on HAR; outside it, where a pixel may be covered by a
    # window that sees the evidence in a few keys only (se unreliable per pixel), the sum over
    # the pixels (per key) is within 5 standard errors.
    bad = har & (np.abs(mean - expected) > 5 * se + 1e-6)
    assert not bad.any(), (np.argwhere(bad)[:8], mean[bad][:8], expected[bad][:8], se[bad][:8])
    outside = maps[:, 1][:, ~har].sum(axis=1)
    assert abs(outside.mean() - expected[~har].sum()) <= 5 * outside.std(ddof=1) / np.sqrt(48)
    assert np.abs(mean - expected).mean() <= 1.5 * se.mean()  # |N(0, se)| averages 0.8 se


def test_batch_size_does_not_change_the_map(features_fn):
    model, image, _ = _quadrant_case()
    a = iassa(jax.random.key(1), model, image, 0, config=SMALL, features_fn=features_fn,
              return_iterations=True)[1]
    b = iassa(jax.random.key(1), model, image, 0, config=dataclasses.replace(SMALL, batch_size=7),
              features_fn=features_fn, return_iterations=True)[1]
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_tolerance_freezes_the_map(features_fn):
    model, image, _ = _quadrant_case()
    cfg = dataclasses.replace(SMALL, tol=1e9)  # every change is "small": stop after t = 1
    _, maps = iassa(jax.random.key(1), model, image, 0, config=cfg, features_fn=features_fn,
                    return_iterations=True)
    np.testing.assert_array_equal(np.asarray(maps[2]), np.asarray(maps[1]))
    assert np.abs(np.asarray(maps[1]) - np.asarray(maps[0])).max() > 0


def _grouped_convolutions(fn, *args):
    """Convolutions of ``fn``'s program with ``feature_group_count > 1``: a model whose weights
    ``vmap`` has broadcast to the batch (one grouped convolution per image)."""
    text = str(jax.make_jaxpr(fn)(*args))
    return [int(g) for g in re.findall(r"feature_group_count=(\d+)", text) if int(g) > 1]


@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_vmap_keeps_the_model_weights_unbatched(variant, key, model_fn, features_fn, images):
    cfg = dataclasses.replace(SMALL, variant=variant, tol=1e-3)
    explain = _explain(cfg, features_fn)
    keys = jax.random.split(key, 2)
    batched = jax.vmap(explain, in_axes=(0, None, 0, None))
    assert _grouped_convolutions(batched, keys, model_fn, images[:2], 0) == []


def test_tolerance_skips_the_queries_under_vmap(features_fn):
    model, image, _ = _quadrant_case()
    seen = []

    def counting(images):
        jax.debug.callback(lambda x: seen.append(x.shape[0]), images)
        return model(images)

    cfg = dataclasses.replace(SMALL, tol=1e9)  # both images stop after t = 1
    images = jnp.stack([image, image[::-1]])
    keys = jax.random.split(jax.random.key(1), 2)
    batched = jax.vmap(lambda k, x: iassa(k, counting, x, 0, config=cfg, features_fn=features_fn,
                                          return_iterations=True)[1])(keys, images)
    jax.block_until_ready(batched)
    n0, n1, _ = (n for _, _, n in window_schedule(cfg, HW))
    chunk = cfg.batch_size
    assert sum(seen) == 2 * chunk * (math.ceil(n0 / chunk) + math.ceil(n1 / chunk))
    for i in range(2):
        looped = iassa(keys[i], model, images[i], 0, config=cfg, features_fn=features_fn,
                       return_iterations=True)[1]
        np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(looped), rtol=1e-5,
                                   atol=1e-6)


# --------------------------------------------------------------------------- contracts


def _explain(cfg, features_fn):
    return lambda key, m, x, t: iassa(key, m, x, t, config=cfg, features_fn=features_fn)


def test_contract_shape_determinism_jit(key, model_fn, features_fn, images):
    explain = _explain(SMALL, features_fn)
    sal = explain(key, model_fn, images[0], 1)
    assert sal.shape == HW and sal.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(sal))) and np.ptp(np.asarray(sal)) > 0
    np.testing.assert_array_equal(np.asarray(sal), np.asarray(explain(key, model_fn, images[0], 1)))
    other = np.asarray(explain(jax.random.key(7), model_fn, images[0], 1))
    assert np.abs(other - np.asarray(sal)).max() > 0
    jitted = jax.jit(explain)(key, model_fn, images[0], 1)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(sal), rtol=1e-5, atol=1e-7)


def test_contract_vmap_equals_loop(key, model_fn, features_fn, images):
    explain = _explain(SMALL, features_fn)
    keys = jax.random.split(key, 2)
    targets = jnp.array([0, 2])
    batched = jax.vmap(explain, in_axes=(0, None, 0, 0))(keys, model_fn, images[:2], targets)
    looped = [explain(keys[i], model_fn, images[i], int(targets[i])) for i in range(2)]
    np.testing.assert_allclose(np.asarray(batched), np.stack(looped), rtol=1e-4, atol=1e-6)


def test_contract_no_recompile_with_new_weights_and_key(model_fn, features_fn, images):
    iassa(jax.random.key(3), model_fn, images[0], 1, config=SMALL,
          features_fn=features_fn).block_until_ready()
    new_model, new_features = _tiny_model(5), _features_fn(9)
    new_key = jax.random.key(4)
    with testing.log_compilations() as compiles:
        sal = iassa(new_key, new_model, images[1], 2, config=SMALL,
                    features_fn=new_features).block_until_ready()
    assert compiles == [], f"{len(compiles)} compilation(s) on the second call"
    assert np.all(np.isfinite(np.asarray(sal)))


# --------------------------------------------------------------------------- bad inputs


def test_bad_config_values():
    with pytest.raises(ValueError, match="beta"):
        IassaConfig(beta=1.5)
    with pytest.raises(ValueError, match="beta"):
        IassaConfig(beta=-0.1)
    with pytest.raises(ValueError, match="iterations"):
        IassaConfig(iterations=0)
    with pytest.raises(ValueError, match="iterations"):
        IassaConfig(variant="reference", iterations=40)  # W = int(45 - 40 * 1.5) < 1
    with pytest.raises(ValueError, match="variant"):
        IassaConfig(variant="fast")
    with pytest.raises(ValueError, match="threshold"):
        IassaConfig(threshold=1.0)
    with pytest.raises(ValueError, match="temperature"):
        IassaConfig(temperature=0.0)


def test_bad_call_arguments(key, model_fn, features_fn, images):
    image = images[0]
    with pytest.raises(ValueError, match="window"):
        iassa(key, model_fn, image, 0, config=IassaConfig(feature_names=None),
              features_fn=features_fn)  # 45 px window on a 32 px image
    with pytest.raises(ValueError, match="features_fn"):
        iassa(key, model_fn, image, 0, config=SMALL, features_fn=lambda x: x[:, ::2, ::2])
    big = lambda x: {"up": jnp.repeat(x, 2, axis=1)}  # noqa: E731
    with pytest.raises(ValueError, match="features_fn"):
        iassa(key, model_fn, image, 0, config=SMALL, features_fn=big)
    flat = lambda x: {"a": x[:, ::2, ::2, 0]}  # noqa: E731  rank 3
    with pytest.raises(ValueError, match="features_fn"):
        iassa(key, model_fn, image, 0, config=SMALL, features_fn=flat)
    with pytest.raises(ValueError, match="feature_names"):
        iassa(key, model_fn, image, 0, config=dataclasses.replace(SMALL, feature_names=("layer4",)),
              features_fn=features_fn)
    with pytest.raises(ValueError, match="target"):
        iassa(key, model_fn, image, 3, config=SMALL, features_fn=features_fn)
    with pytest.raises(ValueError, match="image"):
        iassa(key, model_fn, image[None], 0, config=SMALL, features_fn=features_fn)
    with pytest.raises(ValueError, match="features"):
        lrpf.lrpf_attention({"a": jnp.zeros((4, 4, 2))}, out_hw=(4, 4))
    with pytest.raises(ValueError, match="features"):
        lrpf.lrpf_attention([jnp.zeros((1, 4, 4, 2))], out_hw=(4, 4))
    with pytest.raises(ValueError, match="dense_max"):
        lrpf.lrpf_attention([jnp.zeros((4, 4, 2))], out_hw=(4, 4), dense_max=-1)


# --------------------------------------------------------------------------- devices

_DEVICE_SCRIPT = """
import sys, jax, jax.numpy as jnp, numpy as np, dataclasses
jax.config.update("jax_numpy_rank_promotion", "raise")
sys.path.insert(0, sys.argv[2])
import test_iassa as T
assert jax.device_count() == 3
image = jax.random.uniform(jax.random.key(2), (32, 32, 3))
out = {}
for variant in ("paper", "reference"):
    cfg = dataclasses.replace(T.SMALL, variant=variant, batch_size=16)
    out[variant] = np.asarray(T.iassa(jax.random.key(0), T._tiny_model(1), image, 0, config=cfg,
                                      features_fn=T._features_fn(0), return_iterations=True)[1])
np.savez(sys.argv[1], **out)
"""


@pytest.mark.slow
def test_three_devices_give_the_same_maps(tmp_path):
    # The chunks of windows are split over devices (shard_map): same maps as one device.
    out = tmp_path / "maps.npz"
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=3")
    env["PYTHONPATH"] = os.pathsep.join([str(pathlib.Path(__file__).parents[1]),
                                         env.get("PYTHONPATH", "")])
    tests_dir = str(pathlib.Path(__file__).parent)
    subprocess.run([sys.executable, "-c", _DEVICE_SCRIPT, str(out), tests_dir], check=True,
                   env=env)
    sharded = np.load(out)
    image = jax.random.uniform(jax.random.key(2), (32, 32, 3))
    for variant in ("paper", "reference"):
        cfg = dataclasses.replace(SMALL, variant=variant, batch_size=16)
        _, maps = iassa(jax.random.key(0), _tiny_model(1), image, 0, config=cfg,
                        features_fn=_features_fn(0), return_iterations=True)
        np.testing.assert_allclose(sharded[variant], np.asarray(maps), rtol=1e-5, atol=1e-6)
