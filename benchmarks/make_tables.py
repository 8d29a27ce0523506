"""Writes ``benchmarks/README.md`` from the JSON results in ``benchmarks/results/``.

    python benchmarks/make_tables.py
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE.parent))  # run as a script: `benchmarks.<script>` importable


def _script_section(script):
    """The ``table_section(lines)`` of ``benchmarks/<script>.py`` (next to its JSON writer)."""

    def section(lines):
        importlib.import_module(f"benchmarks.{script}").table_section(lines)

    return section


def _load(name):
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _env(d) -> str:
    env = d.get("environment") or {}
    versions = env.get("versions", {})
    device = env.get("device_kind", d.get("device", "cpu"))
    jax_v = versions.get("jax", d.get("jax", "?"))
    load = env.get("load_average")
    load_s = f", load average {load[0]:.1f}" if load else ""
    return f"{device}, {env.get('cpu_count', 2)} cores, jax {jax_v}{load_s}"


def rise_section(lines):
    d = _load("rise")
    if d is None:
        return
    lines += ["## RISE (`bench_rise.py`)", "",
              "Time of RISE ÷ time of the same N bare forward passes in the same batch size "
              "(target ≤ 1.10); medians, timed calls interleaved.", "",
              "| model | image | N | batch | RISE ÷ bare | all-class ÷ bare | masks/s |",
              "|---|---|---|---|---|---|---|"]
    for r in d["ratio"]:
        all_cls = r.get("ratio_all_classes_over_bare")
        lines.append(
            f"| {r['model']} | {r['image_size']}² | {r['num_masks']} | {r['batch_size']} | "
            f"{r['ratio_rise_over_bare']:.2f} | {'' if all_cls is None else f'{all_cls:.2f}'} | "
            f"{r['masks_per_s']:.1f} |")
    lines += ["", "| model | image | masks/s |", "|---|---|---|"]
    for t in d["throughput"]:
        lines.append(f"| {t['model']} | {t['image_size']}² | {t['masks_per_s']:.1f} |")
    m = d["memory"]
    runs = {r["num_masks"]: r["peak_rss_mb"] for r in m["runs"]}
    lines += ["", f"Peak memory ({m['description']}, {m['image_size']}², batch "
              f"{m['batch_size']}, fresh process each): "
              + ", ".join(f"N={n}: {v:.0f} MB" for n, v in runs.items())
              + f"; difference {m['peak_rss_delta_mb']:+.0f} MB (target ≤ +100 MB). "
              f"Materialising the masks would take {m['materialised_masks_mb']:.0f} MB and the "
              f"masked images {m['materialised_masked_images_mb']:.0f} MB.", "",
              f"Measured on {_env(d)}. Command: `python benchmarks/bench_rise.py`.", ""]


def torch_section(lines):
    d = _load("rise_vs_pytorch")
    if d is None:
        return
    env = d["torch_env"]
    lines += ["## RISE against the reference algorithm in PyTorch (`bench_rise_vs_pytorch.py`)",
              "", d["what"] + ".", "",
              "| N | batch | image | PyTorch s | of which masks s | saliency-jax s | "
              "PyTorch ÷ saliency-jax |", "|---|---|---|---|---|---|---|",
              f"| {d['num_masks']} | {d['batch_size']} | {d['image_size']}² | {d['torch_s']:.1f} "
              f"| {d['torch_mask_generation_s']:.2f} | {d['jax_steady_s']:.1f} | "
              f"{d['torch_over_jax']:.2f} |", "",
              f"torch {env['torch']}, torchvision {env['torchvision']}, {env['threads']} threads; "
              f"{_env(d)}; saliency-jax first call (compile) {d['jax_first_call_s']:.1f} s.", ""]


def metrics_section(lines):
    rows = [d for d in (_load("metrics"), _load("metrics_resnet50")) if d]
    if not rows:
        return
    lines += ["## Deletion + insertion (`bench_metrics.py`)", "",
              "Both curves of one map ÷ the bare forward passes they need (target ≤ 1.2).", "",
              "| model | image | step | forward passes | ratio (wall) | ratio (CPU) |",
              "|---|---|---|---|---|---|"]
    for d in rows:
        lines.append(f"| {d['model']} | {d['image_hw'][0]}² | {d['step']} | "
                     f"{d['forward_passes_total']} | {d['ratio_wall']:.2f} | {d['ratio_cpu']:.2f} |")
    lines += ["", f"Measured on {_env(rows[0])}. Commands: "
              + "; ".join(f"`{d['command']}`" for d in rows) + ".", ""]


def iassa_section(lines):
    d = _load("iassa")
    if d is None:
        return
    lines += ["## IASSA (`bench_iassa.py`)", "",
              f"{d['model']}, {d['image_size']}², k={d['iterations']}, batch {d['batch_size']}, "
              "random weights. Ratio = explanation ÷ the same number of bare forward passes.", "",
              "| variant | queries | explain s | bare s | ratio | compile s |",
              "|---|---|---|---|---|---|"]
    for r in d["results"]:
        lines.append(f"| {r['variant']} | {r['queries']} | {r['explain_s']:.1f} | "
                     f"{r['bare_forward_s']:.1f} | {r['ratio_to_bare_forward']:.3f} | "
                     f"{r['compile_s']:.1f} |")
    lines += ["", f"Device {d['device']}, jax {d['jax']}.", ""]


def evaluate_section(lines, name, title):
    d = _load(name)
    if d is None:
        return
    c = d["config"]
    lines += [f"## {title} (`bench_evaluate.py`)", "",
              f"{d['what']}. Deletion/insertion step {c['deletion_insertion_step']} px, "
              f"pointing tolerance {c['pointing_tolerance_px']:g} px, IoU, F1 (foreground Dice), "
              f"precision and recall of the map binarised at {c['iou_f1_threshold']}; "
              "RL-CAM's map is its leave-one-out patch credit (its binary mask is scored in "
              "the RL-CAM table of `benchmarks/README.md`). Mean ± std over images; s / image "
              "is the median wall "
              "time per image of the explanation alone (metrics not included; the median "
              "absorbs the first image's compilation).", "", d["table_md"], "",
              f"Measured on {_env(d)}; {d['wall_s_this_call']:.0f} s for the whole call. "
              f"Command: `{d['command']}`.", ""]
    for r in d.get("rows_replaced", []):
        lines += [f"The `{r['method']}` row was re-measured on the same images after {r['why']}: "
                  f"`{r['command']}` ({r['note']}).", ""]
    for r in d.get("stale_rows", []):
        lines += [f"The `{r['method']}` row is stale: {r['why']}.", ""]


def classifiers_section(lines):
    root = HERE.parent / "saliency_jax" / "assets" / "classifiers"
    rows = []
    for path in sorted(root.glob("*/metrics.json")):
        m = json.loads(path.read_text())
        r = m.get("object_reliance")
        if r is None:
            continue
        cfg = m["config"]
        rows.append(
            f"| {cfg['model']} | {m['test_accuracy']:.3f} | {cfg['num_steps']} | "
            f"{cfg['num_train']} | {r['original']['true_class_prob']:.3f} | "
            f"{r['object_box_occluded']['true_class_prob']:.3f} "
            f"({r['object_box_occluded']['accuracy']:.2f}) | "
            f"{r['same_area_elsewhere_occluded']['true_class_prob']:.3f} "
            f"({r['same_area_elsewhere_occluded']['accuracy']:.2f}) | "
            f"{m['train_seconds_this_run'] / 60:.0f} |")
    if not rows:
        return
    lines += ["## Default classifiers (`saliency-jax train-classifier`)", "",
              "Test accuracy on 600 held-out synthetic images, and whether the classifier uses "
              "the object: mean true-class probability (accuracy) on the originals, with the "
              "object's tight box filled with the mean colour, and with a region of the same "
              "area filled elsewhere (away from the object). Steps, training images and minutes "
              "are those of the last fine-tuning phase; the whole recipe is in "
              "`benchmarks/train_default_classifiers.py`.", "",
              "| model | test acc. | last phase steps | train images | p(true) | "
              "object box occluded | same area elsewhere | last phase min |", "|---|---|---|---|---|---|---|---|", *rows, ""]


def rlcam_section(lines):
    d = _load("rlcam")
    if d is None:
        return
    lines += ["## RL-CAM (`train_rlcam_agent.py evaluate`)", "",
              f"{d['what']}; {d['images']}. Masks: {d['masks']}.", "",
              "| method | IoU ↑ | F1 ↑ | precision | recall | deletion ↓ | insertion ↑ | "
              "mask area | queries | s / image |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in d["methods"].items():
        s = r["summary"]
        lines.append(
            f"| {name} | {s['iou']['mean']:.3f} | {s['f1']['mean']:.3f} | "
            f"{s['precision']['mean']:.3f} | {s['recall']['mean']:.3f} | "
            f"{s['deletion']['mean']:.3f} | {s['insertion']['mean']:.3f} | "
            f"{s['mask_fraction']['mean']:.3f} | {s['queries']['mean']:.0f} | "
            f"{s['wall_s']['median']:.2f} |")
    lines += ["", f"Measured on {_env(d)}. Command: `{d['command']}`.", ""]


def _ci(entry, digits=3):
    """``mean [lo, hi]`` of a ``{mean, ci95}`` summary, or blank."""
    if not entry:
        return ""
    lo, hi = entry["ci95"]
    return f"{entry['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


_IASSA_METRICS = (("deletion", "deletion ↓"), ("insertion", "insertion ↑"),
                  ("pointing", "pointing ↑"), ("iou", "IoU ↑"), ("f1", "F1 ↑"))


def iassa_iterations_section(lines):
    d = _load("iassa_iterations")
    if d is None:
        return
    causal = d.get("causal_metrics_at", "all")
    causal_s = "every iteration" if causal == "all" else "t ∈ {" + ", ".join(map(str, causal)) + "}"
    settings = ", ".join(f"{k}={v}" for k, v in d.get("overrides", {}).items()) or "none"
    lines += ["## IASSA per iteration (`bench_iassa_iterations.py`)", "",
              f"{d['what']}; {d['images']}. Mean [95 % t-interval] over the "
              f"{d['num_images']} images. Localisation metrics (pointing, IoU, F1) at every "
              f"iteration, deletion/insertion at {causal_s}. Settings beyond each variant's "
              f"defaults: {settings} (paper variant). Cumulative queries include each "
              "iteration's padded last chunk.", "",
              "| variant | t | W_t | cumulative queries | "
              + " | ".join(h for _, h in _IASSA_METRICS) + " |",
              "|---|---|---|---|" + "---|" * len(_IASSA_METRICS)]
    runs = [d] + [x for x in (_load("iassa_iterations_reference"),) if x is not None]
    for run in runs:
        for variant, curve in run["results"].items():
            _iassa_curve_rows(lines, run, variant, curve)
    if len(runs) > 1:
        r = runs[1]
        lines += ["", f"The reference variant ({r['num_images']} images, deletion/insertion at "
                  f"t ∈ {{{', '.join(map(str, r['causal_metrics_at']))}}}) is a separate run: "
                  f"`{r['command']}`."]
    _iassa_versus_rows(lines, d)


def _iassa_curve_rows(lines, d, variant, curve):
    schedule = d["configs"][variant]["schedule"]
    for row in curve:
        t = row["iteration"]
        lines.append(f"| {variant} | {t} | {schedule[t][0]} | {row['cumulative_queries']} | "
                     + " | ".join(_ci(row.get(m)) for m, _ in _IASSA_METRICS) + " |")


def _iassa_versus_rows(lines, d):
    versus = d.get("iassa_vs_rise") or []
    if versus:
        lines += ["", "IASSA (paper variant, map S'_t) against RISE (7 x 7 grid, p = 0.5) with N = "
                  "IASSA's cumulative queries at t, on the same images; Δ = IASSA − RISE, paired "
                  "over images (an interval that excludes 0 is a difference at the 5 % level).",
                  "", "| t | N | metric | IASSA | RISE | Δ = IASSA − RISE |", "|---|---|---|---|---|---|"]
        for entry in versus:
            for m, h in _IASSA_METRICS:
                e = entry[m]
                lines.append(f"| {entry['iteration']} | {entry['num_masks']} | {h} | "
                             f"{_ci(e['iassa'])} | {_ci(e['rise'])} | "
                             f"{_ci(e['iassa_minus_rise'])} |")
    versus_max = d.get("iassa_at_t_vs_rise_at_max_budget") or []
    if versus_max:
        n_rise = versus_max[0]["rise_num_masks"]
        lines += ["", f"Each scored iteration against RISE with N = {n_rise} (IASSA's cumulative "
                  "queries at its last iteration): RISE has at least as many queries as IASSA "
                  "had spent by t (t = 0, 5, ..., 25).", "",
                  "| t | IASSA queries | metric | IASSA | RISE | Δ = IASSA − RISE |",
                  "|---|---|---|---|---|---|"]
        for entry in versus_max:
            if entry["iteration"] % 5:  # every fifth iteration (the table is long enough)
                continue
            for m, h in _IASSA_METRICS:
                if m not in entry:
                    continue
                e = entry[m]
                lines.append(f"| {entry['iteration']} | {entry['iassa_queries']} | {h} | "
                             f"{_ci(e['iassa'])} | {_ci(e['rise'])} | "
                             f"{_ci(e['iassa_minus_rise'])} |")
    seconds = d.get("seconds_per_image") or {}
    per = ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items())
    wall = d.get("wall_s")
    wall_s = f"; {wall / 60:.0f} min in all" if wall == wall and wall is not None else ""
    planned = d.get("planned_images")
    planned_s = (f" {d['num_images']} of the {planned} planned images were done by the deadline."
                 if planned and planned != d["num_images"] else "")
    lines += ["", f"Median seconds per image (explanation only): {per}. Measured on "
              f"{_env(d)}{wall_s}.{planned_s} Command: `{d['command']}`.", ""]


README = HERE.parent / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def scale_section(lines, name="scale", title="The main job at scale"):
    d = _load(name)
    if d is None:
        return
    lines += [f"## {title} (`bench_scale.py`)", "",
              f"{d['what']}. Each row is a fresh process (simulated CPU devices via "
              "`XLA_FLAGS=--xla_force_host_platform_device_count`); the 2-process row is a "
              "`jax.distributed` job on localhost (gloo), images split `i % 2`, each process on "
              "its own device, images/s of both over the wall time between two barriers.", "",
              "| processes × devices | per-image loop, images/s | batched, images/s | "
              "batched ÷ loop | forward bound, images/s | loop ÷ bound | batched ÷ bound | "
              "max map difference |", "|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        loop, diff = r.get("loop_median"), r.get("max_abs_map_difference")
        bound = r.get("bound_median")
        cells = [f"{r['processes']} × {r['devices']}", "" if loop is None else f"{loop:.3f}",
                 f"{r['batched_median']:.3f}", "" if loop is None else f"{r['speedup']:.2f}",
                 "" if bound is None else f"{bound:.3f}",
                 "" if bound is None else f"{r['loop_of_bound']:.2f}",
                 "" if bound is None else f"{r['batched_of_bound']:.2f}",
                 "" if diff is None else f"{diff:.1e}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Loop and batched are interleaved within a row; the rows ran one after another "
              "while the load of the shared machine changed, so compare columns within a row "
              "(and rows only within one results file).", "",
              f"Measured on {_env(d)}. Command: `{d['command']}`.", ""]


def readme_results():
    """Replaces the block between the README's results markers with the main-job tables."""
    text = README.read_text()
    if START not in text or END not in text:
        return
    # One table per question; the details, older runs and the map checks are in
    # benchmarks/README.md.
    block = []
    classifiers_section(block)
    evaluate_section(block, "evaluate_shapes",
                     "How do the methods compare? Synthetic benchmark, packaged resnet_small")
    evaluate_section(block, "evaluate_photos",
                     "On real photos: the bundled photos, EfficientNet-Lite0")
    real = _load("real_stamps")
    if real is not None and real.get("complete"):  # partial runs stay in benchmarks/README.md
        _script_section("bench_real")(block)
    importlib.import_module("benchmarks.bench_peers").timing_section(block)
    _script_section("bench_metrics_peers")(block)
    body = "\n".join(line.replace("## ", "### ", 1) if line.startswith("## ") else line
                     for line in block)
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{body}\n{END}{tail}")


