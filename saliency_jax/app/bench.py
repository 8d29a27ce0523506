"""``saliency-jax bench``: a model's bare forward throughput and RISE's, on whatever device runs it.

What a user runs first on a new GPU or TPU::

    saliency-jax bench --model resnet50 --size 224 --num-masks 4000 --batch-size 100
    python -m saliency_jax.app.bench --model resnet_small --num-masks 500     # the same

Prints (and with ``--json PATH`` writes) the device, the versions, compile times apart from the
steady state, and for the bare forward passes (``N`` masked-image-sized inputs in batches of
``B``, split over the devices as RISE's chunks are: what RISE needs minus the masks) and for
RISE with ``N`` masks: seconds, masks (images) per second, RISE ÷ bare, and the model FLOPs
utilisation when XLA's cost analysis gives the FLOPs and the device's peak is known
(``--peak-tflops``, else a table of common accelerators). The timed calls of the two are
interleaved, ``--repeats`` rounds; medians. On a CPU the command splits it into one JAX device
per core (``--cpu-devices``), as every saliency-jax command does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

# Dense bf16 peak TFLOP/s per chip (vendor figures), for the MFU line where no --peak-tflops.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0, "V100": 125.0,
               "T4": 65.0, "TPU v4": 275.0, "TPU v5 lite": 197.0, "TPU v5e": 197.0,
               "TPU v5p": 459.0, "TPU v6 lite": 918.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``bench`` subcommand's options (imports no JAX)."""
    from saliency_jax.app.cli import image_size, positive_float, positive_int

    parser.add_argument("--model", default="resnet_small",
                        help="a models registry name, random weights: timing only "
                        "(default: %(default)s)")
    parser.add_argument("--size", type=image_size, default=None,
                        help="image side in pixels (default: the model's input size)")
    parser.add_argument("--num-masks", type=positive_int, default=1000,
                        help="N, masks per explanation (default: %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=100,
                        help="masks per model call (default: %(default)s)")
    parser.add_argument("--grid", type=positive_int, default=7,
                        help="RISE's grid cells per side (default: %(default)s)")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                        help="model compute dtype (default: the model's float32; bfloat16 pays "
                        "on GPU/TPU, not on a CPU)")
    parser.add_argument("--repeats", type=positive_int, default=3,
                        help="timed rounds, medians (default: %(default)s)")
    parser.add_argument("--peak-tflops", type=positive_float, default=None,
                        help="the device's peak TFLOP/s for the MFU line (default: from a table "
                        "of known devices)")
    parser.add_argument("--json", default=None, help="also write the result there")


def _seconds(fn, *args):
    import jax

    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def _flops(compiled):
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if isinstance(cost, list):
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def _peak(device_kind: str, given):
    if given is not None:
        return given
    for name, tflops in PEAK_TFLOPS.items():
        if name.lower() in device_kind.lower():
            return tflops
    return None


