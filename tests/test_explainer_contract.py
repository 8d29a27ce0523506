"""The contract every explainer keeps (DESIGN §3, STYLE §8 lesson 12).

``explain(key, model_fn, image, target) -> f32[h, w]``: shape, dtype, finite; the same key gives
a bit-identical map and another key another map; ``jit`` equals eager; ``vmap`` over images
equals a loop; a second call with new weights and a new key compiles nothing; the map does not
depend on the chunk (batch) size.

To add an explainer, append one ``Explainer(...)`` line to ``EXPLAINERS``.
"""

import dataclasses
import functools
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saliency_jax import testing
from saliency_jax._src.gradcam import GradCamConfig, gradcam
from saliency_jax._src.iassa import IassaConfig, iassa
from saliency_jax._src.lime import LimeConfig, lime
from saliency_jax._src.occlusion import OcclusionConfig, occlusion
from saliency_jax._src.rexl import RexlConfig, patch_features, rexl
from saliency_jax._src.rexl import init_agent as rexl_init_agent
from saliency_jax._src.rise import RiseConfig, rise
from saliency_jax._src.rlcam import RlcamConfig, rlcam, rlcam_greedy
from saliency_jax._src.rlcam import init_agent as rlcam_init_agent

HW = (32, 32)


@dataclasses.dataclass(frozen=True)
class Explainer:
    name: str
    explain: Callable
    """``(key, model_fn, image, target) -> f32[h, w]``, with small settings."""
    rechunked: tuple[Callable, ...] = ()
    """The same explainer with other chunk/batch sizes: must give the same map."""
    deterministic: bool = False
    """The method ignores ``key`` (occlusion, Grad-CAM): another key gives the same map."""
    black_box: bool = True
    """The map comes from ``model_fn``'s scores (Grad-CAM's comes from its gradients)."""
    rtol: float = 1e-5
    atol: float = 1e-7


def _rise(**changes):
    config = dataclasses.replace(RiseConfig(num_masks=40, grid=4, p_keep=0.5, batch_size=16),
                                 **changes)
    return lambda key, model_fn, image, target: rise(key, model_fn, image, target, config=config)


def _occlusion(**changes):
    config = OcclusionConfig(**{"window": 8, "stride": 4, "batch_size": 16, **changes})
    return lambda key, m, x, t: occlusion(key, m, x, t, config=config)


