"""Anytime RISE: the map and the stop against a float64 numpy port of the estimator and its
criterion (plain and with the control variate), exact stops, equality with fixed-N RISE at
tolerance 0, batch-size / jit / vmap / device independence, progress."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saliency_jax import masks
from saliency_jax._src import rise as rise_module
from saliency_jax._src.rise import RiseConfig, rise
from saliency_jax._src.rise_anytime import RiseAnytimeConfig, rise_anytime

REPO = Path(__file__).resolve().parents[1]
HW = (16, 16)
CFG = RiseAnytimeConfig(max_masks=384, grid=4, p_keep=0.5, batch_size=16, check_every=32,
                        min_masks=64, tolerance=0.0, control_variate=False)
CV = dataclasses.replace(CFG, control_variate=True)


def _region_apply(region, images):
    inside = jnp.sum(images.mean(-1) * region[None], axis=(1, 2)) / jnp.sum(region)
    return jnp.stack([inside, 1.0 - inside], axis=-1)


@pytest.fixture(scope="module")
def problem():
    region = np.zeros(HW, np.float32)
    region[3:9, 5:12] = 1.0
    image = np.random.default_rng(0).uniform(0.5, 1.0, (*HW, 3)).astype(np.float32)
    return jax.tree_util.Partial(_region_apply, jnp.asarray(region)), region, image


class _Block(NamedTuple):
    n: int
    r: float  # r_n, 0 where exact
    s: np.ndarray
    exact: bool  # se at float32's resolution of the map: the scores did not vary


def _region_scores(region, image, mask_set):
    grey = image.astype(np.float64).mean(-1)
    return (mask_set * grey * region).sum((1, 2)) / region.sum()  # baseline 0: I*M


def _masks64(key, cfg, hw=HW):
    return np.asarray(masks.generate_rise_masks(
        key, cfg.max_masks, grid=cfg.grid, p_keep=cfg.p_keep, image_hw=hw), np.float64)


def _numpy_relative_errors(scores, mask_set, cfg):
    """``_Block(n, r_n, S_n, exact)`` at every block end, in float64, from the masks' scores and
    the definitions of the estimator and its criterion (not from the code under test's running
    moments)."""
    out = []
    for n in range(cfg.check_every, cfg.max_masks + 1, cfg.check_every):
        f, m = scores[:n], mask_set[:n]
        if cfg.control_variate:  # f̄ + sample Cov(f, M) / p, contributions (f - f̄) M / p
            u = (f - f.mean())[:, None, None] * m / cfg.p_keep
            s = f.mean() + np.einsum("n,nhw->hw", f - f.mean(), m) / ((n - 1) * cfg.p_keep)
        else:
            u = f[:, None, None] * m / cfg.p_keep
            s = u.mean(0)
        centred = u - u.mean((1, 2), keepdims=True)
        se_sq = centred.var(0, ddof=1).sum() / n
        exact = bool(se_sq <= 1e-10 * np.sum(s * s))
        r = 0.0 if exact else float(np.sqrt(se_sq) / np.linalg.norm(s - s.mean()))
        out.append(_Block(n, r, s, exact))
    return out


def _numpy_stop(blocks, cfg):
    """The stop rule: the first block with ``n >= min_masks``, scores that varied (an exact
    block is no evidence) and ``1 - sqrt(1 - r²) < tolerance``, else the last one."""
    threshold = cfg.tolerance * (2.0 - cfg.tolerance)
    return next((b for b in blocks if b.n >= cfg.min_masks and not b.exact
                 and b.r * b.r < threshold), blocks[-1])


def _one_minus_correlation(r):
    return 1.0 - np.sqrt(1.0 - r * r)


@pytest.mark.parametrize("base", [CFG, CV], ids=["plain", "control_variate"])
def test_tolerance_zero_is_fixed_n_rise(key, problem, base):
    model_fn, _, image = problem
    out = rise_anytime(key, model_fn, image, 0, config=base, baseline=0.0)
    fixed = rise(key, model_fn, image, 0, baseline=0.0, config=RiseConfig(
        num_masks=CFG.max_masks, grid=CFG.grid, p_keep=CFG.p_keep, batch_size=CFG.batch_size,
        control_variate=base.control_variate))
    assert int(out.num_masks) == CFG.max_masks
    np.testing.assert_allclose(np.asarray(out.saliency), np.asarray(fixed), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("base", [CFG, CV], ids=["plain", "control_variate"])
def test_stops_at_the_first_block_under_the_tolerance(key, problem, base):
    model_fn, region, image = problem
    errors = _numpy_relative_errors(_region_scores(region, image, _masks64(key, base)),
                                    _masks64(key, base), base)
    # A block whose error is under every earlier one past min_masks: put the tolerance between.
    eligible = [(n, r, s) for n, r, s, exact in errors if n >= base.min_masks and not exact]
    stop = next(i for i in range(1, len(eligible))
                if eligible[i][1] < min(r for _, r, _ in eligible[:i]) - 1e-3)
    r_mid = (eligible[stop][1] + min(r for _, r, _ in eligible[:stop])) / 2
    cfg = dataclasses.replace(base, tolerance=_one_minus_correlation(r_mid))
    out = rise_anytime(key, model_fn, image, 0, config=cfg, baseline=0.0)
    n, r, s = eligible[stop]
    assert _numpy_stop(errors, cfg).n == n  # the port of the rule agrees with the construction
    assert int(out.num_masks) == n < base.max_masks
    np.testing.assert_allclose(float(out.relative_error), r, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(out.saliency), s, rtol=1e-5, atol=1e-6)


def test_the_control_variate_removes_noise_without_moving_the_map(key, problem):
    model_fn, region, image = problem
    mask_set = _masks64(key, CFG)
    scores = _region_scores(region, image, mask_set)
    plain = _numpy_relative_errors(scores, mask_set, CFG)
    cv = _numpy_relative_errors(scores, mask_set, CV)
    # Same masks, same expectation: the two centred maps converge to one another ...
    gap = [np.linalg.norm(a[2] - a[2].mean() - b[2] + b[2].mean())
           / np.linalg.norm(b[2] - b[2].mean()) for a, b in zip(plain, cv, strict=True)]
    assert gap[-1] < gap[0] / 3
    # ... and from min_masks on, the control variate's error is less than half plain RISE's.
    assert all(c[1] < p[1] / 2 for p, c in zip(plain, cv, strict=True) if c[0] >= CV.min_masks)
    full = rise_anytime(key, model_fn, image, 0, config=CV, baseline=0.0)
    np.testing.assert_allclose(np.asarray(full.saliency), cv[-1][2], rtol=1e-5, atol=1e-6)


# A step model with rare hits (issue 30 item 1): 0.3, or 1.0 when the 8 x 8 box in the centre
# of a 32 x 32 image is more than 97 % visible (about 1.4 % of the masks). Of keys 0..39, key 19
# is the one whose first 500 masks never uncover the box: constant scores, zero sample variance.
STEP_CFG = RiseAnytimeConfig(max_masks=8000, grid=7, p_keep=0.5, batch_size=250,
                             check_every=250, min_masks=500, tolerance=0.04)
STEP_KEY = 19


def _step_apply(images):
    visible = images[:, 12:20, 12:20].mean((1, 2, 3))
    score = 0.3 + 0.7 * (visible > 0.97).astype(jnp.float32)
    return jnp.stack([score, 1.0 - score], axis=-1)


def test_constant_scores_from_rare_hits_are_no_evidence_of_convergence():
    key, image = jax.random.key(STEP_KEY), jnp.ones((32, 32, 3))
    mask_set = _masks64(key, STEP_CFG, (32, 32))
    scores = np.asarray(_step_apply(jnp.asarray(mask_set[..., None] * np.ones(3), jnp.float32)),
                        np.float64)[:, 0]
    hits = scores > 0.5
    assert not hits[:STEP_CFG.min_masks].any() and 0.01 < hits.mean() < 0.02  # the case
    blocks = _numpy_relative_errors(scores, mask_set, STEP_CFG)
    assert blocks[STEP_CFG.min_masks // STEP_CFG.check_every - 1].exact
    expected = _numpy_stop(blocks, STEP_CFG)
    out = rise_anytime(key, jax.tree_util.Partial(_step_apply), image, 0, config=STEP_CFG,
                       baseline=0.0)
    assert STEP_CFG.min_masks < int(out.num_masks) == expected.n < STEP_CFG.max_masks
    np.testing.assert_allclose(float(out.relative_error), expected.r, rtol=1e-3)
    assert expected.r > 0.2  # an honest r_n: just under the 0.28 that tolerance 0.04 asks for
    # ... and a map that has converged: the other 39 keys give 0.955-0.98 with this reference.
    reference = rise(jax.random.key(10_000), jax.tree_util.Partial(_step_apply), image, 0,
                     baseline=0.0, config=RiseConfig(num_masks=100_000, batch_size=2000,
                                                     control_variate=True))
    assert np.corrcoef(np.ravel(out.saliency), np.ravel(reference))[0, 1] > 0.95


def test_the_control_variate_map_of_a_constant_score_is_exact_after_max_masks(key, problem):
    _, _, image = problem
    flat = jax.tree_util.Partial(lambda w, x: jnp.ones((x.shape[0], 2)) * w, jnp.float32(0.3))
    cfg = dataclasses.replace(CV, tolerance=0.99)  # any r_n would do; constant scores never stop
    out = rise_anytime(key, flat, image, 0, config=cfg)
    assert int(out.num_masks) == CV.max_masks and float(out.relative_error) == 0.0
    np.testing.assert_allclose(np.asarray(out.saliency), 0.3, rtol=1e-5)


def test_an_exact_map_runs_to_max_masks_and_so_does_a_flat_one(key, problem):
    _, _, image = problem
    zero = jax.tree_util.Partial(lambda w, x: jnp.zeros((x.shape[0], 2)) * w, jnp.float32(1.0))
    cfg = dataclasses.replace(CFG, tolerance=0.99)
    out = rise_anytime(key, zero, image, 0, config=cfg)
    assert int(out.num_masks) == CFG.max_masks  # no error at all, and no evidence either
    assert float(out.relative_error) == 0.0 and not np.any(np.asarray(out.saliency))
    # Scores that ignore the image: the true map is flat, all its variation is noise (r ≈ 1).
    flat = jax.tree_util.Partial(lambda w, x: jnp.ones((x.shape[0], 2)) * w, jnp.float32(0.5))
    out = rise_anytime(key, flat, image, 0, config=dataclasses.replace(CFG, tolerance=0.1))
    assert int(out.num_masks) == CFG.max_masks
    assert 0.6 < float(out.relative_error) < 1.5


@pytest.mark.slow
def test_result_does_not_depend_on_batch_size(key, problem):
    model_fn, _, image = problem
    cfg = dataclasses.replace(CV, tolerance=0.05)
    outs = [rise_anytime(key, model_fn, image, 0, baseline=0.0,
                         config=dataclasses.replace(cfg, batch_size=b)) for b in (5, 16, 32, 64)]
    assert CFG.min_masks < int(outs[0].num_masks) < CFG.max_masks  # the case stops early
    for out in outs[1:]:
        assert int(out.num_masks) == int(outs[0].num_masks)
        np.testing.assert_allclose(np.asarray(out.saliency), np.asarray(outs[0].saliency),
                                   rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_jit_equals_eager_and_vmap_equals_loop(key, problem):
    model_fn, _, image = problem
    cfg = dataclasses.replace(CV, max_masks=128, tolerance=0.15, min_masks=32)
    out = rise_anytime(key, model_fn, image, 0, config=cfg, baseline=0.0)
    jitted = jax.jit(lambda k, x: rise_anytime(k, model_fn, x, 0, config=cfg, baseline=0.0))(
        key, image)
    with jax.disable_jit():
        eager = rise_anytime(key, model_fn, image, 0, config=cfg, baseline=0.0)
    for other in (jitted, eager):
        assert int(other.num_masks) == int(out.num_masks)
        np.testing.assert_allclose(np.asarray(other.saliency), np.asarray(out.saliency),
                                   rtol=1e-5, atol=1e-7)
    images = jnp.stack([image, jnp.full(HW + (3,), 0.2), image[::-1]])
    keys = jax.random.split(key, 3)
    batched = jax.vmap(lambda k, x: rise_anytime(k, model_fn, x, 0, config=cfg, baseline=0.0))(
        keys, images)
    for i in range(3):
        one = rise_anytime(keys[i], model_fn, images[i], 0, config=cfg, baseline=0.0)
        assert int(batched.num_masks[i]) == int(one.num_masks)
        np.testing.assert_allclose(np.asarray(batched.saliency[i]), np.asarray(one.saliency),
                                   rtol=1e-5, atol=1e-7)


def test_progress_reports_every_chunk_and_is_absent_when_none(key, problem):
    model_fn, _, image = problem
    calls = []
    out = rise_anytime(key, model_fn, image, 0, config=dataclasses.replace(CFG, tolerance=0.2),
                       baseline=0.0, progress=lambda done, total: calls.append((done, total)))
    jax.effects_barrier()
    used = int(out.num_masks)
    assert calls == [(CFG.batch_size * (i + 1), CFG.max_masks)
                     for i in range(used // CFG.batch_size)]
    fixed = RiseConfig(num_masks=40, grid=4, batch_size=16)
    calls.clear()
    jax.block_until_ready(rise(key, model_fn, image, 0, config=fixed,
                               progress=lambda d, t: calls.append((d, t))))
    jax.effects_barrier()
    assert calls == [(16, 40), (32, 40), (40, 40)]

    def lowered(call_id):
        return str(jax.jit(lambda i: rise_module._rise_target(
            key, model_fn, jnp.asarray(image), 0, jnp.float32(0.0), jnp.float32(0.5), i,
            num_masks=40, grid=4, batch_size=16)).lower(call_id).as_text())

    assert "callback" in lowered(jnp.int32(3)) and "callback" not in lowered(None)


def test_progress_and_config_reject_bad_values(key, problem):
    model_fn, _, image = problem
    with pytest.raises(ValueError, match="progress"):
        rise_anytime(key, model_fn, image, 0, config=CFG, progress=3)
    with pytest.raises(ValueError, match="progress"):
        rise(key, model_fn, image, 0, config=RiseConfig(num_masks=8, grid=2), progress="bar")
    with pytest.raises(ValueError, match="config"):
        rise_anytime(key, model_fn, image, 0, config=RiseConfig())
    for kwargs, match in [(dict(tolerance=float("inf")), "tolerance"),
                          (dict(tolerance=-0.1), "tolerance"),
                          (dict(tolerance="x"), "tolerance"), (dict(tolerance=1.5), "tolerance"),
                          (dict(check_every=0), "check_every"),
                          (dict(min_masks=0), "min_masks"), (dict(max_masks=1.5), "max_masks"),
                          (dict(p_keep=0.0), "p_keep"), (dict(grid=0), "grid"),
                          (dict(control_variate=1), "control_variate")]:
        with pytest.raises(ValueError, match=match):
            RiseAnytimeConfig(**kwargs)
    with pytest.raises(ValueError, match="grid"):
        rise_anytime(key, model_fn, image, 0, config=dataclasses.replace(CFG, grid=32))
    with pytest.raises(ValueError, match="target"):
        rise_anytime(key, model_fn, image, 2, config=CFG)


_MULTI_DEVICE_SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax, numpy as np
    sys.path.insert(0, sys.argv[1])
    from test_rise_anytime import multi_device_result
    assert jax.device_count() == 4, jax.devices()
    np.savez(sys.argv[2], **multi_device_result())
    """
)


