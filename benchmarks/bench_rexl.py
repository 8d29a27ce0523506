"""RExL vs RISE on the embedded default: deletion/insertion AUC with 95 % intervals, queries, time.

The black box is the packaged ``resnet_small`` (112 x 112, synthetic shapes). The RExL rows are
the packaged agents as the main job builds them (:func:`saliency_jax.app.methods.rexl_method`:
one fused network pass per step, min-max normalisation), each labelled by its MDP:

* ``rexl``: the packaged agent as the main job runs it: the reference code's MDP
  (``U[-0.5, 0.5)`` noise substrate, revisits allowed), sampled actions as the code's
  ``predict``, and the inference settings of its ``agent.json`` (``inference``: packaged with
  ``policy_weight = 0``, the code's trajectory map);
* ``rexl_trajectory``: the same agent and actions, weight 0 named explicitly (equal to ``rexl``
  while the packaged weight is 0: a check); ``rexl_argmax``: the same with argmax actions;
* ``rexl_w1`` / ``rexl_w2``: the trajectory map plus the agent's first-step policy term with
  weight 1 / 2 (``RexlConfig.policy_weight``; 2 was the best of 0–2 on the validation split,
  ``results/rexl_select_inference_validation.json``);
* ``rexl_masked``: the variant MDP (mean-colour substrate, each patch once), argmax actions;
* ``rexl_insertion``: the insertion agent (variant MDP), argmax actions;
* ``--agent NAME=DIR``: a candidate agent folder (not packaged), e.g. a training run's.

RISE uses N masks (default 4000, s = 7, p = 0.5); a uniform random map is the floor. Metrics
follow the RISE protocol (METHODS §5.1) with the step scaled to the image: ``step = 56`` px at
112² (= 224 px at 224²); deletion to the model's mean colour (lower is better), insertion from
the ``gkern(11, 5)`` blur (higher is better); the class is the top-1 of the original.

Intervals: each AUC's mean ± 1.96 standard errors over images; each ratio to RISE (ratio of the
means) with a paired bootstrap 95 % interval (images resampled, 2000 draws, seed 0). Time: the
methods are called interleaved, image by image, after one compiling call each; median seconds
per image, and its ratio to RISE's.

Resumable: every (image, method) result is appended to
``results/rexl_rows_<model>_<split>_seed<seed>.jsonl`` and reused by a later run with the same
model, split, seed and method description (so RISE's rows serve every later RExL variant; the
summary JSON is rewritten every ``--write-every`` images). ``--model vgg_small`` uses that
classifier's packaged agents (variants without one are skipped).

Held-out use: ``--split validation`` (a split no agent was trained or reported on) is where
candidate agents are compared before one is packaged; the reported table uses ``--split test``.

    python benchmarks/bench_rexl.py --num-images 100              # results/rexl_vs_rise.json
    python benchmarks/bench_rexl.py --split validation --num-images 32 --no-rise \\
        --agent candidate=runs/candidates_warm/rexl_deletion_resnet_small --out-name rexl_select
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run as a script

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from saliency_jax import metrics  # noqa: E402
from saliency_jax._src.rise import RiseConfig, rise  # noqa: E402
from saliency_jax.app import agents, classifiers, methods  # noqa: E402
from saliency_jax.data import shapes  # noqa: E402

MODEL = agents.DEFAULT_MODEL
STEP = 56
TARGET = {"deletion_vs_rise": 1.05, "insertion_vs_rise": 0.95, "queries_vs_rise": 1 / 50}


def _mean_ci(values) -> dict:
    values = np.asarray(values, np.float64)
    half = 1.96 * values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return {"mean": float(values.mean()), "ci95": [float(values.mean() - half),
                                                   float(values.mean() + half)]}


def _ratio_ci(a, b, draws: int = 2000) -> dict:
    """``mean(a) / mean(b)`` with a paired bootstrap 95 % interval."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(a), (draws, len(a)))
    ratios = a[idx].mean(axis=1) / b[idx].mean(axis=1)
    return {"mean": float(a.mean() / b.mean()),
            "ci95": [float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))]}


