"""saliency_jax._src.batching.skip_cond: lax.cond semantics, and under vmap the costly branch
runs on unbatched weights and not at all when every element skips."""

import re

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax._src.batching import skip_cond


def _costly(ops):
    weights, x = ops
    return {"y": x @ weights, "n": jnp.float32(1.0)}


def _cheap(ops):
    weights, x = ops
    return {"y": jnp.zeros(weights.shape[1]), "n": jnp.float32(0.0)}


WEIGHTS = jnp.arange(12.0).reshape(3, 4)
XS = jnp.array([[1.0, 2.0, 3.0], [0.5, 0.0, -1.0], [2.0, 2.0, 2.0]])


def test_unbatched_is_a_cond():
    for skip in (False, True):
        got = skip_cond(jnp.asarray(skip), _cheap, _costly, (WEIGHTS, XS[0]))
        want = (_cheap if skip else _costly)((WEIGHTS, XS[0]))
        np.testing.assert_array_equal(got["y"], want["y"])
        assert float(got["n"]) == float(want["n"])
    jitted = jax.jit(lambda s, x: skip_cond(s, _cheap, _costly, (WEIGHTS, x)))
    np.testing.assert_array_equal(jitted(False, XS[1])["y"], XS[1] @ WEIGHTS)


def test_vmap_takes_each_elements_branch():
    skips = jnp.array([False, True, False])
    got = jax.vmap(lambda s, x: skip_cond(s, _cheap, _costly, (WEIGHTS, x)))(skips, XS)
    want = np.where(np.asarray(skips)[:, None], 0.0, np.asarray(XS @ WEIGHTS))
    np.testing.assert_array_equal(np.asarray(got["y"]), want)
    np.testing.assert_array_equal(np.asarray(got["n"]), [1.0, 0.0, 1.0])
    # An unbatched skip under vmap, and a vmap over the weights instead of x.
    got = jax.vmap(lambda x: skip_cond(jnp.asarray(False), _cheap, _costly, (WEIGHTS, x)))(XS)
    np.testing.assert_array_equal(np.asarray(got["y"]), np.asarray(XS @ WEIGHTS))
    stacked = jnp.stack([WEIGHTS, 2 * WEIGHTS])
    got = jax.vmap(lambda s, w: skip_cond(s, _cheap, _costly, (w, XS[0])))(
        jnp.array([True, False]), stacked)
    np.testing.assert_array_equal(np.asarray(got["y"]), [np.zeros(4), XS[0] @ (2 * WEIGHTS)])


def test_vmap_keeps_weights_unbatched_and_skips_when_all_skip():
    shapes, calls = [], []

    def costly(ops):
        weights, x = ops
        shapes.append(weights.shape)  # at trace time: the weights the branch sees
        jax.debug.callback(lambda: calls.append(1))
        return {"y": x @ weights, "n": jnp.float32(1.0)}

    run = jax.jit(jax.vmap(lambda s, x: skip_cond(s, _cheap, costly, (WEIGHTS, x))))
    jax.block_until_ready(run(jnp.array([True, True, True]), XS))
    assert shapes and all(s == WEIGHTS.shape for s in shapes)  # never broadcast to the batch
    assert calls == []
    jax.block_until_ready(run(jnp.array([True, False, True]), XS))
    assert len(calls) >= 1


def _grouped_convolutions(fn, *args):
    text = str(jax.make_jaxpr(fn)(*args))
    return [g for g in re.findall(r"feature_group_count=(\d+)", text) if int(g) > 1]


def test_rlcam_episode_under_vmap_keeps_the_model_weights_unbatched():
    # The episode's stop branch (batched under vmap) used to be a lax.cond: a select that
    # broadcast the classifier's weights to the batch.
    import saliency_jax as sj

    model_fn, _ = sj.testing.tiny_cnn(jax.random.key(1), (28, 28))
    config = sj.RlcamConfig(grid=7, horizon=3)
    images = jax.random.uniform(jax.random.key(2), (2, 28, 28, 3))
    batched = jax.vmap(lambda x: sj.rlcam_greedy(jax.random.key(0), model_fn, x, 0, config=config))
    assert _grouped_convolutions(batched, images) == []