def multi_device_result():
    region = np.zeros(HW, np.float32)
    region[3:9, 5:12] = 1.0
    model_fn = jax.tree_util.Partial(_region_apply, jnp.asarray(region))
    image = np.random.default_rng(0).uniform(0.5, 1.0, (*HW, 3)).astype(np.float32)
    cfg = dataclasses.replace(CV, tolerance=0.05, batch_size=8)
    fn = jax.jit(lambda x: rise_anytime(jax.random.key(0), model_fn, x, 0, config=cfg,
                                        baseline=0.0))
    compiled = fn.lower(image).compile()
    out = compiled(image)
    return dict(saliency=np.asarray(out.saliency), num_masks=np.asarray(out.num_masks),
                all_reduce=np.array("all-reduce" in compiled.as_text()))


@pytest.mark.slow
def test_one_and_four_devices_give_the_same_result(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(_MULTI_DEVICE_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("XLA_FLAGS", None)
    subprocess.run([sys.executable, str(script), str(Path(__file__).parent),
                    str(tmp_path / "out.npz")], cwd=REPO, env=env, check=True, timeout=300)
    four, one = np.load(tmp_path / "out.npz"), multi_device_result()
    assert four["all_reduce"]
    assert int(four["num_masks"]) == int(one["num_masks"]) < CFG.max_masks
    np.testing.assert_allclose(four["saliency"], one["saliency"], rtol=1e-5, atol=1e-7)


def test_the_defaults_are_the_benchmarked_configuration():
    # The documented saving (5.5x fewer masks than fixed N = 4000) was measured with these.
    stored = json.loads((REPO / "benchmarks" / "results" / "rise_anytime.json").read_text())
    default = RiseAnytimeConfig()
    for name in ("max_masks", "check_every", "min_masks", "tolerance", "grid", "p_keep",
                 "control_variate"):
        assert getattr(default, name) == stored["config"][name], name
    assert default.check_every % default.batch_size == 0  # no padding masks
