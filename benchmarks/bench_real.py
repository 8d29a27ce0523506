"""RISE's Table 1 protocol on real photos: EfficientNet-Lite0, 224², target = the label.

The images are Tux Paint's photographic stamps with hand-given ImageNet labels
(``benchmarks/stamps_imagenet.py``: 120 photos of 97 classes, GPL-2, made from Debian's
``tuxpaint-stamps-default`` package; nothing is shipped). The classifier is the packaged
EfficientNet-Lite0 with its real ImageNet weights. Per image, resized directly to 224²:

* RISE at N = 4000 and N = 8000 (s = 7, p = 0.5). The 8000-mask map is the mean of the
  4000-mask map and a second, independent 4000-mask map (seed 1): ``(1/(N p)) Σ f_i M_i`` over
  8000 independent masks, the same estimator as one 8000-mask call, for 4000 more queries;
* anytime RISE (``sj.rise_anytime``, library defaults, at most 4000 masks);
* Grad-CAM, sliding window 64/8 (the paper's occlusion baseline), LIME with 1000 samples, and a
  uniform random map (the floor).

Deletion (pixels to the zero baseline) and insertion (pixels onto the ``gkern(11, 5)`` blur) at
224 pixels a step, as the authors' ``CausalMetric``. Each image's row (AUCs, queries, seconds,
the model's prediction) is appended to ``benchmarks/results/<name>.rows.jsonl`` as soon as it
is done, so a run resumes where it stopped (the rows are committed; the run spans sessions).
Means with 95 % bootstrap intervals (images resampled, 2000 draws, seed 0); the ranking against
the paper's ResNet50 row (:data:`PAPER`); anytime RISE's masks against 4000 with the paired AUC
differences.

    python benchmarks/bench_real.py                        # all 120 images, resumes
    python benchmarks/bench_real.py --num-images 8         # the first 8 (a random sample)
    python benchmarks/bench_real.py --table-only           # the table from the rows so far
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run as a script

import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402

MODEL = "efficientnet_lite0"
SIZE = 224
STEP = 224
METHODS = ("rise", "rise_8000", "rise_anytime", "gradcam", "occlusion", "lime", "random")
PAPER = {  # RISE (Petsiuk et al. 2018) Table 1, ResNet50: (deletion, insertion)
    "rise": (0.1076, 0.7267),
    "lime": (0.1217, 0.6940),
    "gradcam": (0.1232, 0.6766),
    "occlusion": (0.1421, 0.6618),
}
DRAWS = 2000


def default_folder() -> pathlib.Path:
    return common.REPO / "runs" / "stamps_imagenet"


def _mean_ci(values) -> dict:
    """Mean with a bootstrap 95 % interval (images resampled)."""
    values = np.asarray(values, np.float64)
    idx = np.random.default_rng(0).integers(0, len(values), (DRAWS, len(values)))
    means = values[idx].mean(axis=1)
    return {"mean": float(values.mean()),
            "ci95": [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]}


def read_rows(path: pathlib.Path) -> dict[int, dict]:
    """Complete rows by image index (a torn last line, from a killed run, is ignored)."""
    rows = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            rows[int(row["index"])] = row
    return rows


def _explainers(ctx):
    """name -> (explain(key, model_fn, image, target) -> (map, queries), the app's Method)."""
    import jax.numpy as jnp

    from saliency_jax.app import methods

    built = {m.name: m for m in methods.build_methods(
        ("rise", "rise_anytime", "gradcam", "occlusion", "lime", "random"), ctx)}

    def fixed(method):
        return lambda key, model_fn, image, target: (method.explain(key, model_fn, image, target),
                                                     jnp.int32(method.queries))

    out = {name: (_jit_or_eager(fixed(m) if m.explain_counted is None else m.explain_counted), m)
           for name, m in built.items()}
    return out, built


def _jit_or_eager(fn):
    """``jit(fn)``, or ``fn`` itself for an explainer that cannot be traced (LIME computes its
    superpixels outside JAX), as ``evaluate`` runs them."""
    import jax

    jitted, eager = jax.jit(fn), []

    def call(*args):
        if not eager:
            try:
                return jitted(*args)
            except ValueError as err:
                if "traced" not in str(err):
                    raise
                eager.append(True)
        return fn(*args)

    return call


@functools.cache
def _metrics():
    import jax

    from saliency_jax import metrics

    def both(model_fn, image, saliency, target):
        return (metrics.deletion(model_fn, image, saliency, target, step=STEP).auc,
                metrics.insertion(model_fn, image, saliency, target, step=STEP).auc)

    return jax.jit(both)


def evaluate_image(index, example, model_fn, explainers) -> dict:
    """One image: every map of :data:`METHODS`, its deletion/insertion AUCs, queries, seconds."""
    import jax
    import jax.numpy as jnp

    from saliency_jax.app.evaluate import method_key

    image = jnp.asarray(example["image"], jnp.float32) / 255.0
    label = int(example["label"])
    target = jnp.asarray(label, jnp.int32)
    probs = model_fn(image[None])[0]  # softmax probabilities
    row = {"index": index, "id": str(example.get("id", index)), "label": label,
           "top1": int(jnp.argmax(probs)), "p_label": float(probs[label]), "methods": {}}
    maps = {}
    for name in METHODS:
        t0 = time.perf_counter()
        if name == "rise_8000":  # the 4000-mask map and an independent one (seed 1)
            explain, _ = explainers["rise"]
            second, _ = explain(method_key(1, index, "rise"), model_fn, image, target)
            saliency = jax.block_until_ready((maps["rise"] + second) / 2.0)
            queries = 8000
        else:
            explain, _ = explainers[name]
            saliency, queries = jax.block_until_ready(
                explain(method_key(0, index, name), model_fn, image, target))
        seconds = time.perf_counter() - t0 + (row["methods"]["rise"]["seconds"]
                                              if name == "rise_8000" else 0.0)
        maps[name] = saliency
        dele, ins = _metrics()(model_fn, image, jnp.asarray(saliency, jnp.float32), target)
        row["methods"][name] = {"deletion": float(dele), "insertion": float(ins),
                                "queries": int(queries), "seconds": seconds}
    return row


def summarize(rows: list[dict], descriptions: dict) -> dict:
    """Per method: AUC means with intervals, queries, median seconds; ranking; anytime RISE."""
    out = {"num_images": len(rows)}
    labels = np.array([r["label"] for r in rows])
    top1 = np.array([r["top1"] for r in rows])
    out["top1_accuracy"] = _mean_ci((labels == top1).astype(np.float64))
    table = {}
    for name in METHODS:
        got = [r["methods"][name] for r in rows]
        table[name] = {
            "description": descriptions.get(name, ""),
            "deletion": _mean_ci([g["deletion"] for g in got]),
            "insertion": _mean_ci([g["insertion"] for g in got]),
            "queries_mean": float(np.mean([g["queries"] for g in got])),
            # the first image compiles every program: leave it out of the time
            "seconds_median": float(statistics.median([g["seconds"] for g in got[1:]] or
                                                      [got[0]["seconds"]])),
        }
    out["methods"] = table
    compared = ("rise_8000", "lime", "gradcam", "occlusion")
    ours_del = sorted(compared, key=lambda n: table[n]["deletion"]["mean"])
    ours_ins = sorted(compared, key=lambda n: -table[n]["insertion"]["mean"])
    paper_key = {"rise_8000": "rise", "lime": "lime", "gradcam": "gradcam",
                 "occlusion": "occlusion"}
    paper_del = sorted(compared, key=lambda n: PAPER[paper_key[n]][0])
    paper_ins = sorted(compared, key=lambda n: -PAPER[paper_key[n]][1])
    out["ranking"] = {"deletion_ours": ours_del, "deletion_paper": paper_del,
                      "insertion_ours": ours_ins, "insertion_paper": paper_ins}
    # Each step of our ranking as a paired difference (the worse minus the better neighbour's
    # deletion; the better minus the worse's insertion): a step whose interval holds 0 is a tie.
    per = {m: {n: np.array([r["methods"][n][m] for r in rows]) for n in compared}
           for m in ("deletion", "insertion")}
    out["ranking_steps"] = {
        "deletion": [{"pair": [a, b], "diff": _mean_ci(per["deletion"][b] - per["deletion"][a])}
                     for a, b in itertools.pairwise(ours_del)],
        "insertion": [{"pair": [a, b],
                       "diff": _mean_ci(per["insertion"][a] - per["insertion"][b])}
                      for a, b in itertools.pairwise(ours_ins)]}
    any_q = np.array([r["methods"]["rise_anytime"]["queries"] for r in rows], np.float64)
    diff = {m: _mean_ci([r["methods"]["rise_anytime"][m] - r["methods"]["rise"][m]
                         for r in rows]) for m in ("deletion", "insertion")}
    out["anytime"] = {"masks_mean": float(any_q.mean()), "masks_median": float(np.median(any_q)),
                      "masks_range": [int(any_q.min()), int(any_q.max())],
                      "fewer_than_4000": float(4000.0 / any_q.mean()),
                      "auc_minus_rise_4000": diff}
    return out


def _fmt(ci: dict) -> str:
    lo, hi = ci["ci95"]
    return f"{ci['mean']:.4f} [{lo:.4f}, {hi:.4f}]"


LABELS = {"rise": "RISE, N = 4000", "rise_8000": "RISE, N = 8000",
          "rise_anytime": "anytime RISE (≤ 4000)", "gradcam": "Grad-CAM",
          "occlusion": "sliding window 64/8", "lime": "LIME, 1000 samples", "random": "random"}


def markdown(summary: dict) -> str:
    lines = ["| method | deletion ↓ [95 % CI] | insertion ↑ [95 % CI] | paper (ResNet50) del / ins"
             " | queries | s / image |", "|---|---|---|---|---|---|"]
    paper = {"rise_8000": PAPER["rise"], "lime": PAPER["lime"], "gradcam": PAPER["gradcam"],
             "occlusion": PAPER["occlusion"]}
    for name, m in summary["methods"].items():
        ref = paper.get(name)
        lines.append(f"| {LABELS[name]} | {_fmt(m['deletion'])} | {_fmt(m['insertion'])} | "
                     f"{f'{ref[0]:.4f} / {ref[1]:.4f}' if ref else '—'} | "
                     f"{m['queries_mean']:.0f} | {m['seconds_median']:.1f} |")
    return "\n".join(lines)


def table_section(lines, name: str = "real_stamps") -> None:
    """The section of ``benchmarks/README.md`` (and, once complete, the README's) from
    ``results/<name>.json``."""
    path = common.RESULTS / f"{name}.json"
    if not path.exists():
        return
    d = json.loads(path.read_text())
    s = d["summary"]
    n, total = s["num_images"], d.get("num_images_planned", 120)
    acc = s["top1_accuracy"]
    rank = s["ranking"]
    steps = s["ranking_steps"]
    anytime = s["anytime"]
    diff = anytime["auc_minus_rise_4000"]
    env = d["environment"]
    lines += [
        "## RISE's Table 1 protocol on real photos (`bench_real.py`)", "",
        d["what"] + ("" if d["complete"] else
                     f". **Partial: {n} of {total} images so far** (the run resumes from "
                     f"`results/{name}.rows.jsonl`)") + ".", "",
        d["table_md"], "",
        f"Top-1 accuracy of the model on these images: {_fmt_pct(acc)}. Ranking by deletion "
        f"(lower is better): ours {_ranked(rank['deletion_ours'], steps['deletion'], '<')}; "
        f"the paper's {_ranked(rank['deletion_paper'], None, '<')}. By insertion (higher is "
        f"better): ours {_ranked(rank['insertion_ours'], steps['insertion'], '>')}; the paper's "
        f"{_ranked(rank['insertion_paper'], None, '>')}. "
        + _steps_sentence(steps) +
        f"Anytime RISE used {anytime['masks_mean']:.0f} masks on average (median "
        f"{anytime['masks_median']:.0f}, range {anytime['masks_range'][0]}-"
        f"{anytime['masks_range'][1]}), {anytime['fewer_than_4000']:.1f}x fewer than N = 4000, "
        f"with AUC differences against it (paired) of {_fmt_diff(diff['deletion'])} (deletion) "
        f"and {_fmt_diff(diff['insertion'])} (insertion). Intervals: 95 % bootstrap over images.",
        "",
        f"Measured on {env['device_kind']}, {env['cpu_count']} cores, jax "
        f"{env['versions']['jax']}; load average per image is in the rows (the s / image are "
        f"medians under that load). Command: `{d['command']}`.", ""]


def _short(name: str) -> str:
    return LABELS[name].split(",")[0]


def _ranked(order: list, steps: list | None, sep: str) -> str:
    """``A < B ≈ C < D``: ``≈`` where the paired interval of the step holds 0 (no steps: the
    order as given)."""
    text = _short(order[0])
    for i, name in enumerate(order[1:]):
        tie = steps is not None and steps[i]["diff"]["ci95"][0] <= 0.0
        text += f" {'≈' if tie else sep} {_short(name)}"
    return text


def _steps_sentence(steps: dict) -> str:
    """Each step as a paired difference, positive where the ranking holds."""
    parts = []
    for metric in ("deletion", "insertion"):
        for step in steps[metric]:
            better, worse = step["pair"]
            first, second = (worse, better) if metric == "deletion" else (better, worse)
            parts.append(f"{metric} {_short(first)} − {_short(second)} "
                         f"{_fmt_diff(step['diff'])}")
    return "Paired steps of our ranking (≈: the interval holds 0): " + "; ".join(parts) + ". "


def _fmt_pct(ci: dict) -> str:
    lo, hi = ci["ci95"]
    return f"{100 * ci['mean']:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}]"


def _fmt_diff(ci: dict) -> str:
    lo, hi = ci["ci95"]
    return f"{ci['mean']:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=pathlib.Path, default=None,
                        help="the stamps folder (default runs/stamps_imagenet, made if missing)")
    parser.add_argument("--num-images", type=int, default=120)
    parser.add_argument("--name", default="real_stamps",
                        help="results/<name>.json and results/<name>.rows.jsonl")
    parser.add_argument("--table-only", action="store_true",
                        help="no computing: the table from the rows written so far")
    parser.add_argument("--stop-after", type=float, default=None,
                        help="seconds: stop (between images) after this long")
    args = parser.parse_args(argv)

    from saliency_jax import sharding

    sharding.set_cpu_devices()  # a JAX CPU device per core, as the saliency-jax command does

    from saliency_jax import data
    from saliency_jax.app import classifiers, methods

    rows_path = common.RESULTS / f"{args.name}.rows.jsonl"
    folder = args.folder or default_folder()
    if not folder.exists():
        from benchmarks import stamps_imagenet

        stamps_imagenet.main(["--out", str(folder)])
    dataset = data.load(f"folder:{folder}", image_size=SIZE, resize="direct")
    if args.num_images > len(dataset):
        raise SystemExit(f"--num-images {args.num_images} > the folder's {len(dataset)} images")
    model_fn, variables = classifiers.load_classifier(MODEL, None)
    ctx = methods.model_context(MODEL, variables, (SIZE, SIZE))
    explainers, built = _explainers(ctx)
    descriptions = {name: m.description for name, m in built.items()}
    descriptions["rise_8000"] = ("RISE, N=8000, s=7, p=0.5: the N=4000 map averaged with an "
                                 "independent N=4000 map (seed 1)")

    rows = read_rows(rows_path)
    t_start = time.perf_counter()
    if not args.table_only:
        rows_path.parent.mkdir(parents=True, exist_ok=True)
        for index in range(args.num_images):
            if index in rows:
                continue
            if args.stop_after is not None and time.perf_counter() - t_start > args.stop_after:
                print(f"stopping after {time.perf_counter() - t_start:.0f} s (--stop-after)")
                break
            t0 = time.perf_counter()
            row = evaluate_image(index, dataset[index], model_fn, explainers)
            row["load_average"] = list(os.getloadavg())
            with rows_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            rows[index] = row
            print(f"image {index} ({row['id'].rsplit('/', 1)[-1]}): "
                  f"{time.perf_counter() - t0:.0f} s; " + ", ".join(
                      f"{n} {v['deletion']:.3f}/{v['insertion']:.3f}"
                      for n, v in row["methods"].items()), flush=True)

    done = [rows[i] for i in sorted(rows) if i < args.num_images]
    if not done:
        print("no rows yet")
        return 0
    summary = summarize(done, descriptions)
    table = markdown(summary)
    print(table)
    print(json.dumps({k: summary[k] for k in ("top1_accuracy", "ranking", "anytime")}, indent=1))
    payload = {
        "what": (f"RISE Table 1 protocol on real photos: {MODEL} (real ImageNet weights), "
                 f"{SIZE}² direct resize, target = the label, deletion (zero baseline) and "
                 f"insertion (blur) at step {STEP}; {len(done)} of {args.num_images} images of "
                 "Tux Paint's photographic stamps (benchmarks/stamps_imagenet.py, GPL-2)"),
        "complete": len(done) >= args.num_images,
        "num_images_planned": args.num_images,
        "summary": summary,
        "table_md": table,
        "paper_resnet50": PAPER,
        "environment": common.environment(),
        "command": ("python benchmarks/bench_real.py" if args.table_only
                    else " ".join(["python", *sys.argv])),
    }
    print(f"wrote {common.write_result(args.name, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
