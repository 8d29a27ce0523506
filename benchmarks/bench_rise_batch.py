"""Why are some peers faster than our RISE on a CPU? A profile, one process per case.

Three parts, each case in its own long-lived ``peers_worker.py`` process, setup and warm-up
apart, timed calls interleaved round-robin over ``--rounds`` rounds (load falls on every case
alike), medians and ranges, cores busy (process CPU ÷ wall) and peak RSS:

* ``forward``: the bare model, our Flax ResNet50 (``jit``) against torchvision's on the same
  converted weights and the same batch of images: ms per image at each ``--forward-batches``.
* ``batch``: our RISE (``sj.rise``, one class) at each ``--batches`` chunk size, N, grid and p
  as ``bench_peers.py``; each case's map (key 0) against the largest batch's (max |Δ|).
* ``flags``: our RISE under XLA:CPU settings (``--flag-batch``): as is (JAX's one CPU device),
  a device per core (``sj.sharding.set_cpu_devices()``: the chunks split over the cores),
  oneDNN on, Eigen single-threaded.

    python benchmarks/bench_rise_batch.py --peers-python /work/peers-venv/bin/python

Writes ``results/peers_rise_batch.json``.
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

from bench_peers import Worker, prepare_inputs  # noqa: E402

FLAGS = {  # name: (worker library, environment)
    "as is (one CPU device)": ("saliency-jax-one-device", {}),
    "a device per core (set_cpu_devices)": ("saliency-jax", {}),
    "oneDNN": ("saliency-jax-one-device", {"XLA_FLAGS": "--xla_cpu_use_onednn=true"}),
    "Eigen 1 thread": ("saliency-jax-one-device",
                       {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"}),
}
OURS = "saliency-jax-one-device"  # the forward and batch parts: JAX's default one CPU device


def _start(cases: dict, args, image, weights):
    """``{name: Worker}`` from ``{name: (library, python, Worker kwargs)}``, all ready."""
    workers = {name: Worker(lib, py, args, image=image, weights=weights,
                            num_masks=args.num_masks, **kw)
               for name, (lib, py, kw) in cases.items()}
    for w in workers.values():
        w.wait_ready()
    return workers


def _summary(runs: list[dict]) -> dict:
    s = [x["s"] for x in runs]
    return dict(median_s=statistics.median(s), min_s=min(s), max_s=max(s), runs_s=s,
                cores_busy=statistics.median(x["cpu_s"] / x["s"] for x in runs))


def _round_robin(workers, line_of, rounds, loads):
    runs = {name: [] for name in workers}
    for r in range(rounds):
        loads.append(os.getloadavg())
        for name, w in workers.items():
            runs[name].append(w.ask(line_of(r)))
    return runs


def part_forward(args, image, weights, loads):
    out = {}
    bare = dict(extra=("--no-warmup",))
    cases = {"saliency-jax (Flax, XLA:CPU)": (OURS, sys.executable, bare),
             "torchvision (PyTorch, oneDNN)": ("reference", args.peers_python, bare)}
    workers = _start(cases, args, image, weights)
    try:
        for b in args.forward_batches:
            runs = {name: [] for name in workers}
            for _ in range(args.rounds):
                loads.append(os.getloadavg())
                for name, w in workers.items():
                    ans = w.ask(f"forward {b} {args.forward_reps}")
                    runs[name] += [dict(s=s, cpu_s=c) for s, c in zip(ans["s"], ans["cpu_s"],
                                                                      strict=True)]
            for name, rs in runs.items():
                row = _summary(rs)
                row["ms_per_image"] = 1000 * row["median_s"] / b
                out.setdefault(name, {})[str(b)] = row
        for name, w in workers.items():
            out[name]["peak_rss_mb"] = w.ask("rss")["peak_rss_mb"]
            out[name]["versions"] = w.ready["versions"]
    finally:
        for w in workers.values():
            w.close()
    return out


def _maps_and_times(workers, args, loads, tmp):
    runs = _round_robin(workers, lambda r: f"run {r}", args.rounds, loads)
    maps = {}
    import numpy as np

    for name, w in workers.items():
        path = f"{tmp}/{abs(hash(name))}.npy"
        w.ask(f"map 0 {path}")
        maps[name] = np.load(path)
    out = {}
    ref = maps[next(iter(workers))]
    for name, w in workers.items():
        out[name] = dict(_summary(runs[name]), peak_rss_mb=w.ask("rss")["peak_rss_mb"],
                         warmup_s=w.ready["warmup_s"],
                         max_abs_diff_vs_first=float(np.max(np.abs(maps[name] - ref))),
                         map_max=float(np.max(np.abs(ref))))
    return out


def part_batch(args, image, weights, loads):
    batches = sorted(args.batches, reverse=True)  # the first (largest) is the maps' reference
    cases = {f"batch {b}": (OURS, sys.executable, dict(batch_size=b)) for b in batches}
    if args.default_too:
        cases["default (batch_size=None)"] = (OURS, sys.executable, dict(batch_size=0))
    workers = _start(cases, args, image, weights)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return _maps_and_times(workers, args, loads, tmp)
    finally:
        for w in workers.values():
            w.close()


def part_flags(args, image, weights, loads):
    cases = {name: (lib, sys.executable, dict(batch_size=args.flag_batch, env=env))
             for name, (lib, env) in FLAGS.items()}
    workers = _start(cases, args, image, weights)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = _maps_and_times(workers, args, loads, tmp)
    finally:
        for w in workers.values():
            w.close()
    for name in out:
        out[name]["env"] = FLAGS[name][1]
    return out


def table_section(lines: list[str]) -> None:
    """Append the markdown section for ``results/peers_rise_batch.json``."""
    path = HERE / "results" / "peers_rise_batch.json"
    if not path.exists():
        return
    d = json.loads(path.read_text())
    env = d["environment"]
    lines += ["## Why some peers were faster: a CPU profile of our RISE (`bench_rise_batch.py`)",
              "", f"{d['model']}; {d['image']}; N = {d['num_masks']}, grid {d['grid']}, "
              f"p = {d['p_keep']}; each case in its own process, warm-up apart, "
              "rounds interleaved round-robin; median (range).", ""]
    if "forward" in d["parts"]:
        f = d["parts"]["forward"]
        lines += ["Bare forward, same weights, same batch of images (ms per image):", "",
                  "| model | " + " | ".join(f"batch {b}" for b in d["forward_batches"])
                  + " | cores busy | peak RSS MB |",
                  "|---|" + "---|" * (len(d["forward_batches"]) + 2)]
        for name, rows in f.items():
            cells = [f"{rows[str(b)]['ms_per_image']:.0f} "
                     f"({1000 * rows[str(b)]['min_s'] / b:.0f}–{1000 * rows[str(b)]['max_s'] / b:.0f})"
                     for b in d["forward_batches"]]
            busy = statistics.median(rows[str(b)]["cores_busy"] for b in d["forward_batches"])
            lines.append(f"| {name} | " + " | ".join(cells)
                         + f" | {busy:.2f} | {rows['peak_rss_mb']:.0f} |")
        lines.append("")
    for part, title in (("batch", "Our RISE by chunk size (`RiseConfig.batch_size`)"),
                        ("flags", f"Our RISE under XLA:CPU settings, batch {d['flag_batch']}")):
        if part not in d["parts"]:
            continue
        rows = d["parts"][part]
        first = next(iter(rows.values()))["median_s"]
        lines += [f"{title}:", "", "| case | s / explanation | ÷ first row | cores busy | "
                  "peak RSS MB | max abs Δ map vs first row |", "|---|---|---|---|---|---|"]
        for name, r in rows.items():
            lines.append(f"| {name} | {r['median_s']:.1f} ({r['min_s']:.1f}–{r['max_s']:.1f}) | "
                         f"{r['median_s'] / first:.2f} | {r['cores_busy']:.2f} | "
                         f"{r['peak_rss_mb']:.0f} | {r['max_abs_diff_vs_first']:.1e} "
                         f"(map max {r['map_max']:.1e}) |")
        lines.append("")
    lines.append(f"Measured on {env['device_kind']} ({env['cpu_count']} cores).")
    for part, meta in d.get("runs", {}).items():
        lines.append(f"`{part}`: {meta['rounds']} rounds, finished {meta['finished_utc']} UTC, "
                     f"load average (1 min) per round "
                     f"{[round(x[0], 1) for x in meta['load_average_per_round']] or meta.get('load_note')}; "
                     f"command `{meta['command']}`.")
    lines.append("")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peers-python", required=True,
                        help="an interpreter with benchmarks/requirements-peers.txt installed")
    parser.add_argument("--parts", nargs="+", default=["forward", "batch", "flags"],
                        choices=["forward", "batch", "flags"])
    parser.add_argument("--num-masks", type=int, default=200)
    parser.add_argument("--grid", type=int, default=7)
    parser.add_argument("--p-keep", type=float, default=0.5)
    parser.add_argument("--batches", type=int, nargs="+", default=[100, 50, 25, 10, 5])
    parser.add_argument("--default-too", action="store_true",
                        help="also a case with RiseConfig's default batch_size")
    parser.add_argument("--forward-batches", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--forward-reps", type=int, default=2)
    parser.add_argument("--flag-batch", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--photo", default="chelsea")
    parser.add_argument("--out-name", default="peers_rise_batch")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other parts of an existing results JSON")
    args = parser.parse_args()
    args.batch_size = 50  # Worker's default chunk; every case here sets its own
    import common

    t0 = time.perf_counter()
    loads: list = []
    parts, runs_meta = {}, {}
    path = common.RESULTS / f"{args.out_name}.json"
    if args.merge and path.exists():  # keep the parts measured by an earlier command
        old = json.loads(path.read_text())
        parts, runs_meta = old["parts"], old.get("runs", {})
    with tempfile.TemporaryDirectory() as tmp:
        image, weights = prepare_inputs(args, Path(tmp), "resnet50")
        for part in args.parts:
            loads = []
            parts[part] = globals()[f"part_{part}"](args, image, weights, loads)
            runs_meta[part] = dict(command="python " + " ".join(sys.argv), rounds=args.rounds,
                                   load_average_per_round=loads,
                                   finished_utc=time.strftime("%Y-%m-%d %H:%M:%S",
                                                              time.gmtime()))
            print(part, json.dumps(parts[part], default=str)[:2000], flush=True)
    result = dict(
        what="profile of RISE on this CPU: bare forward ours vs torch, our RISE by chunk size "
             "and under XLA:CPU flags; one process per case, interleaved round-robin",
        model="torchvision ResNet50, seeded random weights (torch.manual_seed(0)), the same "
              "state dict converted to saliency-jax's Flax port",
        image=f"skimage.data.{args.photo}() bicubic to {args.size}x{args.size}",
        num_masks=args.num_masks, grid=args.grid, p_keep=args.p_keep, rounds=args.rounds,
        forward_batches=args.forward_batches, forward_reps=args.forward_reps,
        flag_batch=args.flag_batch, parts=parts, runs=runs_meta,
        load_average_per_round=[x for r in runs_meta.values() for x in r["load_average_per_round"]],
        environment=common.environment(), command="python " + " ".join(sys.argv),
        wall_s=time.perf_counter() - t0)
    print(common.write_result(args.out_name, result))
    lines: list[str] = []
    table_section(lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
