"""The baseline explainers of RISE Table 1: sliding-window occlusion, Grad-CAM, LIME."""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import lime_numpy
from saliency_jax.models.cam import CamModel

from saliency_jax import testing
from saliency_jax._src.gradcam import GradCamConfig, cam_from_activations, gradcam
from saliency_jax._src.lime import (
    LimeConfig,
    kernel_weights,
    lime,
    lime_fit,
    lime_samples,
    quickshift_segments,
    superpixel_mean_image,
)
from saliency_jax._src.occlusion import OcclusionConfig, occlusion, window_origins

Partial = jax.tree_util.Partial


def _image(seed, hw=(32, 32)):
    return jax.random.uniform(jax.random.key(seed), (*hw, 3), jnp.float32)


def _block_segments(hw, block):
    """Square superpixels: labels ``(y // block) * (w // block) + x // block``."""
    h, w = hw
    return ((np.arange(h)[:, None] // block) * (w // block)
            + np.arange(w)[None, :] // block).astype(np.int32)


def _tiny_apply(variables, images, *, mean_rgb):
    # testing.tiny_cnn's function with the mean broadcast explicitly: testing._tiny_apply's
    # ``images - mean_rgb`` (rank 4 - rank 1) fails under jax_numpy_rank_promotion="raise".
    x = images - mean_rgb[None, None, None, :]
    return jax.nn.softmax(testing.TinyCNN().apply(variables, x), axis=-1)


def _tiny_cnn(seed, hw=(32, 32)):
    """testing.tiny_cnn's 3-class CNN (mean colour 0.5) as a ``ModelFn``, with random weights
    drawn in numpy from the variables' shapes (a Flax init would compile or run op by op)."""
    shapes = jax.eval_shape(testing.TinyCNN().init, jax.random.key(0), jnp.zeros((1, *hw, 3)))
    rng = np.random.default_rng(seed)

    def fill(shape):
        fan_in = int(np.prod(shape.shape[:-1])) if len(shape.shape) > 1 else 10
        return jnp.asarray(rng.normal(0.0, np.sqrt(2.0 / fan_in), shape.shape), jnp.float32)

    variables = jax.tree.map(fill, shapes)
    return Partial(_tiny_apply, variables, mean_rgb=jnp.full((3,), 0.5, jnp.float32))


def _tiny_trunk(variables, images, *, mean_rgb):
    """TinyCNN up to its last conv's ReLU."""
    params = variables["params"]
    x = images - mean_rgb[None, None, None, :]
    for name in ("Conv_0", "Conv_1"):
        x = jax.nn.relu(nn.Conv(8, (3, 3), strides=2).apply({"params": params[name]}, x))
    return x


def _tiny_head(variables, activations):
    """TinyCNN's global average pool and dense layer: the logits."""
    dense = {"params": variables["params"]["Dense_0"]}
    return nn.Dense(3).apply(dense, activations.mean(axis=(1, 2)))


def tiny_cam(model_fn):
    """The :func:`_tiny_cnn` ``model_fn`` split for Grad-CAM, sharing its (traced) leaves."""
    variables, mean_rgb = model_fn.args[0], model_fn.keywords["mean_rgb"]
    return CamModel(Partial(_tiny_trunk, variables, mean_rgb=mean_rgb),
                    Partial(_tiny_head, variables))


# =========================================================================== occlusion


def test_window_origins_placement():
    np.testing.assert_array_equal(window_origins(10, 4, 4), [0, 4, 6])  # last one flush
    np.testing.assert_array_equal(window_origins(7, 2, 3), [0, 3, 5])
    np.testing.assert_array_equal(window_origins(10, 2, 4), [0, 4, 8])  # gaps: stride > window
    np.testing.assert_array_equal(window_origins(8, 8, 3), [0])
    np.testing.assert_array_equal(window_origins(224, 64, 8), np.arange(0, 161, 8))
    np.testing.assert_array_equal(window_origins(112, 32, 4), np.arange(0, 81, 4))


def test_config_scaling_and_window_counts():
    assert OcclusionConfig() == OcclusionConfig(window=64, stride=8)
    assert OcclusionConfig().num_windows((224, 224)) == 21 * 21
    cfg = OcclusionConfig.for_image_size(112)
    assert (cfg.window, cfg.stride) == (32, 4)
    assert cfg.num_windows((112, 112)) == 441
    cfg = OcclusionConfig.for_image_size((112, 224))
    assert (cfg.window, cfg.stride) == ((32, 64), (4, 8))
    assert OcclusionConfig(window=(4, 2), stride=(4, 3)).num_windows((10, 7)) == 3 * 3


def test_occlusion_linear_hand_computed():
    # Contributions c = [[1,2,3],[4,5,6],[7,8,9]] on a white image, zero baseline, 2x2 windows
    # with stride 1: window sums 12, 16, 24, 28; each pixel averages the windows covering it.
    weights = np.zeros((3, 3, 3), np.float32)
    weights[..., 0] = np.arange(1, 10).reshape(3, 3)
    model_fn = testing.linear_model(weights)
    image = jnp.ones((3, 3, 3), jnp.float32)
    sal = occlusion(None, model_fn, image, 0, config=OcclusionConfig(window=2, stride=1),
                    baseline=0.0)
    np.testing.assert_allclose(sal, [[12, 14, 16], [18, 20, 22], [24, 26, 28]], rtol=1e-6)


def _occlusion_numpy(weights, image, baseline, window, stride):
    """Direct loops: per-window drop of the linear score, averaged over covering windows."""
    h, w, _ = image.shape
    full = np.sum(weights * image)
    total, count = np.zeros((h, w)), np.zeros((h, w))
    for oy in window_origins(h, window[0], stride[0]):
        for ox in window_origins(w, window[1], stride[1]):
            occluded = image.copy()
            occluded[oy:oy + window[0], ox:ox + window[1]] = baseline
            total[oy:oy + window[0], ox:ox + window[1]] += full - np.sum(weights * occluded)
            count[oy:oy + window[0], ox:ox + window[1]] += 1
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


@pytest.mark.parametrize("window,stride", [((5, 3), (2, 4)), ((3, 3), (5, 5))])
def test_occlusion_linear_matches_loops(window, stride):
    weights = np.asarray(jax.random.normal(jax.random.key(3), (13, 11, 3)))
    image = np.asarray(_image(4, (13, 11)))
    baseline = np.array([0.2, 0.5, 0.9], np.float32)
    cfg = OcclusionConfig(window=window, stride=stride, batch_size=4)  # does not divide
    sal = occlusion(None, testing.linear_model(weights), image, 0, config=cfg, baseline=baseline)
    expected = _occlusion_numpy(weights, image, baseline, window, stride)
    np.testing.assert_allclose(sal, expected, rtol=1e-4, atol=1e-5)
    if stride[0] > window[0]:
        assert np.all(np.asarray(sal)[3:5] == 0.0)  # rows no window covers


def _region_score(region, images):
    # testing.region_model's score 0 (the mean intensity inside the region), written with an
    # explicit broadcast: testing._region trips jax_numpy_rank_promotion="raise".
    inside = jnp.sum(images.mean(-1) * region[None], axis=(1, 2)) / jnp.sum(region)
    return jnp.stack([inside, 1.0 - inside], axis=-1)


def test_occlusion_region_model_evidence_in_region():
    region = np.zeros((32, 32), bool)
    region[4:12, 20:28] = True
    image = jnp.ones((32, 32, 3), jnp.float32)
    region_model = Partial(_region_score, jnp.asarray(region, jnp.float32))
    sal = np.asarray(occlusion(None, region_model, image, 0,
                               config=OcclusionConfig(window=8, stride=4), baseline=0.0))
    assert region[np.unravel_index(np.argmax(sal), sal.shape)]
    assert np.all(sal >= 0.0)
    assert np.all(sal[region] > 0.0)
    # A pixel at column <= 12 is only covered by windows ending before column 20.
    np.testing.assert_array_equal(sal[:, :13], 0.0)
    np.testing.assert_array_equal(sal[20:], 0.0)


def test_occlusion_default_baseline_is_model_mean():
    model_fn = _tiny_cnn(1, (16, 16))
    image = _image(2, (16, 16))
    cfg = OcclusionConfig(window=4, stride=4)
    np.testing.assert_array_equal(
        occlusion(None, model_fn, image, 1, config=cfg),
        occlusion(None, model_fn, image, 1, config=cfg, baseline=jnp.full((3,), 0.5)),
    )


# =========================================================================== Grad-CAM


class Split(NamedTuple):
    trunk: Partial
    head: Partial


def _mix_trunk(mix, images):
    """``A = x @ mix``: activations at the image resolution, ``c = mix.shape[1]`` channels."""
    return jnp.einsum("bhwi,ic->bhwc", images, mix)


def _gap_linear_head(params, activations):
    kernel, bias = params
    return activations.mean(axis=(1, 2)) @ kernel + bias[None, :]


def _softmax_of(split, images):
    return jax.nn.softmax(split.head(split.trunk(images)), axis=-1)


def _toy_split(seed, channels=4, classes=3):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    mix = jax.random.normal(k1, (3, channels))
    params = (jax.random.normal(k2, (channels, classes)), jax.random.normal(k3, (classes,)))
    split = Split(Partial(_mix_trunk, mix), Partial(_gap_linear_head, params))
    return split, Partial(_softmax_of, split)


def test_gradcam_gap_linear_head_closed_form():
    # head = GAP + linear: dy_t/dA_ijc = W[c, t] / (h w), so α = W[:, t] / (h w) and the map is
    # ReLU(Σ_c W[c, t] A_c) / (h w); A at the image resolution, so no resizing is involved.
    split, model_fn = _toy_split(0)
    image = _image(1, (8, 6))
    acts = np.asarray(image, np.float64) @ np.asarray(split.trunk.args[0], np.float64)
    kernel = np.asarray(split.head.args[0][0], np.float64)
    for target in range(3):
        expected = np.maximum(acts @ kernel[:, target], 0.0) / (8 * 6)
        for upsample in ("linear", "mirror"):
            sal = gradcam(None, model_fn, image, target, cam_model=split,
                          config=GradCamConfig(upsample=upsample))
            np.testing.assert_allclose(sal, expected, rtol=1e-5, atol=1e-7)
    assert np.any(expected == 0.0) and np.any(expected > 0.0)  # the ReLU was exercised


def _stride2_trunk(images):
    return images[:, ::2, ::2, :1]


def _unit_head(activations):
    return activations.mean(axis=(1, 2))  # one class, weight 1: α = 1 / (h' w')


def test_gradcam_upsampling_hand_computed():
    # A = [[0, 0], [1, 1]] -> cam = A / 4 -> 4x4 rows. Linear (clamped edges): sample points
    # u = -0.25, 0.25, 0.75, 1.25 -> [0, 1/16, 3/16, 1/4]; mirror: [1/16, 1/16, 3/16, 3/16].
    split = Split(Partial(_stride2_trunk), Partial(_unit_head))
    model_fn = Partial(lambda x: jax.nn.softmax(_unit_head(_stride2_trunk(x)), axis=-1))
    image = np.zeros((4, 4, 3), np.float32)
    image[2:, :, 0] = 1.0
    rows = {"linear": [0, 1 / 16, 3 / 16, 1 / 4], "mirror": [1 / 16, 1 / 16, 3 / 16, 3 / 16]}
    for upsample, expected in rows.items():
        sal = gradcam(None, model_fn, image, 0, cam_model=split,
                      config=GradCamConfig(upsample=upsample))
        np.testing.assert_allclose(sal, np.repeat(np.array(expected)[:, None], 4, 1),
                                   rtol=1e-6, atol=1e-7)


def test_cam_from_activations():
    acts = np.array([[[1.0, 2.0], [3.0, -1.0]]])  # [1, 2, 2]
    grads = np.array([[[2.0, -1.0], [0.0, 1.0]]])  # α = (1, 0)
    np.testing.assert_allclose(cam_from_activations(acts, grads), [[1.0, 3.0]])


def _random_variables(name, num_classes, seed):
    """Random variables of ``name`` from their shapes (no Flax init compile)."""
    from saliency_jax.models import registry

    rng = np.random.default_rng(seed)

    def fill(path, shape):
        leaf = str(getattr(path[-1], "key", path[-1]))
        if leaf in ("var", "scale"):
            return jnp.asarray(rng.uniform(0.5, 1.5, shape.shape), jnp.float32)
        if leaf == "kernel":
            fan_in = int(np.prod(shape.shape[:-1]))
            return jnp.asarray(rng.normal(0, np.sqrt(2.0 / fan_in), shape.shape), jnp.float32)
        return jnp.asarray(rng.normal(0, 0.1, shape.shape), jnp.float32)

    return jax.tree_util.tree_map_with_path(fill, registry.variable_shapes(name, num_classes))


@jax.jit
def _split_and_full(cam, logits_fn, features_fn, images):
    acts = cam.trunk(images)
    return cam.head(acts), logits_fn(images), acts, features_fn(images)


@pytest.mark.parametrize("name", ["resnet_small", "vgg_small",
                                  pytest.param("resnet18", marks=pytest.mark.slow)])
def test_cam_model_recomposes_logits(name):
    from saliency_jax.models.cam import cam_model

    from saliency_jax import models

    variables = _random_variables(name, 5, 0)
    cam = cam_model(name, variables)
    images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
    stage = "layer4" if name.startswith("resnet") else "block5"
    split, full, acts, feats = _split_and_full(
        cam, models.logits_fn(name, variables), models.features_fn(name, variables, names=(stage,)),
        images)
    scale = float(np.max(np.abs(full)))
    np.testing.assert_allclose(split, full, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_array_equal(acts, feats[stage])
    if name == "resnet_small":
        # GAP + fc head: the map is ReLU(Σ_c fc[c, t] A_c) / (h' w'); here h' = w' = 1.
        image = images[0]
        fc = np.asarray(variables["params"]["fc"]["kernel"], np.float64)
        a = np.asarray(acts[0], np.float64)
        for target in range(5):
            expected = np.maximum(a @ fc[:, target], 0.0) / a[..., 0].size
            sal = gradcam(None, models.classifier(name, variables), image, target, cam_model=cam)
            np.testing.assert_allclose(sal, np.broadcast_to(expected, (32, 32)), rtol=1e-4,
                                       atol=1e-6)


# =========================================================================== LIME


def test_lime_kernel_matches_sklearn_cosine_formula():
    n = 7
    z = np.zeros((n + 1, 9), bool)
    for k in range(n + 1):
        z[k, :k] = True  # k of n on; the last two features are padding (off)
    z = z[::-1]  # row 0 all on, as LIME's first sample
    d = lime_numpy.cosine_distance_to_first(z[:, :n])
    np.testing.assert_allclose(kernel_weights(z, n, 0.25), lime_numpy.kernel(d, 0.25),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(kernel_weights(z, n, 0.25))[[0, -1]],
                               [1.0, np.exp(-0.5 / 0.25**2)], rtol=1e-6)


def test_lime_samples():
    key = jax.random.key(5)
    z = np.asarray(lime_samples(key, 400, num_segments=12, max_segments=16))
    assert z.shape == (400, 16) and z.dtype == bool
    assert z[0].sum() == 12 and not z[:, 12:].any()
    assert abs(z[1:, :12].mean() - 0.5) < 0.03  # 4800 fair coins: sd 0.007
    np.testing.assert_array_equal(lime_samples(key, 50, num_segments=12, max_segments=16), z[:50])


_apply = jax.jit(lambda model_fn, images: model_fn(images))


def _lime_case(model_fn, image, segments, config, key, target, baseline):
    """Our fit and the numpy LIME on the same samples."""
    n = int(segments.max()) + 1
    data = np.asarray(lime_samples(key, config.num_samples, num_segments=n)).astype(np.int64)
    fudged = np.broadcast_to(np.asarray(baseline, np.float32), image.shape)
    ref = lime_numpy.explain(np.asarray(image), fudged, segments,
                             lambda x: np.asarray(_apply(model_fn, x)), data, target,
                             kernel_width=config.kernel_width, alpha=config.alpha)
    fit = lime_fit(key, model_fn, image, target, config=config, segments=segments,
                   baseline=baseline)
    return fit, ref, n


def test_lime_ridge_matches_numpy_reference():
    model_fn = _tiny_cnn(1)
    image = _image(2)
    segments = _block_segments((32, 32), 8)  # 16 superpixels
    config = LimeConfig(num_samples=150, max_segments=20, batch_size=40)
    key = jax.random.key(7)
    fit, (coef, intercept), n = _lime_case(model_fn, image, segments, config, key, 2,
                                           jnp.full((3,), 0.5))
    scale = np.max(np.abs(coef))
    np.testing.assert_allclose(fit.coef[:n], coef, rtol=1e-3, atol=1e-3 * scale)
    np.testing.assert_array_equal(fit.coef[n:], 0.0)
    np.testing.assert_allclose(fit.intercept, intercept, rtol=1e-4)
    assert int(fit.num_segments) == n
    sal = lime(key, model_fn, image, 2, config=config, segments=segments)  # default baseline
    np.testing.assert_array_equal(sal, np.asarray(fit.coef)[segments])


def test_lime_linear_model_recovers_region_contributions():
    # y = Σ_s z_s c_s + const exactly, with c_s = <w, I − b> over superpixel s: a nearly
    # unpenalised ridge recovers c; LIME's alpha = 1 shrinks it as the numpy reference does.
    segments = _block_segments((16, 16), 8)  # 4 quadrants
    weights = np.zeros((16, 16, 3), np.float32)
    for s, value in enumerate([2.0, -1.0, 0.5, 0.0]):
        weights[segments == s] = value / 64.0
    image = jnp.full((16, 16, 3), 0.75, jnp.float32)
    model_fn = testing.linear_model(weights)
    contributions = np.array([2.0, -1.0, 0.5, 0.0]) * 0.75 * 3
    key = jax.random.key(3)
    fit = lime_fit(key, model_fn, image, 0, segments=segments, baseline=0.0,
                   config=LimeConfig(num_samples=64, max_segments=4, alpha=1e-5))
    np.testing.assert_allclose(fit.coef, contributions, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(fit.intercept, 0.0, atol=1e-3)
    config = LimeConfig(num_samples=64, max_segments=4)
    fit, (coef, _), _ = _lime_case(model_fn, image, segments, config, key, 0, 0.0)
    np.testing.assert_allclose(fit.coef, coef, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(np.argsort(fit.coef), np.argsort(contributions))


def test_quickshift_segments_and_default_segmentation():
    from skimage import data, transform

    image = transform.resize(data.astronaut(), (32, 32)).astype(np.float32)
    segments = quickshift_segments(image)
    assert segments.shape == (32, 32) and segments.dtype == np.int32
    labels = np.unique(segments)
    np.testing.assert_array_equal(labels, np.arange(len(labels)))
    assert 4 <= len(labels) <= 64
    model_fn = _tiny_cnn(1)
    config = LimeConfig(num_samples=32, max_segments=64)
    np.testing.assert_array_equal(
        lime(jax.random.key(0), model_fn, image, 0, config=config),
        lime(jax.random.key(0), model_fn, image, 0, config=config, segments=segments),
    )


def test_superpixel_mean_image():
    image = np.zeros((2, 2, 3), np.float32)
    image[0, 0] = 1.0
    image[1, 1] = 0.5
    segments = np.array([[0, 0], [1, 0]])
    expected = np.array([[[0.5] * 3, [0.5] * 3], [[0.0] * 3, [0.5] * 3]])
    np.testing.assert_allclose(superpixel_mean_image(image, segments), expected)


# =========================================================================== contracts

_OCC = OcclusionConfig(window=8, stride=4, batch_size=16)
_LIME = LimeConfig(num_samples=48, max_segments=20, batch_size=16)
_SEGMENTS = _block_segments((32, 32), 8)

# The entries for tests/test_explainer_contract.py: (key, model_fn, image, target) -> f32[h, w].
EXPLAIN = {
    "occlusion": lambda k, m, x, t: occlusion(k, m, x, t, config=_OCC),
    "gradcam": lambda k, m, x, t: gradcam(k, m, x, t, cam_model=tiny_cam(m)),
    "lime": lambda k, m, x, t: lime(k, m, x, t, config=_LIME, segments=_SEGMENTS),
}


@pytest.fixture(scope="module")
def tiny():
    return _tiny_cnn(1)


def test_tiny_cam_recomposes_tiny_cnn(tiny):
    images = jax.random.uniform(jax.random.key(3), (2, 32, 32, 3))
    cam = tiny_cam(tiny)
    np.testing.assert_allclose(jax.nn.softmax(cam.head(cam.trunk(images)), axis=-1),
                               tiny(images), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", list(EXPLAIN))
def test_contract_shape_determinism_jit(name, tiny):
    explain, image = EXPLAIN[name], _image(2)
    sal = explain(jax.random.key(0), tiny, image, 1)
    assert sal.shape == (32, 32) and sal.dtype == jnp.float32
    assert np.all(np.isfinite(sal)) and np.ptp(np.asarray(sal)) > 0
    np.testing.assert_array_equal(sal, explain(jax.random.key(0), tiny, image, 1))
    other = np.asarray(explain(jax.random.key(9), tiny, image, 1))
    if name == "lime":
        assert np.abs(other - np.asarray(sal)).max() > 1e-6
    else:  # deterministic methods: the key is ignored
        np.testing.assert_array_equal(other, sal)
    jitted = jax.jit(explain)(jax.random.key(0), tiny, image, 1)
    np.testing.assert_allclose(jitted, sal, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", list(EXPLAIN))
def test_contract_vmap_equals_loop(name, tiny):
    explain = EXPLAIN[name]
    images = jnp.stack([_image(s) for s in (2, 3, 4)])
    targets = jnp.array([0, 2, 1])
    keys = jax.random.split(jax.random.key(0), 3)
    batched = jax.vmap(explain, in_axes=(0, None, 0, 0))(keys, tiny, images, targets)
    loop = [explain(keys[i], tiny, images[i], int(targets[i])) for i in range(3)]
    np.testing.assert_allclose(batched, np.stack(loop), rtol=1e-5, atol=1e-7)


def test_lime_vmap_over_segments_equals_loop(tiny):
    images = jnp.stack([_image(s) for s in (2, 3, 4)])
    segments = np.stack([_SEGMENTS, _SEGMENTS.T, _block_segments((32, 32), 16)])
    keys = jax.random.split(jax.random.key(0), 3)
    batched = jax.vmap(lambda k, x, s: lime(k, tiny, x, 1, config=_LIME, segments=s))(
        keys, images, segments)
    loop = [lime(keys[i], tiny, images[i], 1, config=_LIME, segments=segments[i])
            for i in range(3)]
    np.testing.assert_allclose(batched, np.stack(loop), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", list(EXPLAIN))
def test_contract_no_recompile_with_new_weights_or_key(name, tiny):
    explain = EXPLAIN[name]
    explain(jax.random.key(0), tiny, _image(2), 1).block_until_ready()
    new_fn, new_key, new_image = _tiny_cnn(5), jax.random.key(1), _image(3)
    with testing.log_compilations() as log:
        explain(new_key, new_fn, new_image, 2).block_until_ready()
    assert log == []
    if name == "lime":  # new segments are traced too
        new_segments = jnp.asarray(_SEGMENTS.T.copy())
        with testing.log_compilations() as log:
            lime(new_key, new_fn, new_image, 2, config=_LIME,
                 segments=new_segments).block_until_ready()
        assert log == []


def test_contract_batch_size_independence(tiny):
    image = _image(2)
    a = occlusion(None, tiny, image, 0, config=_OCC)
    b = occlusion(None, tiny, image, 0, config=OcclusionConfig(window=8, stride=4, batch_size=7))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    key = jax.random.key(4)
    a = lime(key, tiny, image, 0, config=_LIME, segments=_SEGMENTS)
    b = lime(key, tiny, image, 0, segments=_SEGMENTS,
             config=LimeConfig(num_samples=48, max_segments=20, batch_size=48))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


# =========================================================================== bad input


@pytest.mark.parametrize("kwargs,match", [
    (dict(window=0), "window"),
    (dict(window=(4, 4, 4)), "window"),
    (dict(stride=0), "stride"),
    (dict(stride=1.5), "stride"),
    (dict(batch_size=0), "batch_size"),
])
def test_occlusion_config_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OcclusionConfig(**kwargs)


def test_occlusion_rejects_bad_input(tiny):
    image = _image(2)
    with pytest.raises(ValueError, match="window"):
        occlusion(None, tiny, image, 0, config=OcclusionConfig(window=(8, 33)))
    with pytest.raises(ValueError, match="target"):
        occlusion(None, tiny, image, 3, config=_OCC)
    with pytest.raises(ValueError, match="image"):
        occlusion(None, tiny, image[None], 0, config=_OCC)
    with pytest.raises(ValueError, match="baseline"):
        occlusion(None, tiny, image, 0, config=_OCC, baseline=jnp.zeros((2,)))
    with pytest.raises(ValueError, match="config"):
        occlusion(None, tiny, image, 0, config=_LIME)


def test_gradcam_rejects_bad_input():
    split, model_fn = _toy_split(0)
    image = _image(2)
    with pytest.raises(ValueError, match="upsample"):
        GradCamConfig(upsample="cubic")
    with pytest.raises(ValueError, match="cam_model"):
        gradcam(None, model_fn, image, 0, cam_model=(split.trunk, split.head))
    with pytest.raises(ValueError, match="cam_model.head"):
        gradcam(None, model_fn, image, 0, cam_model=_toy_split(0, classes=4)[0])
    with pytest.raises(ValueError, match="cam_model.trunk"):
        gradcam(None, model_fn, image, 0,
                cam_model=Split(Partial(lambda x: x.mean(-1)), split.head))
    with pytest.raises(ValueError, match="target"):
        gradcam(None, model_fn, image, 3, cam_model=split)


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_samples=0), "num_samples"),
    (dict(max_segments=0), "max_segments"),
    (dict(kernel_width=0.0), "kernel_width"),
    (dict(alpha=-1.0), "alpha"),
    (dict(alpha=float("nan")), "alpha"),
    (dict(batch_size=0), "batch_size"),
])
def test_lime_config_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LimeConfig(**kwargs)


def test_lime_rejects_bad_segments(tiny):
    image = _image(2)
    key = jax.random.key(0)
    bad = {
        "shape": _SEGMENTS[:16],
        "integer": _SEGMENTS.astype(np.float32),
        "every label": np.where(_SEGMENTS == 3, 17, _SEGMENTS),
        ">= 0": _SEGMENTS - 1,
        "max_segments": _block_segments((32, 32), 4),  # 64 > 20
    }
    for match, segments in bad.items():
        with pytest.raises(ValueError, match=match):
            lime(key, tiny, image, 0, config=_LIME, segments=segments)
    with pytest.raises(ValueError, match="segments must be given"):
        jax.jit(lambda x: lime(key, tiny, x, 0, config=_LIME))(image)
