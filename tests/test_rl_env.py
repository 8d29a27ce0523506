"""The RExL environment: shapes, auto-reset, rewards on toy models, substrates, masking, inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saliency_jax import testing
from saliency_jax._src import rexl_env as rl_env

H = W = 16
K = 4  # 4 x 4 grid of 4 x 4-pixel patches


def pool(x):
    """A trunk stand-in: per-patch mean colour ``f32[b, K, K, 3]`` and a coarser stage."""
    b = x.shape[0]
    fine = x.reshape(b, K, H // K, K, W // K, 3).mean(axis=(2, 4))
    return {"layer1": fine, "layer2": fine.reshape(b, 2, 2, 2, 2, 3).mean(axis=(2, 4))}


def region_setup(mode, **kw):
    region = np.zeros((H, W), bool)
    region[4:8, 8:16] = True  # patches (1, 2) and (1, 3): actions 6 and 7
    model = testing.region_model(region)
    image = np.ones((1, H, W, 3), np.float32)
    return rl_env.make_env_params(model, pool, image, np.array([0]), grid=K, mode=mode,
                                  substrate="baseline", stage="layer1", **kw)


def run_actions(params, actions):
    return _run_actions(params, jnp.asarray(actions, jnp.int32))


@jax.jit
def _run_actions(params, actions):
    obs, state = rl_env.reset(jax.random.key(1), params)

    def body(state, xs):
        k, a = xs
        obs, state, reward, done, info = rl_env.step(k, state, a, params)
        return state, (obs, state, reward, done, info)

    keys = jax.random.split(jax.random.key(2), len(actions))
    return obs, state, jax.lax.scan(body, state, (keys, actions))[1]


@pytest.mark.parametrize("mode,channels", [("deletion", 3), ("insertion", 6)])
def test_shapes_and_dtypes(mode, channels):
    params = region_setup(mode)
    obs, state = rl_env.reset(jax.random.key(0), params)
    assert obs.shape == (K, K, channels) and obs.dtype == jnp.float32
    assert rl_env.observation_shape(params) == (K, K, channels)
    assert state.visited.shape == (K, K) and state.visited.dtype == jnp.bool_
    assert state.substrate.shape == (H, W, 3)
    obs2, state2, reward, done, info = rl_env.step(jax.random.key(1), state, 3, params)
    assert obs2.shape == obs.shape
    assert jax.tree.map(jnp.shape, state2) == jax.tree.map(jnp.shape, state)
    assert reward.shape == () and reward.dtype == jnp.float32
    assert done.shape == () and done.dtype == jnp.bool_
    assert rl_env.action_mask(state, params).shape == (K * K,)


def test_class_planes_and_stage():
    model = testing.linear_model(np.random.default_rng(0).normal(size=(5, H, W, 3)) * 0.01)
    images = np.random.default_rng(1).uniform(size=(3, H, W, 3)).astype(np.float32)
    params = rl_env.make_env_params(model, pool, images, np.array([4, 0, 2]), grid=K,
                                    mode="insertion", num_class_planes=5)  # last stage: layer2
    obs, state = rl_env.reset(jax.random.key(0), params)
    assert obs.shape == (2, 2, 5 + 3 + 3)
    target = int(params.targets[state.index])
    np.testing.assert_array_equal(obs[..., :5], np.broadcast_to(np.eye(5)[target], (2, 2, 5)))
    # insertion: the original's features follow the canvas's.
    np.testing.assert_allclose(obs[..., 8:], pool(images[int(state.index)][None])["layer2"][0],
                               rtol=1e-6)


def test_auto_reset_exactly_after_k2_steps():
    params = region_setup("deletion")
    actions = np.arange(2 * K * K) % (K * K)
    _, _, (obs, states, rewards, dones, info) = run_actions(params, actions)
    expected_done = np.zeros(2 * K * K, bool)
    expected_done[[K * K - 1, 2 * K * K - 1]] = True
    np.testing.assert_array_equal(dones, expected_done)
    np.testing.assert_array_equal(info["t"], np.tile(np.arange(1, K * K + 1), 2))
    # The state returned with done is the next episode's first: nothing visited, t = 0.
    np.testing.assert_array_equal(states.t[K * K - 1], 0)
    assert not states.visited[K * K - 1].any()
    assert states.visited[K * K - 2].sum() == K * K - 1
    # ... and its observation is that of the untouched image (deletion).
    reset_obs, _ = rl_env.reset(jax.random.key(5), params)
    np.testing.assert_allclose(obs[K * K - 1], reset_obs, rtol=1e-6)


def test_rewards_are_the_probabilities_on_the_region_model():
    # Region = patches 6 and 7 (half each); white image, black substrate.
    actions = [0, 6, 6, 1, 7, 2]
    fraction_visible = np.array([0, 0.5, 0.5, 0.5, 1.0, 1.0])
    _, _, (_, _, rewards, _, info) = run_actions(region_setup("insertion"), actions)
    np.testing.assert_allclose(rewards, fraction_visible, atol=1e-6)
    _, _, (_, _, rewards, _, info) = run_actions(region_setup("deletion"), actions)
    np.testing.assert_allclose(rewards, -(1.0 - fraction_visible), atol=1e-6)
    np.testing.assert_allclose(info["score"], 1.0 - fraction_visible, atol=1e-6)


def _linear_with_norm(weights, images, *, mean_rgb, std_rgb):
    del mean_rgb, std_rgb  # declared for the substrate; the scores are plain linear
    return jnp.einsum("khwc,bhwc->bk", weights, images)


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_noise_substrate_and_linear_rewards(mode):
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(2, H, W, 3)).astype(np.float32) / (H * W)
    mean, std = np.array([0.4, 0.5, 0.6], np.float32), np.array([0.2, 0.1, 0.3], np.float32)
    model = jax.tree_util.Partial(_linear_with_norm, jnp.asarray(weights), mean_rgb=mean,
                                  std_rgb=std)
    image = rng.uniform(size=(H, W, 3)).astype(np.float32)
    params = rl_env.make_env_params(model, pool, image, np.array([1]), grid=K, mode=mode)
    actions = [5, 0, 15, 5]
    _, state0, (_, states, rewards, _, _) = run_actions(params, actions)
    substrate = np.asarray(state0.substrate)
    # U[-0.5, 0.5) in normalised space: mean + u * std with |u| <= 0.5, not constant.
    u = (substrate - mean) / std
    assert np.abs(u).max() <= 0.5 + 1e-6 and u.std() > 0.2
    np.testing.assert_array_equal(states.substrate[-1], substrate)  # once per episode
    # numpy port of the canvas and the linear score
    visited = np.zeros((K, K), bool)
    expected = []
    for a in actions:
        visited[a // K, a % K] = True
        pix = np.kron(visited, np.ones((H // K, W // K), bool))[..., None]
        canvas = np.where(pix, image, substrate) if mode == "insertion" else np.where(
            pix, substrate, image)
        score = float(np.sum(weights[1] * canvas))
        expected.append(score if mode == "insertion" else -score)
    np.testing.assert_allclose(rewards, expected, rtol=1e-5, atol=1e-6)


def test_substrate_changes_between_episodes():
    model = jax.tree_util.Partial(_linear_with_norm, jnp.ones((1, H, W, 3)),
                                  mean_rgb=jnp.full(3, 0.5), std_rgb=jnp.ones(3))
    params = rl_env.make_env_params(model, pool, np.ones((H, W, 3), np.float32), grid=K)
    _, state0, (_, states, _, _, _) = run_actions(params, np.zeros(K * K, int))
    assert not np.array_equal(states.substrate[-1], state0.substrate)


def test_top1_target_and_image_sampling():
    rng = np.random.default_rng(3)
    images = rng.uniform(size=(4, H, W, 3)).astype(np.float32)
    weights = rng.normal(size=(3, H, W, 3)).astype(np.float32)
    model = testing.linear_model(weights)
    params = rl_env.make_env_params(model, pool, images, np.array([-1, 2, -1, 0]), grid=K)
    top1 = np.argmax(np.einsum("khwc,bhwc->bk", weights, images), axis=1)
    np.testing.assert_array_equal(params.targets, [top1[0], 2, top1[2], 0])
    idx = jax.jit(jax.vmap(lambda k: rl_env.reset(k, params)[1].index))(
        jax.random.split(jax.random.key(0), 64))
    assert set(np.asarray(idx).tolist()) == {0, 1, 2, 3}


def test_visited_masking():
    params = region_setup("insertion", mask_visited=True)
    _, state = rl_env.reset(jax.random.key(0), params)
    _, state, *_ = rl_env.step(jax.random.key(1), state, 6, params)
    mask = np.asarray(rl_env.action_mask(state, params))
    assert not mask[6] and mask.sum() == K * K - 1
    # Off (the code): every action stays allowed and a revisit is a no-op that costs a step.
    params = region_setup("insertion")
    _, _, (_, states, rewards, _, _) = run_actions(params, [6, 6])
    assert np.asarray(rl_env.action_mask(jax.tree.map(lambda x: x[1], states), params)).all()
    assert rewards[0] == rewards[1] and int(states.t[1]) == 2


def test_vmap_over_environments_equals_loop():
    params = region_setup("deletion")
    keys = jax.random.split(jax.random.key(0), 3)
    obs, states = jax.jit(jax.vmap(rl_env.reset, in_axes=(0, None)))(keys, params)
    actions = jnp.array([1, 6, 7])
    step = jax.jit(rl_env.step)
    out = jax.jit(jax.vmap(rl_env.step, in_axes=(0, 0, 0, None)))(keys, states, actions, params)
    for i in range(3):
        state = jax.tree.map(lambda x, i=i: x[i], states)
        single = step(keys[i], state, actions[i], params)
        np.testing.assert_allclose(out[2][i], single[2], rtol=1e-6)
        np.testing.assert_allclose(out[0][i], single[0], rtol=1e-6)


def _fused(region, images):
    return testing.region_model(region)(images), pool(images)


@pytest.mark.parametrize("mode,substrate", [("deletion", "noise"), ("insertion", "baseline"),
                                            ("insertion", "noise")])
def test_fused_pass_gives_the_same_episode(mode, substrate):
    region = np.zeros((H, W), bool)
    region[2:9, 3:14] = True
    model = testing.region_model(region)
    fused = jax.tree_util.Partial(_fused, region)
    image = np.random.default_rng(0).uniform(size=(H, W, 3)).astype(np.float32)
    kw = dict(grid=K, mode=mode, substrate=substrate, stage="layer1")
    plain = rl_env.make_env_params(model, pool, image, **kw)
    one_pass = rl_env.make_env_params(model, pool, image, fused_fn=fused, **kw)
    actions = np.r_[np.arange(K * K), [3, 1]]  # through an auto-reset
    obs0, _, (obs, _, rewards, dones, _) = run_actions(plain, actions)
    fobs0, _, (fobs, _, frewards, fdones, _) = run_actions(one_pass, actions)
    np.testing.assert_array_equal(dones, fdones)
    np.testing.assert_allclose(frewards, rewards, rtol=1e-6)
    np.testing.assert_allclose(fobs0, obs0, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(fobs, obs, rtol=1e-6, atol=1e-7)
    # the first observation is the trunk's features of the first canvas
    substrate = _run_actions(plain, jnp.zeros(1, jnp.int32))[1].substrate
    first = image if mode == "deletion" else np.asarray(substrate)
    np.testing.assert_allclose(obs0[..., :3], pool(first[None])["layer1"][0], rtol=1e-6, atol=1e-7)


def test_bad_inputs():
    model = testing.region_model(np.ones((H, W), bool))
    image = np.ones((H, W, 3), np.float32)
    with pytest.raises(ValueError, match="grid"):
        rl_env.make_env_params(model, pool, image, grid=3)
    with pytest.raises(ValueError, match="mode"):
        rl_env.make_env_params(model, pool, image, grid=K, mode="both")
    with pytest.raises(ValueError, match="substrate"):
        rl_env.make_env_params(model, pool, image, grid=K, substrate="blur")
    with pytest.raises(ValueError, match="targets"):
        rl_env.make_env_params(model, pool, image, np.array([2]), grid=K)
    with pytest.raises(ValueError, match="stage"):
        rl_env.make_env_params(model, pool, image, grid=K, stage="layer9")
    with pytest.raises(ValueError, match="images"):
        rl_env.make_env_params(model, pool, image * 2, grid=K)
    with pytest.raises(ValueError, match="fused_fn"):
        rl_env.make_env_params(model, pool, image, grid=K, fused_fn=lambda x: model(x))
