"""RISE: analytic cases, parity with the reference forward, chunking, devices, bad inputs."""

import dataclasses
import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import rise_numpy

from saliency_jax import masks, testing
from saliency_jax._src.rise import RiseConfig, rise, rise_all_classes, rise_from_masks

REPO = Path(__file__).resolve().parents[1]
CFG = RiseConfig(num_masks=48, grid=4, p_keep=0.5, batch_size=16)


def _softmax_linear(weights):
    """A softmax-of-linear model: nonlinear, and written the same in numpy and in JAX."""

    def apply(w, images):
        return jax.nn.softmax(jnp.einsum("khwc,bhwc->bk", w, images), axis=-1)

    return jax.tree_util.Partial(apply, jnp.asarray(weights, jnp.float32))


def _softmax_linear_numpy(weights):
    def model(images):
        logits = np.einsum("khwc,bhwc->bk", weights.astype(np.float64), images)
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    return model


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    image = rng.random((16, 16, 3)).astype(np.float32)
    weights = rng.normal(size=(4, 16, 16, 3)).astype(np.float32) * 0.3
    return image, weights


# ------------------------------------------------------------------------- analytic


def _all_binary_masks_2x2():
    return np.array(list(itertools.product([0.0, 1.0], repeat=4)), np.float32).reshape(16, 2, 2)


def test_all_16_masks_of_a_2x2_linear_model_give_the_closed_form():
    # f_c(I ⊙ M) = Σ_μ M_μ w_cμ·I_μ; with all masks equally likely (p = 1/2),
    # S_c(λ) = E[f_c | M_λ = 1] = p Σ_μ w_cμ·I_μ + (1 - p) w_cλ·I_λ   (zero baseline).
    rng = np.random.default_rng(3)
    image = rng.random((2, 2, 3)).astype(np.float32)
    weights = rng.normal(size=(3, 2, 2, 3)).astype(np.float32)
    contrib = np.einsum("khwc,hwc->khw", weights.astype(np.float64), image)  # w_cλ·I_λ
    p = 0.5
    expected = p * contrib.sum((1, 2), keepdims=True) + (1 - p) * contrib
    got = rise_from_masks(testing.linear_model(weights), image, _all_binary_masks_2x2(),
                          p_keep=p, baseline=0.0)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6, atol=1e-7)


def test_all_16_masks_with_a_baseline_give_the_closed_form():
    # Masked pixels take the baseline b:
    # E[f_c | M_λ = 1] = w_cλ·I_λ + Σ_{μ≠λ} (p w_cμ·I_μ + (1 - p) w_cμ·b).
    rng = np.random.default_rng(4)
    image = rng.random((2, 2, 3)).astype(np.float32)
    colour = np.array([0.485, 0.456, 0.406], np.float32)
    weights = rng.normal(size=(2, 2, 2, 3)).astype(np.float32)
    w64 = weights.astype(np.float64)
    kept = np.einsum("khwc,hwc->khw", w64, image)
    dropped = np.einsum("khwc,c->khw", w64, colour)
    p = 0.5
    mixed = p * kept + (1 - p) * dropped
    expected = kept + mixed.sum((1, 2), keepdims=True) - mixed
    got = rise_from_masks(testing.linear_model(weights), image, _all_binary_masks_2x2(),
                          p_keep=p, baseline=colour, batch_size=5)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6, atol=1e-7)


def test_a_model_that_looks_at_one_region_is_explained_inside_it(key):
    # Linear model with positive weight on the top-left quadrant only:
    # S(λ) = const + (1 - p) w_λ·I_λ for binary masks; smooth masks keep the region on top.
    region = np.zeros((16, 16), bool)
    region[:8, :8] = True
    weights = np.repeat(region[..., None], 3, -1).astype(np.float32) / region.sum()
    image = np.full((16, 16, 3), 0.8, np.float32)
    cfg = RiseConfig(num_masks=500, grid=4, p_keep=0.5, batch_size=100)
    sal = np.asarray(rise(key, testing.linear_model(weights), image, 0, config=cfg, baseline=0.0))
    inside, outside = sal[region], sal[~region]
    assert inside.mean() > outside.mean() + 0.05
    assert region[np.unravel_index(sal.argmax(), sal.shape)]


# ------------------------------------------------------------------------- reference parity


