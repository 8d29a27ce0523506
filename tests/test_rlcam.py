"""RL-CAM: environment (shapes, ΔF rewards, masking, auto-reset, look-ahead), greedy baseline,
training, checkpoint/resume, the explainer contract and bad inputs; the output-observation
variant (observation, rewards, exact query count, jit/vmap, bad configs)."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saliency_jax import testing
from saliency_jax._src import rlcam
from saliency_jax._src import rlcam_env as E
from saliency_jax._src.rl import ppo
from saliency_jax._src.rlcam import RlcamConfig

H = W = 32
K = 4
P = K * K
S = H // K  # patch side
LAYERS = dict(pi_layers=(16,), vf_layers=(16,))
WHITE = np.ones((H, W, 3), np.float32)


def patch_region(patches, grid=K):
    """bool[H, W]: the pixels of the listed patches of a ``grid x grid`` split."""
    side = H // grid
    region = np.zeros((H, W), bool)
    for j in patches:
        r, c = divmod(j, grid)
        region[r * side:(r + 1) * side, c * side:(c + 1) * side] = True
    return region


def _region(region, images):
    inside = jnp.sum(images.mean(-1) * region[None], axis=(1, 2)) / jnp.sum(region)
    return jnp.stack([inside, 1.0 - inside], axis=-1)


def region_model(patches):
    """testing.region_model with the broadcast explicit: score 0 = mean intensity in the region."""
    return jax.tree_util.Partial(_region, jnp.asarray(patch_region(patches), jnp.float32))


def linear_patch_model(coefs):
    """Score = Σ_j c_j · (mean intensity of patch j): additive, so ΔF is known by hand."""
    weights = np.zeros((H, W, 3), np.float32)
    for j, c in enumerate(coefs):
        weights[patch_region([j])] = c / (S * S * 3)
    return testing.linear_model(weights)


def _pooled_apply(weights, images):
    # 8 x 8 cell means -> tanh layer -> 3-way softmax: a cheap nonlinear, non-additive model
    w1, w2 = weights
    b = images.shape[0]
    x = images.reshape(b, 8, H // 8, 8, W // 8, 3).mean(axis=(2, 4)).reshape(b, -1)
    return jax.nn.softmax(jnp.tanh(x @ w1) @ w2, axis=-1)


def pooled_model(seed):
    """A 3-class model with traced weights (a ``Partial``), cheap to compile."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    weights = (jax.random.normal(k1, (8 * 8 * 3, 16)) / 8, jax.random.normal(k2, (16, 3)) * 2)
    return jax.tree_util.Partial(_pooled_apply, weights)


# ---------------------------------------------------------------------------------------------
# Environment


def test_config_sizes_and_query_count():
    cfg = RlcamConfig(grid=K)
    assert (cfg.steps, cfg.num_actions, cfg.stop_action, cfg.observation_size) == (8, 33, 32, 83)
    assert RlcamConfig(grid=1).steps == 1
    # 2 + 2P for the empty mask, 2P per step: 2 + 32·(3 + 1)
    assert rlcam.rlcam_num_queries(RlcamConfig(grid=K, horizon=3)) == 130
    assert rlcam.rlcam_num_queries(RlcamConfig()) == 2 + 98 * 25  # 7 x 7, T = 24


def test_reset_and_step_shapes_batched():
    cfg = RlcamConfig(grid=K, horizon=3)
    images = np.stack([WHITE, 0.5 * WHITE])
    params = E.make_env_params(pooled_model(1), images, np.array([0, -1]), config=cfg)
    assert params.targets.shape == (2,) and params.init_look_keep.shape == (2, P)
    keys = jax.random.split(jax.random.key(0), 5)
    obs, state = jax.vmap(E.reset, in_axes=(0, None))(keys, params)
    assert obs.shape == (5, 5 * P + 3) and obs.dtype == jnp.float32
    assert state.mask.shape == (5, P) and state.look_remove.shape == (5, P)
    actions = jnp.array([0, 3, P + 1, 2 * P, 7])
    obs, state, reward, done, info = jax.vmap(E.step, in_axes=(0, 0, 0, None))(
        keys, state, actions, params)
    assert obs.shape == (5, 5 * P + 3) and reward.shape == (5,) and done.shape == (5,)
    assert info["action_mask"].shape == (5, 2 * P + 1)
    np.testing.assert_array_equal(done, [False, False, False, True, False])  # stop ends it
    assert np.all(np.isfinite(obs)) and np.all(np.isfinite(reward))


def _linear_params(action_order):
    coefs = np.zeros(P)
    coefs[[5, 6, 10]] = [0.3, 0.2, 0.1]
    cfg = RlcamConfig(grid=K, horizon=4, size_penalty=0.8, action_order=action_order)
    return E.make_env_params(linear_patch_model(coefs), WHITE, np.array([0]), config=cfg,
                             baseline=0.0)


