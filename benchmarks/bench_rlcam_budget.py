"""RL-CAM at equal query budgets: the learned agents against greedy, RISE, occlusion and LIME.

RL-CAM here is **reimplemented from the paper's abstract** (Sarkar et al., CVPRW 2023; no
paper body or code was found, METHODS §4). Two agents, each stopping when it chooses (so their
queries vary per image):

* ``rlcam``: the packaged look-ahead agent (``rlcam_resnet_small``): its observation holds the
  exact one-step gain of every toggle (``2P`` queries a step); ``rlcam_greedy``: the same MDP,
  greedy look-ahead, no learning;
* ``rlcam_output``: the abstract's observation (``rlcam_output_resnet_small``): the model's
  output distribution on the current masked image, the mask and the step; one query a step.

The budget ``N`` of RISE (s = 7, p = 0.5) and LIME is each agent's **mean** queries over the
images (measured first): ``rise_N``/``lime_N`` at the look-ahead agent's ``N`` and at the output
agent's; ``occlusion``: window 32 px, the stride chosen so that its windows + 1 are the most at
or under the look-ahead agent's ``N``.

Quality against the exact object masks of the synthetic shapes test split (targets = labels,
packaged ``resnet_small``, 112²): IoU and F1 of a binary mask (the agents/greedy: the episode's
own patch mask; the map methods: ``binarize(threshold=0.3, mode="relative")``, the IASSA code's
rule; ``map_iou``: that rule applied to every method's map), the pointing game (tolerance 7.5 px
= 15 px at 224²), deletion (lower is better) and insertion AUC (step 56 px). Means with 95 %
t-intervals over images, and per method the paired difference to ``rlcam`` (method − rlcam, same
images) with its 95 % t-interval. Time: methods interleaved image by image, median seconds per
image after one compiling call each.

    python benchmarks/bench_rlcam_budget.py --num-images 100    # results/rlcam_budget.json

The JSON is rewritten after each phase. ``--maps-at N`` runs only ``rise_N``, ``lime_N`` and
occlusion and merges them into the JSON of a run with budget ``N`` (to split a run over two
processes on a busy machine; the per-image keys are the same, so the maps are too).
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
from saliency_jax._src import rlcam  # noqa: E402
from saliency_jax._src.lime import LimeConfig, lime  # noqa: E402
from saliency_jax._src.occlusion import OcclusionConfig, occlusion  # noqa: E402
from saliency_jax._src.rise import RiseConfig, rise  # noqa: E402
from saliency_jax.app import agents, classifiers  # noqa: E402
from saliency_jax.data import shapes  # noqa: E402

MODEL = agents.DEFAULT_MODEL
SIZE = 112
STEP = 56
TOLERANCE = 15 * SIZE / 224
WINDOW = 32
FIELDS = ("iou", "f1", "map_iou", "pointing", "deletion", "insertion", "queries")


def _mean_ci(values) -> dict:
    """Mean and 95 % t-interval over images."""
    from scipy import stats

    values = np.asarray(values, np.float64)
    n = len(values)
    half = (stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n) if n > 1
            else float("nan"))
    return {"mean": float(values.mean()), "ci95": [float(values.mean() - half),
                                                   float(values.mean() + half)]}


def occlusion_for_budget(budget: int) -> OcclusionConfig:
    """Window 32 px and the smallest stride whose windows + 1 are at most ``budget``."""
    for stride in range(1, SIZE):
        config = OcclusionConfig(window=WINDOW, stride=stride)
        if config.num_windows((SIZE, SIZE)) + 1 <= budget:
            return config
    raise ValueError(f"budget {budget} is too small for occlusion")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-name", default="rlcam_budget")
    parser.add_argument("--output-agent", type=pathlib.Path,
                        default=agents.packaged_agent_dir("rlcam", MODEL).parent
                        / f"rlcam_output_{MODEL}",
                        help="the output-observation agent folder (default: the packaged one)")
    parser.add_argument("--maps-at", type=int, default=None,
                        help="run only RISE/LIME at this N and occlusion, and merge them into "
                             "results/<out-name>.json of an earlier run with that budget "
                             "(a run split in two processes)")
    parser.add_argument("--wait-agent-s", type=float, default=0.0,
                        help="wait up to this long for --output-agent to appear (a training run "
                             "finishing while the look-ahead methods run); default 0")
    args = parser.parse_args(argv)
    log = functools.partial(print, flush=True)
    load_start = list(os.getloadavg())

    model_fn, _ = classifiers.load_classifier(MODEL)
    data = shapes.generate_arrays("test", args.num_images, seed=0, image_size=SIZE)
    images = jnp.asarray(data["image"], jnp.float32) / 255.0
    labels, gt = np.asarray(data["label"], np.int32), np.asarray(data["mask"])
    keys = jax.random.split(jax.random.key(args.seed), args.num_images)
    params, config, _ = agents.rlcam_agent_for((SIZE, SIZE))

    def episode(run):
        def call(key, image, target):
            r = run(key, model_fn, image, target)
            return r.saliency, r.mask, r.num_queries
        return jax.jit(call)

    outputs, times, compile_s = {}, {}, {}

    def run_all(methods):
        """Each method on every image, interleaved image by image (after one compiling call)."""
        for name, run in methods.items():
            outputs[name], times[name] = [], []
            t0 = time.perf_counter()
            jax.block_until_ready(run(keys[0], images[0], labels[0]))
            compile_s[name] = time.perf_counter() - t0
        for i in range(args.num_images):
            for name, run in methods.items():
                t0 = time.perf_counter()
                out = jax.block_until_ready(run(keys[i], images[i], labels[i]))
                times[name].append(time.perf_counter() - t0)
                outputs[name].append(out)
            if (i + 1) % 20 == 0:
                log(f"{', '.join(methods)}: {i + 1}/{args.num_images}")

    def as_map_method(fn, queries, jit=True):
        def call(key, image, target):
            sal = fn(key, model_fn, image, target)
            return sal, metrics.binarize(sal, threshold=0.3, mode="relative"), jnp.int32(queries)
        return jax.jit(call) if jit else call  # LIME segments its image outside jit

    def budget_maps(n):
        return {f"rise_{n}": as_map_method(functools.partial(rise, config=RiseConfig(
                    num_masks=n, grid=7, p_keep=0.5, batch_size=100)), n),
                f"lime_{n}": as_map_method(functools.partial(lime, config=LimeConfig(
                    num_samples=n)), n, jit=False)}

    deletion = jax.jit(functools.partial(metrics.deletion, step=STEP))
    insertion = jax.jit(functools.partial(metrics.insertion, step=STEP))
    results = {}
    facts = {"what": "RL-CAM (reimplemented from the abstract) at equal query budgets",
             "images": f"saliency_shapes/test[:{args.num_images}], targets = labels, {SIZE}²",
             "rlcam_config": config.to_dict(),
             "intervals": "95 % t-intervals over images; paired_vs_rlcam: method − rlcam "
                          "per image"}

    def score(names):
        """The metrics of ``names`` into ``results``, then the JSON rewritten (partial runs
        leave what is done)."""
        for name in names:
            rows = {f: [] for f in FIELDS}
            for i, (sal, mask, queries) in enumerate(outputs[name]):
                ov = metrics.overlap(mask, gt[i])
                rows["iou"].append(float(ov.iou))
                rows["f1"].append(float(ov.f1))
                rows["map_iou"].append(float(metrics.overlap(
                    metrics.binarize(sal, threshold=0.3, mode="relative"), gt[i]).iou))
                rows["pointing"].append(float(metrics.pointing_game(sal, gt[i],
                                                                    tolerance=TOLERANCE)))
                rows["deletion"].append(float(deletion(model_fn, images[i], sal,
                                                       labels[i]).auc))
                rows["insertion"].append(float(insertion(model_fn, images[i], sal,
                                                         labels[i]).auc))
                rows["queries"].append(int(queries))
            reference = rows if name == "rlcam" else results["rlcam"]["per_image"]
            results[name] = {
                "summary": {f: _mean_ci(v) for f, v in rows.items()},
                "paired_vs_rlcam": {f: _mean_ci(np.asarray(v) - np.asarray(reference[f]))
                                    for f, v in rows.items()},
                "per_image": rows, "median_s_per_image": statistics.median(times[name]),
                "compile_and_first_s": compile_s[name]}
            s = results[name]["summary"]
            log(f"{name:14s} " + " ".join(f"{f} {s[f]['mean']:.3f}" for f in FIELDS)
                + f" {results[name]['median_s_per_image']:.3f} s")
        methods = results
        if args.maps_at is not None:  # merge into the earlier run's file as it is now
            earlier = json.loads((common.RESULTS / f"{args.out_name}.json").read_text())
            methods = {**earlier["methods"], **{n: results[n] for n in names}}
            facts.update({k: v for k, v in earlier.items() if k not in (
                "methods", "environment", "command", "load_average_start", "earlier_run")})
        payload = {**facts, "methods": methods, "load_average_start": load_start,
                   "environment": common.environment(), "command": " ".join(sys.argv)}
        log(f"wrote {common.write_result(args.out_name, payload)}")

    if args.maps_at is not None:
        # Only the map methods at a budget measured before, merged into the JSON of that run
        # (its rlcam rows give the paired differences).
        budget = args.maps_at
        occ = occlusion_for_budget(budget)
        run_all({**budget_maps(budget),
                 "occlusion": as_map_method(functools.partial(occlusion, config=occ),
                                            occ.num_windows((SIZE, SIZE)) + 1)})
        earlier = json.loads((common.RESULTS / f"{args.out_name}.json").read_text())
        if earlier["budget"] != budget or earlier["images"] != facts["images"]:
            raise ValueError(f"--maps-at {budget}: {args.out_name}.json holds budget "
                             f"{earlier['budget']} on {earlier['images']}")
        results["rlcam"] = earlier["methods"]["rlcam"]
        facts["earlier_run"] = {k: earlier[k] for k in ("command", "environment",
                                                         "load_average_start")}
        score([f"rise_{budget}", f"lime_{budget}", "occlusion"])
        return
    # The look-ahead agent first, on every image: its mean queries set the others' budget.
    run_all({"rlcam": episode(functools.partial(rlcam.rlcam_explain, config=config,
                                                agent_params=params)),
             "rlcam_greedy": episode(functools.partial(rlcam.rlcam_greedy_explain,
                                                       config=agents.RLCAM_CONFIG))})
    budget = int(round(np.mean([int(o[2]) for o in outputs["rlcam"]])))
    occ = occlusion_for_budget(budget)
    facts.update(budget=budget, occlusion={"window": occ.window, "stride": occ.stride})
    log(f"RL-CAM mean queries {budget}; occlusion stride {occ.stride} "
        f"({occ.num_windows((SIZE, SIZE)) + 1} queries)")
    score(["rlcam", "rlcam_greedy"])
    # The output-observation agent (cheap) and the map methods at its mean queries.
    waited = 0.0
    while not (args.output_agent / "agent.json").exists() and waited < args.wait_agent_s:
        time.sleep(30)  # a training run still finishing (--wait-agent-s)
        waited += 30
    out_params, out_config = rlcam.load_rlcam_agent(args.output_agent)
    run_all({"rlcam_output": episode(functools.partial(rlcam.rlcam_explain, config=out_config,
                                                       agent_params=out_params))})
    out_budget = int(round(np.mean([int(o[2]) for o in outputs["rlcam_output"]])))
    facts.update(output_budget=out_budget, rlcam_output_config=out_config.to_dict(),
                 output_agent=str(args.output_agent))
    log(f"RL-CAM output variant mean queries {out_budget}")
    run_all(budget_maps(out_budget))
    score(["rlcam_output", f"rise_{out_budget}", f"lime_{out_budget}"])
    # Then the map methods at the look-ahead agent's budget.
    run_all({**budget_maps(budget),
             "occlusion": as_map_method(functools.partial(occlusion, config=occ),
                                        occ.num_windows((SIZE, SIZE)) + 1)})
    score([f"rise_{budget}", f"lime_{budget}", "occlusion"])


def _fmt(entry):
    lo, hi = entry["ci95"]
    return f"{entry['mean']:.3f} [{lo:.3f}, {hi:.3f}]"


def _delta(entry):
    lo, hi = entry["ci95"]
    return f"{entry['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def table_section(lines: list[str]) -> None:
    """The markdown section of ``results/rlcam_budget.json`` (for ``make_tables.py``)."""
    path = common.RESULTS / "rlcam_budget.json"
    if not path.exists():
        return
    d = json.loads(path.read_text())
    out_budget = d.get("output_budget")
    lines += ["## RL-CAM at equal query budgets (`bench_rlcam_budget.py`)", "",
              f"RL-CAM reimplemented from the abstract (no paper body or code found): `rlcam` "
              f"observes the exact look-ahead gain of every toggle (2P queries a step), "
              f"`rlcam_output` only the model's output distribution on the current masked image, "
              f"the mask and the step (1 query a step). {d['images']}; N = `rlcam`'s mean "
              f"queries = {d['budget']}"
              + (f" and `rlcam_output`'s = {out_budget}" if out_budget is not None else "")
              + f" (RISE, LIME); occlusion window {d['occlusion']['window']} px, stride "
              f"{d['occlusion']['stride']}. IoU/F1: the episode's mask (agents, greedy) or the "
              "map binarised at 0.3 of its max; map IoU: that rule for every map. Means with "
              "95 % t-intervals over images.", "",
              "| method | queries | IoU ↑ | F1 ↑ | map IoU ↑ | pointing ↑ | deletion ↓ | "
              "insertion ↑ | s / image |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in d["methods"].items():
        s = r["summary"]
        lines.append(f"| {name} | {s['queries']['mean']:.0f} | {_fmt(s['iou'])} | "
                     f"{_fmt(s['f1'])} | {_fmt(s['map_iou'])} | {_fmt(s['pointing'])} | "
                     f"{_fmt(s['deletion'])} | {_fmt(s['insertion'])} | "
                     f"{r['median_s_per_image']:.3f} |")
    if all("paired_vs_rlcam" in r for r in d["methods"].values()):
        lines += ["", "Paired difference to `rlcam` (method − rlcam on the same images, 95 % "
                  "t-interval):", "",
                  "| method | IoU | F1 | pointing | deletion | insertion |",
                  "|---|---|---|---|---|---|"]
        for name, r in d["methods"].items():
            if name == "rlcam":
                continue
            p = r["paired_vs_rlcam"]
            lines.append(f"| {name} | {_delta(p['iou'])} | {_delta(p['f1'])} | "
                         f"{_delta(p['pointing'])} | {_delta(p['deletion'])} | "
                         f"{_delta(p['insertion'])} |")
    env = d["environment"]
    lines += ["", f"Measured on {env.get('device_kind', '?')} ({env.get('cpu_count')} cores), "
              f"load average {d.get('load_average_start')} at the start, "
              f"{env.get('load_average')} at the end. Command: `{d['command']}`.", ""]


if __name__ == "__main__":
    main()
