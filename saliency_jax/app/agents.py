"""The default RL agents of the embedded benchmark: train them for a classifier, find and check them.

The agents that ship with saliency-jax are dataset-wide (trained on the synthetic shapes training
images, :mod:`saliency_jax.data.shapes`) for the packaged ``resnet_small`` classifier at 112 x 112:

* RExL (:func:`saliency_jax.rexl`): a 7 x 7 action grid, the classifier's own frozen trunk as the
  state encoder (the deepest stage at least as fine as the grid: ``layer3``, 7 x 7 x 64), one-hot
  class planes, target = the top-1 class, PPO (hidden widths (128, 64)); one fused network pass
  per step gives the reward and the next state, in training and at inference.

  * ``rexl_deletion_<model>`` (method ``rexl``): the reference code's MDP, the
    ``U[-0.5, 0.5)`` noise substrate (normalised space) and revisits allowed; sampled actions.
  * ``rexl_deletion_masked_<model>`` (method ``rexl_masked``) and ``rexl_insertion_<model>``
    (method ``rexl_insertion``): a variant MDP, the model's mean colour as the substrate and
    each patch visited once; argmax actions.

* ``rlcam_<model>``: RL-CAM (:func:`saliency_jax.rlcam`), a 7 x 7 grid, horizon 12, ``λ = 1``,
  target = the label, PPO with hidden widths (256, 128).

Folder layout (:func:`packaged_agent_dir`): ``params/`` (orbax), ``agent.json`` (what the
explainer needs, the training settings, ``model`` and ``classifier_sha256`` =
:func:`variables_digest` of the classifier it was trained on) and ``metrics.json`` (curves).

Which classifier an agent fits:

* A RExL agent observes the classifier's own features, so it is only valid for the exact
  classifier it was trained on, at the image size it was trained at: :func:`rexl_agent_for`
  checks the registry name, the digest and the image size, and raises ``ValueError`` saying how
  to train a matching agent (``saliency-jax train-agent --method rexl ...``).
* An RL-CAM agent observes only the look-ahead scores of its own masks (``[mask, gains,
  gains / max|gains|, keep, remove, t/T]``; :mod:`saliency_jax._src.rlcam_env`), never features or
  pixels, so it runs on any classifier and any image size its grid divides (:func:`rlcam_agent_for`
  checks only that). On another classifier the scores follow another distribution (e.g. the
  small probabilities of a 1000-class model): a valid RL-CAM episode, but out of the agent's
  training distribution; retrain with ``saliency-jax train-agent --method rlcam`` to match.

Training (:func:`train_rexl`, :func:`train_rlcam_default`) is resumable: the run folder holds
orbax checkpoints after every ``checkpoint_every`` updates, and the same call again resumes from
the last one (bit-identical to an uninterrupted run; :func:`saliency_jax.rl.train_agent`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pathlib
import shutil
import sys
import time

import jax
import numpy as np

from saliency_jax import models
from saliency_jax._src import rexl_env as rl_env
from saliency_jax._src import validation
from saliency_jax._src.rexl import RexlConfig
from saliency_jax._src.rlcam import RlcamConfig
from saliency_jax.app import classifiers

DEFAULT_MODEL = "resnet_small"
DEFAULT_IMAGE_SIZE = 112
REXL_GRID = 7
REXL_LAYERS = (128, 64)
RLCAM_CONFIG = RlcamConfig(grid=7, horizon=12, size_penalty=1.0, batch_size=98)
"""The default RL-CAM agent's settings (16-px patches at 112², ``2P = 98`` look-ahead images)."""

_FOLDERS = {"rexl": "rexl_deletion", "rexl_deletion": "rexl_deletion",
            "rexl_masked": "rexl_deletion_masked", "rexl_insertion": "rexl_insertion",
            "rlcam": "rlcam"}
_RUN_FILE = "agent_run.json"


def agent_name(method: str, model: str = DEFAULT_MODEL) -> str:
    """The folder name of ``method``'s default agent for ``model``, e.g. ``rexl_deletion_resnet_small``."""
    if method not in _FOLDERS:
        raise ValueError(f"method must be one of {sorted(_FOLDERS)}, got {method!r}")
    return f"{_FOLDERS[method]}_{model}"