def test_rewards_and_observation_hand_computed_patch_order():
    # keep(m) = Σ_{j∈m} c_j, remove(m) = Σ_{j∉m} c_j on a white image with a black baseline;
    # λ = 0.8 → λ/P = 0.05.  F(∅) = −0.6; forward j gains 2c_j − 0.05, reverse j −2c_j + 0.05.
    params = _linear_params("patch")
    obs, state = E.reset(jax.random.key(0), params)
    gains = np.zeros(2 * P)
    gains[:P] = -0.05
    gains[[5, 6, 10]] = [0.55, 0.35, 0.15]
    np.testing.assert_allclose(obs[:P], 0.0)  # the mask
    np.testing.assert_allclose(obs[P:3 * P], gains, atol=1e-6)
    np.testing.assert_allclose(obs[3 * P:5 * P], gains / 0.55, atol=1e-6)
    np.testing.assert_allclose(obs[5 * P:], [0.0, 0.6, 0.0], atol=1e-6)  # keep, remove, t/T

    obs, state, r, done, info = E.step(jax.random.key(1), state, 5, params)  # forward 5
    np.testing.assert_allclose(r, 0.55, atol=1e-6)
    np.testing.assert_allclose(info["objective"], 0.3 - 0.3 - 0.05, atol=1e-6)
    gains[5] = 0.0  # no longer allowed forward
    gains[P + 5] = -0.55  # reverse 5
    np.testing.assert_allclose(obs[P:3 * P], gains, atol=1e-6)
    np.testing.assert_allclose(obs[5 * P:], [0.3, 0.3, 0.25], atol=1e-6)
    assert obs[5] == 1.0 and not done and int(info["patch_action"]) == 5

    obs, state, r, done, info = E.step(jax.random.key(2), state, 6, params)  # forward 6
    np.testing.assert_allclose(r, 0.35, atol=1e-6)
    obs, state, r, done, info = E.step(jax.random.key(3), state, P + 5, params)  # reverse 5
    np.testing.assert_allclose(r, -0.55, atol=1e-6)
    np.testing.assert_allclose(info["objective"], 0.2 - 0.4 - 0.05, atol=1e-6)
    assert int(info["size"]) == 1 and not done


def test_rewards_and_observation_hand_computed_rank_order():
    # the same model; forward action k = the k-th largest gain: 5 (.55), 6 (.35), 10 (.15), then
    # the 13 others (−.05) by index; reverse action P + k = the k-th cheapest removal
    params = _linear_params("rank")
    obs, state = E.reset(jax.random.key(0), params)
    gains = np.zeros(2 * P)
    gains[:P] = [0.55, 0.35, 0.15] + [-0.05] * 13
    np.testing.assert_allclose(obs[P:3 * P], gains, atol=1e-6)
    c = E.candidates(state, params.size_penalty, "rank")
    np.testing.assert_array_equal(c.patch_action[:P], [5, 6, 10, 0, 1, 2, 3, 4, 7, 8, 9, 11, 12,
                                                       13, 14, 15])
    np.testing.assert_array_equal(c.valid, [True] * P + [False] * P + [True])

    obs, state, r, _, info = E.step(jax.random.key(1), state, 1, params)  # 2nd best: patch 6
    assert int(info["patch_action"]) == 6
    np.testing.assert_allclose(r, 0.35, atol=1e-6)
    obs, state, r, _, info = E.step(jax.random.key(2), state, 0, params)  # best: patch 5
    assert int(info["patch_action"]) == 5
    np.testing.assert_allclose(r, 0.55, atol=1e-6)
    # reverse ranks: removing 6 costs .35 (gain −.35), removing 5 costs .55
    np.testing.assert_allclose(obs[2 * P:2 * P + 3], [-0.35, -0.55, 0.0], atol=1e-6)
    np.testing.assert_array_equal(E.action_mask(state, params),
                                  [True] * (P - 2) + [False] * 2 + [True] * 2 + [False] * (P - 2)
                                  + [True])
    obs, state, r, _, info = E.step(jax.random.key(3), state, P + 0, params)  # cheapest removal
    assert int(info["patch_action"]) == P + 6
    np.testing.assert_allclose(r, -0.35, atol=1e-6)
    np.testing.assert_array_equal(np.flatnonzero(state.mask), [5])