def _lime(**changes):
    config = LimeConfig(**{"num_samples": 48, "max_segments": 20, "batch_size": 16, **changes})
    segments = jnp.asarray((np.arange(32)[:, None] // 8) * 4 + np.arange(32)[None, :] // 8)
    return lambda key, m, x, t: lime(key, m, x, t, config=config, segments=segments)


def _iassa_features(x):
    return {"fine": x[:, ::2, ::2], "coarse": x[:, ::4, ::4]}


def _iassa(**changes):
    config = IassaConfig(**{"window": 12, "stride": 4, "window_step": 2, "stride_step": 1,
                            "iterations": 2, "feature_names": None, "batch_size": 16, **changes})
    return lambda key, m, x, t: iassa(key, m, x, t, config=config, features_fn=_iassa_features)


def _gradcam(key, m, x, t):
    return gradcam(key, m, x, t, cam_model=testing.tiny_cam(m))


# Tiny randomly initialised agents (made at import: inside a trace they would be tracers).
# RExL as the packaged agents (baseline substrate, each patch once): argmax ignores the key.
REXL_CONFIG = RexlConfig(grid=4, substrate="baseline", mask_visited=True, pi_layers=(16,),
                         vf_layers=(16,))
REXL_FEATURES = patch_features(4)
REXL_AGENT = rexl_init_agent(jax.random.key(11), REXL_CONFIG, REXL_FEATURES, HW)
# λ = 0 and this agent: episodes of 4, 2 and 3 steps on the three test images (vmap of the
# while_loop with different stopping times); the greedy policy stops after 4, 4 and 1.
RLCAM_CONFIG = RlcamConfig(grid=4, horizon=4, size_penalty=0.0, batch_size=16, pi_layers=(16,),
                           vf_layers=(16,))
RLCAM_AGENT = rlcam_init_agent(jax.random.key(1), RLCAM_CONFIG)


def _rexl(deterministic):
    return functools.partial(rexl, config=REXL_CONFIG, agent_params=REXL_AGENT,
                             features_fn=REXL_FEATURES, deterministic=deterministic)


def _rlcam(**changes):
    config = dataclasses.replace(RLCAM_CONFIG, **changes)
    return functools.partial(rlcam, config=config, agent_params=RLCAM_AGENT)


def _rlcam_greedy(**changes):
    return functools.partial(rlcam_greedy, config=dataclasses.replace(RLCAM_CONFIG, **changes))


EXPLAINERS = [
    Explainer("rise", _rise(), rechunked=(_rise(batch_size=7), _rise(batch_size=40))),
    Explainer("rise_control_variate", _rise(control_variate=True),
              rechunked=(_rise(control_variate=True, batch_size=7),), atol=1e-6),
    Explainer("iassa", _iassa(), rechunked=(_iassa(batch_size=7), _iassa(batch_size=100))),
    Explainer("occlusion", _occlusion(), deterministic=True,
              rechunked=(_occlusion(batch_size=7), _occlusion(batch_size=64))),
    Explainer("gradcam", _gradcam, deterministic=True, black_box=False),
    # LIME's regression sums reorder with the chunk size: ~1e-4 relative on maps of ~3e-3.
    Explainer("lime", _lime(), rechunked=(_lime(batch_size=7), _lime(batch_size=48)),
              rtol=1e-4, atol=1e-6),
    # batched convolutions round differently (~1e-5 relative) and the deletion normalisation
    # (sal − min) / max (sic) amplifies it: a relative tolerance.
    Explainer("rexl_argmax", _rexl(True), deterministic=True, rtol=1e-4, atol=1e-6),
    Explainer("rexl_sampled", _rexl(False), rtol=1e-4, atol=1e-6),
    Explainer("rlcam", _rlcam(), deterministic=True, atol=1e-6,
              rechunked=(_rlcam(batch_size=7),)),
    Explainer("rlcam_greedy", _rlcam_greedy(), deterministic=True, atol=1e-6,
              rechunked=(_rlcam_greedy(batch_size=7),)),
]


def _tiny_model(seed):
    return testing.tiny_cnn(jax.random.key(seed), HW)[0]


@pytest.fixture(scope="module")
def model_fn():
    return _tiny_model(1)


@pytest.fixture(scope="module")
def images():
    return jax.random.uniform(jax.random.key(2), (3, *HW, 3))


@pytest.fixture(params=EXPLAINERS, ids=lambda e: e.name)
def explainer(request):
    return request.param


def test_shape_dtype_finite(explainer, key, model_fn, images):
    sal = explainer.explain(key, model_fn, images[0], 1)
    assert sal.shape == HW and sal.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(sal)))
    assert np.ptp(np.asarray(sal)) > 0  # not a constant map


def test_same_key_same_map_other_key_other_map(explainer, key, model_fn, images):
    first = np.asarray(explainer.explain(key, model_fn, images[0], 1))
    np.testing.assert_array_equal(first, np.asarray(explainer.explain(key, model_fn, images[0], 1)))
    other = np.asarray(explainer.explain(jax.random.key(7), model_fn, images[0], 1))
    if explainer.deterministic:
        np.testing.assert_array_equal(first, other)
    else:
        assert np.abs(first - other).max() > 1e-6


def test_jit_equals_eager(explainer, key, model_fn, images):
    eager = explainer.explain(key, model_fn, images[0], 2)
    jitted = jax.jit(explainer.explain)(key, model_fn, images[0], 2)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=explainer.rtol,
                               atol=explainer.atol)


