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


def _seconds(fn) -> float:
    """Wall time of one call, waiting for the device."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t0


def _model(name: str, hw, key):
    """``(model_fn, description)``: a registry classifier, or a small CNN if ``models`` is absent."""
    try:
        import models

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

    # First calls include compilation; then interleave so that other load hits all alike.
    first_bare = _seconds(bare)
    first_metrics = _seconds(lambda: both(target))
    first_top1 = _seconds(lambda: both(None))
    bare_t, metric_t, top1_t = [], [], []
    for _ in range(args.repeats):
        bare_t.append(_seconds(bare))
        metric_t.append(_seconds(lambda: both(target)))
        top1_t.append(_seconds(lambda: both(None)))
    med = statistics.median
    result = {
        "benchmark": "deletion + insertion of one map vs the bare forward passes they need",
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
        "bare_forward_s": {"median": med(bare_t), "all": bare_t, "first_call": first_bare},
        "metrics_target_given_s": {"median": med(metric_t), "all": metric_t,
                                   "first_call": first_metrics},
        "metrics_target_none_s": {"median": med(top1_t), "all": top1_t,
                                  "first_call": first_top1},
        "compile_s_estimate": {
            "bare": first_bare - med(bare_t),
            "metrics": first_metrics - med(metric_t),
        },
        "ratio_metrics_over_bare": med(metric_t) / med(bare_t),
        "ratio_metrics_top1_over_bare": med(top1_t) / med(bare_t),
        "target": "ratio_metrics_over_bare <= 1.2",
    }
    if common:
        out = common.write_result(args.out_name, result)
    else:
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / f"{args.out_name}.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("model", "image_hw", "step", "forward_passes_total",
                                              "ratio_metrics_over_bare",
                                              "ratio_metrics_top1_over_bare")}, indent=None))
    print(f"bare {med(bare_t):.3f}s  metrics {med(metric_t):.3f}s  (top-1 inside "
          f"{med(top1_t):.3f}s); compile ~{result['compile_s_estimate']['metrics']:.1f}s; -> {out}")
    return result


if __name__ == "__main__":
    main()
