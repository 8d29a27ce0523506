"""RISE in saliency-jax against the reference algorithm written in PyTorch, on the same CPU.

The reference (``rise_torch_reference.py``: scikit-image masks made on the CPU one by one, the
whole masked stack at once, torchvision ResNet50 in batches) runs in a subprocess under
``--torch-python`` (an interpreter with torch + torchvision); ours is ``rise_all_classes`` (all
1000 classes, as the reference computes) with the same N, grid, p and batch. The two are run in
alternation, ``--rounds`` times, and the ratio of medians is reported. Random weights: only the
cost is compared. Writes ``results/rise_vs_pytorch.json``.

    python benchmarks/bench_rise_vs_pytorch.py --torch-python /tmp/tvenv/bin/python
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from saliency_jax import models  # noqa: E402
from saliency_jax._src.rise import RiseConfig, rise_all_classes  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--torch-python", required=True)
    parser.add_argument("--num-masks", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    variables = models.init("resnet50", jax.random.key(0))
    model_fn = models.classifier("resnet50", variables)
    image = jax.random.uniform(jax.random.key(1), (args.size, args.size, 3))
    config = RiseConfig(num_masks=args.num_masks, batch_size=args.batch_size)

    def ours(key):
        return jax.block_until_ready(rise_all_classes(key, model_fn, image, config=config))

    t0 = time.perf_counter()
    ours(jax.random.key(0))
    first_s = time.perf_counter() - t0
    reference = Path(__file__).with_name("rise_torch_reference.py")
    jax_s, torch_s, torch_masks_s, torch_meta = [], [], [], {}
    for r in range(args.rounds):
        t0 = time.perf_counter()
        ours(jax.random.key(r + 1))
        jax_s.append(time.perf_counter() - t0)
        out = subprocess.run(
            [args.torch_python, str(reference), "--num-masks", str(args.num_masks),
             "--batch-size", str(args.batch_size), "--size", str(args.size), "--repeats", "1"],
            check=True, capture_output=True, text=True,
        )
        torch_meta = json.loads(out.stdout.strip().splitlines()[-1])
        torch_s += torch_meta.pop("total_s")
        torch_masks_s += torch_meta.pop("masks_s")
    result = {
        "what": "RISE all-class map, ResNet50, random weights; reference algorithm in PyTorch "
                "(skimage masks on CPU, full masked stack, batches) vs saliency-jax",
        "num_masks": args.num_masks, "batch_size": args.batch_size, "image_size": args.size,
        "jax_first_call_s": first_s, "jax_steady_s": statistics.median(jax_s),
        "torch_s": statistics.median(torch_s),
        "torch_mask_generation_s": statistics.median(torch_masks_s),
        "torch_over_jax": statistics.median(torch_s) / statistics.median(jax_s),
        "jax_runs_s": jax_s, "torch_runs_s": torch_s, "torch_env": torch_meta,
        "environment": common.environment(),
    }
    common.write_result("rise_vs_pytorch", result)
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, (list, dict))},
                     indent=1))


if __name__ == "__main__":
    main()