def measure(args) -> dict:
    """Compile and time bare forward passes and RISE; returns the JSON-able result."""
    import jax
    import jax.numpy as jnp

    import saliency_jax as sj
    from saliency_jax import models
    from saliency_jax._src import sharding

    spec = models.get(args.model)
    size = args.size or spec.input_hw[0]
    variables = models.init(args.model, jax.random.key(0), input_hw=(size, size))
    model_fn = sj.classifier(args.model, variables, dtype=args.dtype)
    image = jax.random.uniform(jax.random.key(1), (size, size, 3))
    n, b = args.num_masks, min(args.batch_size, args.num_masks)
    config = sj.RiseConfig(num_masks=n, grid=args.grid, batch_size=b)

    def bare(model_fn, image):
        def chunk_sum(operands, item, valid):  # the chunks split over the devices as RISE's
            model_fn, image = operands
            scale = 1.0 - item.astype(jnp.float32) / (2.0 * n)  # no pass can be hoisted out
            scores = model_fn(image[None] * scale[:, None, None, None])
            return jnp.where(valid[:, None], scores, 0.0).sum(0)
        return sharding.sharded_chunk_sum(chunk_sum, (model_fn, image), num_items=n,
                                          chunk_size=b)

    def explain(key, model_fn, image):
        return sj.rise(key, model_fn, image, 0, config=config)

    key = jax.random.key(2)
    model_fn, image = sharding.replicate((model_fn, image))
    cases = {"bare_forward": (bare, (model_fn, image)), "rise": (explain, (key, model_fn, image))}
    out = {}
    compiled = {}
    for name, (fn, fargs) in cases.items():
        t0 = time.perf_counter()
        compiled[name] = jax.jit(fn).lower(*fargs).compile()
        out[name] = {"compile_s": time.perf_counter() - t0}
        out[name]["first_run_s"] = _seconds(compiled[name], *fargs)
        out[name]["runs_s"] = []
    for _ in range(args.repeats):
        for name, (_, fargs) in cases.items():
            out[name]["runs_s"].append(_seconds(compiled[name], *fargs))
    device = jax.devices()[0]
    peak = _peak(device.device_kind, args.peak_tflops)
    for name in cases:
        r = out[name]
        r["steady_s"] = statistics.median(r["runs_s"])
        r["masks_per_s"] = n / r["steady_s"]
        flops = _flops(compiled[name])
        r["flops"] = flops
        if flops is not None:
            r["tflops_per_s"] = flops / r["steady_s"] / 1e12
            if peak is not None:
                r["mfu"] = r["tflops_per_s"] / (peak * jax.device_count())
    from importlib import metadata

    versions = {}
    for package in ("saliency-jax", "jax", "jaxlib", "flax"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return dict(model=args.model, image_size=size, num_masks=n, batch_size=b, grid=args.grid,
                dtype=args.dtype or "float32", repeats=args.repeats,
                device_kind=device.device_kind, platform=device.platform,
                device_count=jax.device_count(), peak_tflops_per_device=peak,
                bare_forward=out["bare_forward"], rise=out["rise"],
                rise_over_bare=out["rise"]["steady_s"] / out["bare_forward"]["steady_s"],
                images_per_s_rise=1.0 / out["rise"]["steady_s"], versions=versions,
                python=platform.python_version(), load_average=list(os.getloadavg()),
                command=" ".join(sys.argv))


def report(result: dict) -> str:
    lines = [f"device: {result['device_count']} x {result['device_kind']} "
             f"({result['platform']}); " + ", ".join(f"{k} {v}" for k, v in
                                                     result["versions"].items()),
             f"model {result['model']} {result['image_size']}², {result['dtype']}; "
             f"N = {result['num_masks']} masks in batches of {result['batch_size']}, "
             f"grid {result['grid']}; medians of {result['repeats']} interleaved runs",
             f"{'':14}{'compile s':>10}{'steady s':>10}{'masks/s':>10}{'TFLOP/s':>9}{'MFU':>7}"]
    for name in ("bare_forward", "rise"):
        r = result[name]
        tf = f"{r['tflops_per_s']:9.2f}" if r.get("tflops_per_s") is not None else f"{'-':>9}"
        mfu = f"{r['mfu']:7.1%}" if r.get("mfu") is not None else f"{'-':>7}"
        lines.append(f"{name:14}{r['compile_s']:10.2f}{r['steady_s']:10.3f}"
                     f"{r['masks_per_s']:10.1f}{tf}{mfu}")
    lines.append(f"RISE ÷ bare forward: {result['rise_over_bare']:.3f}; "
                 f"{result['images_per_s_rise']:.3f} explanations/s")
    if result["peak_tflops_per_device"] is None:
        lines.append("MFU: device peak unknown (pass --peak-tflops)")
    return "\n".join(lines)


def run(args) -> int:
    """Run the benchmark for parsed ``args``; prints the report; returns the exit status."""
    for name in ("num_masks", "batch_size", "repeats", "grid"):
        if getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    try:
        result = measure(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="saliency-jax bench", description=__doc__.split("\n")[0])
    add_arguments(parser)
    from saliency_jax.app.cli import _split_cpu, positive_int

    parser.add_argument("--cpu-devices", type=positive_int, default=None, metavar="N",
                        help="JAX CPU devices (default: one per core; see saliency-jax bench)")
    args = parser.parse_args(argv)
    _split_cpu(args.cpu_devices)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