def test_rise_from_masks_equals_reference_forward(key, problem):
    image, weights = problem
    colour = np.array([0.485, 0.456, 0.406], np.float32)
    mask_set = np.asarray(masks.generate_rise_masks(key, 60, grid=4, p_keep=0.3, image_hw=(16, 16)))
    expected = rise_numpy.forward(_softmax_linear_numpy(weights), image, mask_set, 0.3,
                                  baseline=colour, gpu_batch=25)
    got = rise_from_masks(_softmax_linear(weights), image, mask_set, p_keep=0.3, baseline=colour,
                          batch_size=16)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-6)


def test_rise_from_masks_on_reference_masks(problem):
    # Masks made by the numpy port (skimage resize, float64) through both estimators.
    image, weights = problem
    ref_masks, _, _ = rise_numpy.generate_masks(40, 5, 0.5, (16, 16), np.random.default_rng(1))
    expected = rise_numpy.forward(_softmax_linear_numpy(weights), image, ref_masks, 0.5)
    got = rise_from_masks(_softmax_linear(weights), image, ref_masks, p_keep=0.5, baseline=0.0)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-6)


def test_rise_is_the_estimator_on_its_own_masks(key, problem):
    image, weights = problem
    model_fn = _softmax_linear(weights)
    mask_set = masks.generate_rise_masks(key, CFG.num_masks, grid=CFG.grid, p_keep=CFG.p_keep,
                                         image_hw=(16, 16))
    expected = np.asarray(rise_from_masks(model_fn, image, mask_set, p_keep=CFG.p_keep))
    all_classes = np.asarray(rise_all_classes(key, model_fn, image, config=CFG))
    np.testing.assert_allclose(all_classes, expected, rtol=1e-5, atol=1e-7)
    for target in (0, 3):
        single = np.asarray(rise(key, model_fn, image, target, config=CFG))
        np.testing.assert_allclose(single, expected[target], rtol=1e-5, atol=1e-7)


def _control_variate_numpy(model_fn, image, mask_set, p_keep):
    """``f̄ + Σ_i (f_i - f̄) M_i / ((N - 1) p)`` in float64, all classes: ``[k, h, w]``."""
    masked = mask_set[:, :, :, None] * image[None]  # baseline 0
    f = np.asarray(model_fn(jnp.asarray(masked, jnp.float32)), np.float64)  # [N, k]
    centred = f - f.mean(0)
    return (f.mean(0)[:, None, None]
            + np.einsum("nk,nhw->khw", centred, mask_set) / ((len(f) - 1) * p_keep))


def test_control_variate_is_the_covariance_estimator_on_the_same_masks(key, problem):
    image, weights = problem
    model_fn = _softmax_linear(weights)
    cfg = dataclasses.replace(CFG, num_masks=50, control_variate=True)
    mask_set = np.asarray(masks.generate_rise_masks(key, 50, grid=cfg.grid, p_keep=cfg.p_keep,
                                                    image_hw=(16, 16)), np.float64)
    expected = _control_variate_numpy(model_fn, image, mask_set, cfg.p_keep)
    for batch_size in (7, 16, 64):
        c = dataclasses.replace(cfg, batch_size=batch_size)
        np.testing.assert_allclose(np.asarray(rise(key, model_fn, image, 2, config=c,
                                                   baseline=0.0)), expected[2],
                                   rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(rise_all_classes(key, model_fn, image, config=cfg,
                                                           baseline=0.0)), expected,
                               rtol=1e-5, atol=1e-6)
    # The same masks: plain RISE differs from it by f̄ (Σ M / (N p) - 1) + O(1/N), not by a scale.
    plain = np.asarray(rise(key, model_fn, image, 2, config=dataclasses.replace(
        cfg, control_variate=False), baseline=0.0))
    assert np.abs(plain - expected[2]).max() > 1e-3


def test_control_variate_map_of_a_constant_score_is_exactly_that_score(key, problem):
    image, _ = problem
    flat = jax.tree_util.Partial(lambda w, x: jnp.ones((x.shape[0], 3)) * w[None],
                                 jnp.array([0.2, 0.3, 0.5]))
    cfg = dataclasses.replace(CFG, control_variate=True)
    np.testing.assert_allclose(np.asarray(rise(key, flat, image, 1, config=cfg)), 0.3, rtol=1e-5)
    plain = np.asarray(rise(key, flat, image, 1, config=CFG))  # 0.3 Σ M / (N p): noise
    assert plain.std() > 0.01


