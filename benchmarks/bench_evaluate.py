"""The main job's table, recorded: every method x every metric on one dataset, same images.

Runs :func:`saliency_jax.app.evaluate.run_evaluate` (resumable; its records go to
``runs/bench-<name>/``) and writes ``benchmarks/results/<name>.json``: per method the mean ± std
of deletion / insertion AUC, pointing game, IoU and F1, the model queries per map and the median
wall time per image (the first image, which compiles, apart), plus device and versions.

    python benchmarks/bench_evaluate.py --num-images 32                      # synthetic shapes
    python benchmarks/bench_evaluate.py --dataset photos --num-images 6 rise --name evaluate_photos
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run as a script

from benchmarks import common  # noqa: E402
from saliency_jax import data  # noqa: E402
from saliency_jax.app import classifiers, methods  # noqa: E402
from saliency_jax.app.evaluate import EvaluateConfig, markdown_table, run_evaluate  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("methods", nargs="*", default=None)
    parser.add_argument("--dataset", default="saliency_shapes")
    parser.add_argument("--model", default=None)
    parser.add_argument("--num-images", type=int, default=32)
    parser.add_argument("--num-masks", type=int, default=None)
    parser.add_argument("--name", default="evaluate_shapes", help="results/<name>.json")
    args = parser.parse_args(argv)
    from saliency_jax import sharding

    sharding.set_cpu_devices()  # a JAX CPU device per core, as the saliency-jax command does

    synthetic = args.dataset == "saliency_shapes"
    model = args.model or ("resnet_small" if synthetic else "efficientnet_lite0")
    size = 112 if synthetic else 224
    model_fn, variables = classifiers.load_classifier(model, None)
    context = methods.model_context(model, variables, (size, size))
    names = tuple(args.methods) or methods.DEFAULT_METHODS
    config = EvaluateConfig(dataset=args.dataset, model=model, methods=names,
                            num_images=args.num_images, num_masks=args.num_masks,
                            image_size=size)
    dataset = data.load(args.dataset, image_size=size)
    t0 = time.perf_counter()
    summary = run_evaluate(config, common.REPO / "runs" / f"bench-{args.name}",
                           model_fn=model_fn, dataset=dataset, context=context,
                           skip_unavailable=not args.methods)
    wall = time.perf_counter() - t0
    for s in summary.values():  # the curves are in the run folder; keep the JSON readable
        s.pop("mean_deletion_curve")
        s.pop("mean_insertion_curve")
    table = markdown_table(summary)
    print(table)
    payload = {
        "what": f"saliency-jax evaluate: {args.dataset}, {model}, {args.num_images} images, "
                f"{size}², target = the label where there is one, else top-1",
        "config": {"dataset": args.dataset, "model": model, "image_size": size,
                   "num_images": args.num_images, "methods": list(summary),
                   "deletion_insertion_step": config.step,
                   "pointing_tolerance_px": config.tolerance,
                   "iou_f1_threshold": f"{config.iou_threshold} of the map's range (relative)"},
        "summary": summary,
        "table_md": table,
        "wall_s_this_call": wall,
        "environment": common.environment(),
        "command": " ".join(["python", *sys.argv]),
    }
    print(f"wrote {common.write_result(args.name, payload)}")


if __name__ == "__main__":
    main()
