"""Train the packaged RL-CAM agent of the embedded default and measure it against greedy and RISE.

``train`` is a thin wrapper of :func:`saliency_jax.app.agents.train_rlcam_default` (the same training
as ``saliency-jax train-agent --method rlcam``). The black box is the packaged default classifier
``resnet_small`` (112 x 112, 6 classes); the agent is dataset-wide (episodes on uniformly drawn
training images of the synthetic shapes benchmark, target = the label). Environment
(``saliency_jax.app.agents.RLCAM_CONFIG``): a 7 x 7 grid of 16-px patches (``P = 49``, 99 actions,
``2P = 98`` look-ahead queries per step), horizon ``T = 12`` (the target object covers 2–10 % of
the image, i.e. 1–5 patches; the rest of the horizon is room for refinements), ``λ = 1`` (a
patch must gain ``1/P ≈ 0.02`` of probability to be worth adding).

    python benchmarks/train_rlcam_agent.py train        # ~15 min on 2 busy CPU cores; resumable
    python benchmarks/train_rlcam_agent.py evaluate     # RL-CAM vs greedy vs RISE on 16 test images

``train`` writes checkpoints to ``runs/agents/rlcam_resnet_small/`` (run the same command again to
resume) and the final agent to ``saliency_jax/assets/agents/rlcam_resnet_small/`` (``--out``
elsewhere; ``params/`` orbax, ``agent.json`` with the classifier's sha256, ``metrics.json``);
:func:`saliency_jax._src.rlcam.load_rlcam_agent` loads it.
``evaluate`` (the agent of ``--agent``, default the packaged one) writes
``benchmarks/results/rlcam.json``: for the learned agent (argmax actions, and
``rlcam_sampled``: actions sampled as in training), the greedy baseline and RISE, the mean (± std
over images) of IoU, F1 (Dice), precision and recall of the binary mask against the GT object
mask, deletion AUC (lower is better) and insertion AUC (higher is better) with ``step = 56`` px,
the number of model queries and the wall time per image (the first image, which compiles,
excluded). Binary masks: RL-CAM and greedy give theirs; RISE's map is binarised with
``metrics.binarize(threshold=0.3, mode="relative")`` (the IASSA code's rule).
"""

from __future__ import annotations

import argparse
import functools
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run as a script

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from saliency_jax import (
    metrics,  # noqa: E402
    models,  # noqa: E402
)
from saliency_jax._src import rlcam  # noqa: E402
from saliency_jax._src.rise import RiseConfig, rise  # noqa: E402
from saliency_jax.app import agents  # noqa: E402
from saliency_jax.data import shapes  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
MODEL = agents.DEFAULT_MODEL
AGENT_DIR = agents.packaged_agent_dir("rlcam", MODEL)
RUN_DIR = REPO / "runs" / "agents" / agents.agent_name("rlcam", MODEL)
CONFIG = agents.RLCAM_CONFIG
OUTPUT_NAME = "rlcam_output_" + MODEL
OUTPUT_AGENT_DIR = REPO / "saliency_jax" / "assets" / "agents" / OUTPUT_NAME
OUTPUT_RUN_DIR = REPO / "runs" / "agents" / OUTPUT_NAME


def output_config(horizon: int = 24) -> rlcam.RlcamConfig:
    """The output-observation variant (the abstract's observation, one query a step)."""
    return rlcam.RlcamConfig(grid=CONFIG.grid, horizon=horizon, size_penalty=CONFIG.size_penalty,
                             observation="output", num_classes=shapes.NUM_CLASSES)


def classifier_path(args) -> pathlib.Path:
    """The classifier's variables folder: ``--classifier`` or the packaged default."""
    return agents.classifier_path(args.classifier, model=MODEL)


def load_model_fn(args):
    return models.classifier(MODEL, models.load_variables(classifier_path(args), name=MODEL))


def load_split(split: str, n: int, seed: int = 0):
    data = shapes.generate_arrays(split, n, seed=seed, image_size=112)
    return (data["image"].astype(np.float32) / 255.0, data["label"].astype(np.int32),
            data["mask"])


def train(args) -> dict:
    variables = agents.load_classifier_variables(args.classifier, model=MODEL)
    output = args.observation == "output"
    config = output_config(args.horizon or 24) if output else CONFIG
    run_dir = args.run_dir or (OUTPUT_RUN_DIR if output else RUN_DIR)
    out = args.out or (OUTPUT_AGENT_DIR if output else AGENT_DIR)
    summary = agents.train_rlcam_default(
        classifier_variables=variables, run_dir=run_dir, out=out, model=MODEL,
        config=config, updates=args.updates, num_envs=args.num_envs, epochs=args.epochs,
        lr=args.lr, num_images=args.num_images, seed=args.seed,
        checkpoint_every=args.checkpoint_every)
    print(f"rlcam agent: {summary['wall_s']:.0f} s training, episode return "
          f"{summary['first_episode_return']:.3f} -> {summary['last_episode_return']:.3f}, "
          f"at {summary['agent_dir']}")
    return summary


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t0