def test_default_baseline_is_the_model_mean_colour(key, problem):
    image, weights = problem
    colour = jnp.array([0.2, 0.5, 0.7], jnp.float32)

    def apply(w, images, *, mean_rgb):
        return _softmax_linear(w)(images - mean_rgb[None, None, None, :])

    model_fn = jax.tree_util.Partial(apply, jnp.asarray(weights), mean_rgb=colour)
    default = rise(key, model_fn, image, 1, config=CFG)
    np.testing.assert_array_equal(default, rise(key, model_fn, image, 1, config=CFG,
                                                baseline=colour))
    assert np.abs(np.asarray(default - rise(key, model_fn, image, 1, config=CFG,
                                            baseline=0.0))).max() > 1e-4


# ------------------------------------------------------------------------- chunking


def test_map_does_not_depend_on_batch_size_even_when_it_does_not_divide_n(key, problem):
    image, weights = problem
    model_fn = _softmax_linear(weights)
    cfg = dataclasses.replace(CFG, num_masks=50)
    mask_set = masks.generate_rise_masks(key, 50, grid=cfg.grid, p_keep=cfg.p_keep,
                                         image_hw=(16, 16))
    expected = np.asarray(rise_from_masks(model_fn, image, mask_set, p_keep=cfg.p_keep))[2]
    for batch_size in (7, 16, 50, 64):
        got = rise(key, model_fn, image, 2, config=dataclasses.replace(cfg, batch_size=batch_size))
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-7)


def test_default_batch_size_is_backend_aware_and_the_map_is_the_same(key, problem):
    from saliency_jax._src import rise as rise_module

    assert RiseConfig().batch_size is None
    assert RiseConfig().resolved_batch_size("cpu") == rise_module.CPU_BATCH_SIZE
    assert RiseConfig().resolved_batch_size("gpu") == rise_module.ACCELERATOR_BATCH_SIZE == 100
    assert RiseConfig().resolved_batch_size("tpu") == 100
    assert RiseConfig(batch_size=7).resolved_batch_size("gpu") == 7  # explicit wins
    assert RiseConfig().resolved_batch_size() == (
        rise_module.CPU_BATCH_SIZE if jax.devices()[0].platform == "cpu" else 100)
    image, weights = problem
    model_fn = _softmax_linear(weights)
    cfg = dataclasses.replace(CFG, num_masks=50, batch_size=None)
    mask_set = masks.generate_rise_masks(key, 50, grid=cfg.grid, p_keep=cfg.p_keep,
                                         image_hw=(16, 16))
    expected = np.asarray(rise_from_masks(model_fn, image, mask_set, p_keep=cfg.p_keep))[2]
    got = rise(key, model_fn, image, 2, config=cfg)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-7)


