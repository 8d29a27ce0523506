"""Deletion + insertion of one map against the bare forward passes they need.

DESIGN §6: "deletion+insertion of one map costs ~ its forward passes". Both metrics evaluate
``n_steps + 1`` images each; the baseline runs the same model on the same number of prebuilt
images with the same batching (``lax.map(..., batch_size=B)``, twice: once per metric), so the
ratio isolates what the metrics add (ranking, building each step's image, the blur). Compile
time is reported apart from the steady state (median of ``--repeats`` runs), all in one run.

    python benchmarks/bench_metrics.py                          # resnet_small 112 px, step 224
    python benchmarks/bench_metrics.py --model resnet50 --size 224 --step 1792 --out-name metrics_resnet50

Writes ``benchmarks/results/<out-name>.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax import metrics  # noqa: E402

try:  # the shared helpers (environment, JSON writer), when present
    from benchmarks import common
except ImportError:
    common = None

RESULTS = Path(__file__).resolve().parent / "results"


def _seconds(fn) -> tuple[float, float]:
    """``(wall, process CPU)`` seconds of one call, waiting for the device.

    On a shared CPU the wall time swings with other processes' load; the process CPU time
    (all threads) is the steadier measure of the work done.
    """
    t0, c0 = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn())
    return time.perf_counter() - t0, time.process_time() - c0


def _model(name: str, hw, key):
    """``(model_fn, description)``: a registry classifier, or a small CNN if ``models`` is absent."""
    try:
        from saliency_jax import models

        variables = models.init(name, key, input_hw=hw)
        return models.classifier(name, variables), f"models.classifier({name!r}), random init"
    except ImportError:
        import flax.linen as nn

        class SmallCNN(nn.Module):
            @nn.compact
            def __call__(self, x):
                for width in (32, 64, 128):
                    x = nn.relu(nn.Conv(width, (3, 3), strides=2)(x))
                return nn.Dense(10)(x.mean(axis=(1, 2)))

        def apply(variables, images, *, mean_rgb):
            return jax.nn.softmax(SmallCNN().apply(variables, images - mean_rgb.reshape(1, 1, 1, 3)))

        variables = SmallCNN().init(key, jnp.zeros((1, *hw, 3)))
        fn = jax.tree_util.Partial(apply, variables, mean_rgb=jnp.full((3,), 0.5))
        return fn, "3-conv SmallCNN (models not importable)"


@functools.partial(jax.jit, static_argnames=("batch_size",))
def _forward(model_fn, images, target, *, batch_size):
    """The bare cost: ``model_fn`` on prebuilt images, batched as the metrics batch."""
    return jax.lax.map(lambda x: model_fn(x[None])[0, target], images,
                       batch_size=min(batch_size, images.shape[0]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet_small")
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--step", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out-name", default="metrics")
    args = p.parse_args(argv)

    hw = (args.size, args.size)
    k_model, k_img, k_sal = jax.random.split(jax.random.key(0), 3)
    model_fn, model_desc = _model(args.model, hw, k_model)
    image = jax.random.uniform(k_img, (*hw, 3))
    saliency = jax.random.uniform(k_sal, hw)
    target = jnp.argmax(model_fn(image[None])[0])
    n_evals = -(-(hw[0] * hw[1]) // args.step) + 1
    images = jnp.broadcast_to(image, (n_evals, *hw, 3)) + 0.0  # materialised

    def both(tgt):
        d = metrics.deletion(model_fn, image, saliency, tgt, step=args.step,
                             batch_size=args.batch_size)
        i = metrics.insertion(model_fn, image, saliency, tgt, step=args.step,
                              batch_size=args.batch_size)
        return d.auc, i.auc

    def bare():
        return (_forward(model_fn, images, target, batch_size=args.batch_size),
                _forward(model_fn, images, target, batch_size=args.batch_size))

    calls = {"bare_forward": bare, "metrics_target_given": lambda: both(target),
             "metrics_target_none": lambda: both(None)}
    # First calls include compilation; then interleave, rotating the order, so that other
    # load and any order effect hit all alike.
    first = {name: _seconds(fn)[0] for name, fn in calls.items()}
    wall = {name: [] for name in calls}
    cpu = {name: [] for name in calls}
    names = list(calls)
    for r in range(args.repeats):
        for name in names[r % 3:] + names[: r % 3]:
            fn = calls[name]
            w, c = _seconds(fn)
            wall[name].append(w)
            cpu[name].append(c)
    med = statistics.median
    timings = {
        name: {"wall_median_s": med(wall[name]), "cpu_median_s": med(cpu[name]),
               "wall_s": wall[name], "cpu_s": cpu[name], "first_call_s": first[name],
               "compile_s_estimate": first[name] - med(wall[name])}
        for name in calls
    }

    def ratio(name, kind):
        return timings[name][f"{kind}_median_s"] / timings["bare_forward"][f"{kind}_median_s"]

    result = {
        "benchmark": "deletion + insertion of one map vs the bare forward passes they need",
        "command": "python benchmarks/bench_metrics.py " + " ".join(sys.argv[1:] if argv is None
                                                                    else argv),
        "environment": common.environment() if common else {
            "device_kind": jax.devices()[0].device_kind, "cpu_count": os.cpu_count(),
            "platform": platform.platform(), "jax": jax.__version__, "numpy": np.__version__,
        },
        "model": model_desc,
        "image_hw": list(hw),
        "step": args.step,
        "batch_size": args.batch_size,
        "evaluations_per_metric": n_evals,
        "forward_passes_total": 2 * n_evals,
        "repeats": args.repeats,
        "timings": timings,
        "ratio_wall": ratio("metrics_target_given", "wall"),
        "ratio_cpu": ratio("metrics_target_given", "cpu"),
        "ratio_wall_target_none": ratio("metrics_target_none", "wall"),
        "ratio_cpu_target_none": ratio("metrics_target_none", "cpu"),
        "target": "ratio <= 1.2 (metrics over bare forward passes, target given)",
    }
    if common:
        out = common.write_result(args.out_name, result)
    else:
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / f"{args.out_name}.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("model", "image_hw", "step", "forward_passes_total",
                                              "ratio_wall", "ratio_cpu", "ratio_wall_target_none",
                                              "ratio_cpu_target_none")}))
    t = timings
    print(f"bare {t['bare_forward']['wall_median_s']:.3f}s, metrics "
          f"{t['metrics_target_given']['wall_median_s']:.3f}s (wall medians); compile "
          f"~{t['metrics_target_given']['compile_s_estimate']:.1f}s; -> {out}")
    return result


if __name__ == "__main__":
    main()