def test_vmap_over_images_equals_loop(explainer, key, model_fn, images):
    keys = jax.random.split(key, 3)
    targets = jnp.array([0, 1, 2])
    batched = jax.vmap(explainer.explain, in_axes=(0, None, 0, 0))(keys, model_fn, images, targets)
    looped = [explainer.explain(keys[i], model_fn, images[i], int(targets[i])) for i in range(3)]
    np.testing.assert_allclose(np.asarray(batched), np.stack(looped), rtol=explainer.rtol,
                               atol=explainer.atol)


def test_no_recompile_with_new_weights_and_new_key(explainer, model_fn, images):
    explainer.explain(jax.random.key(3), model_fn, images[0], 1).block_until_ready()
    new_model = _tiny_model(5)  # inputs made before the block: creating them compiles
    new_key, target = jax.random.key(4), 2
    assert jax.tree.structure(new_model) == jax.tree.structure(model_fn)
    with testing.log_compilations() as compiles:
        sal = explainer.explain(new_key, new_model, images[1], target).block_until_ready()
    assert compiles == [], f"{len(compiles)} compilation(s) on the second call"
    assert np.all(np.isfinite(np.asarray(sal)))


def _captured_constant_warnings(fn, *args):
    """Warnings about constants captured while lowering ``jit(fn)(*args)`` (over 64 KiB)."""
    previous = jax.config.jax_captured_constants_warn_bytes
    jax.config.update("jax_captured_constants_warn_bytes", 1 << 16)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            jax.jit(fn).lower(*args)
    finally:
        jax.config.update("jax_captured_constants_warn_bytes", previous)
    return [w for w in caught if "constants were captured" in str(w.message)]


def test_no_captured_model_weights(explainer, key, model_fn, images):
    # The model is a pytree argument, so its weights are traced, never embedded constants
    # (the largest legitimate constant is a small up-sampling matrix).
    assert _captured_constant_warnings(explainer.explain, key, model_fn, images[0], 0) == []
    if not explainer.black_box:
        return
    # Control: the same explainer with the weights closed over (a wide model) does warn.
    wide = jnp.zeros((64, *HW, 3))
    closed = jax.tree_util.Partial(lambda x: testing.linear_model(wide)(x))
    assert _captured_constant_warnings(
        lambda k, x: explainer.explain(k, closed, x, 0), key, images[0]
    )


CHUNKED = [e for e in EXPLAINERS if e.rechunked]


@pytest.mark.parametrize("chunked", CHUNKED, ids=lambda e: e.name)
def test_map_does_not_depend_on_chunk_size(chunked, key, model_fn, images):
    reference = np.asarray(chunked.explain(key, model_fn, images[0], 1))
    for rechunked in chunked.rechunked:
        got = np.asarray(rechunked(key, model_fn, images[0], 1))
        np.testing.assert_allclose(got, reference, rtol=chunked.rtol, atol=chunked.atol)


def test_explainers_without_rechunked_variants_have_no_chunk_setting():
    # Grad-CAM is one forward and backward pass; RExL one model call per step of its episode.
    unchunked = {e.name for e in EXPLAINERS if not e.rechunked}
    assert unchunked == {"gradcam", "rexl_argmax", "rexl_sampled"}
    for config_type in (GradCamConfig, RexlConfig):
        assert "batch_size" not in {f.name for f in dataclasses.fields(config_type)}


def test_bad_inputs_raise_value_errors_naming_the_argument(explainer, key, model_fn, images):
    image = images[0]
    with pytest.raises(ValueError, match="image"):  # a batch: vmap instead
        explainer.explain(key, model_fn, images, 0)
    with pytest.raises(ValueError, match="image"):
        explainer.explain(key, model_fn, (image * 255).astype(jnp.uint8), 0)
    with pytest.raises(ValueError, match="image"):
        explainer.explain(key, model_fn, image + 1.0, 0)
    with pytest.raises(ValueError, match="target"):  # the tiny model has 3 classes
        explainer.explain(key, model_fn, image, 3)
    with pytest.raises(ValueError, match="target"):
        explainer.explain(key, model_fn, image, 1.0)
