"""IASSA's per-iteration curve on the synthetic benchmark, and IASSA against RISE at equal budgets.

For each test image (target = label), one :func:`saliency_jax.iassa` call per variant with
``return_iterations=True`` gives the adjusted map ``S'_t`` of every iteration ``t = 0 .. k``.
Every ``S'_t`` is scored with the main job's localisation metrics (pointing game with 7.5 px
tolerance, IoU and F1 at 0.3 of the map's range); the causal metrics (deletion / insertion AUC,
step 56 px, about 450 forward passes per map) at the iterations of ``--eval-at`` (default: all).
RISE (the main table's settings: 7 x 7 grid, p = 0.5) runs on the same images with ``N`` = the
paper variant's cumulative queries at each iteration of ``--rise-at`` and is scored with all
five metrics. Each image's rows are appended to ``results/<name>.rows.jsonl`` as soon as they
are done (``--resume`` continues from there), and the summary (mean and 95 % t-interval over
images per iteration; paired IASSA − RISE differences with their 95 % t-intervals) is written
to ``results/<name>.json``.

    python benchmarks/bench_iassa_iterations.py --num-images 100 --eval-at 0,1,5,15,25 \\
        --rise-at 0,5,25 --set windows_per_iteration=256
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run as a script

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from benchmarks import common  # noqa: E402
from saliency_jax import (
    metrics,  # noqa: E402
    models,  # noqa: E402
)
from saliency_jax._src.iassa import (  # noqa: E402
    REFERENCE_LEVELS,
    IassaConfig,
    _chunk_size,
    iassa,
    window_schedule,
)
from saliency_jax._src.rise import RiseConfig, rise  # noqa: E402
from saliency_jax.app import classifiers  # noqa: E402
from saliency_jax.app.evaluate import EvaluateConfig  # noqa: E402
from saliency_jax.data import shapes  # noqa: E402

METRICS = ("deletion", "insertion", "pointing", "iou", "f1")
SIZE = 112


def _ints(text):
    return [int(x) for x in text.split(",") if x.strip()] if text else []


def _parse_overrides(items):
    overrides = {}
    for item in items:
        field, _, value = item.partition("=")
        if field not in {f.name for f in dataclasses.fields(IassaConfig)} or not value:
            raise ValueError(f"--set wants FIELD=VALUE with an IassaConfig field, got {item!r}")
        overrides[field] = float(value) if "." in value or "e" in value else int(value)
    return overrides


def _configs(variants, overrides):
    out = {}
    for variant in variants:
        config = (IassaConfig.for_image_size(SIZE) if variant == "paper"
                  else IassaConfig.reference(SIZE))
        fields = {k: v for k, v in overrides.items()
                  if variant == "paper" or k != "windows_per_iteration"}
        out[variant] = dataclasses.replace(config, **fields)
    return out


def _per_iteration_queries(config):
    """``[q_0, q_0 + q_1, ...]`` from the padded per-iteration counts."""
    b = _chunk_size(config, (SIZE, SIZE))
    per = [-(-n // b) * b for *_, n in window_schedule(config, (SIZE, SIZE))]
    per[0] += 1 if config.variant == "paper" else 0
    return np.cumsum(per).tolist()


def _score(model_fn, image, sal, label, mask, ev, causal):
    row = dict(
        pointing=float(metrics.pointing_game(sal, mask, tolerance=ev.tolerance)),
        iou=float(metrics.iou(sal, mask, threshold=ev.iou_threshold, mode="relative")),
        f1=float(metrics.f1(sal, mask, threshold=ev.iou_threshold, mode="relative")))
    if causal:
        row["deletion"] = float(metrics.deletion(model_fn, image, sal, label, step=ev.step).auc)
        row["insertion"] = float(metrics.insertion(model_fn, image, sal, label,
                                                   step=ev.step).auc)
    return row


def _interval(values):
    values = np.asarray(values, np.float64)
    n = len(values)
    mean = float(values.mean())
    if n < 2:
        return {"mean": mean, "ci95": [mean, mean], "n": n}
    half = float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n))
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": n}


def _summarise(rows, configs, rise_at, queries):
    summary = {}
    for variant in configs:
        curve = []
        for t in range(configs[variant].iterations + 1):
            entry = {"iteration": t, "cumulative_queries": queries[variant][t]}
            for m in METRICS:
                vals = [r[variant][t][m] for r in rows if m in r[variant][t]]
                if vals:
                    entry[m] = _interval(vals)
            curve.append(entry)
        summary[variant] = curve
    versus, versus_max = [], []
    for t in rise_at:
        key = f"rise@{t}"
        entry = {"iteration": t, "num_masks": queries["paper"][t]}
        for m in METRICS:
            rise_vals = [r[key][m] for r in rows]
            iassa_vals = [r["paper"][t][m] for r in rows]
            entry[m] = {"rise": _interval(rise_vals), "iassa": _interval(iassa_vals),
                        "iassa_minus_rise": _interval(np.subtract(iassa_vals, rise_vals))}
        versus.append(entry)
    # Each scored iteration t against RISE at the largest budget: RISE gets at least as many
    # queries as IASSA had spent by t (conservative for IASSA).
    if rise_at and rows:
        top = max(rise_at)
        key = f"rise@{top}"
        for t in range(len(rows[0]["paper"])):
            if queries["paper"][t] > queries["paper"][top]:
                continue
            entry = {"iteration": t, "iassa_queries": queries["paper"][t],
                     "rise_num_masks": queries["paper"][top]}
            for m in METRICS:
                if not all(m in r["paper"][t] for r in rows):
                    continue
                iassa_vals = [r["paper"][t][m] for r in rows]
                rise_vals = [r[key][m] for r in rows]
                entry[m] = {"iassa": _interval(iassa_vals), "rise": _interval(rise_vals),
                            "iassa_minus_rise": _interval(np.subtract(iassa_vals, rise_vals))}
            versus_max.append(entry)
    return summary, versus, versus_max


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=100)
    parser.add_argument("--variants", default="paper,reference")
    parser.add_argument("--eval-at", default="",
                        help="iterations scored with deletion/insertion (default: all)")
    parser.add_argument("--rise-at", default="0,5,25",
                        help="paper-variant iterations whose cumulative queries set RISE's N")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override an IassaConfig number, e.g. windows_per_iteration=256 "
                        "(paper variant only) or beta=1.0")
    parser.add_argument("--name", default="iassa_iterations", help="results/<name>.json")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--rise-only", action="store_true",
                        help="add the missing rise@t of --rise-at to the rows of "
                        "results/<name>.rows.jsonl (IASSA not re-run), then summarise")
    parser.add_argument("--summarise-only", action="store_true",
                        help="no new images: summarise results/<name>.rows.jsonl as it is")
    parser.add_argument("--wall-s", type=float, default=float("nan"),
                        help="with --summarise-only: the wall time of the run that made the rows")
    args = parser.parse_args(argv)
    overrides = _parse_overrides(args.set)
    configs = _configs(args.variants.split(","), overrides)
    eval_at = set(_ints(args.eval_at)) or None
    rise_at = _ints(args.rise_at) if "paper" in configs else []
    queries = {v: _per_iteration_queries(c) for v, c in configs.items()}

    ev = EvaluateConfig()  # the main job's metric settings at 112²
    model_fn, variables = classifiers.load_classifier("resnet_small", None)
    features_fn = models.features_fn("resnet_small", variables, names=REFERENCE_LEVELS)
    data = shapes.generate_arrays("test", args.num_images, seed=0, image_size=SIZE)
    rows_path = common.RESULTS / f"{args.name}.rows.jsonl"
    rows = []
    if (args.resume or args.summarise_only or args.rise_only) and rows_path.exists():
        rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line]
    elif rows_path.exists():
        rows_path.unlink()
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def add_rise(row, image, label, mask, key):
        for t in rise_at:
            if f"rise@{t}" in row:
                continue
            s0 = time.perf_counter()
            cfg = RiseConfig(num_masks=queries["paper"][t], grid=7, p_keep=0.5, batch_size=100)
            sal = jax.block_until_ready(rise(jax.random.fold_in(key, 1000 + t), model_fn, image,
                                             label, config=cfg))
            row["seconds"][f"rise@{t}"] = time.perf_counter() - s0
            row[f"rise@{t}"] = _score(model_fn, image, sal, label, mask, ev, True)

    if args.rise_only:
        rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line]
        for i, row in enumerate(rows):
            t0 = time.perf_counter()
            add_rise(row, jnp.asarray(data["image"][i], jnp.float32) / 255.0,
                     int(data["label"][i]), data["mask"][i], jax.random.fold_in(jax.random.key(0), i))
            rows_path.with_suffix(".tmp").write_text("".join(json.dumps(r) + "\n" for r in rows))
            rows_path.with_suffix(".tmp").replace(rows_path)  # resumable: done rows are kept
            print(f"image {i} ({time.perf_counter() - t0:.0f} s)", flush=True)
    for i in range(len(rows), len(rows) if (args.summarise_only or args.rise_only)
                   else args.num_images):
        t0 = time.perf_counter()
        image = jnp.asarray(data["image"][i], jnp.float32) / 255.0
        label, mask = int(data["label"][i]), data["mask"][i]
        key = jax.random.fold_in(jax.random.key(0), i)
        row = {"image": i, "seconds": {}}
        for variant, config in configs.items():
            s0 = time.perf_counter()
            _, maps = iassa(key, model_fn, image, label, config=config, features_fn=features_fn,
                            return_iterations=True)
            maps = jax.block_until_ready(maps)
            row["seconds"][variant] = time.perf_counter() - s0
            row[variant] = [_score(model_fn, image, maps[t], label, mask, ev,
                                   eval_at is None or t in eval_at)
                            for t in range(maps.shape[0])]
        add_rise(row, image, label, mask, key)
        rows.append(row)
        with rows_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        last = {v: {k: round(x, 3) for k, x in row[v][-1].items()} for v in configs}
        print(f"image {i} ({time.perf_counter() - t0:.0f} s)", last, flush=True)

    summary, versus, versus_max = _summarise(rows, configs, rise_at, queries)
    payload = {
        "what": "IASSA per-iteration metrics of the adjusted map S'_t (mean and 95 % t-interval "
                "over images), and IASSA (paper variant) against RISE with N = its cumulative "
                "queries",
        "images": f"saliency_shapes/test[:{len(rows)}], 112², target = label, packaged "
                  "resnet_small",
        "num_images": len(rows),
        "overrides": overrides,
        "causal_metrics_at": sorted(eval_at) if eval_at else "all",
        "configs": {v: {"schedule": [list(p) for p in c.schedule()],
                        "windows_per_iteration": c.windows_per_iteration,
                        "iterations": c.iterations} for v, c in configs.items()},
        "metrics": {"step": ev.step, "tolerance_px": ev.tolerance,
                    "iou_threshold": ev.iou_threshold},
        "rise": {"grid": 7, "p_keep": 0.5, "at_iterations": rise_at},
        "results": summary,
        "iassa_vs_rise": versus,
        "iassa_at_t_vs_rise_at_max_budget": versus_max,
        "seconds_per_image": {k: float(np.median([r["seconds"][k] for r in rows]))
                              for k in rows[0]["seconds"]
                              if all(k in r["seconds"] for r in rows)} if rows else {},
        "wall_s": (args.wall_s if args.summarise_only or args.rise_only
                   else time.perf_counter() - started),
        "rise_only_wall_s": time.perf_counter() - started if args.rise_only else None,
        "planned_images": args.num_images,
        "environment": common.environment(),
        "command": " ".join(["python", *sys.argv]),
    }
    print(json.dumps({"results": summary, "iassa_vs_rise": versus}, indent=1)[:4000])
    print(f"wrote {common.write_result(args.name, payload)}")


if __name__ == "__main__":
    main()
