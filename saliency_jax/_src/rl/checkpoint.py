"""Orbax checkpoints for RL agents and a resumable, chunked training driver.

:func:`train_agent` runs :func:`saliency_jax._src.rl.ppo.run_updates` a chunk of ``checkpoint_every``
updates per compiled call and saves the whole runner state (network parameters, optimiser
state, environment states, current observations, running returns and the PRNG key) with
orbax after every chunk. Run again with the same ``out_dir`` and it resumes from the latest
checkpoint. Because an interrupted run and an uninterrupted one call the same compiled chunk on
the same inputs, they end with bit-identical parameters (``tests/test_rl_ppo.py`` checks it).

Layout of ``out_dir``::

    run.json              the TrainConfig and the environment description (checked on resume)
    checkpoints/<update>/ orbax: the runner state and the metrics so far
    agent/                the final parameters (orbax) and agent.json (what the explainer needs)
    metrics.json          per-update metrics, wall time, the agent description
"""

from __future__ import annotations

import functools
import json
import pathlib
import re
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

from saliency_jax._src import optional
from saliency_jax._src.rexl_env import REXL, Environment, EnvParams, observation_shape
from saliency_jax._src.rl import ppo


def save_agent(path, params, meta: dict) -> pathlib.Path:
    """Write agent ``params`` (orbax) and ``meta`` (JSON) to the folder ``path`` (replaced)."""
    path = pathlib.Path(path).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path / "params", jax.device_get(params), force=True)
    checkpointer.wait_until_finished()
    (path / "agent.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return path


def load_agent(path) -> tuple[dict, dict]:
    """``(params, meta)`` from a folder written by :func:`save_agent`."""
    path = pathlib.Path(path).expanduser().resolve()
    if not (path / "params").exists() or not (path / "agent.json").exists():
        raise ValueError(f"{path} is not an agent folder (expected params/ and agent.json)")
    try:
        params = ocp.StandardCheckpointer().restore(path / "params")
        meta = json.loads((path / "agent.json").read_text())
    except Exception as err:
        if isinstance(err, ValueError) and not re.match(r"^[A-Z][A-Z_]+: ", str(err)):
            raise  # not tensorstore's "OUT_OF_RANGE: ..." of a damaged file
        first = (str(err).strip().splitlines() or [""])[0][:160]
        raise ValueError(
            f"agent folder {path} cannot be read ({type(err).__name__}: {first}); it is "
            "truncated or corrupt: train the agent again (saliency-jax train-agent)"
        ) from None
    return params, meta


def env_description(env_params) -> dict:
    """The static settings of RExL ``EnvParams`` that an agent is tied to (``{}`` otherwise)."""
    if not isinstance(env_params, EnvParams):
        return {}
    return {
        "env": "rexl",
        "grid": env_params.grid,
        "mode": env_params.mode,
        "substrate": env_params.substrate,
        "mask_visited": env_params.mask_visited,
        "num_class_planes": env_params.num_class_planes,
        "stage": env_params.stage,
        "image_hw": list(env_params.images.shape[1:3]),
        "num_images": int(env_params.images.shape[0]),
        "observation_shape": list(observation_shape(env_params)),
    }


def _saveable(runner: ppo.RunnerState) -> dict:
    """The runner as a flat dict of arrays (the typed key as its raw data)."""
    runner = runner._replace(key=jax.random.key_data(runner.key))
    return {f"{i:04d}": leaf for i, leaf in enumerate(jax.tree.leaves(runner))}


def _from_saveable(flat: dict, template: ppo.RunnerState) -> ppo.RunnerState:
    treedef = jax.tree.structure(template._replace(key=0))  # the key is one leaf either way
    runner = jax.tree.unflatten(treedef, [flat[k] for k in sorted(flat)])
    return runner._replace(key=jax.random.wrap_key_data(runner.key))


# Module-level so that compiled programs are shared by every call with the same config and env.
_init_runner = jax.jit(ppo.init_runner, static_argnums=(0, 1))
_run_updates = jax.jit(ppo.run_updates, static_argnums=(0, 1), static_argnames=("num_updates",))


def _manager(directory: pathlib.Path) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False)
    return ocp.CheckpointManager(directory, options=options, item_names=("state", "metrics"))


