"""IASSA cost: model queries, compile time and steady-state time of one explanation, against the
same number of bare forward passes in batches of the same size (the ratio is the overhead of
masking, aggregation and the LRPF-SA attention).

    python benchmarks/bench_iassa.py --image-size 112 --model resnet_small --repeats 3

Random weights (time does not depend on them). Writes ``benchmarks/results/iassa.json``.
Medians of ``--repeats`` runs after one warm-up; compile time is ``lower().compile()``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run as a script

from benchmarks import common  # noqa: E402
from saliency_jax import models  # noqa: E402
from saliency_jax._src import attention as lrpf  # noqa: E402
from saliency_jax._src.iassa import IassaConfig, iassa, iassa_num_queries  # noqa: E402


def _timed(compiled, *args, repeats):
    jax.block_until_ready(compiled(*args))  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _compile(fn, *args):
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--model", default="resnet_small")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default="paper,reference")
    parser.add_argument("--out", default="benchmarks/results/iassa.json")
    args = parser.parse_args(argv)

    key = jax.random.key(0)
    size = args.image_size
    variables = models.init(args.model, key)
    model_fn = models.classifier(args.model, variables)
    image = jax.random.uniform(jax.random.key(1), (size, size, 3))
    names = tuple(n for n in ("conv1", "pool1", "layer2", "layer3", "layer4")
                  if n in models.get(args.model).feature_names) or None
    features_fn = models.features_fn(args.model, variables, names=names)
    feature_shapes = {k: list(v.shape) for k, v in
                      jax.eval_shape(features_fn, jnp.zeros((1, size, size, 3))).items()}

    results = []
    for variant in args.variants.split(","):
        config = IassaConfig.for_image_size(size, variant=variant, iterations=args.iterations,
                                            batch_size=args.batch_size, feature_names=names)
        queries = iassa_num_queries(config, (size, size))

        def explain(key, model_fn, image, features_fn, config=config):
            return iassa(key, model_fn, image, 0, config=config, features_fn=features_fn)


        def bare(model_fn, image, queries=queries):
            # ``queries`` forward passes of (slightly perturbed) copies of the image.
            chunks = jnp.arange(queries // args.batch_size, dtype=jnp.float32)

            def body(total, c):
                batch = jnp.broadcast_to(image, (args.batch_size, *image.shape)) * (1 - 1e-6 * c)
                return total + model_fn(batch)[:, 0].sum(), None

            return jax.lax.scan(body, jnp.float32(0), chunks)[0]

        # Timed calls interleaved (common.compare): a change of machine load hits both alike.
        timing = common.compare({"explain": (explain, (key, model_fn, image, features_fn)),
                                 "bare": (bare, (model_fn, image))}, repeats=args.repeats)
        compile_s, explain_s = timing["explain"]["compile_s"], timing["explain"]["steady_s"]
        bare_compile_s, bare_s = timing["bare"]["compile_s"], timing["bare"]["steady_s"]

        feats = features_fn(image[None])
        levels = [feats[n][0] for n in (names or tuple(feats))]
        grid = max((lv.shape[:2] for lv in levels), key=lambda s: s[0] * s[1])

        def attention_once(levels, sal, variant=variant, grid=grid):
            att = lrpf.lrpf_attention(levels, out_hw=grid, variant=variant)
            return lrpf.attend(sal, att)

        sal = jax.random.uniform(key, (size, size))
        att_compiled, _ = _compile(attention_once, levels, sal)
        attention_s = _timed(att_compiled, levels, sal, repeats=args.repeats)

        row = {
            "variant": variant,
            "queries": queries,
            "schedule": [list(p) for p in config.schedule()],
            "compile_s": round(compile_s, 2),
            "explain_s": round(explain_s, 3),
            "bare_forward_s": round(bare_s, 3),
            "bare_compile_s": round(bare_compile_s, 2),
            "ratio_to_bare_forward": round(explain_s / bare_s, 3),
            "explain_runs_s": [round(x, 3) for x in timing["explain"]["runs_s"]],
            "bare_runs_s": [round(x, 3) for x in timing["bare"]["runs_s"]],
            "attention_build_and_apply_s": round(attention_s, 3),
            "attention_grid": list(grid),
        }
        print(json.dumps(row))
        results.append(row)

    out = {
        "benchmark": "iassa",
        "model": args.model,
        "image_size": size,
        "iterations": args.iterations,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "feature_shapes": feature_shapes,
        "device": jax.devices()[0].device_kind,
        "num_devices": jax.device_count(),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "note": "bare_forward_s: queries // batch_size batches of the model alone (no masking, "
                "no attention); medians after one warm-up, explain and bare calls interleaved; "
                "random weights",
        "load_average": list(__import__("os").getloadavg()),
        "results": results,
    }
    path = pathlib.Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
