"""RExL: saliency from the trajectory of a trained patch-visiting agent (Agarwal et al., 2021).

The agent (trained with :mod:`saliency_jax.rl`) plays one episode of the RExL environment
(:mod:`saliency_jax._src.rexl_env`) on the image: ``k²`` steps, each removing (deletion) or revealing
(insertion) one of ``k x k`` patches and querying the black box once. The map is formed from the
trajectory exactly as the reference ``evaluate.py`` (l.179–213; METHODS §3.4)::

    sal = 0; uncov = 0; old = -p_0 (deletion) or 0 (insertion)
    for t = 1..k²:  r_t = ±p_c(canvas_t) (+1 for insertion);  uncov[a_t] = 1
                    sal += (r_t − old)·uncov;  old = r_t

which telescopes, for a cell first visited at step ``t_c``, to ``p_{t_c−1} − p_{k²}``
(deletion, ``p_0`` the original's probability) or ``p_{k²} − p_{t_c−1}`` (insertion; the first
cell gets ``p_{k²} + 1``); unvisited cells are 0.

Normalisation (``RexlConfig.normalisation``):

* ``"minmax"`` (default): ``(sal − min) / (max − min)``, in [0, 1]; a constant map becomes 0.
* ``"reference"``: the code's deletion ``(sal − min) / max`` (sic: divided by the max, not by
  max − min, so values can exceed 1) and insertion ``sal / max``. Divided by a negative max, the
  code's map is the *inverse* of the trajectory's ranking: a deletion episode that visits every
  cell while the probability keeps rising (possible on the noise substrate) has all cells below
  0. Here the divisor is ``|max|`` (1 when it is 0, where the code divides by zero), so the
  ranking is never flipped; where ``max > 0`` this is the code's map exactly. (Insertion's first
  cell holds ``p_{k²} + 1 > 0``: its max is always positive.)

For ``max > 0`` both give the same ranking of cells; they differ in scale only.

Policy term (``RexlConfig.policy_weight = w``, default 0: the code's map): the agent's own
ranking of the cells, its first-step logits ``l_0`` (the policy on the original image: which
patch to remove, or reveal, first), is added to the trajectory map::

    sal = (sal_traj + w · minmax(l_0)) / (1 + w)

No extra query (the first step's policy pass is already made). It breaks the trajectory map's
ties (every cell visited after the probability has collapsed, and every unvisited one, gets
``≈ 0``) and smooths over a single sampled episode. Not in the paper or its code: an inference
choice, selected on the validation split (``benchmarks/bench_rexl.py``); the packaged agents
record theirs in ``agent.json`` (``inference``).

Rollouts (``RexlConfig.num_rollouts = R``, ``horizon = T``; default 1 and ``k²``: the code's
single episode): ``R`` episodes of ``T`` steps each, from independent keys (their own substrate
and actions), played side by side (one batched pass of ``R`` canvases a step); the map is the
mean of their normalised trajectory maps (and of their first-step policy terms). With sampled
actions this averages out the noise of one sampled episode at ``1 + R·T`` queries. Not in the
paper or its code: an inference choice, like the policy term.

The ``k x k`` map is then up-sampled to the image with the mirror-boundary bilinear matrix of
:mod:`saliency_jax.masks` (= skimage ``resize(order=1, mode='reflect')``, as the code).

Actions: ``deterministic=True`` takes the argmax of the policy (the paper's "deterministic
policy"); ``False`` samples, as ``evaluate.py`` does with SB2's default ``predict``. Where
revisits are allowed (the reference MDP, ``mask_visited=False``), a revisit leaves the canvas and
so the observation unchanged, and an argmax policy then repeats that action to the end of the
episode; sampling, the code's choice, does not get stuck.

Cost: ``1 + R·T`` black-box queries (the original, then one per step of each rollout; ``1 + k²``
by default) — :func:`rexl_num_queries`.
With ``fused_fn`` (the encoder is the black box's trunk: one pass gives the scores and the
features) that is also all the network passes: the original's pass gives ``p_0`` and the first
state, each step's pass its reward and the next state (+1 trunk pass for insertion, the first
canvas). Without it every step adds a ``features_fn`` pass. Plus ``k²`` policy passes.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax._src import masks, sharding, validation
from saliency_jax._src import rexl_env as rl_env
from saliency_jax._src.model_fn import ModelFn, as_pytree_fn
from saliency_jax._src.rl import networks


NORMALISATIONS = ("minmax", "reference")
EPISODE_MAPS = ("trajectory", "first_visit")


@dataclasses.dataclass(frozen=True)
class RexlConfig:
    """The static settings of a RExL agent; they must match those it was trained with.

    Attributes:
      grid: patches per side ``k`` (7 in the paper's code); must divide the image.
      mode: ``"deletion"`` (the code's default) or ``"insertion"``.
      substrate: ``"noise"`` (the code's ``U[−0.5, 0.5)`` in normalised space, drawn from ``key``)
        or ``"baseline"`` (the mean colour).
      mask_visited: forbid revisiting a patch (off in the code).
      normalisation: ``"minmax"`` (default) or ``"reference"`` (the code's, with its sign
        inversion guarded; module doc). Not a training setting.
      policy_weight: the weight ``w >= 0`` of the first-step policy term (module doc); 0, the
        code's map, by default. Not a training setting.
      num_rollouts: episodes ``R >= 1`` whose maps are averaged (module doc); 1, the code's, by
        default. Not a training setting.
      horizon: steps ``T`` of each episode, ``1 <= T <= k²``; ``None`` (default) is ``k²``, the
        code's. Not a training setting.
      episode_map: how an episode becomes a map: ``"trajectory"`` (default), the code's
        score-change credit (:func:`trajectory_saliency`), or ``"first_visit"``, the agent's
        order itself (:func:`first_visit_saliency`). Not a training setting.
      num_class_planes: one-hot class planes in the observation (dataset-wide agents), else 0.
      stage: the ``features_fn`` stage; ``None`` for its last.
      pi_layers, vf_layers: the actor-critic's hidden widths.
    """

    grid: int = 7
    mode: str = "deletion"
    substrate: str = "noise"
    mask_visited: bool = False
    normalisation: str = "minmax"
    policy_weight: float = 0.0
    num_rollouts: int = 1
    horizon: int | None = None
    episode_map: str = "trajectory"
    num_class_planes: int = 0
    stage: str | None = None
    pi_layers: tuple[int, ...] = (256, 128)
    vf_layers: tuple[int, ...] = (256, 128)

    def __post_init__(self):
        if not isinstance(self.grid, int) or isinstance(self.grid, bool) or self.grid < 1:
            raise ValueError(f"grid must be an integer >= 1, got {self.grid!r}")
        rl_env.check_mode(self.mode)
        rl_env.check_substrate(self.substrate)
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got "
                             f"{self.normalisation!r}")
        weight = self.policy_weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (
                np.isfinite(weight) and weight >= 0):
            raise ValueError(f"policy_weight must be a finite number >= 0, got {weight!r}")
        object.__setattr__(self, "policy_weight", float(weight))
        if isinstance(self.num_rollouts, bool) or not isinstance(self.num_rollouts, int) or (
                self.num_rollouts < 1):
            raise ValueError(f"num_rollouts must be an integer >= 1, got {self.num_rollouts!r}")
        if self.horizon is not None and (
                isinstance(self.horizon, bool) or not isinstance(self.horizon, int)
                or not 1 <= self.horizon <= self.grid ** 2):
            raise ValueError(f"horizon must be None or an integer in [1, grid² = "
                             f"{self.grid ** 2}], got {self.horizon!r}")
        if self.episode_map not in EPISODE_MAPS:
            raise ValueError(f"episode_map must be one of {EPISODE_MAPS}, got "
                             f"{self.episode_map!r}")
        object.__setattr__(self, "pi_layers", tuple(int(n) for n in self.pi_layers))
        object.__setattr__(self, "vf_layers", tuple(int(n) for n in self.vf_layers))

    @property
    def steps(self) -> int:
        """Steps per episode: ``horizon``, or ``k²`` when it is ``None``."""
        return self.grid ** 2 if self.horizon is None else self.horizon

    @classmethod
    def from_agent_meta(cls, meta: dict, **overrides) -> RexlConfig:
        """The config of an agent saved by :func:`saliency_jax.rl.train_agent`, with the inference
        settings its ``agent.json`` records under ``inference`` (e.g. ``policy_weight``) and then
        ``overrides`` (settings that are not the agent's, e.g. ``normalisation``)."""
        env, train = meta["env"], meta["train_config"]
        inference = {k: v for k, v in meta.get("inference", {}).items()
                     if k in ("normalisation", "policy_weight", "num_rollouts", "horizon",
                              "episode_map")}
        return cls(**{**dict(grid=env["grid"], mode=env["mode"], substrate=env["substrate"],
                             mask_visited=env["mask_visited"],
                             num_class_planes=env["num_class_planes"], stage=env["stage"],
                             pi_layers=tuple(train["pi_layers"]),
                             vf_layers=tuple(train["vf_layers"])), **inference, **overrides})


DEFAULT_CONFIG = RexlConfig()


def _network(config: RexlConfig) -> networks.ActorCritic:
    return networks.ActorCritic(config.grid ** 2, config.pi_layers, config.vf_layers)


def rexl_num_queries(config: RexlConfig = DEFAULT_CONFIG) -> int:
    """Black-box queries per explanation: ``1 + R·T`` (``1 + k²`` by default)."""
    return 1 + config.num_rollouts * config.steps


def load_rexl_agent(path) -> tuple[dict, RexlConfig]:
    """``(agent_params, config)`` of an agent folder written by ``train_agent``."""
    from saliency_jax._src.rl import checkpoint

    params, meta = checkpoint.load_agent(path)
    return params, RexlConfig.from_agent_meta(meta)


def trajectory_saliency(actions, scores, initial_score, *, grid: int, mode: str,
                        normalisation: str = "minmax") -> jax.Array:
    """The normalised ``f32[k, k]`` map of one trajectory, as the reference ``evaluate.py``.

    Args:
      actions: ``i32[T]`` patch indices (row ``a // k``, column ``a % k``).
      scores: ``f32[T]``: ``p_c(canvas_t)`` after each step.
      initial_score: ``p_0 = p_c(image)`` (used by deletion).
      grid: ``k`` (static).
      mode: ``"deletion"`` or ``"insertion"`` (static).
      normalisation: ``"minmax"`` or ``"reference"`` (static; module doc).
    """
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
    insertion = mode == "insertion"
    rewards = scores + 1.0 if insertion else -scores
    old0 = jnp.zeros((), jnp.float32) if insertion else -jnp.asarray(initial_score, jnp.float32)

    def _step(carry, x):
        sal, uncov, old = carry
        action, r = x
        uncov = uncov.at[action].set(1.0)
        return (sal + (r - old) * uncov, uncov, r), None

    zeros = jnp.zeros((grid * grid,), jnp.float32)
    (sal, _, _), _ = jax.lax.scan(_step, (zeros, zeros, old0),
                                  (actions, rewards.astype(jnp.float32)))
    top, low = jnp.max(sal), jnp.min(sal)
    if normalisation == "minmax":
        span = top - low
        sal = jnp.where(span > 0, (sal - low) / jnp.where(span > 0, span, 1.0), 0.0)
    else:
        # the code divides by the signed max, which inverts the ranking when max < 0
        scale = jnp.where(top == 0, 1.0, jnp.abs(top))
        sal = sal / scale if insertion else (sal - low) / scale
    return sal.reshape(grid, grid)


def first_visit_saliency(actions, *, grid: int) -> jax.Array:
    """``f32[k, k]``: ``1 - t_a / T`` for a patch first chosen at step ``t_a`` (0-based) of the
    ``T`` actions ``i32[T]``, 0 for a patch never chosen.

    The deletion metric then removes the patches in the order the agent chose them; unlike
    :func:`trajectory_saliency` it ignores how much each step moved the score.
    """
    steps = actions.shape[0]
    hits = actions[:, None] == jnp.arange(grid * grid)[None, :]  # [T, k²]
    first = jnp.where(hits.any(axis=0), jnp.argmax(hits, axis=0), steps)
    return (1.0 - first.astype(jnp.float32) / steps).reshape(grid, grid)


def _separate(model_fn, features_fn, images):
    """``(model_fn(x), features_fn(x))``: two passes, when no fused function is given."""
    return model_fn(images), features_fn(images)


@functools.partial(jax.jit, static_argnames=("config",))
def _rexl(key, model_fn, features_fn, fused_fn, agent_params, image, target, mean_rgb, std_rgb,
          deterministic, *, config: RexlConfig):
    h, w, _ = image.shape
    k = config.grid
    images = image[None]
    insertion = config.mode == "insertion"
    scores0, feats0 = fused_fn(images)  # the original: p_0 and its features, one pass
    p0 = scores0[0, target]
    feats = rl_env.select_features(feats0, config.stage)
    params = rl_env.EnvParams(
        model_fn=model_fn, features_fn=features_fn, images=images,
        targets=jnp.asarray(target, jnp.int32)[None], original_features=feats,
        blank_features=jnp.zeros(feats.shape[1:], jnp.float32), mean_rgb=mean_rgb,
        std_rgb=std_rgb, grid=k, mode=config.mode, substrate=config.substrate,
        mask_visited=config.mask_visited, num_class_planes=config.num_class_planes,
        stage=config.stage,
    )
    network = _network(config)

    def episode(key):
        """One episode of ``config.steps`` steps: the normalised trajectory map and the minmax
        first-step policy, both ``f32[k, k]``."""
        k_noise, k_act = jax.random.split(key)
        state = rl_env.EnvState(index=jnp.zeros((), jnp.int32),
                                visited=jnp.zeros((k, k), bool),
                                substrate=rl_env.draw_substrate(k_noise, params, (h, w)),
                                t=jnp.zeros((), jnp.int32))
        # the first canvas: the original (deletion) or the bare substrate (insertion: a trunk pass)
        first = rl_env.select_features(features_fn(rl_env.canvas(state, params)[None]),
                                       config.stage)[0] if insertion else feats[0]

        def _step(carry, t):
            state, feats = carry
            obs = rl_env.observation(feats, state, params)
            logits, _ = network.apply(agent_params, obs, rl_env.action_mask(state, params))
            sampled = jax.random.categorical(jax.random.fold_in(k_act, t), logits)
            action = jnp.where(deterministic, jnp.argmax(logits), sampled).astype(jnp.int32)
            visited = state.visited.reshape(-1).at[action].set(True).reshape(k, k)
            state = rl_env.EnvState(state.index, visited, state.substrate, state.t + 1)
            scores, feats = fused_fn(rl_env.canvas(state, params)[None])  # reward and next state
            return ((state, rl_env.select_features(feats, config.stage)[0]),
                    (action, scores[0, target], logits))

        _, (actions, scores, logits) = jax.lax.scan(_step, (state, first),
                                                    jnp.arange(config.steps))
        if config.episode_map == "first_visit":
            sal = first_visit_saliency(actions, grid=k)
        else:
            sal = trajectory_saliency(actions, scores, p0, grid=k, mode=config.mode,
                                      normalisation=config.normalisation)
        return sal, _minmax(logits[0]).reshape(k, k)

    if config.num_rollouts == 1:
        sal, policy = episode(key)  # the code's single episode, from ``key`` itself
    else:  # side by side: each step is one batched pass of the R canvases
        sal, policy = jax.vmap(episode)(jax.random.split(key, config.num_rollouts))
        sal, policy = jnp.mean(sal, axis=0), jnp.mean(policy, axis=0)
    if config.policy_weight:
        sal = (sal + config.policy_weight * policy) / (1.0 + config.policy_weight)
    return masks.mirror_bilinear_resize(sal, (h, w))


def _minmax(x):
    low, span = jnp.min(x), jnp.max(x) - jnp.min(x)
    return jnp.where(span > 0, (x - low) / jnp.where(span > 0, span, 1.0), 0.0)


def _patch_means(grid, images):
    b, h, w, c = images.shape
    return images.reshape(b, grid, h // grid, grid, w // grid, c).mean(axis=(2, 4))


def patch_features(grid: int) -> jax.tree_util.Partial:
    """A parameter-free state encoder: each patch's mean colour, ``f32[b, k, k, 3]``.

    For toy models and tests (the paper's encoder is a CNN trunk, ``models.features_fn``).
    """
    return jax.tree_util.Partial(functools.partial(_patch_means, grid))


def observation_shape(features_fn, image_hw, config: RexlConfig) -> tuple[int, ...]:
    """The agent's observation shape for this encoder, image size and config (no compute)."""
    h, w = image_hw
    probe = jax.eval_shape(features_fn, jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32))
    if isinstance(probe, dict) and config.stage is not None and config.stage not in probe:
        raise ValueError(f"config.stage={config.stage!r} is not among features_fn's stages "
                         f"{list(probe)}")
    feats = rl_env.select_features(probe, config.stage)
    channels = feats.shape[-1] * (2 if config.mode == "insertion" else 1)
    return (*feats.shape[1:-1], channels + config.num_class_planes)


def init_agent(key, config: RexlConfig, features_fn, image_hw) -> dict:
    """Randomly initialised actor-critic parameters for ``config`` (an untrained agent)."""
    obs_shape = observation_shape(features_fn, image_hw, config)
    network = _network(config)
    return jax.jit(network.init)(key, jnp.zeros(obs_shape, jnp.float32))


def check_agent_params(agent_params, features_fn, image_hw, config: RexlConfig) -> None:
    """``agent_params`` must be an actor-critic for this grid and observation size."""
    obs_shape = observation_shape(features_fn, image_hw, config)
    network = _network(config)
    expected = jax.eval_shape(network.init, jax.random.key(0),
                              jax.ShapeDtypeStruct(obs_shape, jnp.float32))
    shapes = lambda tree: jax.tree.map(lambda x: tuple(np.shape(x)), tree)  # noqa: E731
    try:
        same = jax.tree.structure(expected) == jax.tree.structure(agent_params) and (
            shapes(expected) == shapes(agent_params))
    except Exception:  # noqa: BLE001 - any non-pytree-compatible input
        same = False
    if not same:
        raise ValueError(
            f"agent_params do not fit this config and features_fn: expected an ActorCritic for "
            f"grid={config.grid} ({config.grid ** 2} actions), observation shape {obs_shape} "
            f"and layers pi={config.pi_layers}, vf={config.vf_layers}: "
            f"expected {shapes(expected)}, got {shapes(agent_params)} "
            "(an agent trained for another grid, mode, feature stage or image size?)"
        )


def _check_fused(fused_fn, features_fn, image_hw, num_classes, stage) -> None:
    probe = jax.ShapeDtypeStruct((1, *image_hw, 3), jnp.float32)
    want = rl_env.select_features(jax.eval_shape(features_fn, probe), stage).shape
    try:
        out = jax.eval_shape(fused_fn, probe)
        ok = (isinstance(out, tuple) and len(out) == 2 and out[0].shape == (1, num_classes)
              and rl_env.select_features(out[1], stage).shape == want)
    except Exception:  # noqa: BLE001 - a function that cannot take the images
        ok = False
    if not ok:
        raise ValueError(f"fused_fn must map images f32[b, h, w, 3] to (model_fn(images) "
                         f"f32[b, {num_classes}], features_fn(images)) with the stage of shape "
                         f"{tuple(want)} for b = 1")


def rexl(key, model_fn: ModelFn, image, target, *, config: RexlConfig = DEFAULT_CONFIG, agent_params,
         features_fn, fused_fn=None, baseline=None, deterministic=True) -> jax.Array:
    """RExL saliency of ``image`` for class ``target``: ``f32[h, w]`` in [0, 1].

    Args:
      key: ``jax.random.key``: the noise substrate and, if sampled, the actions.
      model_fn: the black box ``f32[b, h, w, 3] -> f32[b, K]`` (probabilities; a ``Partial``).
      image: ``f32[h, w, 3]`` in [0, 1]; ``h`` and ``w`` divisible by ``config.grid``.
      target: the class to explain (int; traced).
      config: :class:`RexlConfig` (static), matching the agent's training environment.
      agent_params: the trained actor-critic's parameters (traced: new weights do not recompile).
      features_fn: the frozen state encoder the agent was trained with (a ``Partial``).
      fused_fn: optional ``images -> (model_fn(images), features_fn(images))`` in ONE network
        pass (when the encoder is the black box's own trunk): then each step costs one pass;
        without it, two (the reward, then the next state).
      baseline: the substrate's centre colour; default the model's ``mean_rgb`` (else zeros).
      deterministic: argmax actions (default) or sampled ones (traced).

    Returns:
      The up-sampled trajectory map ``f32[h, w]`` (see the module doc).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import saliency_jax as sj
      >>> model_fn, _ = sj.testing.tiny_cnn(jax.random.key(1), (32, 32))
      >>> cfg = sj.RexlConfig(grid=4, pi_layers=(8,), vf_layers=(8,))
      >>> features_fn = sj.patch_features(4)                 # a 4 x 4 x 3 state encoder
      >>> agent = sj.init_rexl_agent(jax.random.key(2), cfg, features_fn, (32, 32))  # untrained
      >>> sj.rexl(jax.random.key(0), model_fn, jnp.full((32, 32, 3), 0.7), 0, config=cfg,
      ...         agent_params=agent, features_fn=features_fn).shape
      (32, 32)

    References:
      Agarwal, Iqbal, Buridi, Manjusha, Das, *Reinforcement Explanation Learning*, NeurIPS 2021
      workshop XAI4Debugging (arXiv 2111.13406); code ``CVIR/RExL``.
    """
    hw = validation.check_image(image)
    rl_env.check_grid(config.grid, hw, name="grid")
    if not isinstance(config, RexlConfig):
        raise ValueError(f"config must be a RexlConfig, got {type(config).__name__}")
    model_fn = as_pytree_fn(model_fn)
    features_fn = as_pytree_fn(features_fn, "features_fn")
    num_classes = validation.num_classes_of(model_fn, image)
    validation.check_target(target, num_classes)
    if config.num_class_planes and config.num_class_planes < num_classes:
        raise ValueError(f"config.num_class_planes={config.num_class_planes} is smaller than the "
                         f"model's {num_classes} classes")
    check_agent_params(agent_params, features_fn, hw, config)
    if fused_fn is None:
        fused_fn = jax.tree_util.Partial(_separate, model_fn, features_fn)
    else:
        fused_fn = as_pytree_fn(fused_fn, "fused_fn")
        _check_fused(fused_fn, features_fn, hw, num_classes, config.stage)
    mean_rgb, std_rgb = rl_env.substrate_colours(model_fn, baseline)
    operands = sharding.replicate((key, model_fn, features_fn, fused_fn, agent_params,
                                   jnp.asarray(image, jnp.float32), jnp.asarray(target, jnp.int32),
                                   mean_rgb, std_rgb, jnp.asarray(deterministic, bool)))
    return _rexl(*operands, config=config)
