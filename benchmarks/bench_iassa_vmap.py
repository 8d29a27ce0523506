"""IASSA under ``jax.vmap`` against image by image: seconds per image, the main job's setting.

    python benchmarks/bench_iassa_vmap.py --num-images 4 --rounds 3

The ``iassa`` method of ``evaluate`` (paper variant, 25 iterations, 128 windows per refinement,
packaged resnet_small, 112²) on the first synthetic test images: one ``jit(vmap(explain))`` call
over the batch against the same images one ``jit(explain)`` call each, interleaved per round,
compile apart. Writes ``benchmarks/results/iassa_vmap.json``.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run as a script

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks import common  # noqa: E402
from saliency_jax.app import classifiers, methods  # noqa: E402
from saliency_jax.data import shapes  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--method", default="iassa")
    args = parser.parse_args(argv)
    model_fn, variables = classifiers.load_classifier("resnet_small")
    ctx = methods.ModelContext("resnet_small", variables, (112, 112))
    (method,) = methods.build_methods([args.method], ctx)
    n = args.num_images
    examples = [shapes.render_example(i, "test", 0) for i in range(n)]
    images = jnp.stack([e["image"] / 255.0 for e in examples]).astype(jnp.float32)
    targets = jnp.array([e["label"] for e in examples])
    keys = jax.random.split(jax.random.key(0), n)
    single = jax.jit(method.explain)
    batched = jax.jit(jax.vmap(method.explain, in_axes=(0, None, 0, 0)))
    t0 = time.perf_counter()
    jax.block_until_ready(single(keys[0], model_fn, images[0], targets[0]))
    single_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(batched(keys, model_fn, images, targets))
    batched_compile = time.perf_counter() - t0
    rounds = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        for i in range(n):
            jax.block_until_ready(single(keys[i], model_fn, images[i], targets[i]))
        one = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        jax.block_until_ready(batched(keys, model_fn, images, targets))
        rounds.append({"single_s_per_image": one,
                       "batched_s_per_image": (time.perf_counter() - t0) / n})
        print(rounds[-1], flush=True)
    payload = {
        "what": f"{method.description}: seconds per image, jit(vmap) over {n} images against "
                "jit image by image, interleaved per round (first call, compile included, apart)",
        "method": args.method,
        "num_images": n,
        "rounds": rounds,
        "median_single_s_per_image": statistics.median(r["single_s_per_image"] for r in rounds),
        "median_batched_s_per_image": statistics.median(r["batched_s_per_image"] for r in rounds),
        "first_call_s": {"single": single_compile, "batched": batched_compile},
        "environment": common.environment(),
        "command": " ".join(["python", *sys.argv]),
    }
    payload["batched_over_single"] = (payload["median_batched_s_per_image"]
                                      / payload["median_single_s_per_image"])
    print(f"wrote {common.write_result('iassa_vmap', payload)}")


def table_section(lines: list[str]) -> None:
    import json

    path = common.RESULTS / "iassa_vmap.json"
    if not path.exists():
        return
    d = json.loads(path.read_text())
    env = d["environment"]
    lines += ["## IASSA under vmap (`bench_iassa_vmap.py`)", "", d["what"] + ".", "",
              "| round | image by image, s / image | vmap, s / image |", "|---|---|---|"]
    for i, r in enumerate(d["rounds"]):
        lines.append(f"| {i + 1} | {r['single_s_per_image']:.2f} | "
                     f"{r['batched_s_per_image']:.2f} |")
    lines += ["", f"Median vmap ÷ image by image: {d['batched_over_single']:.2f}. Measured on "
              f"{env.get('device_kind', 'cpu')}, load average {env['load_average'][0]:.1f}. "
              f"Command: `{d['command']}`.", ""]


if __name__ == "__main__":
    main()