@pytest.mark.parametrize("action_order", ["rank", "patch"])
def test_reward_is_the_observed_gain(action_order):
    cfg = RlcamConfig(grid=K, horizon=6, action_order=action_order)
    params = E.make_env_params(pooled_model(2), jax.random.uniform(jax.random.key(3), (H, W, 3)),
                               np.array([1]), config=cfg)
    obs, state = E.reset(jax.random.key(0), params)
    actions = [3, 9, P + 0, 12, P + 1] if action_order == "rank" else [3, 9, P + 3, 12, P + 9]
    for t, action in enumerate(actions):
        assert E.action_mask(state, params)[action]
        predicted = obs[P + action]
        obs, state, r, _, _ = E.step(jax.random.key(t), state, action, params)
        np.testing.assert_allclose(r, predicted, rtol=1e-6, atol=1e-7)


def test_action_mask_and_invalid_actions_patch_order():
    cfg = RlcamConfig(grid=K, horizon=8, action_order="patch")
    params = E.make_env_params(region_model([5]), WHITE, np.array([0]), config=cfg, baseline=0.0)
    _, state = E.reset(jax.random.key(0), params)
    mask = np.asarray(E.action_mask(state, params))
    np.testing.assert_array_equal(mask, [True] * P + [False] * P + [True])
    for t, action in enumerate([2, 7]):
        _, state, _, _, info = E.step(jax.random.key(t), state, action, params)
    expected = np.ones(2 * P + 1, bool)
    expected[[2, 7]] = False  # no forward on selected patches
    expected[P:2 * P] = False
    expected[[P + 2, P + 7]] = True  # reverse only on selected patches
    np.testing.assert_array_equal(E.action_mask(state, params), expected)
    np.testing.assert_array_equal(info["action_mask"], expected)
    # a forbidden action is a no-op with reward 0 that costs a step
    before = state
    _, state, r, done, _ = E.step(jax.random.key(5), state, 7, params)  # forward on selected
    assert float(r) == 0.0 and not done and int(state.t) == 3
    np.testing.assert_array_equal(state.mask, before.mask)
    _, state, r, _, _ = E.step(jax.random.key(6), state, P + 4, params)  # reverse on unselected
    assert float(r) == 0.0
    np.testing.assert_array_equal(state.mask, before.mask)


def test_invalid_rank_actions_are_no_ops():
    cfg = RlcamConfig(grid=K, horizon=8)
    params = E.make_env_params(region_model([5]), WHITE, np.array([0]), config=cfg, baseline=0.0)
    _, state = E.reset(jax.random.key(0), params)
    _, state, r, _, _ = E.step(jax.random.key(1), state, P + 0, params)  # nothing to remove
    assert float(r) == 0.0 and not np.any(state.mask) and int(state.t) == 1
    for t in range(P - 1):  # fill all but one patch: only forward rank 0 stays allowed
        state = state._replace(mask=state.mask.at[t].set(True))
    assert E.action_mask(state, params)[:P].tolist() == [True] + [False] * (P - 1)
    before = state.mask
    _, state, r, _, _ = E.step(jax.random.key(2), state, 3, params)
    assert float(r) == 0.0
    np.testing.assert_array_equal(state.mask, before)


def test_auto_reset_at_horizon_and_on_stop():
    cfg = RlcamConfig(grid=K, horizon=3)
    params = E.make_env_params(region_model([5]), np.stack([WHITE, 0.5 * WHITE]),
                               np.array([0, 0]), config=cfg, baseline=0.0)
    obs, state = E.reset(jax.random.key(0), params)
    dones = []
    for t, action in enumerate([1, 2, 3]):
        obs, state, _, done, info = E.step(jax.random.key(10 + t), state, action, params)
        dones.append(bool(done))
    assert dones == [False, False, True] and int(info["t"]) == 3
    assert int(state.t) == 0 and not np.any(state.mask)  # the next episode's state
    np.testing.assert_allclose(obs[:P], 0.0)
    i = int(state.index)
    np.testing.assert_array_equal(state.look_keep, params.init_look_keep[i])
    assert float(state.keep) == float(params.init_keep[i])
    # stop ends at once, reward 0
    _, state, _, _, _ = E.step(jax.random.key(20), state, 5, params)
    obs, state, r, done, _ = E.step(jax.random.key(21), state, 2 * P, params)
    assert bool(done) and float(r) == 0.0 and int(state.t) == 0 and not np.any(state.mask)