_MULTI_DEVICE_SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax, jax.numpy as jnp, numpy as np
    sys.path.insert(0, sys.argv[1])
    from test_rise import MULTI_DEVICE_CFG, multi_device_maps
    assert jax.device_count() == 4, jax.devices()
    data = np.load(sys.argv[2])
    out = multi_device_maps(data["weights"], data["images"])
    np.savez(sys.argv[3], **out)
    """
)
MULTI_DEVICE_CFG = RiseConfig(num_masks=70, grid=4, p_keep=0.5, batch_size=8)  # 9 chunks


def multi_device_maps(weights, images):
    """Maps of one image and of a vmapped pair, and whether the compiled call has an all-reduce."""
    model_fn, key = _softmax_linear(weights), jax.random.key(0)
    single = jax.jit(lambda x: rise(key, model_fn, x, 1, config=MULTI_DEVICE_CFG))
    compiled = single.lower(images[0]).compile()
    vmapped = jax.jit(jax.vmap(lambda k, x: rise(k, model_fn, x, 2, config=MULTI_DEVICE_CFG)))
    committed = jax.device_put(images[1], jax.devices()[-1])  # on one device only
    return dict(single=np.asarray(compiled(images[0])),
                vmapped=np.asarray(vmapped(jax.random.split(key, 2), images)),
                committed=np.asarray(rise(jax.random.split(key, 2)[1], model_fn, committed, 2,
                                          config=MULTI_DEVICE_CFG)),
                all_reduce=np.array("all-reduce" in compiled.as_text()))


def test_one_and_four_devices_give_the_same_maps(tmp_path, problem):
    image, weights = problem
    images = np.stack([image, image[::-1]])
    np.savez(tmp_path / "inputs.npz", weights=weights, images=images)
    script = tmp_path / "run.py"
    script.write_text(_MULTI_DEVICE_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("XLA_FLAGS", None)
    subprocess.run([sys.executable, str(script), str(Path(__file__).parent),
                    str(tmp_path / "inputs.npz"), str(tmp_path / "out.npz")],
                   cwd=REPO, env=env, check=True, timeout=300)
    four = np.load(tmp_path / "out.npz")
    one = multi_device_maps(weights, images)
    assert four["all_reduce"]  # really split over the 4 devices
    if jax.device_count() == 1:
        assert not one["all_reduce"]
    for name in ("single", "vmapped", "committed"):
        np.testing.assert_allclose(four[name], one[name], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(one["committed"], one["vmapped"][1], rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_masks=0), "num_masks"),
        (dict(num_masks=2.5), "num_masks"),
        (dict(p_keep=0.0), "p_keep"),
        (dict(p_keep=1.2), "p_keep"),
        (dict(grid=0), "grid"),
        (dict(grid=(2, 3, 4)), "grid"),
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=2.5), "batch_size"),
        (dict(control_variate="yes"), "control_variate"),
    ],
)
def test_config_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RiseConfig(**kwargs)


@pytest.mark.parametrize("explainer", ["rise", "rise_all_classes"])
@pytest.mark.parametrize(
    "change,match",
    [
        (dict(image=np.zeros((16, 16), np.float32)), "image"),
        (dict(image=np.zeros((16, 16, 4), np.float32)), "image"),
        (dict(image=np.full((16, 16, 3), np.nan, np.float32)), "image"),
        (dict(image=np.full((16, 16, 3), 2.0, np.float32)), "image"),
        (dict(config=RiseConfig(num_masks=8, grid=17)), "grid"),
        (dict(config=RiseConfig(num_masks=8, grid=(4, 20))), "grid"),
        (dict(baseline=np.zeros((16, 3), np.float32)), "baseline"),
        (dict(baseline=np.full((3,), np.inf, np.float32)), "baseline"),
    ],
)
def test_explainers_reject_bad_inputs(key, problem, explainer, change, match):
    image, weights = problem
    args = dict(image=image, config=CFG, baseline=None) | change
    with pytest.raises(ValueError, match=match):
        if explainer == "rise":
            rise(key, _softmax_linear(weights), args["image"], 0, config=args["config"],
                 baseline=args["baseline"])
        else:
            rise_all_classes(key, _softmax_linear(weights), args["image"], config=args["config"],
                             baseline=args["baseline"])


@pytest.mark.parametrize("target", [4, -1, 1.0, np.array([0, 1])])
def test_rise_rejects_bad_targets(key, problem, target):
    image, weights = problem
    with pytest.raises(ValueError, match="target"):
        rise(key, _softmax_linear(weights), image, target, config=CFG)


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(mask_set=np.ones((4, 16, 15), np.float32)), "mask_set"),
        (dict(mask_set=np.ones((16, 16), np.float32)), "mask_set"),
        (dict(mask_set=np.full((4, 16, 16), np.nan, np.float32)), "mask_set"),
        (dict(p_keep=0.0), "p_keep"),
        (dict(batch_size=0), "batch_size"),
        (dict(baseline=np.zeros((2,), np.float32)), "baseline"),
    ],
)
def test_rise_from_masks_rejects_bad_inputs(problem, change, match):
    image, weights = problem
    args = dict(mask_set=np.ones((4, 16, 16), np.float32), p_keep=0.5, batch_size=2,
                baseline=None) | change
    with pytest.raises(ValueError, match=match):
        rise_from_masks(_softmax_linear(weights), image, args.pop("mask_set"), **args)


def test_config_rejects_non_config(key, problem):
    image, weights = problem
    with pytest.raises(ValueError, match="config"):
        rise(key, _softmax_linear(weights), image, 0, config={"num_masks": 8})


def test_plain_callable_model_is_accepted_and_non_callable_rejected(key, problem):
    image, weights = problem
    model_fn = _softmax_linear(weights)
    expected = rise(key, model_fn, image, 1, config=CFG)
    plain = lambda x: model_fn(x)  # noqa: E731  (weights captured: works, but compiles per object)
    np.testing.assert_allclose(rise(key, plain, image, 1, config=CFG), expected, rtol=1e-5,
                               atol=1e-7)
    with pytest.raises(ValueError, match="model_fn"):
        rise(key, "resnet50", image, 1, config=CFG)
