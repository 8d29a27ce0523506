"""bfloat16 against float32 compute on this device: one batch through the model, interleaved.

    python benchmarks/bench_mixed_precision.py --model resnet_small --size 112 --batch-size 50

Writes ``results/mixed_precision.json``. On a CPU without native bf16 expect bf16 to be slower.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import jax  # noqa: E402

import saliency_jax as sj  # noqa: E402
from saliency_jax import models  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet_small")
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    variables = models.init(args.model, jax.random.key(0), input_hw=(args.size, args.size))
    images = jax.random.uniform(jax.random.key(1), (args.batch_size, args.size, args.size, 3))
    cases = {dtype: (lambda fn, x: fn(x), (sj.classifier(args.model, variables, dtype=dtype),
                                           images))
             for dtype in ("float32", "bfloat16")}
    out = common.compare(cases, repeats=args.repeats)
    for r in out.values():
        r["images_per_s"] = args.batch_size / r["steady_s"]
    result = dict(what="one batch through the classifier, bf16 compute vs float32, interleaved",
                  model=args.model, image_size=args.size, batch_size=args.batch_size,
                  results=out, bf16_over_f32=out["bfloat16"]["steady_s"] / out["float32"]["steady_s"],
                  environment=common.environment(), command="python " + " ".join(sys.argv))
    print(common.write_result("mixed_precision", result))
    print(json.dumps({k: v for k, v in result.items() if k not in ("environment",)}, indent=1))


def table_section(lines: list[str]) -> None:
    """Append the markdown section for ``results/mixed_precision.json``."""
    path = Path(__file__).resolve().parent / "results" / "mixed_precision.json"
    if not path.exists():
        return
    d = json.loads(path.read_text())
    r = d["results"]
    lines += ["## Mixed precision on this device (`bench_mixed_precision.py`)", "",
              f"{d['model']} {d['image_size']}², batch {d['batch_size']}, random weights; "
              "interleaved, medians.", "", "| dtype | s / batch | images/s |", "|---|---|---|",
              *[f"| {k} | {v['steady_s']:.3f} | {v['images_per_s']:.1f} |" for k, v in r.items()],
              "", f"bf16 ÷ f32 time: {d['bf16_over_f32']:.2f} on "
              f"{d['environment']['device_kind']} (load {d['environment']['load_average'][0]:.1f})."
              f" Command: `{d['command']}`.", ""]


if __name__ == "__main__":
    main()
