"""RISE: cost against its bare forward passes, memory against N, and masks per second.

(a) DESIGN §6: "RISE with N masks should take no more than ~1.1x the time of N bare forward
    passes of the same model in batches of the same size". The floor is a compiled ``lax.scan``
    over ``N / B`` batches of the image, each item scaled by its own factor (one multiply, so no
    pass can be hoisted out of the loop), summing the scores: what RISE needs minus the masks.
    Measured for the small default classifier and ResNet50.
(b) Memory must be flat in N: the peak RSS of a fresh process running RISE with N = B and with
    N = ``--memory-masks`` (8000).
(c) Masks per second for ResNet50, VGG16 (224 px, small N) and the small classifier.

Compile time is reported apart from the steady state (median of ``--repeats`` calls after a
warm-up); the calls being compared are interleaved, round by round, so that load from other
processes on a shared machine falls on both alike. Models have random weights (timing does not
depend on them). All figures come from one run of this script on one machine; compare the
ratios, not absolute times across machines.

    python benchmarks/bench_rise.py                          # a few minutes on 2 CPU cores
    python benchmarks/bench_rise.py --skip-large             # small classifier + memory only
    python benchmarks/bench_rise.py --large-masks 256 --large-batch 64   # on an accelerator

Writes ``benchmarks/results/rise.json`` (``--out-name``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from saliency_jax._src.rise import RiseConfig, rise, rise_all_classes  # noqa: E402


def _tiny_apply(variables, images, *, mean_rgb):
    from saliency_jax.testing import TinyCNN

    return jax.nn.softmax(TinyCNN(num_classes=10, width=16).apply(
        variables, images - mean_rgb[None, None, None, :]), axis=-1)


def build_model(name: str, size: int, key):
    """``(model_fn, description)``: a ``models`` registry classifier, or ``tiny`` (a 2-conv CNN)."""
    hw = (size, size)
    if name == "tiny":
        from saliency_jax.testing import TinyCNN

        variables = TinyCNN(num_classes=10, width=16).init(key, jnp.zeros((1, *hw, 3)))
        return (jax.tree_util.Partial(_tiny_apply, variables, mean_rgb=jnp.full((3,), 0.5)),
                "saliency_jax.testing.TinyCNN(10 classes, width 16), random init")
    from saliency_jax import models

    variables = models.init(name, key, input_hw=hw)
    spec = models.get(name)
    return (models.classifier(name, variables),
            f"models.classifier({name!r}), {spec.num_classes} classes, random init")


def bare_forward_passes(model_fn, image, *, num_images: int, batch_size: int):
    """``num_images`` forward passes of ``image`` in batches of ``batch_size``: RISE's floor."""
    num_chunks = math.ceil(num_images / batch_size)
    num_classes = jax.eval_shape(model_fn, image[None]).shape[-1]

    def body(total, chunk):
        item = chunk * batch_size + jnp.arange(batch_size)
        scale = 1.0 - item.astype(jnp.float32) / (2.0 * num_images)
        return total + model_fn(image[None] * scale[:, None, None, None]).sum(0), None

    total, _ = jax.lax.scan(body, jnp.zeros((num_classes,)), jnp.arange(num_chunks))
    return total


def ratio_case(model: str, size: int, num_masks: int, batch_size: int, repeats: int,
               all_classes: bool, key) -> dict:
    """RISE vs bare passes for one model; also masks/s."""
    k_model, k_image, k_rise = jax.random.split(key, 3)
    model_fn, description = build_model(model, size, k_model)
    image = jax.random.uniform(k_image, (size, size, 3))
    config = RiseConfig(num_masks=num_masks, grid=7, p_keep=0.5, batch_size=batch_size)
    target = jnp.int32(0)

    cases = dict(
        bare_forward=(lambda m, x: bare_forward_passes(m, x, num_images=num_masks,
                                                       batch_size=batch_size), (model_fn, image)),
        rise=(lambda k, m, x, t: rise(k, m, x, t, config=config),
              (k_rise, model_fn, image, target)),
    )
    if all_classes:
        cases["rise_all_classes"] = (lambda k, m, x: rise_all_classes(k, m, x, config=config),
                                     (k_rise, model_fn, image))
    timed = common.compare(cases, repeats=repeats)
    bare, single = timed["bare_forward"], timed["rise"]
    out = dict(
        model=model, description=description, image_size=size, num_masks=num_masks,
        batch_size=batch_size, grid=7, p_keep=0.5, timings=timed,
        ratio_rise_over_bare=single["steady_s"] / bare["steady_s"],
        masks_per_s=num_masks / single["steady_s"],
        bare_images_per_s=num_masks / bare["steady_s"],
    )
    if all_classes:
        every = timed["rise_all_classes"]
        out["ratio_all_classes_over_bare"] = every["steady_s"] / bare["steady_s"]
    _log(f"{model} {size}px N={num_masks} B={batch_size}: ratio "
         f"{out['ratio_rise_over_bare']:.3f}, {out['masks_per_s']:.1f} masks/s, compile "
         f"rise {single['compile_s']:.1f}s / bare {bare['compile_s']:.1f}s")
    return out


