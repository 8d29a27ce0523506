"""saliency_jax._src.batching.skip_cond: lax.cond semantics, and under vmap the costly branch
runs on unbatched weights and not at all when every element skips (nested vmap too); forward
and reverse derivatives, and the explainers that use it under jax.grad."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


def _sum_y(s, x):
    return skip_cond(s, _cheap, lambda ops: {"y": jnp.sin(ops[1] @ ops[0]), "n": 1.0},
                     (WEIGHTS, x))["y"].sum()


def _reference_sin_grad(skip, x):
    if skip:
        return np.zeros_like(x)
    return np.asarray(jax.grad(lambda x: jnp.sin(x @ WEIGHTS).sum())(x))


def test_reverse_and_forward_mode_derivatives():
    skips = jnp.array([False, True, False])
    want = np.stack([_reference_sin_grad(bool(s), x) for s, x in zip(skips, XS, strict=True)])
    grad = jax.grad(_sum_y, argnums=1)
    for s, x, w in zip(skips, XS, want, strict=True):
        np.testing.assert_allclose(grad(s, x), w, rtol=1e-6)
        np.testing.assert_allclose(jax.jit(grad)(s, x), w, rtol=1e-6)
        _, tangent = jax.jvp(lambda x: _sum_y(s, x), (x,), (jnp.ones(3),))  # noqa: B023
        np.testing.assert_allclose(tangent, w.sum(), rtol=1e-5)
    np.testing.assert_allclose(jax.vmap(grad)(skips, XS), want, rtol=1e-6)
    batched_loss = lambda xs: jax.vmap(_sum_y)(skips, xs).sum()  # noqa: E731
    np.testing.assert_allclose(jax.grad(batched_loss)(XS), want, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(jax.grad(batched_loss))(XS), want, rtol=1e-6)


def test_nested_vmap_keeps_the_skip_at_every_level():
    calls = []

    def costly(ops):
        weights, x = ops
        jax.debug.callback(lambda: calls.append(1))
        return {"y": x @ weights, "n": jnp.float32(1.0)}

    run = jax.jit(jax.vmap(jax.vmap(lambda s, x: skip_cond(s, _cheap, costly, (WEIGHTS, x)))))
    xs = jnp.stack([XS, 2 * XS])
    jax.block_until_ready(run(jnp.ones((2, 3), bool), xs))
    jax.effects_barrier()
    assert calls == []  # every element of every row skips: the costly branch never runs
    skips = jnp.array([[True, True, True], [False, True, False]])
    got = run(skips, xs)
    jax.effects_barrier()
    assert len(calls) >= 1
    want = np.where(np.asarray(skips)[..., None], 0.0, np.asarray(xs @ WEIGHTS))
    np.testing.assert_array_equal(np.asarray(got["y"]), want)
    np.testing.assert_array_equal(np.asarray(got["n"]), np.where(np.asarray(skips), 0.0, 1.0))


def _explainers():
    import saliency_jax as sj

    model_fn, _ = sj.testing.tiny_cnn(jax.random.key(1), (28, 28))
    feats = jax.tree_util.Partial(lambda x: {"a": x.mean(-1, keepdims=True)})
    iassa_config = sj.IassaConfig(window=14, stride=7, window_step=2, stride_step=1,
                                  iterations=1, feature_names=("a",))
    rlcam_config = sj.RlcamConfig(grid=7, horizon=3)
    agent = sj.init_rlcam_agent(jax.random.key(5), rlcam_config)
    key = jax.random.key(0)
    return {
        "iassa": lambda x: sj.iassa(key, model_fn, x, 0, config=iassa_config, features_fn=feats),
        "rlcam_greedy": lambda x: sj.rlcam_greedy(key, model_fn, x, 0, config=rlcam_config),
        "rlcam": lambda x: sj.rlcam(key, model_fn, x, 0, config=rlcam_config,
                                    agent_params=agent),
    }


@pytest.mark.parametrize("name", ["iassa", "rlcam_greedy",
                                  pytest.param("rlcam", marks=pytest.mark.slow)])
def test_explainers_using_it_work_under_grad(name):
    # IASSA and RL-CAM query the model through skip_cond (RL-CAM's episode is a scan whose
    # steps after the stop are skipped): reverse mode agrees with forward mode, under vmap too
    explain = _explainers()[name]
    images = jax.random.uniform(jax.random.key(2), (2, 28, 28, 3))
    tangent = jax.random.normal(jax.random.key(3), (28, 28, 3))
    loss = lambda x: jnp.sum(explain(x) ** 2)  # noqa: E731
    grads = jax.vmap(jax.grad(loss))(images)
    assert np.all(np.isfinite(np.asarray(grads))) and float(jnp.abs(grads).sum()) > 0
    np.testing.assert_allclose(jax.grad(loss)(images[1]), grads[1], rtol=1e-4, atol=1e-6)
    _, forward = jax.jvp(loss, (images[1],), (tangent,))
    np.testing.assert_allclose(float(jnp.vdot(grads[1], tangent)), float(forward), rtol=1e-3,
                               atol=1e-6)
