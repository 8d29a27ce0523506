"""Train the packaged RL-CAM agent of the embedded default and measure it against greedy and RISE.

The black box is the packaged default classifier ``resnet_small`` (112 x 112, 6 classes); the
agent is dataset-wide (episodes on uniformly drawn training images of the synthetic shapes
benchmark, target = the label). Environment: a 7 x 7 grid of 16-px patches (``P = 49``, 99
actions, ``2P = 98`` look-ahead queries per step), horizon ``T = 12`` (the target object covers
2–10 % of the image, i.e. 1–5 patches; the rest of the horizon is room for refinements),
``λ = 1`` (a patch must gain ``1/P ≈ 0.02`` of probability to be worth adding).

    python benchmarks/train_rlcam_agent.py train        # ~15 min on 2 busy CPU cores; resumable
    python benchmarks/train_rlcam_agent.py evaluate     # RL-CAM vs greedy vs RISE on 16 test images

``train`` writes checkpoints to ``runs/agents/rlcam_resnet_small/`` (run the same command again to
resume) and the final agent to ``saliency_jax/assets/agents/rlcam_resnet_small/`` (``params/``
orbax, ``agent.json``, ``metrics.json``); :func:`saliency_jax.rlcam.load_rlcam_agent` loads it.
``evaluate`` writes ``benchmarks/results/rlcam.json``: per method the mean (± std over images) of
IoU, F1 (Dice), precision and recall of the binary mask against the GT object mask, deletion AUC
(lower is better) and insertion AUC (higher is better) with ``step = 56`` px, the number of
model queries and the wall time per image (the first image, which compiles, excluded).
Binary masks: RL-CAM and greedy give theirs; RISE's map is binarised with
``metrics.binarize(threshold=0.3, mode="relative")`` (the IASSA code's rule).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run as a script

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import models  # noqa: E402
from saliency_jax import embedded, metrics, rlcam  # noqa: E402
from saliency_jax.data import shapes  # noqa: E402
from saliency_jax.rise import RiseConfig, rise  # noqa: E402
from saliency_jax.rlcam import RlcamConfig  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
AGENT_DIR = REPO / "saliency_jax" / "assets" / "agents" / "rlcam_resnet_small"
RUN_DIR = REPO / "runs" / "agents" / "rlcam_resnet_small"
MODEL = "resnet_small"
CONFIG = RlcamConfig(grid=7, horizon=12, size_penalty=1.0, batch_size=98)


def load_model_fn():
    path = embedded.packaged_classifier_dir(MODEL) / "variables"
    return models.classifier(MODEL, models.load_variables(path, name=MODEL))


def load_split(split: str, n: int, seed: int = 0):
    data = shapes.generate_arrays(split, n, seed=seed, image_size=112)
    return (data["image"].astype(np.float32) / 255.0, data["label"].astype(np.int32),
            data["mask"])


def train(args) -> dict:
    model_fn = load_model_fn()
    images, labels, _ = load_split("train", args.num_images)
    train_config = rlcam.default_train_config(
        CONFIG, num_envs=args.num_envs, num_updates=args.updates, update_epochs=args.epochs,
        num_minibatches=4, lr=args.lr)
    meta = {"model": MODEL, "dataset": "saliency_shapes/train", "num_images": args.num_images,
            "targets": "labels", "seed": args.seed, "command": " ".join(sys.argv)}
    t0 = time.perf_counter()
    _, history = rlcam.train_rlcam(CONFIG, images, labels, model_fn, args.run_dir,
                                   key=jax.random.key(args.seed), train_config=train_config,
                                   checkpoint_every=args.checkpoint_every, meta=meta)
    call_s = time.perf_counter() - t0
    run_dir = pathlib.Path(args.run_dir)
    if not (run_dir / "agent").exists():
        print("interrupted; run again to resume")
        return {}
    if AGENT_DIR.exists():
        shutil.rmtree(AGENT_DIR)
    shutil.copytree(run_dir / "agent", AGENT_DIR)
    summary = json.loads((run_dir / "metrics.json").read_text())
    returns = summary["history"]["episode_return"]
    tenth = max(1, len(returns) // 10)
    summary.update(
        first_episode_return=float(np.mean(returns[:tenth])),
        last_episode_return=float(np.mean(returns[-tenth:])),
        this_call_s=call_s,
        environment={"device": jax.devices()[0].device_kind, "jax": jax.__version__},
    )
    (AGENT_DIR / "metrics.json").write_text(json.dumps(summary, indent=1) + "\n")
    size = sum(f.stat().st_size for f in AGENT_DIR.rglob("*") if f.is_file())
    print(f"rlcam agent: {summary['wall_s']:.0f} s training, episode return "
          f"{summary['first_episode_return']:.3f} -> {summary['last_episode_return']:.3f}, "
          f"{size / 1e6:.2f} MB at {AGENT_DIR}")
    return summary


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t0


def evaluate(args) -> dict:
    from benchmarks import common

    model_fn = load_model_fn()
    images, labels, gt = load_split("test", args.num_test)
    agent, config = rlcam.load_rlcam_agent(AGENT_DIR)
    rise_config = RiseConfig(num_masks=args.rise_masks, grid=7, p_keep=0.5, batch_size=100)

    def learned(key, image, target):
        r = rlcam.rlcam_explain(key, model_fn, image, target, config=config, agent_params=agent)
        return r.saliency, r.mask, r.num_queries

    def greedy(key, image, target):
        r = rlcam.rlcam_greedy_explain(key, model_fn, image, target, config=config)
        return r.saliency, r.mask, r.num_queries

    def rise_method(key, image, target):
        sal = rise(key, model_fn, image, target, config=rise_config)
        return sal, metrics.binarize(sal, threshold=0.3, mode="relative"), args.rise_masks

    methods = {"rlcam": learned, "rlcam_greedy": greedy, "rise": rise_method}
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
        "wall_s": "per image incl. the metrics' own queries excluded; first image (compile) "
                  "excluded from mean/median",
        "methods": results,
        "environment": common.environment(),
        "command": " ".join(sys.argv),
    }
    path = common.write_result("rlcam", payload)
    for name, r in results.items():
        s = r["summary"]
        print(f"{name:13s} IoU {s['iou']['mean']:.3f} F1 {s['f1']['mean']:.3f} "
              f"P {s['precision']['mean']:.3f} R {s['recall']['mean']:.3f} "
              f"del {s['deletion']['mean']:.3f} ins {s['insertion']['mean']:.3f} "
              f"queries {s['queries']['mean']:.0f} wall {s['wall_s']['median']:.2f} s")
    print(f"wrote {path}")
    return payload


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--updates", type=int, default=40)
    t.add_argument("--num-envs", type=int, default=8)
    t.add_argument("--epochs", type=int, default=8)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--num-images", type=int, default=512)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint-every", type=int, default=5)
    t.add_argument("--run-dir", type=pathlib.Path, default=RUN_DIR)
    e = sub.add_parser("evaluate")
    e.add_argument("--num-test", type=int, default=16)
    e.add_argument("--rise-masks", type=int, default=4000)
    e.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    (train if args.command == "train" else evaluate)(args)


if __name__ == "__main__":
    main()
