"""Writes ``benchmarks/README.md`` from the JSON results in ``benchmarks/results/``.

    python benchmarks/make_tables.py
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


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


def main():
    lines = ["# Benchmarks", "",
             "Every figure below is read from `results/*.json` by `make_tables.py`; rerun a "
             "script, then this, to refresh. All were measured on the 2-core CPU of the "
             "development machine, shared with other work (the load average is recorded): "
             "ratios are measured in one run with interleaved calls, times are medians, compile "
             "time is reported apart. No GPU figures: no accelerator was lent.", ""]
    for section in (rise_section, torch_section, metrics_section, iassa_section):
        section(lines)
    (HERE / "README.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
