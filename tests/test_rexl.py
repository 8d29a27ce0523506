"""The RExL explainer: the evaluate.py saliency formula, scripted agents, contract, bad inputs."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.transform

from saliency_jax import testing
from saliency_jax._src.rexl import (
    RexlConfig,
    first_visit_saliency,
    rexl,
    rexl_num_queries,
    trajectory_saliency,
)
from saliency_jax._src.rl import networks

H = W = 16
K = 4
LAYERS = dict(pi_layers=(8,), vf_layers=(8,))


def _pool(scale, x):
    b = x.shape[0]
    return {"layer1": scale * x.reshape(b, K, H // K, K, W // K, 3).mean(axis=(2, 4))}


def features(scale=1.0):
    """A trunk stand-in with a traced weight: per-patch mean colours ``f32[b, K, K, 3]``."""
    return jax.tree_util.Partial(_pool, jnp.float32(scale))


def agent(key, config, channels=3):
    net = networks.ActorCritic(config.grid ** 2, config.pi_layers, config.vf_layers)
    return jax.jit(net.init)(key, jnp.zeros((K, K, channels)))


def scripted_agent(config, preference, channels=3):
    """An agent whose logits are ``preference`` whatever it sees (zero kernels, set bias)."""
    params = agent(jax.random.key(0), config, channels)
    params = jax.tree.map(jnp.zeros_like, params)
    params["params"]["pi_out"]["bias"] = jnp.asarray(preference, jnp.float32)
    return params


_CALLS: list = []


def _counting_region(region, images):
    jax.debug.callback(lambda: _CALLS.append(1))  # runs once per executed model call
    return testing.region_model(region)(images)


def region_model():
    """``testing.region_model`` of patch 6 that counts its calls in ``_CALLS``."""
    region = np.zeros((H, W), bool)
    region[4:8, 8:12] = True  # patch (1, 2) = action 6
    return jax.tree_util.Partial(_counting_region, jnp.asarray(region, jnp.float32))


def reference_saliency(actions, scores, p0, grid, mode):
    """numpy port of CVIR/RExL evaluate.py l.179–213 (METHODS §3.4)."""
    sal = np.zeros((grid, grid))
    uncov = np.zeros((grid, grid))
    old = -p0 if mode == "deletion" else 0.0
    for a, p in zip(actions, scores, strict=True):
        r = -p if mode == "deletion" else p + 1.0
        uncov[a // grid, a % grid] = 1
        sal += (r - old) * uncov
        old = r
    if mode == "deletion":
        return (sal - sal.min()) / sal.max()
    return sal / sal.max()


def test_trajectory_saliency_hand_computed():
    # deletion, p0 = 0.9: cell 0 first at t=1 -> p0 - p4 = 0.8; cell 3 at t=3 -> p2 - p4 = 0.5;
    # cell 1 at t=4 -> p3 - p4 = 0.2; cell 2 unvisited -> 0.  min = 0, max = 0.8.
    args = jnp.array([0, 0, 3, 1]), jnp.array([0.6, 0.6, 0.3, 0.1]), 0.9
    for normalisation in ("minmax", "reference"):
        sal = trajectory_saliency(*args, grid=2, mode="deletion", normalisation=normalisation)
        np.testing.assert_allclose(sal, [[1.0, 0.25], [0.0, 0.625]], rtol=1e-6)
    # deletion with a negative cell: sal = (0.5, 0.2, 0.1, -0.1); the code's (sal + 0.1) / 0.5
    # (sic: not / 0.6); minmax divides by 0.6
    args = jnp.array([0, 1, 2, 3]), jnp.array([0.5, 0.4, 0.2, 0.3]), 0.8
    sal = trajectory_saliency(*args, grid=2, mode="deletion", normalisation="reference")
    np.testing.assert_allclose(sal, [[1.2, 0.6], [0.4, 0.0]], rtol=1e-5)
    sal = trajectory_saliency(*args, grid=2, mode="deletion")
    np.testing.assert_allclose(sal, [[1.0, 0.5], [1 / 3, 0.0]], rtol=1e-5)
    # insertion: cell 2 first -> p4 + 1 = 1.7; cell 0 at t=3 -> p4 - p2 = 0.5; cell 1 -> 0.2
    args = jnp.array([2, 2, 0, 1]), jnp.array([0.2, 0.2, 0.5, 0.7]), 0.0
    sal = trajectory_saliency(*args, grid=2, mode="insertion", normalisation="reference")
    np.testing.assert_allclose(sal, [[0.5 / 1.7, 0.2 / 1.7], [1.0, 0.0]], rtol=1e-6)
    sal = trajectory_saliency(*args, grid=2, mode="insertion")  # min is the unvisited 0
    np.testing.assert_allclose(sal, [[0.5 / 1.7, 0.2 / 1.7], [1.0, 0.0]], rtol=1e-6)


def test_reference_normalisation_never_inverts_the_ranking():
    # Every cell visited and the probability rising at each step: sal = p_{t-1} - p_4 < 0 for
    # all cells, max < 0. sal = (0.1-0.5, 0.2-0.5, 0.3-0.5, 0.4-0.5) = (-0.4, -0.3, -0.2, -0.1).
    # The code's (sal - min) / max = (0, 0.1, 0.2, 0.3) / -0.1 = (0, -1, -2, -3): cell 0, removed
    # first with the largest drop to come, would rank highest -> inverted. Guarded: / |max|.
    args = jnp.array([0, 1, 2, 3]), jnp.array([0.2, 0.3, 0.4, 0.5]), 0.1
    code = reference_saliency(*(np.asarray(a) for a in args), 2, "deletion")
    np.testing.assert_allclose(code.ravel(), [0.0, -1.0, -2.0, -3.0], atol=1e-6)
    sal = np.asarray(trajectory_saliency(*args, grid=2, mode="deletion",
                                         normalisation="reference")).ravel()
    np.testing.assert_allclose(sal, [0.0, 1.0, 2.0, 3.0], atol=1e-5)
    minmax = np.asarray(trajectory_saliency(*args, grid=2, mode="deletion")).ravel()
    np.testing.assert_allclose(minmax, [0.0, 1 / 3, 2 / 3, 1.0], atol=1e-6)
    # insertion cannot invert: its first cell holds p_T + 1 > 0, so max > 0 and the map is the
    # code's exactly
    args = jnp.array([0, 1, 2, 3]), jnp.array([0.9, 0.8, 0.7, 0.6]), 0.0
    code = reference_saliency(*(np.asarray(a) for a in args), 2, "insertion")
    sal = trajectory_saliency(*args, grid=2, mode="insertion", normalisation="reference")
    np.testing.assert_allclose(np.asarray(sal), code, rtol=1e-6)
    # a constant map: minmax gives zeros (no division by zero), reference / 1
    flat = trajectory_saliency(jnp.zeros(4, jnp.int32), jnp.full(4, 0.5), 0.5, grid=2,
                               mode="deletion")
    np.testing.assert_array_equal(np.asarray(flat), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="normalisation"):
        RexlConfig(normalisation="sic")


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_trajectory_saliency_matches_numpy_port(mode):
    rng = np.random.default_rng(0)
    fn = jax.jit(functools.partial(trajectory_saliency, grid=3, mode=mode),
                 static_argnames="normalisation")
    for _ in range(5):
        actions = rng.integers(0, 9, 9)
        scores = rng.uniform(size=9).astype(np.float32)
        p0 = np.float32(rng.uniform())
        expected = reference_saliency(actions, scores, p0, 3, mode)
        assert expected.max() > 0  # where the code's divisor is positive, the same map
        np.testing.assert_allclose(fn(actions, scores, p0, normalisation="reference"), expected,
                                   rtol=1e-5, atol=1e-6)
        minmax = (expected - expected.min()) / (expected.max() - expected.min())
        np.testing.assert_allclose(fn(actions, scores, p0), minmax, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode,cells", [
    # visiting 0, 1, ..., 15; patch 6 holds the evidence (white image on black).
    # deletion: p_t = 1 until t = 7, then 0; sal_c = p_c − p_16 = 1 for c <= 6.
    ("deletion", [1.0] * 7 + [0.0] * 9),
    # insertion: p_t = 0 until t = 7, then 1; cell 0: p_16 + 1 = 2, cells 1..6: 1 − 0, others 0.
    ("insertion", [1.0] + [0.5] * 6 + [0.0] * 9),
])
def test_scripted_agent_gives_the_code_map(mode, cells):
    config = RexlConfig(grid=K, mode=mode, substrate="baseline", mask_visited=True, **LAYERS)
    channels = 6 if mode == "insertion" else 3
    params = scripted_agent(config, -np.arange(K * K), channels)  # masked argmax: 0, 1, 2, ...
    image = np.ones((H, W, 3), np.float32)
    _CALLS.clear()
    sal = rexl(jax.random.key(0), region_model(), image, 0, config=config, agent_params=params,
               features_fn=features())
    jax.effects_barrier()
    assert len(_CALLS) == rexl_num_queries(config) == 1 + K * K  # the original + one per step
    expected = skimage.transform.resize(np.reshape(cells, (K, K)), (H, W), order=1,
                                        mode="reflect", anti_aliasing=False)
    np.testing.assert_allclose(sal, expected, atol=1e-6)


@pytest.mark.parametrize("weight", [1.0, 0.5])
def test_policy_weight_adds_the_first_step_policy(weight):
    # the scripted agent's logits are -a whatever it sees: minmax(l_0) = (15 - a) / 15; the
    # deletion trajectory map of the same episode is 1 on cells 0..6, 0 elsewhere (above)
    config = RexlConfig(grid=K, mode="deletion", substrate="baseline", mask_visited=True,
                        policy_weight=weight, **LAYERS)
    params = scripted_agent(config, -np.arange(K * K))
    sal = rexl(jax.random.key(0), region_model(), np.ones((H, W, 3), np.float32), 0,
               config=config, agent_params=params, features_fn=features())
    cells = (np.array([1.0] * 7 + [0.0] * 9) + weight * (15 - np.arange(16)) / 15) / (1 + weight)
    expected = skimage.transform.resize(cells.reshape(K, K), (H, W), order=1, mode="reflect",
                                        anti_aliasing=False)
    np.testing.assert_allclose(sal, expected, atol=1e-6)


def test_first_visit_saliency_hand_computed():
    # T = 4 steps on a 2 x 2 grid: patch 3 first at t = 0, 0 at t = 1, 3 again, 1 at t = 3;
    # patch 2 never: 1 - t / T, 0 for the unvisited
    sal = first_visit_saliency(jnp.array([3, 0, 3, 1]), grid=2)
    np.testing.assert_array_equal(sal, [[0.75, 0.25], [0.0, 1.0]])
    jitted = jax.jit(functools.partial(first_visit_saliency, grid=2))
    np.testing.assert_array_equal(jitted(jnp.array([3, 0, 3, 1])), sal)


def test_first_visit_map_follows_the_agents_order():
    # the scripted agent visits 0, 1, 2, ... (masked argmax): cell a gets 1 - a / 16 whatever
    # the scores (the trajectory map of the same episode is 1 on cells 0..6, 0 elsewhere)
    config = RexlConfig(grid=K, mode="deletion", substrate="baseline", mask_visited=True,
                        episode_map="first_visit", **LAYERS)
    params = scripted_agent(config, -np.arange(K * K))
    sal = rexl(jax.random.key(0), region_model(), np.ones((H, W, 3), np.float32), 0,
               config=config, agent_params=params, features_fn=features())
    cells = 1.0 - np.arange(K * K) / (K * K)
    expected = skimage.transform.resize(cells.reshape(K, K), (H, W), order=1, mode="reflect",
                                        anti_aliasing=False)
    np.testing.assert_allclose(sal, expected, atol=1e-6)
    with pytest.raises(ValueError, match="episode_map must be one of"):
        RexlConfig(grid=K, episode_map="last_visit", **LAYERS)


def test_horizon_stops_the_episode_early():
    # the scripted episode of the test above cut at T = 8 steps: patch 6 is removed at step 7,
    # so the map is the full episode's (cells 0..6 at 1) from 1 + 8 queries
    config = RexlConfig(grid=K, mode="deletion", substrate="baseline", mask_visited=True,
                        horizon=8, **LAYERS)
    params = scripted_agent(config, -np.arange(K * K))
    _CALLS.clear()
    sal = rexl(jax.random.key(0), region_model(), np.ones((H, W, 3), np.float32), 0,
               config=config, agent_params=params, features_fn=features())
    jax.effects_barrier()
    assert len(_CALLS) == rexl_num_queries(config) == 1 + 8
    expected = skimage.transform.resize(np.reshape([1.0] * 7 + [0.0] * 9, (K, K)), (H, W),
                                        order=1, mode="reflect", anti_aliasing=False)
    np.testing.assert_allclose(sal, expected, atol=1e-6)


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_rollouts_average_independent_episodes(weight):
    # the reference MDP with sampled actions: R rollouts are the mean of R single episodes of
    # the split keys (their own substrate and actions), in 1 + R·T queries
    model_fn, _ = testing.tiny_cnn(jax.random.key(1), (H, W))
    one = RexlConfig(grid=K, horizon=5, policy_weight=weight, **LAYERS)
    many = RexlConfig(grid=K, horizon=5, num_rollouts=3, policy_weight=weight, **LAYERS)
    params = agent(jax.random.key(2), one)
    image = jax.random.uniform(jax.random.key(3), (H, W, 3))
    key = jax.random.key(4)
    run = functools.partial(rexl, model_fn=model_fn, image=image, target=1, agent_params=params,
                            features_fn=features(), deterministic=False)
    averaged = run(key, config=many)
    # min-max maps, averaged before the policy term; the bilinear up-sampling is linear
    singles = [run(k, config=dataclasses.replace(one, policy_weight=0.0))
               for k in jax.random.split(key, 3)]
    policy = run(key, config=dataclasses.replace(one, policy_weight=1e9))  # ≈ the policy alone
    expected = (np.mean(singles, axis=0) + weight * np.asarray(policy)) / (1 + weight)
    np.testing.assert_allclose(averaged, expected, atol=1e-5)
    assert not np.allclose(singles[0], singles[1])
    assert rexl_num_queries(many) == 1 + 3 * 5
    np.testing.assert_array_equal(run(key, config=RexlConfig(grid=K, num_rollouts=1, **LAYERS)),
                                  run(key, config=RexlConfig(grid=K, **LAYERS)))


def test_agent_meta_inference_settings():
    meta = {"env": dict(grid=K, mode="deletion", substrate="noise", mask_visited=False,
                        num_class_planes=6, stage="layer3"),
            "train_config": dict(pi_layers=[8], vf_layers=[8]),
            "inference": {"policy_weight": 1.0}}
    assert RexlConfig.from_agent_meta(meta).policy_weight == 1.0
    assert RexlConfig.from_agent_meta(meta, policy_weight=0.0).policy_weight == 0.0
    assert RexlConfig.from_agent_meta({**meta, "inference": {}}).policy_weight == 0.0
    rollouts = RexlConfig.from_agent_meta({**meta, "inference": {"num_rollouts": 3,
                                                                 "horizon": 10}})
    assert (rollouts.num_rollouts, rollouts.horizon, rollouts.steps) == (3, 10, 10)
    assert RexlConfig.from_agent_meta(meta).steps == K * K


_FUSED_CALLS: list = []
_FEATURE_CALLS: list = []


def _counting_features(images):
    jax.debug.callback(lambda: _FEATURE_CALLS.append(1))
    return _pool(1.0, images)


def _counting_fused(region, images):
    jax.debug.callback(lambda: _FUSED_CALLS.append(1))
    return testing.region_model(region)(images), _pool(1.0, images)


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_fused_fn_gives_one_network_pass_per_step(mode):
    # The reference MDP (noise, revisits), sampled actions: the same map with and without
    # fused_fn; with it, the black box and the trunk run in the same pass: 1 + K² fused passes
    # and no separate model_fn pass (insertion: one trunk pass for the first, bare canvas).
    config = RexlConfig(grid=K, mode=mode, **LAYERS)
    channels = 6 if mode == "insertion" else 3
    params = agent(jax.random.key(1), config, channels)
    image = np.asarray(jax.random.uniform(jax.random.key(2), (H, W, 3)))
    region = region_model()
    fused = jax.tree_util.Partial(_counting_fused, region.args[0])
    counting = jax.tree_util.Partial(_counting_features)
    run = functools.partial(rexl, jax.random.key(3), region, image, 0, config=config,
                            agent_params=params, deterministic=False)
    _CALLS.clear(), _FUSED_CALLS.clear(), _FEATURE_CALLS.clear()
    separate = jax.block_until_ready(run(features_fn=counting))
    jax.effects_barrier()
    assert len(_CALLS) == 1 + K * K and len(_FEATURE_CALLS) == 1 + K * K + (mode == "insertion")
    _CALLS.clear(), _FUSED_CALLS.clear(), _FEATURE_CALLS.clear()
    one_pass = jax.block_until_ready(run(features_fn=counting, fused_fn=fused))
    jax.effects_barrier()
    assert len(_FUSED_CALLS) == 1 + K * K
    assert len(_CALLS) == 0 and len(_FEATURE_CALLS) == (mode == "insertion")
    np.testing.assert_allclose(one_pass, separate, atol=1e-6)
    with pytest.raises(ValueError, match="fused_fn"):
        run(features_fn=counting, fused_fn=region)  # scores only, no features


def test_num_queries():
    assert rexl_num_queries(RexlConfig()) == 50
    assert rexl_num_queries(RexlConfig(grid=14)) == 197


@pytest.fixture(scope="module")
def contract_setup():
    model_fn, _ = testing.tiny_cnn(jax.random.key(1), (H, W))
    config = RexlConfig(grid=K, mode="deletion", num_class_planes=3, **LAYERS)
    params = agent(jax.random.key(2), config, channels=3 + 3)
    images = jax.random.uniform(jax.random.key(3), (3, H, W, 3))
    explain = functools.partial(rexl, config=config, agent_params=params, features_fn=features())
    return model_fn, config, params, images, explain


def test_contract(contract_setup):
    model_fn, config, params, images, explain = contract_setup
    key = jax.random.key(4)
    sal = explain(key, model_fn, images[0], 1)
    assert sal.shape == (H, W) and sal.dtype == jnp.float32
    assert np.all(np.isfinite(sal))
    np.testing.assert_array_equal(sal, explain(key, model_fn, images[0], 1))
    # the noise substrate is drawn from the key
    assert not np.array_equal(sal, explain(jax.random.key(5), model_fn, images[0], 1))
    jitted = jax.jit(explain)(key, model_fn, images[0], 1)
    # deletion's (sal − min) / max (sic) can exceed 1 and amplifies rounding: relative tolerance
    np.testing.assert_allclose(jitted, sal, rtol=1e-5, atol=1e-6)
    keys = jax.random.split(key, 3)
    targets = jnp.array([0, 1, 2])
    batched = jax.vmap(explain, in_axes=(0, None, 0, 0))(keys, model_fn, images, targets)
    for i in range(3):
        np.testing.assert_allclose(batched[i], explain(keys[i], model_fn, images[i], targets[i]),
                                   rtol=1e-5, atol=1e-6)


def test_sampled_actions_follow_the_key(contract_setup):
    model_fn, config, params, images, explain = contract_setup
    key = jax.random.key(4)
    sampled = explain(key, model_fn, images[0], 1, deterministic=False)  # no new compile: traced
    np.testing.assert_array_equal(sampled, explain(key, model_fn, images[0], 1,
                                                   deterministic=False))
    assert not np.array_equal(sampled, explain(key, model_fn, images[0], 1))
    assert np.all(np.isfinite(sampled))


def test_no_recompile_on_new_weights_or_key(contract_setup):
    model_fn, config, params, images, _ = contract_setup
    explain = functools.partial(rexl, config=config)
    sal = explain(jax.random.key(0), model_fn, images[0], 0, agent_params=params,
                  features_fn=features(1.0))
    new_model = jax.tree_util.Partial(model_fn.func, jax.tree.map(lambda x: x * 1.5,
                                                                  model_fn.args[0]),
                                      **model_fn.keywords)
    new_params = jax.tree.map(lambda x: x + 0.1, params)
    new_features = features(2.0)
    new_key = jax.random.key(7)
    image, target = images[1], jnp.asarray(2, jnp.int32)
    with testing.log_compilations() as log:
        other = explain(new_key, new_model, image, target, agent_params=new_params,
                        features_fn=new_features)
        jax.block_until_ready(other)
    assert len(log) == 0, f"{len(log)} compilations"
    assert not np.array_equal(sal, other)


def test_bad_inputs(contract_setup):
    model_fn, config, params, images, explain = contract_setup
    image = images[0]
    with pytest.raises(ValueError, match="grid"):
        rexl(jax.random.key(0), model_fn, image, 0, config=RexlConfig(grid=3), agent_params=params,
             features_fn=features())
    with pytest.raises(ValueError, match="mode"):
        RexlConfig(mode="both")
    for bad in (0, True, 1.5):
        with pytest.raises(ValueError, match="num_rollouts"):
            RexlConfig(num_rollouts=bad)
    for bad in (0, 50, True, 2.0):
        with pytest.raises(ValueError, match="horizon"):
            RexlConfig(grid=7, horizon=bad)
    with pytest.raises(ValueError, match="substrate"):
        RexlConfig(substrate="blur")
    for weight in (-0.5, float("nan"), "1", True):
        with pytest.raises(ValueError, match="policy_weight"):
            RexlConfig(policy_weight=weight)
    with pytest.raises(ValueError, match="agent_params"):  # trained for a 2 x 2 grid
        rexl(jax.random.key(0), model_fn, image, 0,
             config=RexlConfig(grid=2, mode="deletion", num_class_planes=3, **LAYERS),
             agent_params=params,
             features_fn=lambda x: _pool(1.0, x)["layer1"].reshape(1, 2, 2, 2, 2, 3).mean((2, 4)))
    with pytest.raises(ValueError, match="agent_params"):  # insertion observations are wider
        rexl(jax.random.key(0), model_fn, image, 0,
             config=RexlConfig(grid=K, mode="insertion", num_class_planes=3, **LAYERS),
             agent_params=params, features_fn=features())
    with pytest.raises(ValueError, match="target"):
        explain(jax.random.key(0), model_fn, image, 3)
    with pytest.raises(ValueError, match="image"):
        explain(jax.random.key(0), model_fn, images, 0)
    with pytest.raises(ValueError, match="num_class_planes"):
        rexl(jax.random.key(0), model_fn, image, 0,
             config=RexlConfig(grid=K, num_class_planes=2, **LAYERS), agent_params=params,
             features_fn=features())
