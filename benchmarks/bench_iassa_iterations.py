"""IASSA's per-iteration curve on the synthetic benchmark: quality of ``S'_t`` after each iteration.

For each test image (target = label), one :func:`saliency_jax._src.iassa.iassa` call with
``return_iterations=True`` gives the adjusted map of every iteration ``t = 0 .. k``; each is
scored with the main job's metrics (deletion / insertion AUC with step 56 px, pointing game
with 7.5 px tolerance, IoU and F1 at 0.3 of the map's range) and with the cumulative number of
model queries up to that iteration. Writes ``benchmarks/results/iassa_iterations.json``.

    python benchmarks/bench_iassa_iterations.py --num-images 16
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run as a script

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from saliency_jax import (
    metrics,  # noqa: E402
    models,  # noqa: E402
)
from saliency_jax._src.iassa import REFERENCE_LEVELS, IassaConfig, iassa, window_schedule  # noqa: E402
from saliency_jax.app import classifiers  # noqa: E402
from saliency_jax.app.evaluate import EvaluateConfig  # noqa: E402
from saliency_jax.data import shapes  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=16)
    parser.add_argument("--variants", default="paper,reference")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override an IassaConfig number of every variant, e.g. beta=1.0 "
                        "(no attention) or update=1.0")
    parser.add_argument("--name", default="iassa_iterations", help="results/<name>.json")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        field, _, value = item.partition("=")
        if field not in {f.name for f in dataclasses.fields(IassaConfig)} or not value:
            raise ValueError(f"--set wants FIELD=VALUE with an IassaConfig field, got {item!r}")
        overrides[field] = float(value) if "." in value or "e" in value else int(value)

    size = 112
    ev = EvaluateConfig()  # the main job's metric settings at 112²
    model_fn, variables = classifiers.load_classifier("resnet_small", None)
    features_fn = models.features_fn("resnet_small", variables, names=REFERENCE_LEVELS)
    data = shapes.generate_arrays("test", args.num_images, seed=0, image_size=size)
    results = {}
    for variant in args.variants.split(","):
        config = (IassaConfig.for_image_size(size) if variant == "paper"
                  else IassaConfig.reference(size))
        config = dataclasses.replace(config, **overrides)
        plan = window_schedule(config, (size, size))
        cumulative = np.cumsum([p[2] for p in plan]).tolist()  # windows = model queries
        rows = []
        for i in range(args.num_images):
            image = jnp.asarray(data["image"][i], jnp.float32) / 255.0
            label = int(data["label"][i])
            _, maps = iassa(jax.random.fold_in(jax.random.key(0), i), model_fn, image, label,
                            config=config, features_fn=features_fn, return_iterations=True)
            per_t = []
            for sal in maps:
                per_t.append(dict(
                    deletion=float(metrics.deletion(model_fn, image, sal, label,
                                                    step=ev.step).auc),
                    insertion=float(metrics.insertion(model_fn, image, sal, label,
                                                      step=ev.step).auc),
                    pointing=float(metrics.pointing_game(sal, data["mask"][i],
                                                         tolerance=ev.tolerance)),
                    iou=float(metrics.iou(sal, data["mask"][i], threshold=ev.iou_threshold,
                                          mode="relative")),
                    f1=float(metrics.f1(sal, data["mask"][i], threshold=ev.iou_threshold,
                                        mode="relative"))))
            rows.append(per_t)
            print(variant, i, {k: round(v, 3) for k, v in per_t[-1].items()}, flush=True)
        curve = []
        for t in range(len(rows[0])):
            curve.append({"iteration": t, "cumulative_queries": cumulative[t],
                          **{k: float(np.mean([r[t][k] for r in rows])) for k in rows[0][t]}})
        results[variant] = {"config": {"window_schedule": plan}, "curve": curve}
    payload = {
        "what": "IASSA per-iteration metrics of the adjusted map S'_t (mean over images)",
        "images": f"saliency_shapes/test[:{args.num_images}], 112², target = label, packaged "
                  "resnet_small",
        "overrides": overrides,
        "metrics": {"step": ev.step, "tolerance_px": ev.tolerance,
                    "iou_threshold": ev.iou_threshold},
        "results": results,
        "environment": common.environment(),
        "command": " ".join(["python", *sys.argv]),
    }
    for variant, r in results.items():
        for row in r["curve"]:
            print(variant, {k: (round(v, 3) if isinstance(v, float) else v)
                            for k, v in row.items()})
    print(f"wrote {common.write_result(args.name, payload)}")


if __name__ == "__main__":
    main()
