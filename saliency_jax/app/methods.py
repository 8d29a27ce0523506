"""The explainers ``evaluate`` and ``explain`` know by name, with settings scaled to the image.

Paper settings are stated at 224 x 224. On an image of side ``s`` every pixel-valued setting
(window sizes, strides, metric step, pointing tolerance) is multiplied by ``s / 224``; grid
counts, probabilities, sample and iteration counts are kept.

A method is built from a :class:`ModelContext` (the registry name and variables of the model
being explained) because some need more than the black box: Grad-CAM its gradients, IASSA and
the RL agents its stage features. A method that cannot run for the model (no RExL agent trained
for this classifier, an image size its grid does not divide) raises
:class:`MethodUnavailableError`; ``build_methods(..., on_unavailable=...)`` skips such methods.

The RL methods use the agents of :mod:`saliency_jax.app.agents` (packaged for ``resnet_small``):
``rexl`` (the reference code's MDP; ``rexl_rollouts``: the same agent, 4 episodes of 19 steps
averaged), ``rexl_masked`` (a variant MDP: mean-colour substrate, each
patch once) and ``rexl_insertion`` only for the classifier they were trained on (same registry
name and variables' sha256, same image size); each row's description names its MDP; ``rlcam`` for any classifier and any image size its
7 x 7 grid divides (its observation is made of look-ahead scores only); ``rlcam_output`` (the
abstract's observation: the output distribution, the mask, the step) for any classifier with its
agent's number of classes; ``rlcam_greedy`` needs no agent.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable

import jax
import jax.numpy as jnp

from saliency_jax import models
from saliency_jax._src.gradcam import gradcam
from saliency_jax._src.iassa import REFERENCE_LEVELS, IassaConfig, iassa, iassa_num_queries
from saliency_jax._src.lime import LimeConfig, lime
from saliency_jax._src.occlusion import OcclusionConfig, occlusion
from saliency_jax._src.rexl import rexl, rexl_num_queries
from saliency_jax._src.rexl_env import check_grid
from saliency_jax._src.rise import RiseConfig, rise
from saliency_jax._src.rise_anytime import RiseAnytimeConfig, rise_anytime
from saliency_jax._src.rlcam import rlcam_explain, rlcam_greedy_explain, rlcam_num_queries
from saliency_jax.app import agents


class MethodUnavailableError(ValueError):
    """The method cannot run for this model or image size (e.g. no agent trained for it)."""


@dataclasses.dataclass(frozen=True)
class ModelContext:
    """The model under explanation: registry ``name`` and its ``variables``."""

    name: str
    variables: dict = dataclasses.field(repr=False, hash=False, compare=False)
    image_hw: tuple[int, int] = (224, 224)


@dataclasses.dataclass(frozen=True)
class Method:
    """An explainer bound to its settings: ``explain(key, model_fn, image, target) -> f32[h, w]``."""

    name: str
    explain: Callable
    queries: int
    """Black-box model queries (forward passes of one image) per explanation; for a method whose
    cost varies per image (it may stop early), the most."""
    description: str
    explain_counted: Callable | None = None
    """For a method whose cost varies per image: ``(key, model_fn, image, target) -> (map,
    queries i32[])``, the queries that explanation made."""
    vmappable: bool = True
    """Whether ``evaluate`` runs it as ``jit(vmap(explain))`` over a batch of images; False runs
    it image by image inside the batch."""
    settings: dict = dataclasses.field(default_factory=dict, compare=False, hash=False)
    """Everything that decides its maps (its configs, its agent's parameter digest, ...), as
    JSON: ``evaluate`` refuses to mix records made with other settings."""

    @property
    def digest(self) -> str:
        """SHA-256 of :attr:`settings` (canonical JSON), the first 16 hex digits."""
        text = json.dumps(self.settings, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def settings_of(*configs, **extra) -> dict:
    """A method's :attr:`Method.settings`: each config dataclass's fields (under its class
    name; chunk sizes left out) and ``extra``, as plain JSON (tuples become lists, anything else its ``repr``)."""
    found = {type(c).__name__: {k: v for k, v in dataclasses.asdict(c).items()
                                if k not in CHUNK_FIELDS} for c in configs}
    return json.loads(json.dumps({**found, **extra}, sort_keys=True, default=repr))


CHUNK_FIELDS = ("batch_size",)
"""Config fields left out of :attr:`Method.settings`: chunk sizes do not change the maps."""


def _random_map(key, model_fn, image, target):
    del model_fn, target
    return jax.random.uniform(key, image.shape[:2])


def _check_num_masks(num_masks) -> None:
    if num_masks is not None and (isinstance(num_masks, bool) or not isinstance(num_masks, int)
                                  or num_masks < 1):
        raise ValueError(f"num_masks must be None (default 4000) or an integer >= 1, "
                         f"got {num_masks!r}")


def _rise(ctx: ModelContext, num_masks: int | None) -> Method:
    _check_num_masks(num_masks)
    config = RiseConfig(num_masks=4000 if num_masks is None else num_masks, grid=7, p_keep=0.5)

    def explain(key, model_fn, image, target):
        return rise(key, model_fn, image, target, config=config)

    return Method("rise", explain, config.num_masks,
                  f"RISE, N={config.num_masks}, s={config.grid}, p={config.p_keep}",
                  settings=settings_of(config))


def _rise_anytime(ctx: ModelContext, num_masks: int | None) -> Method:
    """Anytime RISE: the library's defaults, ``num_masks`` its most masks (default 4000)."""
    _check_num_masks(num_masks)
    config = RiseAnytimeConfig() if num_masks is None else RiseAnytimeConfig(
        max_masks=num_masks, check_every=min(num_masks, RiseAnytimeConfig.check_every),
        min_masks=min(num_masks, RiseAnytimeConfig.min_masks))

    def explain_counted(key, model_fn, image, target):
        result = rise_anytime(key, model_fn, image, target, config=config)
        return result.saliency, result.num_masks

    return Method("rise_anytime", lambda *a: explain_counted(*a)[0], config.max_masks,
                  f"anytime RISE (control variate), stops when the estimated correlation with "
                  f"the converged map exceeds {1 - config.tolerance:g}; at most "
                  f"{config.max_masks} masks, s={config.grid}, p={config.p_keep}",
                  explain_counted=explain_counted, vmappable=False,
                  settings=settings_of(config))


def _occlusion(ctx: ModelContext, num_masks: int | None) -> Method:
    config = OcclusionConfig.for_image_size(ctx.image_hw)

    def explain(key, model_fn, image, target):
        return occlusion(key, model_fn, image, target, config=config)

    return Method("occlusion", explain, config.num_windows(ctx.image_hw) + 1,
                  f"sliding-window occlusion, window {config.window}, stride {config.stride}",
                  settings=settings_of(config))


def _gradcam(ctx: ModelContext, num_masks: int | None) -> Method:
    from saliency_jax.models.cam import cam_model

    split = cam_model(ctx.name, ctx.variables)

    def explain(key, model_fn, image, target):
        return gradcam(key, model_fn, image, target, cam_model=split)

    return Method("gradcam", explain, 1, "Grad-CAM (white-box: one forward and backward pass)",
                  settings=settings_of(model=ctx.name, gradcam="the last stage, ReLU of the "
                                                       "gradient-weighted sum"))


def _lime(ctx: ModelContext, num_masks: int | None) -> Method:
    config = LimeConfig(num_samples=1000)

    def explain(key, model_fn, image, target):
        return lime(key, model_fn, image, target, config=config)

    return Method("lime", explain, config.num_samples,
                  f"LIME, {config.num_samples} samples, quickshift superpixels",
                  settings=settings_of(config))


def _iassa_method(name: str, config: IassaConfig, ctx: ModelContext, description: str) -> Method:
    features = models.features_fn(ctx.name, ctx.variables, names=config.feature_names)

    def explain(key, model_fn, image, target):
        return iassa(key, model_fn, image, target, config=config, features_fn=features)

    return Method(name, explain, iassa_num_queries(config, ctx.image_hw), description,
                  settings=settings_of(config))


IASSA_WINDOWS = 128


def _iassa(ctx: ModelContext, num_masks: int | None) -> Method:
    """Paper variant; LRPF-SA on the model's four deepest stages (the paper's Φ1..Φ4).

    The paper's 25-iteration schedule with ``IASSA_WINDOWS`` windows per refinement, so that an
    explanation costs about what RISE's does (4353 queries at 112², the budget of
    ``benchmarks/bench_iassa_iterations.py``); the lattice budget of every refinement would
    cost ~59k."""
    levels = models.get(ctx.name).feature_names[-4:]
    config = IassaConfig.for_image_size(ctx.image_hw[0], feature_names=levels,
                                        windows_per_iteration=IASSA_WINDOWS)
    return _iassa_method("iassa", config, ctx,
                         f"IASSA (paper variant), k={config.iterations}, "
                         f"{IASSA_WINDOWS} windows per refinement, stages {levels}")


def _iassa_reference(ctx: ModelContext, num_masks: int | None) -> Method:
    """The released code's behaviour; its five ResNet levels where the model has them."""
    names = models.get(ctx.name).feature_names
    levels = REFERENCE_LEVELS if set(REFERENCE_LEVELS) <= set(names) else names[-5:]
    config = IassaConfig.reference(ctx.image_hw[0], feature_names=levels)
    return _iassa_method("iassa_reference", config, ctx,
                         f"IASSA (released-code variant), k={config.iterations}")


REXL_VARIANTS = {
    "rexl": ("deletion", "rexl"),
    "rexl_masked": ("deletion", "rexl_masked"),
    "rexl_insertion": ("insertion", "rexl_insertion"),
}
"""Method name -> (mode, packaged agent) of the RExL rows."""


def _mdp_label(config) -> str:
    """What the agent's environment is, against the reference code's (METHODS §3.1)."""
    if config.substrate == "noise" and not config.mask_visited:
        return "reference MDP: U[-0.5, 0.5) noise substrate, revisits allowed"
    parts = ["mean-colour substrate" if config.substrate == "baseline" else "noise substrate",
             "each patch once" if config.mask_visited else "revisits allowed"]
    return "variant MDP: " + ", ".join(parts)


REXL_ROLLOUTS = (4, 19)
"""``rexl_rollouts``: 4 sampled episodes of 19 steps averaged, 77 queries (<= 1/50 of RISE's 4000);
chosen on the validation split among 1 x 49, 2 x 39, 3 x 26, 4 x 19 and 6 x 13
(``benchmarks/results/rexl_select_rollouts.json``)."""


def rexl_method(ctx: ModelContext, *, mode: str = "deletion", agent_dir=None,
                deterministic: bool | None = None, name: str | None = None,
                variant: str | None = None, rollouts: tuple[int, int] | None = None,
                policy_weight: float | None = None, episode_map: str | None = None) -> Method:
    """RExL with the agent trained for ``ctx``'s classifier (default: the packaged one).

    ``variant`` names the packaged agent (``"rexl"``, ``"rexl_masked"``, ``"rexl_insertion"``;
    default the one of ``mode``). Actions: ``deterministic=None`` (default) samples where the
    agent's MDP allows revisits (the code's ``predict``; an argmax policy there repeats a revisit
    to the end of the episode, see :mod:`saliency_jax._src.rexl`) and takes the argmax where each
    patch is visited once. Each step is one network pass (the classifier's trunk is the encoder:
    one fused pass gives the reward and the next state). ``rollouts = (R, T)`` averages R episodes
    of T steps (``RexlConfig.num_rollouts`` / ``horizon``), ``policy_weight`` sets the
    first-step policy term and ``episode_map`` how an episode becomes a map; ``None`` keeps the
    agent's own ``agent.json`` setting.
    Raises :class:`MethodUnavailableError` when the agent is missing or was trained for another
    classifier or image size (the message says how to train one).
    """
    variant = variant or ("rexl" if mode == "deletion" else f"rexl_{mode}")
    name = name or variant
    if agent_dir is None:
        agent_dir = agents.packaged_agent_dir(variant, ctx.name)
    try:
        params, config, features, meta = agents.rexl_agent_for(
            ctx.name, ctx.variables, ctx.image_hw, mode=mode, agent_dir=agent_dir)
    except ValueError as err:
        raise MethodUnavailableError(str(err)) from None
    _, _, fused = agents.black_box(ctx.variables, config.stage, model=ctx.name,
                                   image_size=ctx.image_hw[0])
    if rollouts is not None:
        config = dataclasses.replace(config, num_rollouts=rollouts[0], horizon=rollouts[1])
    if policy_weight is not None:
        config = dataclasses.replace(config, policy_weight=policy_weight)
    if episode_map is not None:
        config = dataclasses.replace(config, episode_map=episode_map)
    if deterministic is None:
        deterministic = config.mask_visited

    def explain(key, model_fn, image, target):
        return rexl(key, model_fn, image, target, config=config, agent_params=params,
                    features_fn=features, fused_fn=fused, deterministic=deterministic)

    return Method(name, explain, rexl_num_queries(config),
                  rexl_description(config, meta, deterministic, params),
                  settings=settings_of(config, deterministic=deterministic,
                                       agent_sha256=agents.variables_digest(params)))


def rexl_description(config, meta: dict, deterministic: bool, params) -> str:
    """A RExL row's description: the agent's MDP, actions, its parameters' and classifier's
    digests, and the inference settings that depart from the code's (rollouts, the first-step
    policy term)."""
    actions = "argmax" if deterministic else "sampled"
    rollouts = ("" if config.num_rollouts == 1 and config.horizon is None else
                f"; {config.num_rollouts} rollout(s) of {config.steps} steps averaged")
    return (f"RExL ({config.mode} agent, {_mdp_label(config)}; {actions} actions, "
            f"k={config.grid}, {config.normalisation} normalisation; trained for "
            f"{meta['model']} sha256 {meta['classifier_sha256'][:12]}; agent sha256 "
            f"{agents.variables_digest(params)[:12]})" + rollouts
            + (f"; + first-step policy, weight {config.policy_weight:g}"
               if config.policy_weight else "")
            + ("; first-visit order map" if config.episode_map == "first_visit" else ""))


def _counted(run: Callable):
    """``(explain, explain_counted)`` of an RL-CAM-style ``run(key, model_fn, image, target)``
    whose result carries ``saliency`` and ``num_queries``."""
    def explain_counted(key, model_fn, image, target):
        result = run(key, model_fn, image, target)
        return result.saliency, result.num_queries

    return (lambda key, model_fn, image, target: explain_counted(key, model_fn, image, target)[0],
            explain_counted)


def rlcam_method(ctx: ModelContext, *, agent_dir=None, deterministic: bool = True,
                 name: str = "rlcam") -> Method:
    """RL-CAM with a trained agent (default: the packaged one; argmax actions by default).

    The agent observes look-ahead scores only, so it runs on any classifier and any image size
    its grid divides; it stops when it chooses, so ``queries`` is the most and
    ``explain_counted`` gives each image's count.
    """
    try:
        params, config, meta = agents.rlcam_agent_for(ctx.image_hw, model=ctx.name,
                                                      agent_dir=agent_dir)
    except ValueError as err:
        raise MethodUnavailableError(str(err)) from None

    explain, explain_counted = _counted(functools.partial(
        rlcam_explain, config=config, agent_params=params, deterministic=deterministic))
    actions = "argmax" if deterministic else "sampled"
    trained = meta.get("model", "?")
    return Method(name, explain, rlcam_num_queries(config),
                  f"RL-CAM, reimplemented from the paper's abstract (learned agent, {actions} actions, k={config.grid}, "
                  f"T={config.steps}, λ={config.size_penalty:g}; trained on {trained}"
                  f"{'' if trained == ctx.name else ', scores-only observation'}; "
                  "it may stop early, so its queries vary per image)",
                  explain_counted=explain_counted,
                  settings=settings_of(config, deterministic=deterministic,
                                       agent_sha256=agents.variables_digest(params)))


def _rexl(ctx: ModelContext, num_masks: int | None) -> Method:
    return rexl_method(ctx, mode="deletion")


def _rexl_rollouts(ctx: ModelContext, num_masks: int | None) -> Method:
    return rexl_method(ctx, mode="deletion", name="rexl_rollouts", rollouts=REXL_ROLLOUTS)


def _rexl_masked(ctx: ModelContext, num_masks: int | None) -> Method:
    return rexl_method(ctx, mode="deletion", variant="rexl_masked")


def _rexl_insertion(ctx: ModelContext, num_masks: int | None) -> Method:
    return rexl_method(ctx, mode="insertion")


def _rlcam(ctx: ModelContext, num_masks: int | None) -> Method:
    return rlcam_method(ctx)


def _rlcam_greedy(ctx: ModelContext, num_masks: int | None) -> Method:
    """The greedy look-ahead baseline of RL-CAM (no agent), with the default agent's MDP."""
    config = agents.RLCAM_CONFIG
    try:
        check_grid(config.grid, ctx.image_hw, name="rlcam_greedy's grid")
    except ValueError as err:
        raise MethodUnavailableError(str(err)) from None

    explain, explain_counted = _counted(functools.partial(rlcam_greedy_explain, config=config))
    return Method("rlcam_greedy", explain, rlcam_num_queries(config),
                  f"RL-CAM (reimplemented from the abstract) greedy look-ahead baseline (no "
                  f"agent), k={config.grid}, "
                  f"T={config.steps}, λ={config.size_penalty:g}; stops when no toggle helps",
                  explain_counted=explain_counted, settings=settings_of(config))


RLCAM_OUTPUT_AGENT = "rlcam_output_" + agents.DEFAULT_MODEL
"""The packaged output-observation RL-CAM agent's folder under ``assets/agents/``."""


def _rlcam_output(ctx: ModelContext, num_masks: int | None) -> Method:
    """RL-CAM with the abstract's observation (the model's output distribution on the current
    masked image, the mask and the step; one query a step): the packaged ``rlcam_output``
    agent, for classifiers with its number of classes."""
    from saliency_jax.app import classifiers

    path = classifiers.ASSETS / "agents" / RLCAM_OUTPUT_AGENT
    try:
        params, config, meta = agents.rlcam_agent_for(ctx.image_hw, model=ctx.name,
                                                      agent_dir=path)
        model_fn = models.classifier(ctx.name, ctx.variables)
        k = jax.eval_shape(model_fn, jnp.zeros((1, *ctx.image_hw, 3), jnp.float32)).shape[-1]
        if k != config.num_classes:
            raise ValueError(f"rlcam_output's agent observes {config.num_classes} class "
                             f"probabilities; {ctx.name} has {k} classes")
    except ValueError as err:
        raise MethodUnavailableError(str(err)) from None

    explain, explain_counted = _counted(functools.partial(
        rlcam_explain, config=config, agent_params=params, deterministic=True))
    return Method("rlcam_output", explain, rlcam_num_queries(config),
                  f"RL-CAM, reimplemented from the paper's abstract, with the abstract's "
                  f"observation: the model's output distribution on the current masked image, "
                  f"the mask and the step, no look-ahead (learned agent, argmax actions, "
                  f"k={config.grid}, T={config.steps}, λ={config.size_penalty:g}, one query a "
                  f"step; trained on {meta.get('model', '?')}; it may stop early)",
                  explain_counted=explain_counted,
                  settings=settings_of(config, agent_sha256=agents.variables_digest(params)))


def _random(ctx: ModelContext, num_masks: int | None) -> Method:
    return Method("random", _random_map, 0, "uniform random map (sanity floor)",
                  settings={"map": "uniform [0, 1) from the key"})


FACTORIES: dict[str, Callable[[ModelContext, int | None], Method]] = {
    "rise": _rise,
    "rise_anytime": _rise_anytime,
    "occlusion": _occlusion,
    "gradcam": _gradcam,
    "lime": _lime,
    "iassa": _iassa,
    "iassa_reference": _iassa_reference,
    "rexl": _rexl,
    "rexl_rollouts": _rexl_rollouts,
    "rexl_masked": _rexl_masked,
    "rexl_insertion": _rexl_insertion,
    "rlcam": _rlcam,
    "rlcam_greedy": _rlcam_greedy,
    "rlcam_output": _rlcam_output,
    "random": _random,
}
DEFAULT_METHODS = ("rise", "iassa", "rexl", "rexl_masked", "rlcam", "occlusion", "gradcam", "lime",
                   "random")


def available_methods() -> list[str]:
    return list(FACTORIES)


def build_methods(names, ctx: ModelContext, *, num_masks: int | None = None,
                  on_unavailable: Callable[[str, str], None] | None = None) -> list[Method]:
    """Instantiate ``names`` for ``ctx``; unknown names raise ValueError listing the known.

    A method unavailable for ``ctx`` raises :class:`MethodUnavailableError`, or, when
    ``on_unavailable`` is given, is left out and reported as ``on_unavailable(name, reason)``.
    """
    unknown = [n for n in names if n not in FACTORIES]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; available: {available_methods()}")
    if len(set(names)) != len(names):
        raise ValueError(f"methods must not repeat, got {list(names)}")
    built = []
    for n in names:
        try:
            built.append(FACTORIES[n](ctx, num_masks))
        except MethodUnavailableError as err:
            if on_unavailable is None:
                raise
            on_unavailable(n, str(err))
    return built


def top1(model_fn, image) -> jax.Array:
    """The model's top-1 class for one image."""
    return jnp.argmax(model_fn(image[None])[0])


def model_context(name: str, variables, image_hw) -> ModelContext:
    models.get(name)  # unknown names fail here, with the list of known ones
    return ModelContext(name, variables, tuple(image_hw))