def packaged_agent_dir(method: str, model: str = DEFAULT_MODEL) -> pathlib.Path:
    """Where the packaged agent of ``method`` (``rexl``, ``rexl_insertion``, ``rlcam``) for
    ``model`` lives (it may not exist)."""
    return classifiers.ASSETS / "agents" / agent_name(method, model)


def variables_digest(variables) -> str:
    """SHA-256 of the classifier's arrays (in pytree order): ties an agent to its black box."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(variables):
        digest.update(np.asarray(leaf).tobytes())
    return digest.hexdigest()


def classifier_path(path=None, *, model: str = DEFAULT_MODEL) -> pathlib.Path:
    """The classifier's variables folder: ``path``, else ``model``'s packaged/converted weights."""
    return classifiers.resolve_checkpoint(model, None if path is None else str(path))


def load_classifier_variables(path=None, *, model: str = DEFAULT_MODEL) -> dict:
    """The classifier's variables from ``path`` (default: the packaged ones of ``model``)."""
    return models.load_variables(classifier_path(path, model=model), name=model)


# ---------------------------------------------------------------------------------------------
# The black box and its data


@functools.cache
def _fused_apply(model: str, num_classes: int, stage: str):
    module = models.get(model, num_classes=num_classes).build()

    def fused(variables, images, *, mean_rgb, std_rgb):
        x = (images - mean_rgb.reshape(1, 1, 1, 3)) / std_rgb.reshape(1, 1, 1, 3)
        logits, feats = module.apply(variables, x, train=False, features=True)
        return jax.nn.softmax(logits, axis=-1), {stage: feats[stage]}

    return fused


def _num_classes(model_fn, image_size: int) -> int:
    probe = jax.ShapeDtypeStruct((1, image_size, image_size, 3), np.float32)
    return int(jax.eval_shape(model_fn, probe).shape[-1])


def default_stage(model: str, variables, image_size: int, grid: int = REXL_GRID) -> str:
    """The deepest feature stage of ``model`` whose map is at least ``grid x grid`` at
    ``image_size`` (``layer3`` for resnet_small at 112 with a 7 x 7 grid)."""
    features = models.features_fn(model, variables)
    probe = jax.ShapeDtypeStruct((1, image_size, image_size, 3), np.float32)
    shapes = jax.eval_shape(features, probe)  # a dict: its keys come back sorted
    fine = [name for name in models.get(model).feature_names
            if min(shapes[name].shape[1:3]) >= grid]
    if not fine:
        raise ValueError(f"no feature stage of {model} is {grid} x {grid} or finer at "
                         f"image_size={image_size}")
    return fine[-1]


def black_box(variables, stage: str = "layer3", *, model: str = DEFAULT_MODEL,
              image_size: int = DEFAULT_IMAGE_SIZE):
    """``(model_fn, features_fn, fused_fn)`` of a registry classifier.

    ``fused_fn(images) -> (probabilities, {stage: features})`` computes both from one network
    pass; it is checked equal to the two separate functions here.
    """
    model_fn = models.classifier(model, variables)
    features_fn = models.features_fn(model, variables, names=(stage,))
    fused_fn = jax.tree_util.Partial(_fused_apply(model, _num_classes(model_fn, image_size), stage),
                                     variables, **model_fn.keywords)
    x = jax.random.uniform(jax.random.key(0), (2, image_size, image_size, 3))
    probs, feats = jax.jit(lambda f, x: f(x))(fused_fn, x)
    same = np.allclose(probs, model_fn(x), rtol=1e-4, atol=1e-6) and np.allclose(
        feats[stage], features_fn(x)[stage], rtol=1e-4, atol=1e-5)
    if not same:
        raise RuntimeError(f"the fused pass of {model} differs from model_fn/features_fn")
    return model_fn, features_fn, fused_fn