def rexl_row(ctx, name: str, *, variant: str = "rexl", agent_dir=None,
             deterministic: bool | None = None, policy_weight: float | None = None,
             rollouts: tuple[int, int] | None = None, episode_map: str | None = None):
    """:func:`methods.rexl_method` with the policy term's weight (``None``: the agent's
    ``agent.json``, as the main job runs it) and ``rollouts = (R, T)`` set here; both are named
    in the description."""
    mode = "insertion" if variant == "rexl_insertion" else "deletion"
    return methods.rexl_method(ctx, mode=mode, variant=variant, agent_dir=agent_dir,
                               deterministic=deterministic, name=name, rollouts=rollouts,
                               policy_weight=policy_weight, episode_map=episode_map)


def _rollouts(name: str) -> tuple[str, tuple[int, int] | None]:
    """``"rexl_r3x26"`` -> ``("rexl", (3, 26))``: R rollouts of T steps (``--methods``)."""
    head, _, tail = name.rpartition("_r")
    if head and "x" in tail and all(part.isdigit() for part in tail.split("x", 1)):
        r, t = tail.split("x", 1)
        return head, (int(r), int(t))
    return name, None


_ROWS = {  # name: (variant, deterministic, policy_weight[, episode_map]); None = the agent's own
    "rexl": ("rexl", None, None),
    "rexl_trajectory": ("rexl", None, 0.0),
    "rexl_w1": ("rexl", None, 1.0),
    "rexl_w2": ("rexl", None, 2.0),
    "rexl_argmax": ("rexl", True, 0.0),
    "rexl_masked": ("rexl_masked", None, None),
    "rexl_masked_sampled": ("rexl_masked", False, None),
    "rexl_insertion": ("rexl_insertion", None, None),
    "rexl_first": ("rexl", None, None, "first_visit"),
}


def build(args, ctx) -> list[methods.Method]:
    rows = []
    for name in args.methods.split(","):
        base, rollouts = _rollouts(name)
        try:
            if base in _ROWS:
                variant, deterministic, weight, *episode_map = _ROWS[base]
                rows.append(rexl_row(ctx, name, variant=variant, deterministic=deterministic,
                                     policy_weight=weight, rollouts=rollouts,
                                     episode_map=(episode_map or [None])[0]))
            else:
                rows.append(methods.build_methods([name], ctx)[0])
        except methods.MethodUnavailableError as err:
            print(f"{name}: unavailable ({err}); skipped", flush=True)
    for spec in args.agent:
        name, path = spec.split("=", 1)
        mode = json.loads((pathlib.Path(path) / "agent.json").read_text())["env"]["mode"]
        rows.append(rexl_row(ctx, name, agent_dir=path, rollouts=_rollouts(name)[1],
                             variant="rexl_insertion" if mode == "insertion" else "rexl"))
        if not rows[-1].description.startswith("RExL"):
            raise RuntimeError(name)
    if not args.no_rise:
        config = RiseConfig(num_masks=args.num_masks, grid=7, p_keep=0.5, batch_size=100)
        rows.append(methods.Method(f"rise_{args.num_masks}",
                                   functools.partial(rise, config=config), args.num_masks,
                                   f"RISE, N={args.num_masks}, s=7, p=0.5"))
    return rows


def _rows_path(model: str, split: str, seed: int) -> pathlib.Path:
    return common.RESULTS / f"rexl_rows_{model}_{split}_seed{seed}.jsonl"


def _load_rows(path: pathlib.Path) -> dict:
    """``{(image, method, description): row}`` of the per-image rows written so far."""
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done[(row["image"], row["method"], row["description"])] = row
    return done