def test_lookahead_equals_brute_force_toggling():
    model = pooled_model(3)
    image = jax.random.uniform(jax.random.key(4), (H, W, 3))
    call = jax.jit(lambda f, x: f(x))
    baseline = np.full((H, W, 3), 0.5, np.float32)
    mask = np.zeros(P, bool)
    mask[[0, 5, 6, 15]] = True
    target, lam = 2, 0.7
    look_keep, look_remove = jax.jit(functools.partial(E.lookahead, grid=K, batch_size=7))(
        model, image, baseline, target, jnp.asarray(mask))
    img = np.asarray(image)

    def prob(shown):  # one model query on an explicitly built image
        x = np.where(shown[..., None], img, baseline)
        return float(call(model, jnp.asarray(x)[None])[0, target])

    def big_f(m):
        shown = patch_region(np.flatnonzero(m))
        return prob(shown) - prob(~shown) - lam * m.sum() / P

    for j in range(P):
        toggled = mask.copy()
        toggled[j] = ~toggled[j]
        shown = patch_region(np.flatnonzero(toggled))
        np.testing.assert_allclose(look_keep[j], prob(shown), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(look_remove[j], prob(~shown), rtol=1e-5, atol=1e-6)
    keep, remove = E.masked_pair(model, image, baseline, target, jnp.asarray(mask), grid=K)
    state = E.EnvState(jnp.int32(0), jnp.asarray(mask), keep, remove, look_keep, look_remove,
                       jnp.int32(0))
    brute = [big_f(np.logical_xor(mask, np.arange(P) == j)) - big_f(mask) for j in range(P)]
    np.testing.assert_allclose(E.sensitivity(state, lam, P), brute, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Greedy baseline


def test_greedy_finds_the_region_exactly():
    region = [5, 6, 9, 10]
    cfg = RlcamConfig(grid=K, horizon=8, size_penalty=1.0)
    res = rlcam.rlcam_greedy_explain(jax.random.key(0), region_model(region), WHITE, 0,
                                     config=cfg, baseline=0.0)
    np.testing.assert_array_equal(res.mask, patch_region(region))
    np.testing.assert_array_equal(np.flatnonzero(res.grid_mask), region)
    # four forward steps then stop; queries 2 + 2P + 4·2P (stop queries nothing)
    assert int(res.steps) == 5 and int(res.num_queries) == 2 + 2 * P + 4 * 2 * P
    np.testing.assert_allclose(res.objective, 1.0 - 4 / P, atol=1e-6)
    # leave-one-out credit G(m ∪ j) − G(m \ j), G = keep − remove: 1 − (0.75 − 0.25) in the region
    expected = np.zeros(P)
    expected[region] = 0.5
    np.testing.assert_allclose(res.credit.reshape(-1), expected, atol=1e-6)
    sal = rlcam.rlcam_greedy(jax.random.key(1), region_model(region), WHITE, 0, config=cfg,
                             baseline=0.0)
    assert sal.shape == (H, W) and sal[12, 12] > sal[0, 0]


def _sigmoid_apply(coefs, images):
    # x_j = mean intensity of patch j of a 2 x 2 grid; score 0 = sigmoid(A·x + xᵀBx)
    a, b = coefs
    b_, h, w, _ = images.shape
    x = images.mean(-1).reshape(b_, 2, h // 2, 2, w // 2).mean(axis=(2, 4)).reshape(b_, 4)
    z = x @ a + jnp.einsum("bi,ij,bj->b", x, b, x)
    p = jax.nn.sigmoid(z)
    return jnp.stack([p, 1.0 - p], axis=-1)


A_QUAD = np.array([-0.4, -2.1, 1.2, -0.4], np.float32)
B_QUAD = np.array([[0.0, 1.0, -1.0, 2.8], [0.0, 0.0, -3.9, -2.6], [0.0, 0.0, 0.0, 3.3],
                   [0.0, 0.0, 0.0, 0.0]], np.float32)


def reference_greedy(a, b, lam, horizon):
    """numpy greedy over the enumerated objective of the 2 x 2 sigmoid model (white on black)."""
    g = lambda x: 1.0 / (1.0 + np.exp(-(a @ x + x @ b @ x)))  # noqa: E731
    big_f = lambda m: g(m) - g(1.0 - m) - lam * m.sum() / 4  # noqa: E731
    m, trajectory = np.zeros(4), []
    for _ in range(horizon):
        gains = [big_f(np.where(np.arange(4) == j, 1 - m, m)) - big_f(m) for j in range(4)]
        j = int(np.argmax(gains))
        if gains[j] <= 0:
            trajectory.append("stop")
            break
        trajectory.append(("reverse" if m[j] else "forward", j))
        m[j] = 1 - m[j]
    return m.astype(bool), trajectory


def test_greedy_matches_numpy_reference_with_a_reverse_step():
    m_ref, trajectory = reference_greedy(A_QUAD.astype(float), B_QUAD.astype(float), 0.2, 8)
    # the reference itself: 2, 3, 0 are added, then 2 is removed again
    assert trajectory == [("forward", 2), ("forward", 3), ("forward", 0), ("reverse", 2), "stop"]
    model = jax.tree_util.Partial(_sigmoid_apply, (jnp.asarray(A_QUAD), jnp.asarray(B_QUAD)))
    cfg = RlcamConfig(grid=2, horizon=8, size_penalty=0.2)
    res = rlcam.rlcam_greedy_explain(jax.random.key(0), model, WHITE, 0, config=cfg, baseline=0.0)
    np.testing.assert_array_equal(res.grid_mask.reshape(-1), m_ref)
    assert int(res.steps) == len(trajectory)
    # horizon cut: after 2 steps the mask is {2, 3}
    res = rlcam.rlcam_greedy_explain(jax.random.key(0), model, WHITE, 0,
                                     config=RlcamConfig(grid=2, horizon=2, size_penalty=0.2),
                                     baseline=0.0)
    np.testing.assert_array_equal(np.flatnonzero(res.grid_mask), [2, 3])
    assert int(res.num_queries) == 2 + 8 + 2 * 8


# ---------------------------------------------------------------------------------------------
# Training


TOY_REGION = [5, 6, 9, 10]
TOY = RlcamConfig(grid=K, horizon=5, size_penalty=0.5, **LAYERS)
TOY_TRAIN = rlcam.default_train_config(TOY, num_envs=8, num_updates=30, update_epochs=4,
                                       num_minibatches=2, lr=3e-3, anneal_lr=False)


def _random_return(params, cfg, n=256):
    """Mean return of the uniform policy over valid actions."""
    def episode(key):
        _, state = E.reset(key, params)

        def _step(carry, t):
            state, total, alive = carry
            k = jax.random.fold_in(key, t)
            logits = jnp.where(E.action_mask(state, params), 0.0, -jnp.inf)
            action = jax.random.categorical(k, logits)
            _, state, r, done, _ = E.step(k, state, action, params)
            return (state, total + alive * r, alive & ~done), None

        (_, total, _), _ = jax.lax.scan(_step, (state, 0.0, True), jnp.arange(cfg.steps))
        return total

    return float(jnp.mean(jax.jit(jax.vmap(episode))(jax.random.split(jax.random.key(9), n))))


@pytest.fixture(scope="module")
def toy_params():
    return E.make_env_params(region_model(TOY_REGION), WHITE, np.array([0]), config=TOY,
                             baseline=0.0)


@pytest.fixture(scope="module")
def trained(toy_params, tmp_path_factory):
    out = tmp_path_factory.mktemp("rlcam_full")
    params, metrics = rlcam.train_rlcam(TOY, WHITE[None], np.array([0]), region_model(TOY_REGION),
                                        out, key=jax.random.key(3), train_config=TOY_TRAIN,
                                        baseline=0.0, checkpoint_every=15, progress=False)
    return out, params, metrics


def test_training_beats_a_random_policy(trained, toy_params):
    out, params, metrics = trained
    random_return = _random_return(toy_params, TOY)
    # greedy/optimal: the 4 region patches, F = 1 − 4·0.5/16 from F(∅) = −1: return 1.875
    res = rlcam.rlcam_explain(jax.random.key(0), region_model(TOY_REGION), WHITE, 0, config=TOY,
                              agent_params=params, baseline=0.0)
    learned_return = float(res.objective) + 1.0
    assert learned_return > random_return + 0.5, (learned_return, random_return)
    assert np.mean(metrics["episode_return"][-5:]) > random_return + 0.3
    assert metrics["episode_return"].shape == (TOY_TRAIN.num_updates,)


def test_checkpoint_resume_is_bit_identical(trained, tmp_path):
    _, full, full_metrics = trained
    args = (TOY, WHITE[None], np.array([0]), region_model(TOY_REGION), tmp_path)
    kw = dict(train_config=TOY_TRAIN, baseline=0.0, checkpoint_every=15, progress=False)
    part, _ = rlcam.train_rlcam(*args, key=jax.random.key(3), max_chunks=1, **kw)
    assert not (tmp_path / "agent").exists()
    resumed, resumed_metrics = rlcam.train_rlcam(*args, key=jax.random.key(99), **kw)
    for x, y in zip(jax.tree.leaves(full), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(full_metrics["episode_return"],
                                  resumed_metrics["episode_return"])
    loaded, cfg = rlcam.load_rlcam_agent(tmp_path / "agent")
    assert cfg == TOY
    for x, y in zip(jax.tree.leaves(full), jax.tree.leaves(loaded), strict=True):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="other settings"):  # same out_dir, another config
        rlcam.train_rlcam(RlcamConfig(grid=K, horizon=4, size_penalty=0.5, **LAYERS),
                          *args[1:], key=jax.random.key(3), **kw)


# ---------------------------------------------------------------------------------------------
# Explainer contract


@pytest.fixture(scope="module")
def contract_setup():
    cfg = RlcamConfig(grid=K, horizon=4, batch_size=12, **LAYERS)
    agent = rlcam.init_agent(jax.random.key(2), cfg)
    images = jax.random.uniform(jax.random.key(3), (3, H, W, 3))
    explain = functools.partial(rlcam.rlcam, config=cfg, agent_params=agent)
    return pooled_model(1), cfg, agent, images, explain


def test_contract(contract_setup):
    model_fn, cfg, agent, images, explain = contract_setup
    key = jax.random.key(4)
    sal = explain(key, model_fn, images[0], 1)
    assert sal.shape == (H, W) and sal.dtype == jnp.float32
    assert np.all(np.isfinite(sal)) and np.ptp(np.asarray(sal)) > 0
    np.testing.assert_array_equal(sal, explain(key, model_fn, images[0], 1))
    jitted = jax.jit(explain)(key, model_fn, images[0], 1)
    np.testing.assert_allclose(jitted, sal, rtol=1e-5, atol=1e-6)
    keys = jax.random.split(key, 3)
    targets = jnp.array([0, 1, 2])
    sampled = functools.partial(explain, deterministic=False)
    batched = jax.vmap(sampled, in_axes=(0, None, 0, 0))(keys, model_fn, images, targets)
    for i in range(3):
        np.testing.assert_allclose(batched[i], sampled(keys[i], model_fn, images[i], targets[i]),
                                   rtol=1e-5, atol=1e-6)
    mask = rlcam.rlcam_mask(key, model_fn, images[0], 1, config=cfg, agent_params=agent)
    assert mask.shape == (H, W) and mask.dtype == jnp.bool_


def test_sampled_actions_follow_the_key(contract_setup):
    model_fn, cfg, agent, images, explain = contract_setup
    key = jax.random.key(4)
    runs = [rlcam.rlcam_explain(k, model_fn, images[0], 1, config=cfg, agent_params=agent,
                                deterministic=False) for k in (key, key, jax.random.key(5))]
    np.testing.assert_array_equal(runs[0].saliency, runs[1].saliency)
    assert not np.array_equal(runs[0].grid_mask, runs[2].grid_mask) or not np.array_equal(
        runs[0].saliency, runs[2].saliency)
    # the argmax policy ignores the key
    det = [explain(k, model_fn, images[0], 1) for k in (key, jax.random.key(5))]
    np.testing.assert_array_equal(det[0], det[1])


def test_no_recompile_on_new_weights_key_or_agent(contract_setup):
    model_fn, cfg, agent, images, _ = contract_setup
    explain = functools.partial(rlcam.rlcam_explain, config=cfg)
    first = explain(jax.random.key(0), model_fn, images[0], 0, agent_params=agent,
                    deterministic=False)
    greedy = rlcam.rlcam_greedy_explain(jax.random.key(0), model_fn, images[0], 0, config=cfg)
    new_model = pooled_model(5)
    new_agent = jax.tree.map(lambda x: x + 0.1, agent)
    new_key, image, target = jax.random.key(7), images[1], jnp.asarray(2, jnp.int32)
    with testing.log_compilations() as log:
        other = explain(new_key, new_model, image, target, agent_params=new_agent,
                        deterministic=False)
        other_greedy = rlcam.rlcam_greedy_explain(new_key, new_model, image, target, config=cfg)
        jax.block_until_ready((other, other_greedy))
    assert len(log) == 0, f"{len(log)} compilations"
    assert not np.array_equal(first.saliency, other.saliency)
    assert not np.array_equal(greedy.saliency, other_greedy.saliency)


def test_bad_inputs(contract_setup):
    model_fn, cfg, agent, images, explain = contract_setup
    image = images[0]
    with pytest.raises(ValueError, match="grid"):  # 5 does not divide 32
        rlcam.rlcam_greedy(jax.random.key(0), model_fn, image, 0, config=RlcamConfig(grid=5))
    with pytest.raises(ValueError, match="grid"):
        E.make_env_params(model_fn, image, config=RlcamConfig(grid=3))
    with pytest.raises(ValueError, match="horizon"):
        RlcamConfig(horizon=0)
    with pytest.raises(ValueError, match="size_penalty"):
        RlcamConfig(size_penalty=-0.1)
    with pytest.raises(ValueError, match="size_penalty"):
        RlcamConfig(size_penalty=float("nan"))
    with pytest.raises(ValueError, match="grid"):
        RlcamConfig(grid=0)
    with pytest.raises(ValueError, match="agent_params"):  # an agent of the 4 x 4 grid on 2 x 2
        rlcam.rlcam(jax.random.key(0), model_fn, image, 0,
                    config=RlcamConfig(grid=2, horizon=4, **LAYERS), agent_params=agent)
    with pytest.raises(ValueError, match="agent_params"):  # other layers
        rlcam.rlcam(jax.random.key(0), model_fn, image, 0,
                    config=RlcamConfig(grid=K, horizon=4), agent_params=agent)
    with pytest.raises(ValueError, match="target"):
        explain(jax.random.key(0), model_fn, image, 3)
    with pytest.raises(ValueError, match="image"):
        explain(jax.random.key(0), model_fn, images, 0)
    with pytest.raises(ValueError, match="config"):
        rlcam.rlcam_greedy(jax.random.key(0), model_fn, image, 0, config={"grid": 4})
    with pytest.raises(ValueError, match="targets"):
        E.make_env_params(model_fn, images, np.array([0, 1, 3]), config=cfg)
    with pytest.raises(ValueError, match="layers"):
        rlcam.train_rlcam(cfg, images, None, model_fn, "/nonexistent/never-created",
                          key=jax.random.key(0), train_config=ppo.TrainConfig(num_steps=4))


def test_enumerated_masks_match_the_objective_table():
    # F over all 2^4 masks of the 2 x 2 sigmoid model from masked_pair equals the numpy formula
    model = jax.tree_util.Partial(_sigmoid_apply, (jnp.asarray(A_QUAD), jnp.asarray(B_QUAD)))
    g = lambda x: 1.0 / (1.0 + np.exp(-(A_QUAD @ x + x @ B_QUAD @ x)))  # noqa: E731
    pair = jax.jit(functools.partial(E.masked_pair, grid=2))
    black = np.zeros((H, W, 3), np.float32)
    for bits in itertools.product([0, 1], repeat=4):
        m = np.array(bits, bool)
        keep, remove = pair(model, WHITE, black, 0, jnp.asarray(m))
        np.testing.assert_allclose([keep, remove], [g(m * 1.0), g(1.0 - m)], rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# The output observation (the abstract's): one query a step, no look-ahead

OUT = dict(observation="output", num_classes=2)


def _forced_agent(cfg, forward_bias, reverse_bias, stop_bias):
    """An agent whose logits ignore the observation: ``bias`` decides (masked to valid)."""
    params = rlcam.init_agent(jax.random.key(0), cfg)
    bias = jnp.concatenate([jnp.asarray(forward_bias, jnp.float32),
                            jnp.asarray(reverse_bias, jnp.float32),
                            jnp.asarray([stop_bias], jnp.float32)])
    out = params["params"]["pi_out"]
    new = {"kernel": jnp.zeros_like(out["kernel"]), "bias": bias}
    return {"params": {**params["params"], "pi_out": new}}


def test_output_config_defaults_sizes_and_queries():
    cfg = RlcamConfig(grid=K, horizon=3, **OUT)
    assert cfg.action_order == "patch" and RlcamConfig(grid=K).action_order == "rank"
    assert cfg.observation_size == P + 2 * 2 + 2 and cfg.num_actions == 2 * P + 1
    assert rlcam.rlcam_num_queries(cfg) == 4  # p(b), then one per step


def test_output_env_observation_and_rewards_hand_computed():
    # score 0 = mean intensity of patch 5; white image, black baseline: p(b) = (0, 1), and
    # p(x_m) = (1, 0) as soon as patch 5 is shown.
    cfg = RlcamConfig(grid=K, horizon=3, size_penalty=0.5, **OUT)
    params = E.make_env_params(region_model([5]), WHITE[None], np.array([0]), config=cfg,
                               baseline=np.zeros((H, W, 3), np.float32))
    assert isinstance(params, E.OutputEnvParams)
    np.testing.assert_allclose(params.init_probs, [0.0, 1.0], atol=1e-6)
    obs, state = E.output_reset(jax.random.key(0), params)
    expected = np.concatenate([np.zeros(P), [0, 1], [1, 0], [0, 0]])
    np.testing.assert_allclose(obs, expected, atol=1e-6)
    step = functools.partial(E.output_step, params=params)
    cost = 0.5 / P
    obs, state, r, done, info = step(jax.random.key(1), state, 5)  # add patch 5
    m = np.zeros(P)
    m[5] = 1
    np.testing.assert_allclose(obs, np.concatenate([m, [1, 0], [1, 0], [1, 1 / 3]]), atol=1e-6)
    np.testing.assert_allclose([r, info["objective"]], [1 - cost, 1 - cost], atol=1e-6)
    assert (int(info["queries"]), bool(done)) == (1, False)
    obs, state, r, done, info = step(jax.random.key(2), state, P + 7)  # remove 7: not selected
    np.testing.assert_allclose(r, 0.0, atol=1e-7)
    assert int(info["queries"]) == 0 and int(state.t) == 2
    allowed = np.asarray(E.output_action_mask(state))
    np.testing.assert_array_equal(allowed[[5, P + 5, 7, P + 7, 2 * P]],
                                  [False, True, True, False, True])
    obs, state, r, done, info = step(jax.random.key(3), state, 3)  # add 3: no gain, one cost
    np.testing.assert_allclose(r, -cost, atol=1e-6)
    assert bool(done) and int(info["queries"]) == 1  # horizon 3: auto-reset
    assert int(state.t) == 0 and not np.any(state.mask)
    _, _, r, done, info = step(jax.random.key(4), state, 2 * P)  # stop: no query
    assert bool(done) and int(info["queries"]) == 0 and float(r) == 0.0


def _counting_model(counter):
    def apply(region, images):
        jax.debug.callback(lambda x: counter.append(x.shape[0]), images[:, 0, 0, 0])
        return _region(region, images)

    return jax.tree_util.Partial(apply, jnp.asarray(patch_region([5]), jnp.float32))


@pytest.mark.parametrize("stop_at_once", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_output_query_count_is_exact(stop_at_once):
    cfg = RlcamConfig(grid=K, horizon=5, **OUT, **LAYERS)
    # always add the lowest-index free patch (never stop), or stop at once
    agent = _forced_agent(cfg, -jnp.arange(P) - (100.0 if stop_at_once else 0.0),
                          jnp.full((P,), -1e3), 0.0 if stop_at_once else -1e3)
    counter = []
    model_fn = _counting_model(counter)
    r = rlcam.rlcam_explain(jax.random.key(0), model_fn, WHITE, 0, config=cfg,
                            agent_params=agent, baseline=np.zeros((H, W, 3), np.float32))
    jax.block_until_ready(r)
    counter.clear()
    r = jax.block_until_ready(rlcam.rlcam_explain(
        jax.random.key(1), model_fn, WHITE, 0, config=cfg, agent_params=agent,
        baseline=np.zeros((H, W, 3), np.float32)))
    queries = 1 if stop_at_once else 1 + cfg.steps
    assert sum(counter) == queries == int(r.num_queries)
    assert int(r.steps) == (1 if stop_at_once else cfg.steps)
    expected = np.zeros(P, bool)
    if not stop_at_once:
        expected[:cfg.steps] = True  # patches 0..4, patch 5 never shown
    np.testing.assert_array_equal(np.asarray(r.grid_mask).ravel(), expected)
    np.testing.assert_allclose(r.objective, -cfg.size_penalty * expected.sum() / P, atol=1e-6)


@pytest.mark.slow  # ~10 s: compiles the episode eagerly, jitted and vmapped
def test_output_explainer_jit_and_vmap():
    cfg = RlcamConfig(grid=K, horizon=4, **OUT, **LAYERS)
    model_fn = jax.tree_util.Partial(_region, jnp.asarray(patch_region([5, 6]), jnp.float32))
    agent = rlcam.init_agent(jax.random.key(2), cfg)
    images = jax.random.uniform(jax.random.key(3), (3, H, W, 3))
    explain = functools.partial(rlcam.rlcam_explain, config=cfg, agent_params=agent,
                                deterministic=False)
    key = jax.random.key(4)
    eager = explain(key, model_fn, images[0], 1)
    jitted = jax.jit(explain)(key, model_fn, images[0], 1)
    np.testing.assert_allclose(jitted.saliency, eager.saliency, rtol=1e-5, atol=1e-6)
    assert int(jitted.num_queries) == int(eager.num_queries) <= 1 + cfg.steps
    keys = jax.random.split(key, 3)
    targets = jnp.array([0, 1, 0])
    batched = jax.vmap(explain, in_axes=(0, None, 0, 0))(keys, model_fn, images, targets)
    for i in range(3):
        one = explain(keys[i], model_fn, images[i], targets[i])
        np.testing.assert_allclose(batched.saliency[i], one.saliency, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(batched.grid_mask[i], one.grid_mask)
        assert int(batched.num_queries[i]) == int(one.num_queries)


def test_output_bad_config():
    with pytest.raises(ValueError, match="observation"):
        RlcamConfig(observation="pixels")
    with pytest.raises(ValueError, match="num_classes"):
        RlcamConfig(observation="output")
    with pytest.raises(ValueError, match="num_classes"):
        RlcamConfig(observation="output", num_classes=0)
    with pytest.raises(ValueError, match="action_order"):
        RlcamConfig(observation="output", num_classes=2, action_order="rank")
    cfg = RlcamConfig(grid=K, horizon=2, observation="output", num_classes=3, **LAYERS)
    model_fn = region_model([5])  # 2 classes
    with pytest.raises(ValueError, match="num_classes"):
        E.make_env_params(model_fn, WHITE[None], config=cfg)
    with pytest.raises(ValueError, match="num_classes"):
        rlcam.rlcam(jax.random.key(0), model_fn, WHITE, 0, config=cfg,
                    agent_params=rlcam.init_agent(jax.random.key(0), cfg))
    with pytest.raises(ValueError, match="observation"):
        rlcam.rlcam_greedy(jax.random.key(0), model_fn, WHITE, 0,
                           config=RlcamConfig(grid=K, horizon=2, **OUT))