def train_images(num_images: int, image_size: int = DEFAULT_IMAGE_SIZE, *, split: str = "train",
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(images f32[n, s, s, 3] in [0, 1], labels i32[n])`` of the synthetic shapes set."""
    from saliency_jax.data import shapes

    data = shapes.generate_arrays(split, num_images, seed=seed, image_size=image_size)
    return data["image"].astype(np.float32) / 255.0, data["label"].astype(np.int32)


def rexl_train_config(updates: int, *, num_envs: int = 16, lr: float = 1e-3,
                      layers=REXL_LAYERS, grid: int = REXL_GRID):
    """PPO settings of the default RExL agents (chosen in short trial runs on resnet_small)."""
    from saliency_jax._src.rl import ppo

    return ppo.TrainConfig(
        num_envs=num_envs, num_steps=grid * grid, num_updates=updates, update_epochs=4,
        num_minibatches=4, lr=lr, anneal_lr=True, gamma=1.0, gae_lambda=0.95, clip_eps=0.2,
        ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5, reward_scale=0.1,
        pi_layers=tuple(layers), vf_layers=tuple(layers))


# ---------------------------------------------------------------------------------------------
# Training


def _check_out(out: pathlib.Path, run_dir: pathlib.Path) -> None:
    """``out`` will be replaced: it must be new, empty or an agent folder, and hold no run."""
    if out == run_dir or out in run_dir.parents:
        raise ValueError(f"out {out} must not be the run folder {run_dir} or contain it")
    if out.exists() and (not out.is_dir() or (any(out.iterdir())
                                              and not (out / "agent.json").exists())):
        raise ValueError(f"out {out} exists and is not an agent folder (no agent.json); "
                         "give a new or empty folder")


def _check_run(run_dir: pathlib.Path, description: dict) -> None:
    """A run folder belongs to one classifier and data set: refuse to resume another's."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / _RUN_FILE
    description = json.loads(json.dumps(description))
    if path.exists():
        found = json.loads(path.read_text())
        if found != description:
            diff = {k: (found.get(k), v) for k, v in description.items() if found.get(k) != v}
            raise ValueError(f"run_dir {run_dir} holds a run of other settings {diff} (found, "
                             "wanted); use another run_dir, or the same arguments to resume")
    else:
        path.write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")


def _check_counts(**counts) -> None:
    for name, value in counts.items():
        validation.check_positive_int(value, name)


def _finish(run_dir: pathlib.Path, out: pathlib.Path, extra: dict) -> dict:
    """Copy the finished agent to ``out`` (unless it is there) and write ``out/metrics.json``."""
    agent = run_dir / "agent"
    if out != agent:
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(agent, out)
    summary = json.loads((run_dir / "metrics.json").read_text())
    returns = summary["history"]["episode_return"]
    tenth = max(1, len(returns) // 10)
    summary.update(
        first_episode_return=float(np.mean(returns[:tenth])),
        last_episode_return=float(np.mean(returns[-tenth:])),
        environment={"device": jax.devices()[0].device_kind, "jax": jax.__version__,
                     "cpu_count": os.cpu_count(), "load_average": list(os.getloadavg())},
        **extra,
    )
    (out / "metrics.json").write_text(json.dumps(summary, indent=1) + "\n")
    summary["agent_dir"] = str(out)
    return summary


def _resolve_dirs(run_dir, out) -> tuple[pathlib.Path, pathlib.Path]:
    run_dir = pathlib.Path(run_dir).expanduser().resolve()
    out = run_dir / "agent" if out is None else pathlib.Path(out).expanduser().resolve()
    _check_out(out, run_dir)
    return run_dir, out


def train_rexl(mode: str, *, classifier_variables, run_dir, out=None,
               model: str = DEFAULT_MODEL, updates: int = 600, num_envs: int = 16,
               num_images: int = 2048, seed: int = 0, lr: float = 1e-3, layers=REXL_LAYERS,
               stage: str | None = None, grid: int = REXL_GRID,
               image_size: int = DEFAULT_IMAGE_SIZE, checkpoint_every: int = 20,
               substrate: str = "noise", mask_visited: bool = False, progress: bool = True,
               max_chunks: int | None = None, command: str | None = None,
               init_agent=None, stop_early: bool = False) -> dict | None:
    """Train (or resume) a dataset-wide RExL agent for a registry classifier.

    Episodes run on the first ``num_images`` shapes training images (``image_size`` px), target =
    the classifier's top-1, one-hot class planes in the state; the encoder is the classifier's
    trunk at ``stage`` (default :func:`default_stage`). Checkpoints go to ``run_dir`` (the same
    call again resumes; another classifier or other settings raise ``ValueError``); the finished
    agent goes to ``out`` (default ``run_dir/agent``; an existing agent folder there is replaced)
    with ``metrics.json``. ``agent.json`` records ``model`` and ``classifier_sha256``.

    Args:
      mode: ``"deletion"`` or ``"insertion"``.
      classifier_variables: the classifier's variables (:func:`load_classifier_variables`).
      substrate, mask_visited: the environment; default the reference code's MDP (noise,
        revisits allowed).
      max_chunks: stop after this many checkpointed chunks (time boxes, tests).
      command: recorded in ``metrics.json`` (default ``sys.argv``).
      init_agent: an agent folder whose parameters start the run instead of a random
        initialisation (a warm start, e.g. from an agent of another MDP with the same observation
        and layers); recorded in ``agent.json``. Fresh optimiser state.
      stop_early: finish with the agent where the run stands (with ``max_chunks=0``: the latest
        checkpoint, a time-boxed run); ``metrics.json`` records the updates done.

    Returns:
      The training summary (``metrics.json`` plus ``agent_dir``), or ``None`` when ``max_chunks``
      stopped it before the end.
    """
    from saliency_jax._src.rl import checkpoint

    rl_env.check_mode(mode)
    _check_counts(updates=updates, num_envs=num_envs, num_images=num_images,
                  checkpoint_every=checkpoint_every, image_size=image_size, grid=grid)
    if num_envs % 4:
        raise ValueError(f"num_envs must be a multiple of 4 (PPO splits num_envs x {grid * grid} "
                         f"steps into 4 minibatches), got {num_envs}")
    rl_env.check_grid(grid, (image_size, image_size))
    run_dir, out = _resolve_dirs(run_dir, out)
    models.get(model)
    if stage is None:
        stage = default_stage(model, classifier_variables, image_size, grid)
    digest = variables_digest(classifier_variables)
    meta = {"model": model, "classifier_sha256": digest,
            "dataset": f"saliency_shapes/train[:{num_images}] (seed 0, {image_size} px)",
            "num_images": num_images, "seed": seed, "targets": "top-1",
            "features": f"models.features_fn({model!r}, variables, names=({stage!r},))"}
    if init_agent is not None:
        init_agent = pathlib.Path(init_agent).expanduser().resolve()
        meta["init_agent"] = str(init_agent)
    _check_run(run_dir, {"method": f"rexl_{mode}", **meta})

    t0 = time.perf_counter()
    model_fn, features_fn, fused_fn = black_box(classifier_variables, stage, model=model,
                                                image_size=image_size)
    images, _ = train_images(num_images, image_size)
    env_params = rl_env.make_env_params(
        model_fn, features_fn, images, None, grid=grid, mode=mode, substrate=substrate,
        mask_visited=mask_visited, num_class_planes=_num_classes(model_fn, image_size),
        stage=stage, fused_fn=fused_fn)
    setup_s = time.perf_counter() - t0
    config = rexl_train_config(updates, num_envs=num_envs, lr=lr, layers=layers, grid=grid)
    if init_agent is not None:
        _warm_start(config, env_params, run_dir, jax.random.key(seed), init_agent)
    checkpoint.train_agent(config, env_params, run_dir, key=jax.random.key(seed),
                           checkpoint_every=checkpoint_every, progress=progress,
                           max_chunks=max_chunks, meta=meta, stop_early=stop_early)
    if not (run_dir / "metrics.json").exists() or not _finished(run_dir, updates, stop_early):
        return None
    return _finish(run_dir, out, {"setup_s": setup_s,
                                  "command": command or " ".join(sys.argv)})


def _warm_start(config, env_params, run_dir: pathlib.Path, key, init_agent: pathlib.Path) -> None:
    """Write update 0 of the run with ``init_agent``'s parameters (unless the run has started):
    :func:`saliency_jax.rl.train_agent` then resumes from it, as from any checkpoint."""
    import orbax.checkpoint as ocp

    from saliency_jax._src.rl import checkpoint, ppo

    manager = checkpoint._manager(run_dir / "checkpoints")
    if manager.latest_step() is None:
        params, _ = checkpoint.load_agent(init_agent)
        runner = checkpoint._init_runner(config, rl_env.REXL, key, env_params)
        fresh = runner.train_state.params
        if jax.tree.structure(fresh) != jax.tree.structure(params) or any(
                np.shape(a) != np.shape(b) for a, b in zip(jax.tree.leaves(fresh),
                                                            jax.tree.leaves(params))):
            raise ValueError(f"init_agent {init_agent} does not fit this environment and "
                             "network (observation shape or layers differ)")
        params = jax.tree.map(lambda a, b: jax.numpy.asarray(b, a.dtype), fresh, params)
        state = ppo.TrainState(params, ppo.make_optimizer(config).init(params),
                               runner.train_state.step)
        manager.save(0, args=ocp.args.Composite(
            state=ocp.args.StandardSave(checkpoint._saveable(runner._replace(train_state=state))),
            metrics=ocp.args.JsonSave({"history": {}, "wall_s": 0.0})))
        manager.wait_until_finished()
    manager.close()


def _finished(run_dir: pathlib.Path, updates: int, stop_early: bool = False) -> bool:
    summary = json.loads((run_dir / "metrics.json").read_text())
    return summary.get("updates") == updates or (stop_early and summary.get("stopped_early"))


def train_rlcam_default(*, classifier_variables, run_dir, out=None, model: str = DEFAULT_MODEL,
                        config: RlcamConfig = RLCAM_CONFIG, updates: int = 48, num_envs: int = 8,
                        epochs: int = 8, lr: float = 1e-3, num_images: int = 128, seed: int = 0,
                        image_size: int = DEFAULT_IMAGE_SIZE, checkpoint_every: int = 5,
                        progress: bool = True, max_chunks: int | None = None,
                        command: str | None = None) -> dict | None:
    """Train (or resume) the dataset-wide RL-CAM agent for a registry classifier.

    Episodes run on the first ``num_images`` shapes training images with their labels as
    targets; PPO of :func:`saliency_jax._src.rlcam.default_train_config` with ``epochs`` epochs per
    update. Folders, resuming and the return value as :func:`train_rexl`; ``agent.json``
    records ``model`` and ``classifier_sha256`` (provenance: the agent itself runs on any
    classifier, see the module doc).
    """
    from saliency_jax._src import rlcam

    _check_counts(updates=updates, num_envs=num_envs, epochs=epochs, num_images=num_images,
                  checkpoint_every=checkpoint_every, image_size=image_size)
    if not isinstance(config, RlcamConfig):
        raise ValueError(f"config must be an RlcamConfig, got {type(config).__name__}")
    rl_env.check_grid(config.grid, (image_size, image_size))
    run_dir, out = _resolve_dirs(run_dir, out)
    model_fn = models.classifier(model, classifier_variables)
    meta = {"model": model, "classifier_sha256": variables_digest(classifier_variables),
            "dataset": f"saliency_shapes/train[:{num_images}] (seed 0, {image_size} px)",
            "num_images": num_images, "seed": seed, "targets": "labels"}
    _check_run(run_dir, {"method": "rlcam", **meta})
    t0 = time.perf_counter()
    images, labels = train_images(num_images, image_size)
    train_config = rlcam.default_train_config(config, num_envs=num_envs, num_updates=updates,
                                              update_epochs=epochs, num_minibatches=4, lr=lr)
    setup_s = time.perf_counter() - t0
    rlcam.train_rlcam(config, images, labels, model_fn, run_dir, key=jax.random.key(seed),
                      train_config=train_config, checkpoint_every=checkpoint_every,
                      progress=progress, max_chunks=max_chunks, meta=meta)
    if not (run_dir / "metrics.json").exists() or not _finished(run_dir, updates):
        return None
    return _finish(run_dir, out, {"setup_s": setup_s,
                                  "command": command or " ".join(sys.argv)})


# ---------------------------------------------------------------------------------------------
# Loading and checking


def _train_hint(method: str, model: str, image_hw) -> str:
    flags = "--method rexl --mode insertion" if method == "rexl_insertion" else (
        "--method rexl" if method.startswith("rexl") else "--method rlcam")
    size = "" if tuple(image_hw) == (DEFAULT_IMAGE_SIZE,) * 2 else f" --image-size {image_hw[0]}"
    return (f"train one with: saliency-jax train-agent {flags} --model {model}{size} "
            "--classifier DIR [--install]")


def load_agent_meta(path) -> tuple[dict, dict]:
    """``(params, agent.json)`` of an agent folder; a ``ValueError`` when there is none."""
    from saliency_jax._src.rl import checkpoint

    return checkpoint.load_agent(path)


def check_classifier(meta: dict, model: str, variables, *, method: str = "rexl",
                     image_hw=(DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE), path="") -> None:
    """The agent described by ``meta`` (its ``agent.json``) must have been trained for this
    classifier (registry ``model`` and the sha256 of ``variables``) at this image size."""
    where = f" at {path}" if path else ""
    hint = _train_hint(method, model, image_hw)
    if meta.get("model") != model:
        raise ValueError(f"the {method} agent{where} was trained for the classifier "
                         f"{meta.get('model')!r}, not {model!r}; {hint}")
    recorded = meta.get("classifier_sha256")
    if recorded is None:
        raise ValueError(f"the {method} agent{where} records no classifier_sha256; {hint}")
    if recorded != variables_digest(variables):
        raise ValueError(
            f"the {method} agent{where} was trained on another {model} classifier (sha256 "
            f"{recorded[:12]}…, these variables {variables_digest(variables)[:12]}…): its state "
            f"is that classifier's features; {hint}")
    trained_hw = tuple(meta.get("env", {}).get("image_hw", image_hw))
    if trained_hw != tuple(image_hw):
        raise ValueError(f"the {method} agent{where} was trained at {trained_hw[0]}x"
                         f"{trained_hw[1]} px, the images are {image_hw[0]}x{image_hw[1]}; {hint}")


def rexl_agent_for(model: str, variables, image_hw, *, mode: str = "deletion", agent_dir=None):
    """``(agent_params, RexlConfig, features_fn, agent.json)`` of the RExL agent for this
    classifier; ``ValueError`` (saying how to train one) when there is none or it does not fit.

    ``agent_dir`` defaults to :func:`packaged_agent_dir`.
    """
    from saliency_jax._src import rexl

    rl_env.check_mode(mode)
    method = "rexl" if mode == "deletion" else "rexl_insertion"
    path = pathlib.Path(agent_dir) if agent_dir is not None else packaged_agent_dir(method, model)
    if not (path / "agent.json").exists():
        raise ValueError(f"no {method} agent for {model} at {path}; "
                         f"{_train_hint(method, model, image_hw)}")
    params, meta = load_agent_meta(path)
    if meta.get("env", {}).get("env") != "rexl":
        raise ValueError(f"{path} is not a RExL agent (agent.json env is not rexl)")
    check_classifier(meta, model, variables, method=method, image_hw=image_hw, path=path)
    config = RexlConfig.from_agent_meta(meta)
    if config.mode != mode:
        raise ValueError(f"the agent at {path} is a {config.mode} agent, not {mode}")
    features_fn = models.features_fn(model, variables, names=(config.stage,))
    rexl.check_agent_params(params, features_fn, tuple(image_hw), config)
    return params, config, features_fn, meta


def rlcam_agent_for(image_hw, *, model: str = DEFAULT_MODEL, agent_dir=None):
    """``(agent_params, RlcamConfig, agent.json)`` of an RL-CAM agent; ``ValueError`` when there
    is none or its grid does not divide the image.

    ``agent_dir`` defaults to the packaged agent of ``model`` if there is one, else that of
    :data:`DEFAULT_MODEL`: the agent runs on any classifier and image size (module doc).
    """
    from saliency_jax._src import rlcam

    if agent_dir is not None:
        path = pathlib.Path(agent_dir)
    else:
        path = packaged_agent_dir("rlcam", model)
        if not (path / "agent.json").exists():
            path = packaged_agent_dir("rlcam", DEFAULT_MODEL)
    if not (path / "agent.json").exists():
        raise ValueError(f"no rlcam agent at {path}; {_train_hint('rlcam', model, image_hw)}")
    params, meta = load_agent_meta(path)
    if "rlcam_config" not in meta:
        raise ValueError(f"{path} is not an RL-CAM agent (agent.json has no rlcam_config)")
    config = RlcamConfig.from_dict(meta["rlcam_config"])
    rl_env.check_grid(config.grid, tuple(image_hw), name="the agent's grid")
    rlcam.check_agent_params(params, config)
    return params, config, meta