def summarise(rows, per, num_masks: int, no_rise: bool) -> list[dict]:
    """The result rows (means, intervals, ratios to RISE) of the per-image values ``per``."""
    results = []
    rise_name = None if no_rise else rows[-1].name
    for m in rows:
        p = per[m.name]
        row = dict(method=m.name, description=m.description, queries=m.queries,
                   deletion=_mean_ci(p["deletion"]), insertion=_mean_ci(p["insertion"]),
                   per_image_deletion=p["deletion"], per_image_insertion=p["insertion"],
                   median_s_per_image=statistics.median(p["s"]))
        if rise_name and m.name != rise_name and m.queries > 0:
            r = per[rise_name]
            row["deletion_vs_rise"] = _ratio_ci(p["deletion"], r["deletion"])
            row["insertion_vs_rise"] = _ratio_ci(p["insertion"], r["insertion"])
            row["queries_vs_rise"] = m.queries / num_masks
            row["time_vs_rise"] = row["median_s_per_image"] / statistics.median(r["s"])
            row["meets_target"] = bool(
                row["deletion_vs_rise"]["mean"] <= TARGET["deletion_vs_rise"]
                and row["insertion_vs_rise"]["mean"] >= TARGET["insertion_vs_rise"]
                and row["queries_vs_rise"] <= TARGET["queries_vs_rise"])
        results.append(row)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=100)
    parser.add_argument("--split", default="test")
    parser.add_argument("--model", default=MODEL, help="the classifier (its packaged agents)")
    parser.add_argument("--num-masks", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default="rexl,rexl_argmax,rexl_masked,rexl_insertion,random")
    parser.add_argument("--agent", action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--no-rise", action="store_true")
    parser.add_argument("--out-name", default="rexl_vs_rise")
    parser.add_argument("--write-every", type=int, default=10,
                        help="write the summary JSON every this many images")
    args = parser.parse_args(argv)
    log = functools.partial(print, flush=True)
    load_start = list(os.getloadavg())

    model_fn, variables = classifiers.load_classifier(args.model)
    ctx = methods.model_context(args.model, variables, (112, 112))
    rows = build(args, ctx)
    data = shapes.generate_arrays(args.split, args.num_images, seed=0, image_size=112)
    images = jnp.asarray(data["image"], jnp.float32) / 255.0
    targets = jnp.argmax(jax.jit(lambda m, x: m(x))(model_fn, images), axis=-1).astype(jnp.int32)
    accuracy = float(np.mean(np.asarray(targets) == data["label"]))
    keys = jax.random.split(jax.random.key(args.seed), args.num_images)
    deletion = jax.jit(functools.partial(metrics.deletion, step=STEP))
    insertion = jax.jit(functools.partial(metrics.insertion, step=STEP))
    rows_path = _rows_path(args.model, args.split, args.seed)
    done = _load_rows(rows_path)
    reused = {m.name: sum((i, m.name, m.description) in done for i in range(args.num_images))
              for m in rows}
    log(f"{rows_path.name}: reusing {reused} images already measured")

    explain = {m.name: jax.jit(m.explain) for m in rows}
    per = {m.name: {"deletion": [], "insertion": [], "s": []} for m in rows}
    compiled = set()
    t_start = time.perf_counter()

    def write(n):
        payload = dict(model=args.model, split=args.split, image_size=112, num_images=n,
                       num_images_planned=args.num_images, step=STEP, target=TARGET,
                       classifier_accuracy_on_these_images=accuracy,
                       results=summarise(rows, per, args.num_masks, args.no_rise),
                       rows_file=rows_path.name, reused_images=reused,
                       load_average_start=load_start, environment=common.environment(),
                       command=" ".join(sys.argv))
        return common.write_result(args.out_name, payload)

    for i in range(args.num_images):
        for m in rows:  # interleaved: every method on image i before image i + 1
            found = done.get((i, m.name, m.description))
            if found is None:
                if m.name not in compiled:
                    jax.block_until_ready(explain[m.name](keys[0], model_fn, images[0],
                                                          targets[0]))
                    compiled.add(m.name)
                t0 = time.perf_counter()
                sal = jax.block_until_ready(explain[m.name](keys[i], model_fn, images[i],
                                                            targets[i]))
                found = dict(image=i, method=m.name, description=m.description,
                             s=time.perf_counter() - t0,
                             deletion=float(deletion(model_fn, images[i], sal, targets[i]).auc),
                             insertion=float(insertion(model_fn, images[i], sal,
                                                       targets[i]).auc))
                with rows_path.open("a") as f:
                    f.write(json.dumps(found) + "\n")
            for name in ("deletion", "insertion", "s"):
                per[m.name][name].append(found[name])
        if (i + 1) % args.write_every == 0 and i + 1 < args.num_images and i > 0:
            write(i + 1)
            log(f"{i + 1}/{args.num_images} images, {time.perf_counter() - t_start:.0f} s")

    path = write(args.num_images)
    for row in json.loads(path.read_text())["results"]:
        extra = ""
        if "deletion_vs_rise" in row:
            extra = (f"  del {row['deletion_vs_rise']['mean']:.3f}x RISE "
                     f"{row['deletion_vs_rise']['ci95']}, ins {row['insertion_vs_rise']['mean']:.3f}x "
                     f"{row['insertion_vs_rise']['ci95']}, time {row['time_vs_rise']:.3f}x")
        log(f"{row['method']:22s} q {row['queries']:5d} del {row['deletion']['mean']:.4f} "
            f"ins {row['insertion']['mean']:.4f}{extra}")
    log(f"wrote {path}")


def _fmt(entry, digits=3):
    lo, hi = entry["ci95"]
    return f"{entry['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def table_section(lines: list[str]) -> None:
    """The markdown sections of ``results/rexl_vs_rise*.json`` and the agents' learning curves
    (``results/rexl_training_curves.json``), for ``make_tables.py``."""
    for name in ("rexl_vs_rise", "rexl_vs_rise_vgg_small"):
        path = common.RESULTS / f"{name}.json"
        if path.exists():
            d = json.loads(path.read_text())
            if "target" in d:  # the format since issue 18
                _result_table(lines, d)
    _selection_table(lines)
    _curves_table(lines)


SELECTIONS = ("rexl_select_900", "rexl_select_first_visit", "rexl_select_wide",
              "rexl_select_wide1000", "rexl_select_wide1000_rollouts")
"""The candidates tried against the packaged resnet_small agent on the validation split, in the
order they were tried (issues 18 and 29)."""


def _selection_table(lines: list[str]) -> None:
    found = [(n, json.loads((common.RESULTS / f"{n}.json").read_text())) for n in SELECTIONS
             if (common.RESULTS / f"{n}.json").exists()]
    if not found:
        return
    lines += ["## RExL candidates on the validation split", "",
              "Each candidate against the packaged agent (`rexl`: one sampled episode; "
              "`rexl_rollouts`: 4 × 19) on the same validation images, before any test figure; "
              "a candidate replaces the packaged agent only with a lower 4 × 19 deletion AUC and "
              "an insertion AUC within 1 %. The packaged agent's rows are shown once (the same "
              "128 images in every file). AUC means ± 1.96 s.e.", "",
              "| results file | method | what | queries | deletion ↓ | insertion ↑ |",
              "|---|---|---|---|---|---|"]
    shown = set()
    for name, d in found:
        for r in d["results"]:
            if (r["method"], r["description"], d["num_images"]) in shown:
                continue  # the packaged agent's rows, the same images: once
            shown.add((r["method"], r["description"], d["num_images"]))
            what = r["description"].split(";")[0].replace("RExL (", "")
            extra = [part.strip() for part in r["description"].split(";")[1:]
                     if "rollout" in part or "first-visit" in part]
            lines.append(f"| {name}.json ({d['num_images']} images) | {r['method']} | "
                         f"{'; '.join([what, *extra])} | {r['queries']} | "
                         f"{_fmt(r['deletion'])} | {_fmt(r['insertion'])} |")
    lines.append("")


def _result_table(lines: list[str], d: dict) -> None:
    lines += [f"## RExL vs RISE, {d['model']} (`bench_rexl.py`)", "",
              f"{d['model']}, {d['num_images']} {d['split']} images"
              + (f" (of {d['num_images_planned']} planned: a partial run, resumable)"
                 if d.get("num_images_planned", d["num_images"]) > d["num_images"] else "")
              + f", {d['image_size']}², step "
              f"{d['step']} px. Means with 95 % intervals (AUCs: ±1.96 s.e.; ratios to RISE: "
              "paired bootstrap). Target (issue 18): deletion ≤ 1.05× RISE, insertion ≥ 0.95× "
              "RISE at ≤ 1/50 of its queries. Each RExL row names its MDP: the *reference* "
              "MDP is the released code's (noise substrate, revisits allowed). Inference choices "
              "that are not the code's, chosen on the validation split: R sampled episodes of T "
              "steps averaged (`RexlConfig(num_rollouts=R, horizon=T)`, "
              "`results/rexl_select_rollouts.json`), the first-step policy term "
              "(`RexlConfig.policy_weight`, `results/rexl_select_inference_validation.json`).",
              "", "| method | what | queries | deletion ↓ | insertion ↑ | del. ÷ RISE | "
              "ins. ÷ RISE | target | s / image |", "|---|---|---|---|---|---|---|---|---|"]
    for r in d["results"]:
        what = r["description"].split(";")[0].replace("RExL (", "")
        if "rollout(s) of" in r["description"]:
            rollouts = r["description"].split("; ")[-1].split(" rollout(s) of ")
            if len(rollouts) == 2:
                what += f" + {rollouts[0]} episodes of {rollouts[1].split()[0]} steps averaged"
        if "first-step policy" in r["description"]:
            what += " + first-step policy ×" + r["description"].rsplit("weight ", 1)[-1]
        del_r = _fmt(r["deletion_vs_rise"], 2) if "deletion_vs_rise" in r else ""
        ins_r = _fmt(r["insertion_vs_rise"], 2) if "insertion_vs_rise" in r else ""
        meets = {True: "met", False: "not met"}.get(r.get("meets_target"), "")
        lines.append(f"| {r['method']} | {what} | {r['queries']} | {_fmt(r['deletion'])} | "
                     f"{_fmt(r['insertion'])} | {del_r} | {ins_r} | {meets} | "
                     f"{r['median_s_per_image']:.3f} |")
    env = d["environment"]
    lines += ["", f"Measured on {env.get('device_kind', '?')} ({env.get('cpu_count')} cores), "
              f"load average {d.get('load_average_start')} at the start, "
              f"{env.get('load_average')} at the end. Command: `{d['command']}`.", ""]
    if d.get("note"):
        lines += [f"Note: {d['note']}.", ""]


def _curves_table(lines: list[str]) -> None:
    path = common.RESULTS / "rexl_training_curves.json"
    if not path.exists():
        return
    d = json.loads(path.read_text())
    lines += ["## RExL learning curves (`train_default_agents.py`)", "",
              "Mean episode return (the sum over the 49 steps of −p_c(canvas), higher is better) "
              "of each tenth of a training run, left to right; full histories in "
              "`results/rexl_training_curves.json`. " + d.get("note", ""), "",
              "| run | updates | return by tenth of the run | wall s |", "|---|---|---|---|"]
    for name, run in d["runs"].items():
        returns = np.asarray(run["history"]["episode_return"], np.float64)
        tenths = [float(part.mean()) for part in np.array_split(returns, min(10, len(returns)))]
        lines.append(f"| {name} | {len(returns)} | {' '.join(f'{x:.1f}' for x in tenths)} | "
                     f"{run.get('wall_s', float('nan')):.0f} |")
    lines.append("")


if __name__ == "__main__":
    main()