def throughput_case(model: str, size: int, num_masks: int, batch_size: int, repeats: int,
                    key) -> dict:
    k_model, k_image, k_rise = jax.random.split(key, 3)
    model_fn, description = build_model(model, size, k_model)
    image = jax.random.uniform(k_image, (size, size, 3))
    config = RiseConfig(num_masks=num_masks, grid=7, p_keep=0.5, batch_size=batch_size)
    single = common.compile_and_time(
        lambda k, m, x, t: rise(k, m, x, t, config=config),
        k_rise, model_fn, image, jnp.int32(0), repeats=repeats)
    single.pop("compiled")
    out = dict(model=model, description=description, image_size=size, num_masks=num_masks,
               batch_size=batch_size, rise=single,
               masks_per_s=num_masks / single["steady_s"])
    _log(f"{model} {size}px N={num_masks} B={batch_size}: {out['masks_per_s']:.1f} masks/s")
    return out


def memory_child(args) -> None:
    """Run in a fresh process: one RISE call with ``--memory-child`` masks; print JSON."""
    model_fn, description = build_model(args.memory_model, args.memory_size, jax.random.key(1))
    image = jax.random.uniform(jax.random.key(2), (args.memory_size, args.memory_size, 3))
    config = RiseConfig(num_masks=args.memory_child, grid=7, p_keep=0.5,
                        batch_size=args.memory_batch)
    fn = jax.jit(lambda k, m, x: rise(k, m, x, 0, config=config))
    compiled = fn.lower(jax.random.key(0), model_fn, image).compile()
    rss_before = common.current_rss_mb()
    peak_before = common.peak_rss_mb()
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(jax.random.key(0), model_fn, image))
    seconds = time.perf_counter() - t0
    print(json.dumps(dict(num_masks=args.memory_child, description=description,
                          rss_after_compile_mb=rss_before, peak_rss_before_run_mb=peak_before,
                          peak_rss_mb=common.peak_rss_mb(), run_s=seconds)))


def memory_case(args) -> dict:
    runs = []
    for n in (args.memory_batch, args.memory_masks):
        extra = ["--memory-child", str(n), "--memory-model", args.memory_model,
                 "--memory-size", str(args.memory_size), "--memory-batch", str(args.memory_batch)]
        runs.append(common.run_fresh(Path(__file__), *extra))
        _log(f"memory N={n}: peak RSS {runs[-1]['peak_rss_mb']:.0f} MiB "
             f"({runs[-1]['run_s']:.1f} s)")
    h = w = args.memory_size
    return dict(
        model=args.memory_model, description=runs[0]["description"], image_size=args.memory_size,
        batch_size=args.memory_batch, runs=runs,
        peak_rss_delta_mb=runs[1]["peak_rss_mb"] - runs[0]["peak_rss_mb"],
        target_delta_mb=100,
        materialised_masks_mb=args.memory_masks * h * w * 4 / 2**20,
        materialised_masked_images_mb=args.memory_masks * h * w * 3 * 4 / 2**20,
    )


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small-model", default="resnet_small")
    p.add_argument("--small-size", type=int, default=112)
    p.add_argument("--small-masks", type=int, default=1000)
    p.add_argument("--small-batch", type=int, default=100)
    p.add_argument("--large-size", type=int, default=224)
    p.add_argument("--large-masks", type=int, default=48, help="N for ResNet50 (ratio, masks/s)")
    p.add_argument("--large-batch", type=int, default=16)
    p.add_argument("--vgg-masks", type=int, default=32)
    p.add_argument("--vgg-batch", type=int, default=16)
    p.add_argument("--skip-large", action="store_true", help="no ResNet50 / VGG16")
    p.add_argument("--memory-model", default="tiny", help="'tiny' or a registry name")
    p.add_argument("--memory-size", type=int, default=112)
    p.add_argument("--memory-masks", type=int, default=8000)
    p.add_argument("--memory-batch", type=int, default=100)
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--repeats", type=int, default=3, help="timed calls of the small model")
    p.add_argument("--large-repeats", type=int, default=5, help="timed calls of ResNet50")
    p.add_argument("--vgg-repeats", type=int, default=2, help="timed calls of VGG16")
    p.add_argument("--out-name", default="rise")
    p.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.memory_child is not None:
        memory_child(args)
        return

    t_start = time.perf_counter()
    key = jax.random.key(0)
    result = dict(environment=common.environment(), args=vars(args), ratio=[], throughput=[])
    result["ratio"].append(ratio_case(args.small_model, args.small_size, args.small_masks,
                                      args.small_batch, args.repeats, True, key))
    result["throughput"].append({k: result["ratio"][-1][k] for k in
                                 ("model", "image_size", "num_masks", "batch_size", "masks_per_s")})
    if not args.skip_large:
        result["ratio"].append(ratio_case("resnet50", args.large_size, args.large_masks,
                                          args.large_batch, args.large_repeats, False, key))
        result["throughput"].append({k: result["ratio"][-1][k] for k in
                                     ("model", "image_size", "num_masks", "batch_size",
                                      "masks_per_s")})
        result["throughput"].append(throughput_case("vgg16", args.large_size, args.vgg_masks,
                                                    args.vgg_batch, args.vgg_repeats, key))
    if not args.skip_memory:
        result["memory"] = memory_case(args)
    result["peak_rss_mb_main_process"] = common.peak_rss_mb()
    result["total_wall_s"] = time.perf_counter() - t_start
    path = common.write_result(args.out_name, result)
    _log(f"wrote {path} ({result['total_wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