def main():
    lines = ["# Benchmarks", "",
             "Every figure below is read from `results/*.json` by `make_tables.py`; rerun a "
             "script, then this, to refresh. All were measured on the 2-core CPU of the "
             "development machine, shared with other work (the load average is recorded): "
             "ratios are measured in one run with interleaved calls, times are medians, compile "
             "time is reported apart. No GPU figures: no accelerator was lent.", ""]
    classifiers_section(lines)
    evaluate_section(lines, "evaluate_shapes", "The main job on the synthetic benchmark")
    evaluate_section(lines, "evaluate_photos", "The main job on the bundled photos")
    _script_section("bench_real")(lines)
    scale_section(lines)
    scale_section(lines, "scale_processes", "The main job at scale, 1 vs 2 processes in one run")
    scale_section(lines, "scale_tiny", "The main job at scale, a dispatch-bound model")
    scale_section(lines, "scale_bound", "The main job against its compute bound")
    for section in (rise_section, torch_section, metrics_section, iassa_section,
                    iassa_iterations_section, _script_section("bench_iassa_vmap"),
                    _script_section("bench_rexl"), rlcam_section,
                    _script_section("bench_rlcam_budget"), _script_section("bench_progress"),
                    _script_section("bench_peers"), _script_section("bench_rise_batch"),
                    _script_section("bench_metrics_peers"), _script_section("bench_rise_progress"),
                    _script_section("bench_rise_anytime"),
                    _script_section("bench_mixed_precision")):
        section(lines)
    (HERE / "README.md").write_text("\n".join(lines))
    readme_results()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
