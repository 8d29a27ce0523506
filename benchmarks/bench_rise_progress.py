"""The cost of RISE's ``progress`` callback: RISE with a callback ÷ RISE without.

Packaged ``resnet_small`` at 112², N masks in batches of B; the two compiled calls are timed
interleaved, ``--repeats`` rounds, after a warm-up each; medians. Goal: at most 2 % slower.

    python benchmarks/bench_rise_progress.py --num-masks 500 --batch-size 50 --repeats 7

Writes ``results/rise_progress.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import saliency_jax as sj  # noqa: E402
from saliency_jax.app import classifiers  # noqa: E402
from saliency_jax.data import shapes  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-masks", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    model_fn, _ = classifiers.load_classifier("resnet_small")
    data = shapes.generate_arrays("test", 1)
    image, label = jnp.asarray(data["image"][0], jnp.float32) / 255, int(data["label"][0])
    cfg = sj.RiseConfig(num_masks=args.num_masks, batch_size=args.batch_size)
    calls = []

    def with_progress(key):
        return sj.rise(key, model_fn, image, label, config=cfg,
                       progress=lambda done, total: calls.append(done))

    def without(key):
        return sj.rise(key, model_fn, image, label, config=cfg)

    cases = {"without_progress": without, "with_progress": with_progress}
    runs = {name: [] for name in cases}
    for name, fn in cases.items():  # compile + warm-up
        jax.block_until_ready(fn(jax.random.key(0)))
    jax.effects_barrier()
    for r in range(args.repeats):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(jax.random.key(r)))
            jax.effects_barrier()  # the callbacks are part of the cost
            runs[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(v) for name, v in runs.items()}
    result = dict(
        what="sj.rise with a progress callback vs without, interleaved",
        model="packaged resnet_small, 112x112, synthetic test image 0",
        num_masks=args.num_masks, batch_size=args.batch_size, repeats=args.repeats,
        runs_s=runs, median_s=med, ratio=med["with_progress"] / med["without_progress"],
        callbacks_per_call=len(calls) // (args.repeats + 1),
        environment=common.environment(), command="python " + " ".join(sys.argv))
    print(common.write_result("rise_progress", result))
    print(json.dumps({k: v for k, v in result.items() if k != "environment"}, indent=1))


def table_section(lines: list[str]) -> None:
    """Append the markdown section for ``results/rise_progress.json``."""
    path = Path(__file__).resolve().parent / "results" / "rise_progress.json"
    if not path.exists():
        return
    d = json.loads(path.read_text())
    env = d["environment"]
    lines += ["## RISE progress callback (`bench_rise_progress.py`)", "",
              f"{d['model']}; N = {d['num_masks']}, batch {d['batch_size']}, "
              f"{d['callbacks_per_call']} callbacks per explanation; {d['repeats']} interleaved "
              "runs, medians (goal ≤ 1.02).", "",
              "| without s | with s | with ÷ without |", "|---|---|---|",
              f"| {d['median_s']['without_progress']:.2f} | {d['median_s']['with_progress']:.2f} "
              f"| {d['ratio']:.3f} |", "",
              f"Measured on {env['device_kind']}, load average {env['load_average'][0]:.1f}. "
              f"Command: `{d['command']}`.", ""]


if __name__ == "__main__":
    main()