def train_agent(config: ppo.TrainConfig, env_params, out_dir, *, key, env: Environment = REXL,
                checkpoint_every: int = 10, progress: bool = True, max_chunks: int | None = None,
                meta: dict | None = None, stop_early: bool = False):
    """Train (or resume) an agent with PPO, checkpointing every ``checkpoint_every`` updates.

    Args:
      config: the :class:`saliency_jax.rl.TrainConfig`.
      env_params: the environment's parameters (e.g. :func:`~saliency_jax._src.rexl_env.make_env_params`).
      out_dir: the run folder (see the module doc). If it holds checkpoints of the same run,
        training resumes from the latest; a different ``config`` or environment raises
        ``ValueError``.
      key: ``jax.random.key``: the run's randomness (ignored when resuming: the saved key is used).
      env: the :class:`saliency_jax.rl.Environment` (default RExL).
      checkpoint_every: updates per compiled chunk and between checkpoints.
      progress: show a tqdm bar (per chunk) with the mean episode return.
      max_chunks: stop after this many chunks in this call (an interruption, for tests and
        time-boxed jobs); ``None`` runs to the end.
      meta: extra JSON-serialisable entries for ``agent.json``.
      stop_early: save the agent where the run stands even before ``config.num_updates``
        (a time-boxed run: with ``max_chunks=0`` it packages the latest checkpoint);
        ``metrics.json`` then records ``updates`` done, ``scheduled_updates`` and
        ``stopped_early``.

    Returns:
      ``(params, metrics)``: the network parameters (final, or at the interruption) and a dict of
      ``np.float32[updates_done]`` per metric, plus ``"wall_s"``. On completion the agent is saved
      to ``out_dir/agent`` and the metrics to ``out_dir/metrics.json``.
    """
    if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be an integer >= 1, got {checkpoint_every!r}")
    out_dir = pathlib.Path(out_dir).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    run = {"train_config": config.to_dict(), "env": env_description(env_params)}
    run = json.loads(json.dumps(run))  # tuples -> lists, as read back
    run_file = out_dir / "run.json"
    if run_file.exists():
        saved = json.loads(run_file.read_text())
        if saved != run:
            raise ValueError(
                f"out_dir {out_dir} holds a different run (run.json differs); use a new out_dir"
            )
    else:
        run_file.write_text(json.dumps(run, indent=2, sort_keys=True) + "\n")

    init = functools.partial(_init_runner, config, env)
    chunk = functools.partial(_run_updates, config, env)
    manager = _manager(out_dir / "checkpoints")
    start = manager.latest_step()
    history: dict[str, list[float]] = {}
    elapsed = 0.0
    if start is None:
        start = 0
        runner = init(key, env_params)
    else:
        template = jax.eval_shape(init, key, env_params)
        abstract = jax.eval_shape(lambda k, p: _saveable(init(k, p)), key, env_params)
        restored = manager.restore(start, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), metrics=ocp.args.JsonRestore()))
        runner = _from_saveable(restored.state, template)
        history = restored.metrics["history"]
        elapsed = restored.metrics["wall_s"]

    bar = None
    if progress:
        tqdm = optional.require("tqdm.auto", package="tqdm",
                                feature="train's progress bar (progress=False needs none)").tqdm
        bar = tqdm(total=config.num_updates, initial=start, desc="train-agent", unit="update")
        bar.set_postfix_str("compiling the first chunk ...")
    chunks = 0
    done = start
    t0 = time.perf_counter()
    try:  # a Ctrl-C keeps the last saved chunk (saves are synchronous) and closes the manager
        while done < config.num_updates and (max_chunks is None or chunks < max_chunks):
            n = min(checkpoint_every, config.num_updates - done)
            runner, metrics = chunk(runner, env_params, num_updates=n)
            metrics = jax.device_get(metrics)
            for name, values in metrics.items():
                history.setdefault(name, []).extend(float(v) for v in np.asarray(values))
            done += n
            chunks += 1
            wall = elapsed + time.perf_counter() - t0
            manager.save(done, args=ocp.args.Composite(
                state=ocp.args.StandardSave(_saveable(runner)),
                metrics=ocp.args.JsonSave({"history": history, "wall_s": wall})))
            manager.wait_until_finished()
            if bar is not None:
                bar.update(n)
                bar.set_postfix(episode_return=f"{np.mean(metrics['episode_return']):.3f}")
    finally:
        if bar is not None:
            bar.close()
        manager.close()

    wall = elapsed + time.perf_counter() - t0
    params = jax.device_get(runner.train_state.params)
    result = {name: np.asarray(values, np.float32) for name, values in history.items()}
    result["wall_s"] = wall
    finished = done >= config.num_updates
    if finished or (stop_early and done > 0):
        agent_meta = {**run, "num_actions": int(env.num_actions(env_params)), **(meta or {})}
        if not finished:
            agent_meta["updates_done"] = done
        save_agent(out_dir / "agent", params, agent_meta)
        summary = {
            "wall_s": wall,
            "updates": done,
            "scheduled_updates": config.num_updates,
            "stopped_early": not finished,
            "env_steps": done * config.batch_size,
            "final_episode_return": float(np.mean(history["episode_return"][-max(1, done // 10):])),
            "history": history,
            **agent_meta,
        }
        (out_dir / "metrics.json").write_text(json.dumps(summary, indent=1) + "\n")
    return params, result