def evaluate(args) -> dict:
    from benchmarks import common

    model_fn = load_model_fn(args)
    images, labels, gt = load_split("test", args.num_test)
    agent, config = rlcam.load_rlcam_agent(args.agent)
    rise_config = RiseConfig(num_masks=args.rise_masks, grid=7, p_keep=0.5, batch_size=100)

    def learned(key, image, target):
        r = rlcam.rlcam_explain(key, model_fn, image, target, config=config, agent_params=agent)
        return r.saliency, r.mask, r.num_queries

    def sampled(key, image, target):
        r = rlcam.rlcam_explain(key, model_fn, image, target, config=config, agent_params=agent,
                                deterministic=False)
        return r.saliency, r.mask, r.num_queries

    def greedy(key, image, target):
        r = rlcam.rlcam_greedy_explain(key, model_fn, image, target, config=config)
        return r.saliency, r.mask, r.num_queries

    def rise_method(key, image, target):
        sal = rise(key, model_fn, image, target, config=rise_config)
        return sal, metrics.binarize(sal, threshold=0.3, mode="relative"), args.rise_masks

    methods = {"rlcam": learned, "rlcam_sampled": sampled, "rlcam_greedy": greedy,
               "rise": rise_method}
    if args.methods:
        methods = {k: v for k, v in methods.items() if k in args.methods.split(",")}
    results = {}
    for name, method in methods.items():
        rows = []
        for i in range(len(images)):
            key = jax.random.fold_in(jax.random.key(args.seed), i)
            (sal, mask, queries), wall = _timed(method, key, jnp.asarray(images[i]),
                                                int(labels[i]))
            ov = metrics.overlap(mask, gt[i])
            dele = metrics.deletion(model_fn, images[i], sal, int(labels[i]), step=56).auc
            ins = metrics.insertion(model_fn, images[i], sal, int(labels[i]), step=56).auc
            rows.append(dict(iou=float(ov.iou), f1=float(ov.f1), precision=float(ov.precision),
                             recall=float(ov.recall), deletion=float(dele),
                             insertion=float(ins), queries=int(queries), wall_s=wall,
                             mask_fraction=float(np.mean(mask))))
            print(name, i, {k: round(v, 3) for k, v in rows[-1].items()}, flush=True)
        summary = {}
        for field in rows[0]:
            values = [r[field] for r in (rows[1:] if field == "wall_s" else rows)]
            summary[field] = {"mean": float(np.mean(values)), "std": float(np.std(values))}
        summary["wall_s"]["median"] = statistics.median(r["wall_s"] for r in rows[1:])
        summary["compile_and_first_s"] = rows[0]["wall_s"]
        results[name] = {"summary": summary, "per_image": rows}
    payload = {
        "what": "RL-CAM (learned agent), its greedy look-ahead baseline and RISE on the synthetic "
                "shapes test split with the packaged resnet_small classifier",
        "images": f"saliency_shapes/test[:{args.num_test}], targets = labels, 112 x 112",
        "rlcam_config": config.to_dict(),
        "rise_config": {"num_masks": args.rise_masks, "grid": 7, "p_keep": 0.5},
        "masks": "rlcam/greedy: the episode's final patch mask; rise: binarize relative 0.3",
        "deletion_insertion": "step = 56 px (225 evaluations), baseline / blur substrates",
        "wall_s": "per image, the explainer only (the metrics' queries not included); the "
                  "first image (compile) excluded from mean/median",
        "methods": results,
        "environment": common.environment(),
        "command": " ".join(sys.argv),
        "classifier": str(classifier_path(args)),
    }
    path = common.write_result(args.name, payload)
    for name, r in results.items():
        s = r["summary"]
        print(f"{name:13s} IoU {s['iou']['mean']:.3f} F1 {s['f1']['mean']:.3f} "
              f"P {s['precision']['mean']:.3f} R {s['recall']['mean']:.3f} "
              f"del {s['deletion']['mean']:.3f} ins {s['insertion']['mean']:.3f} "
              f"queries {s['queries']['mean']:.0f} wall {s['wall_s']['median']:.2f} s")
    print(f"wrote {path}")
    return payload


