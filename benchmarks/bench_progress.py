"""What the command line's progress display costs (issue 19: "≤ 2 % slower").

Two measurements, in one run:

* **display**: the host time of every :class:`saliency_jax.app.progress.ChunkProgress` call of
  one explanation (a tqdm bar to /dev/null, redrawn at most every 0.5 s; the first call creates
  it) against the explanation's time: the share of an explanation the display takes.
* **rise**: where ``sj.rise`` takes ``progress=`` (issue 20), RISE with the display against
  RISE without it, timed calls interleaved (medians); absent otherwise.

    python benchmarks/bench_progress.py [--num-masks 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(__file__))
from common import environment, write_result  # noqa: E402

import saliency_jax as sj  # noqa: E402
from saliency_jax.app import classifiers, progress  # noqa: E402
from saliency_jax.data import shapes  # noqa: E402


def _display_calls_s(num_calls: int, total: int) -> list[float]:
    """Seconds of each ChunkProgress call over an explanation of ``num_calls`` chunks (the first
    creates the bar, the last closes it)."""
    with open(os.devnull, "w") as sink:
        bar = progress.ChunkProgress("rise", file=sink)
        times = []
        step = total // num_calls
        for done in range(step, total + 1, step):
            t0 = time.perf_counter()
            bar(done, total)
            times.append(time.perf_counter() - t0)
        bar.close()
    return times


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-masks", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    model_fn, _ = classifiers.load_classifier("resnet_small")
    example = shapes.render_example(0, "test", 0)
    image = jax.numpy.asarray(example["image"] / 255.0, jax.numpy.float32)
    config = sj.RiseConfig(num_masks=args.num_masks, batch_size=100)
    chunks = -(-config.num_masks // config.batch_size)
    takes_progress = "progress" in inspect.signature(sj.rise).parameters

    def plain():
        return jax.block_until_ready(sj.rise(jax.random.key(0), model_fn, image,
                                             example["label"], config=config))

    cases = {"rise": plain}
    if takes_progress:
        sink = open(os.devnull, "w")  # noqa: SIM115 - closed below
        bar = progress.ChunkProgress("rise", file=sink)

        def shown():
            return jax.block_until_ready(sj.rise(jax.random.key(0), model_fn, image,
                                                 example["label"], config=config,
                                                 progress=bar))

        cases["rise_with_progress"] = shown
    times = {name: [] for name in cases}
    for call in cases.values():
        call()  # compile
    for _ in range(args.repeats):
        for name, call in cases.items():
            t0 = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - t0)
    medians = {name: statistics.median(t) for name, t in times.items()}
    calls_s = _display_calls_s(chunks, config.num_masks)
    call_s = statistics.median(calls_s)
    result = {
        "num_masks": config.num_masks, "batch_size": config.batch_size, "chunks": chunks,
        "model": "resnet_small", "image_size": 112, "repeats": args.repeats,
        "rise_s": medians["rise"], "runs_s": times,
        "display_call_s": call_s, "display_calls_s": calls_s,
        "display_total_s": sum(calls_s),
        "display_share": sum(calls_s) / medians["rise"],
        "rise_takes_progress": takes_progress,
        "environment": {**environment(), "load_average": list(os.getloadavg())},
        "command": "python benchmarks/bench_progress.py " + " ".join(argv or sys.argv[1:]),
    }
    if takes_progress:
        sink.close()
        result["rise_with_progress_s"] = medians["rise_with_progress"]
        result["ratio_with_over_without"] = medians["rise_with_progress"] / medians["rise"]
    path = write_result("progress", result)
    print(f"{path}: display {call_s * 1e6:.0f} µs per call (median), {chunks} calls "
          f"{sum(calls_s) * 1e3:.2f} ms in all = "
          f"{100 * result['display_share']:.3f} % of a {medians['rise']:.2f} s explanation"
          + (f"; with/without {result['ratio_with_over_without']:.3f}" if takes_progress else ""))


def table_section(lines: list[str]) -> None:
    """The markdown section of ``results/progress.json`` (for ``make_tables.py``)."""
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parent / "results" / "progress.json"
    if not path.exists():
        return
    d = json.loads(path.read_text())
    env = d["environment"]
    lines += ["## Progress display (`bench_progress.py`)", "",
              f"RISE N = {d['num_masks']} on {d['model']} at {d['image_size']}², "
              f"{d['chunks']} chunks of {d['batch_size']}: one call of the command line's "
              f"chunk display (`app/progress.py`) takes {d['display_call_s'] * 1e6:.0f} µs (median; "
              f"all {d['chunks']} calls, bar creation included, "
              f"{d['display_total_s'] * 1e3:.2f} ms), "
              f"{100 * d['display_share']:.3f} % of the {d['rise_s']:.2f} s explanation "
              "(target ≤ 2 %)."]
    if d.get("rise_takes_progress"):
        lines[-1] += (f" RISE with the display ÷ without: {d['ratio_with_over_without']:.3f} "
                      f"(medians of {d['repeats']} interleaved calls).")
    lines += ["", f"Measured on {env['device_kind']}, jax {env['versions']['jax']}, load "
              f"average {env['load_average'][0]:.1f}. Command: `{d['command']}`.", ""]


if __name__ == "__main__":
    main()
