"""PPO: GAE and the loss on hand-computed values, a learning run, seeds, checkpoint/resume."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saliency_jax import testing
from saliency_jax._src import rexl_env as rl_env
from saliency_jax._src.rl import checkpoint, networks, ppo

H = W = 16
K = 4


def pool(x):
    b = x.shape[0]
    return x.reshape(b, K, H // K, K, W // K, 3).mean(axis=(2, 4))


def region_params(mode="insertion", **kw):
    """Score = revealed fraction of patch 6 of a white image on black (the toy of the brief)."""
    region = np.zeros((H, W), bool)
    region[4:8, 8:12] = True  # patch (1, 2): action 6
    model = testing.region_model(region)
    return rl_env.make_env_params(model, pool, np.ones((H, W, 3), np.float32), np.array([0]),
                                  grid=K, mode=mode, substrate="baseline", **kw)


TINY = ppo.TrainConfig(num_envs=4, num_steps=16, num_updates=2, update_epochs=2,
                       num_minibatches=2, pi_layers=(16,), vf_layers=(16,))


def test_gae_hand_computed():
    rewards = jnp.array([1.0, 2.0, 3.0])
    values = jnp.array([0.5, 1.0, 1.5])
    dones = jnp.array([False, True, False])
    adv, targets = ppo.gae(rewards, values, dones, jnp.array(2.0), gamma=0.9, lam=0.8)
    # t=2: 3 + 0.9·2 − 1.5 = 3.3; t=1 (done): 2 − 1 = 1;
    # t=0: (1 + 0.9·1 − 0.5) + 0.9·0.8·1 = 2.12
    np.testing.assert_allclose(adv, [2.12, 1.0, 3.3], rtol=1e-6)
    np.testing.assert_allclose(targets, [2.62, 2.0, 4.8], rtol=1e-6)


def test_gae_batched_over_envs_and_lambda_one_is_the_return():
    rewards = jnp.array([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])  # [T=3, envs=2]
    values = jnp.zeros((3, 2))
    dones = jnp.zeros((3, 2), bool)
    adv, _ = ppo.gae(rewards, values, dones, jnp.array([10.0, 0.0]), gamma=1.0, lam=1.0)
    np.testing.assert_allclose(adv, [[13.0, 1.0], [12.0, 1.0], [11.0, 1.0]])


def test_ppo_loss_hand_computed():
    logits = jnp.array([[0.0, 0.0], [math.log(3.0), 0.0]])  # π = (.5, .5) and (.75, .25)
    values = jnp.array([1.0, 3.0])
    actions = jnp.array([0, 0])
    old_log_probs = jnp.log(jnp.array([0.5, 0.5]))  # ratios 1 and 1.5
    old_values = jnp.array([0.5, 2.0])
    advantages = jnp.array([1.0, -1.0])
    targets = jnp.array([2.0, 2.0])
    kw = dict(clip_eps=0.2, vf_coef=0.5, ent_coef=0.01)
    info = ppo.ppo_loss(logits, values, actions, old_log_probs, old_values, advantages, targets,
                        normalize_advantages=False, **kw)
    # policy: −mean(min(1·1, 1·1), min(1.5·−1, 1.2·−1)) = −(1 − 1.5)/2
    np.testing.assert_allclose(info.policy_loss, 0.25, rtol=1e-6)
    # value: ½ mean(max(1, (0.7 − 2)²), max(1, (2.2 − 2)²)) = ½ (1.69 + 1) / 2
    np.testing.assert_allclose(info.value_loss, 0.6725, rtol=1e-6)
    entropy = (math.log(2) - (0.75 * math.log(0.75) + 0.25 * math.log(0.25))) / 2
    np.testing.assert_allclose(info.entropy, entropy, rtol=1e-6)
    np.testing.assert_allclose(info.total, 0.25 + 0.5 * 0.6725 - 0.01 * entropy, rtol=1e-6)
    np.testing.assert_allclose(info.approx_kl, (0.5 - math.log(1.5)) / 2, rtol=1e-5)
    np.testing.assert_allclose(info.clip_frac, 0.5)
    # advantages (1, −1) already have mean 0 and std 1: normalising changes nothing
    normalised = ppo.ppo_loss(logits, values, actions, old_log_probs, old_values, advantages,
                              targets, normalize_advantages=True, **kw)
    np.testing.assert_allclose(normalised.total, info.total, rtol=1e-6)


def test_masked_logits_entropy_and_log_prob():
    logits = networks.mask_logits(jnp.zeros(4), jnp.array([True, False, True, False]))
    np.testing.assert_allclose(networks.entropy(logits), math.log(2), rtol=1e-6)
    np.testing.assert_allclose(networks.log_prob(logits, 2), math.log(0.5), rtol=1e-6)
    assert float(jax.nn.softmax(logits)[1]) == 0.0


def test_network_shapes_and_separate_branches():
    net = networks.ActorCritic(num_actions=5, pi_layers=(8, 4), vf_layers=(6,))
    obs = {"a": jnp.ones((2, 3)), "b": jnp.ones(4)}  # any pytree: flattened to 10 inputs
    params = jax.jit(net.init)(jax.random.key(0), obs)
    logits, value = jax.jit(net.apply)(params, obs)
    assert logits.shape == (5,) and value.shape == ()
    shapes = jax.tree.map(jnp.shape, params["params"])
    assert shapes["pi_0"]["kernel"] == (10, 8) and shapes["vf_0"]["kernel"] == (10, 6)
    assert shapes["pi_out"]["kernel"] == (4, 5) and shapes["vf_out"]["kernel"] == (6, 1)


def test_make_train_smoke_and_vmapped_seeds():
    params = region_params()
    seen = []
    train = ppo.make_train(TINY, callback=lambda step, m: seen.append((step, m["episodes"])))
    runner, metrics = jax.jit(jax.vmap(train, in_axes=(0, None)))(
        jax.random.split(jax.random.key(0), 2), params)
    jax.effects_barrier()
    # progress from inside the compiled loop: once per update and seed
    assert sorted(int(s) for s, _ in seen) == [1, 1, 2, 2]
    for name in ("episode_return", "value_loss", "policy_loss", "entropy", "approx_kl"):
        assert metrics[name].shape == (2, TINY.num_updates)
        assert np.all(np.isfinite(metrics[name]))
    np.testing.assert_array_equal(metrics["episodes"], 4.0)  # 16 steps = 1 episode per env
    assert runner.train_state.step.tolist() == [2, 2]
    # different seeds, different networks
    kernels = runner.train_state.params["params"]["pi_0"]["kernel"]
    assert not np.array_equal(kernels[0], kernels[1])


def random_policy_return(params, episodes=256):
    """Mean return of uniformly random actions, measured in the environment."""

    @jax.jit
    def run(key):
        obs, state = rl_env.reset(key, params)

        def body(state, k):
            k_a, k_s = jax.random.split(k)
            a = jax.random.randint(k_a, (), 0, K * K)
            _, state, r, _, _ = rl_env.step(k_s, state, a, params)
            return state, r

        return jax.lax.scan(body, state, jax.random.split(key, K * K))[1].sum()

    return float(jnp.mean(jax.vmap(run)(jax.random.split(jax.random.key(7), episodes))))


# One config for the learning run and the checkpoint test, so that they share compilations.
LEARN = ppo.TrainConfig(num_envs=8, num_steps=16, num_updates=16, update_epochs=2,
                        num_minibatches=2, lr=3e-3, pi_layers=(32,), vf_layers=(32,))


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """An uninterrupted run of LEARN on the region toy, in chunks of 8 updates."""
    out = tmp_path_factory.mktemp("rl") / "full"
    params, metrics = checkpoint.train_agent(LEARN, region_params(), out, key=jax.random.key(3),
                                             checkpoint_every=8, progress=False)
    return out, params, metrics


def test_training_beats_a_random_policy(learned):
    _, _, metrics = learned
    random_return = random_policy_return(region_params())
    # analytic: Σ_t P(patch 6 revealed by step t) = Σ_t 1 − (15/16)^t ≈ 6.3
    np.testing.assert_allclose(random_return, sum(1 - (15 / 16) ** t for t in range(1, 17)),
                               atol=0.5)
    final = float(np.mean(metrics["episode_return"][-3:]))
    # the best policy reveals patch 6 first: return 16
    assert final > random_return + 5.0, (final, random_return)


def test_checkpoint_resume_is_bit_identical(learned, tmp_path):
    full_dir, full, full_metrics = learned
    params = region_params()
    part, _ = checkpoint.train_agent(LEARN, params, tmp_path, key=jax.random.key(3),
                                     checkpoint_every=8, progress=False, max_chunks=1)
    assert not (tmp_path / "agent").exists()
    assert not all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(part),
                                                          jax.tree.leaves(full), strict=True))
    # a fresh call resumes from the update-8 checkpoint (its key argument is not used)
    resumed, resumed_metrics = checkpoint.train_agent(
        LEARN, params, tmp_path, key=jax.random.key(99), checkpoint_every=8, progress=False)
    for x, y in zip(jax.tree.leaves(full), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(x, y)
    for name in ("episode_return", "value_loss", "policy_loss"):
        np.testing.assert_array_equal(full_metrics[name], resumed_metrics[name])
        assert full_metrics[name].shape == (LEARN.num_updates,)
    # the saved agent round-trips
    loaded, meta = checkpoint.load_agent(tmp_path / "agent")
    for x, y in zip(jax.tree.leaves(loaded), jax.tree.leaves(full), strict=True):
        np.testing.assert_array_equal(x, y)
    assert meta["env"]["grid"] == K and meta["env"]["mode"] == "insertion"
    assert meta["num_actions"] == K * K
    assert (full_dir / "metrics.json").exists() and (tmp_path / "metrics.json").exists()
    # another config in the same folder is refused
    with pytest.raises(ValueError, match="different run"):
        checkpoint.train_agent(ppo.TrainConfig(**{**LEARN.to_dict(), "lr": 1e-3}), params,
                               tmp_path, key=jax.random.key(3), progress=False)


def test_stop_early_packages_the_latest_checkpoint(tmp_path):
    # a time-boxed run: one chunk of 8 of LEARN's 16 updates, then stop_early with no chunk more
    params = region_params()
    part, _ = checkpoint.train_agent(LEARN, params, tmp_path, key=jax.random.key(3),
                                     checkpoint_every=8, progress=False, max_chunks=1)
    assert not (tmp_path / "agent").exists()
    stopped, metrics = checkpoint.train_agent(LEARN, params, tmp_path, key=jax.random.key(3),
                                              checkpoint_every=8, progress=False, max_chunks=0,
                                              stop_early=True)
    assert metrics["episode_return"].shape == (8,)
    loaded, meta = checkpoint.load_agent(tmp_path / "agent")
    for x, y, z in zip(jax.tree.leaves(loaded), jax.tree.leaves(stopped), jax.tree.leaves(part),
                       strict=True):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)
    assert meta["updates_done"] == 8
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert (summary["updates"], summary["scheduled_updates"], summary["stopped_early"]) == (
        8, 16, True)


def test_stop_early_before_any_update_saves_nothing(tmp_path):
    checkpoint.train_agent(LEARN, region_params(), tmp_path, key=jax.random.key(3),
                           checkpoint_every=8, progress=False, max_chunks=0, stop_early=True)
    assert not (tmp_path / "agent").exists() and not (tmp_path / "metrics.json").exists()


def test_bad_config():
    with pytest.raises(ValueError, match="num_minibatches"):
        ppo.TrainConfig(num_envs=3, num_steps=5, num_minibatches=2)
    with pytest.raises(ValueError, match="num_envs"):
        ppo.TrainConfig(num_envs=0)
    with pytest.raises(ValueError, match="gamma"):
        ppo.TrainConfig(gamma=1.5)
    with pytest.raises(ValueError, match="checkpoint_every"):
        checkpoint.train_agent(TINY, region_params(), "/tmp/unused-rl-run", key=jax.random.key(0),
                               checkpoint_every=0)