def validate(args) -> dict:
    """The output agent against a random policy on held-out *training-split* images.

    Validation images: ``saliency_shapes/train[start:start + n]`` (after the training images),
    never the test split. Methods: the agent (argmax), the agent sampled, a random policy (an
    untrained network, sampled: near-uniform over the allowed actions) and the trivial full
    mask (every patch). Measures: the episode objective ``F_out`` of the final mask, IoU/F1 of
    the mask, pointing of the map (tolerance 7.5 px), queries, mask area. Writes
    ``results/<name>.json`` with means, 95 % t-intervals, the paired differences agent − other
    and the training curve (episode return per update) of ``metrics.json``.
    """
    import json

    from scipy import stats

    from benchmarks import common

    model_fn = load_model_fn(args)
    data = shapes.generate_arrays("train", args.num_val, seed=0, image_size=112,
                                  start=args.start)
    images = data["image"].astype(np.float32) / 255.0
    labels, gt = data["label"].astype(np.int32), data["mask"]
    agent, config = rlcam.load_rlcam_agent(args.agent)
    random_params = rlcam.init_agent(jax.random.key(12345), config)
    explain = jax.jit(functools.partial(rlcam.rlcam_explain, config=config))
    runs = {"agent": (agent, True), "agent_sampled": (agent, False),
            "random_policy": (random_params, False)}
    fields = ("objective", "iou", "f1", "pointing", "queries", "mask_fraction")
    rows = {name: {f: [] for f in fields} for name in (*runs, "full_mask")}
    for i in range(len(images)):
        key = jax.random.fold_in(jax.random.key(args.seed), i)
        image = jnp.asarray(images[i])
        for name, (params, deterministic) in runs.items():
            r = explain(key, model_fn, image, int(labels[i]), agent_params=params,
                        deterministic=deterministic)
            ov = metrics.overlap(r.mask, gt[i])
            row = rows[name]
            row["objective"].append(float(r.objective))
            row["iou"].append(float(ov.iou))
            row["f1"].append(float(ov.f1))
            row["pointing"].append(float(metrics.pointing_game(r.saliency, gt[i],
                                                               tolerance=7.5)))
            row["queries"].append(int(r.num_queries))
            row["mask_fraction"].append(float(jnp.mean(r.mask)))
        full = np.ones(gt[i].shape, bool)
        ov = metrics.overlap(full, gt[i])
        p_full = float(model_fn(image[None])[0, int(labels[i])])
        for f, v in (("objective", p_full - config.size_penalty), ("iou", float(ov.iou)),
                     ("f1", float(ov.f1)), ("queries", 1), ("mask_fraction", 1.0)):
            rows["full_mask"][f].append(v)
        print(i, {n: round(r["iou"][-1], 3) for n, r in rows.items()}, flush=True)

    def mean_ci(v):
        v = np.asarray(v, np.float64)
        half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
        return {"mean": float(v.mean()), "ci95": [float(v.mean() - half),
                                                  float(v.mean() + half)]}

    summary = {n: {f: mean_ci(v) for f, v in r.items() if v} for n, r in rows.items()}
    paired = {n: {f: mean_ci(np.asarray(rows["agent"][f]) - np.asarray(v))
                  for f, v in rows[n].items() if v}
              for n in ("random_policy", "full_mask")}
    curve = None
    metrics_path = args.agent / "metrics.json"
    if metrics_path.exists():
        curve = json.loads(metrics_path.read_text()).get("history", {}).get("episode_return")
    payload = {
        "what": "RL-CAM output-observation agent (reimplemented from the abstract) against a "
                "random policy and the full mask on validation images",
        "images": f"saliency_shapes/train[{args.start}:{args.start + args.num_val}] "
                  "(held out from training), targets = labels, 112²",
        "rlcam_config": config.to_dict(), "agent": str(args.agent),
        "summary": summary, "paired_agent_minus": paired,
        "training_episode_return": curve, "environment": common.environment(),
        "command": " ".join(sys.argv), "per_image": rows,
    }
    path = common.write_result(args.name, payload)
    for n, s in summary.items():
        print(f"{n:14s} " + " ".join(f"{f} {e['mean']:.3f}" for f, e in s.items()))
    print(f"wrote {path}")
    return payload


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--updates", type=int, default=48)
    t.add_argument("--num-envs", type=int, default=8)
    t.add_argument("--epochs", type=int, default=8)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--num-images", type=int, default=128)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint-every", type=int, default=5)
    t.add_argument("--observation", choices=("lookahead", "output"), default="lookahead",
                   help="the agent's observation: the look-ahead gains (the packaged rlcam) or "
                        "the model's output only (rlcam_output)")
    t.add_argument("--horizon", type=int, default=None,
                   help="episode steps T of the output variant (default 24; the look-ahead "
                        "agent keeps its config's 12)")
    t.add_argument("--run-dir", type=pathlib.Path, default=None,
                   help="checkpoints (default runs/agents/<agent name>/)")
    t.add_argument("--out", type=pathlib.Path, default=None,
                   help="where the final agent goes (default: the packaged one)")
    e = sub.add_parser("evaluate")
    e.add_argument("--num-test", type=int, default=16)
    e.add_argument("--rise-masks", type=int, default=4000)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--methods", default="", help="comma-separated subset (default: all)")
    e.add_argument("--name", default="rlcam", help="results/<name>.json")
    e.add_argument("--agent", type=pathlib.Path, default=AGENT_DIR,
                   help="the agent folder (default: the packaged one)")
    v = sub.add_parser("validate", help="the output agent vs a random policy on held-out "
                                         "training-split images")
    v.add_argument("--num-val", type=int, default=64)
    v.add_argument("--start", type=int, default=512,
                   help="first validation index of the train split (after the training images)")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--name", default="rlcam_output_validation", help="results/<name>.json")
    v.add_argument("--agent", type=pathlib.Path, default=OUTPUT_AGENT_DIR)
    for p in (t, e, v):
        p.add_argument("--classifier", default=None,
                       help="resnet_small variables folder (default: the packaged one)")
    args = parser.parse_args(argv)
    {"train": train, "evaluate": evaluate, "validate": validate}[args.command](args)


if __name__ == "__main__":
    main()
