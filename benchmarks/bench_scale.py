"""The main job at scale: images/s of batched evaluation against the per-image loop, over 1, 2
and 4 (simulated) devices and 1 vs 2 processes, on the packaged resnet_small at 112².

Each configuration runs in a fresh process (``XLA_FLAGS=--xla_force_host_platform_device_count``).
Inside it, the per-image loop (:func:`saliency_jax.app.evaluate.evaluate_image`, the code
``evaluate`` ran before batching) and the batched engine (the code ``run_evaluate`` runs:
prefetch, ``jit(vmap)`` per method, batched metrics, zarr maps and JSONL records) are timed
interleaved, ``--repeats`` times each, after a warm-up that compiles both; images/s is the
median. Both compute explanations *and* metrics (deletion, insertion, pointing, IoU/F1) of
every method for every image, with the same keys; the maps of the two are compared.
The 2-process run is a ``jax.distributed`` job on localhost (gloo), the same images split
``i % 2``; its images/s is the images of both over the wall time between two barriers.

    nice -n 5 python benchmarks/bench_scale.py            # writes benchmarks/results/scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run as a script

METHODS = ("rise", "occlusion", "gradcam", "random")


def _setup(args):
    import jax

    from saliency_jax import data
    from saliency_jax.app import classifiers, methods
    from saliency_jax.app import evaluate as ev

    size = 112 if args.model == "resnet_small" else 32
    config = ev.EvaluateConfig(model=args.model, methods=tuple(args.methods),
                               num_images=args.images, num_masks=args.num_masks,
                               image_size=size, batch_size=args.batch_size,
                               target="auto" if args.model == "resnet_small" else "top1")
    if args.model == "resnet_small":
        model_fn, variables = classifiers.load_classifier("resnet_small")
        context = methods.model_context("resnet_small", variables, (size, size))
    else:  # the test suite's tiny CNN: a model so cheap that per-call overhead dominates
        from saliency_jax import testing

        model_fn = testing.tiny_cnn(jax.random.key(0), (size, size))[0]
        context = methods.ModelContext("tiny", {}, (size, size))
    method_list = methods.build_methods(config.methods, context, num_masks=config.num_masks)
    dataset = data.load("saliency_shapes", image_size=size)
    return ev, config, ev._as_partial(model_fn), method_list, dataset


def _batched_pass(ev, config, model_fn, method_list, dataset, indices, runners, out):
    import jax

    from saliency_jax import sharding

    writer = ev._RecordWriter(ev._record_file(out, 0))
    t0 = time.perf_counter()
    with sharding.use_devices(jax.local_devices()):
        ev._evaluate_shard(out, config, method_list, model_fn, dataset, list(indices), set(),
                           writer, None, runners=runners)
    seconds = time.perf_counter() - t0
    writer.close()
    return seconds


def _queries_per_image(config, method_list) -> int:
    """Forward passes the main job makes per image: each method's queries, plus the
    deletion and insertion curves of every map (``n_steps + 1`` images each) and one pass for
    the target when it is the top-1 class (counted, as the label needs none here)."""
    h = w = config.image_size
    steps = -(-h * w // config.step) + 1
    return sum(m.queries for m in method_list) + len(method_list) * 2 * steps


def _forward_images_per_s(model_fn, size, *, batch=32, batches=8) -> float:
    """Bare forward throughput of ``model_fn`` on ``batch``-image batches (the metrics' and
    RISE's batch sizes), compiled once: the compute bound of everything above."""
    import jax
    import jax.numpy as jnp

    fn = jax.jit(lambda m, x: m(x))
    x = jax.random.uniform(jax.random.key(0), (batch, size, size, 3))
    fn(model_fn, x).block_until_ready()
    t0 = time.perf_counter()
    for i in range(batches):
        fn(model_fn, x + jnp.float32(i) * 1e-6).block_until_ready()
    return batch * batches / (time.perf_counter() - t0)


def worker(args) -> dict:
    """One configuration in this process: interleaved loop vs batched (or, with --port, one
    process of the distributed batched run)."""
    import jax
    import numpy as np

    if args.port is not None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"127.0.0.1:{args.port}", num_processes=args.processes,
                                   process_id=args.process_id)
    ev, config, model_fn, method_list, dataset = _setup(args)
    runners = {m.name: ev._BatchedMethod(m, config.seed) for m in method_list}
    b = config.batch_size
    warm = range(0, b)  # compiles every method at the batch shape
    timed = range(b, b + args.images)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench_scale_"))
    result = {"devices": len(jax.local_devices()), "processes": jax.process_count(),
              "batch_size": b, "images": args.images, "methods": [m.name for m in method_list]}
    if args.port is not None:
        from jax.experimental import multihost_utils

        mine = [i for i in timed if i % jax.process_count() == jax.process_index()]
        _batched_pass(ev, config, model_fn, method_list, dataset, warm, runners, tmp / "w")
        walls = []
        for r in range(args.repeats):
            multihost_utils.sync_global_devices(f"start {r}")
            t0 = time.perf_counter()
            _batched_pass(ev, config, model_fn, method_list, dataset, mine, runners, tmp / f"{r}")
            multihost_utils.sync_global_devices(f"end {r}")
            walls.append(time.perf_counter() - t0)
        result["batched_images_per_s"] = [args.images / w for w in walls]
        return result

    _batched_pass(ev, config, model_fn, method_list, dataset, warm, runners, tmp / "w")
    for i in warm[:1]:
        ev.evaluate_image(model_fn, dataset[i], method_list, config, i)
    loop, batched, forward = [], [], []
    for r in range(args.repeats):  # interleaved
        forward.append(_forward_images_per_s(model_fn, config.image_size))
        t0 = time.perf_counter()
        maps = {i: ev.evaluate_image(model_fn, dataset[i], method_list, config, i)[1]
                for i in timed}
        loop.append(args.images / (time.perf_counter() - t0))
        out = tmp / f"b{r}"
        batched.append(args.images / _batched_pass(ev, config, model_fn, method_list, dataset,
                                                    timed, runners, out))
    diff = max(float(np.max(np.abs(ev.read_map(out, n, i) - maps[i][n])))
               for i in timed for n in maps[i])
    queries = _queries_per_image(config, method_list)
    result.update(loop_images_per_s=loop, batched_images_per_s=batched,
                  max_abs_map_difference=diff, forward_images_per_s=forward,
                  queries_per_image=queries,
                  bound_images_per_s=[f / queries for f in forward])
    return result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args, devices, extra=(), processes=1):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               PYTHONPATH=str(pathlib.Path(__file__).resolve().parents[1]))
    base = [sys.executable, __file__, "--worker", "--images", str(args.images),
            "--batch-size", str(args.batch_size), "--num-masks", str(args.num_masks),
            "--repeats", str(args.repeats), "--model", args.model, "--methods", *args.methods,
            *extra]
    if processes == 1:
        out = subprocess.run(base, env=env, capture_output=True, text=True, timeout=3600)
        if out.returncode:
            raise RuntimeError(out.stdout[-3000:] + out.stderr[-3000:])
        return json.loads(out.stdout.strip().splitlines()[-1])
    port = _free_port()
    procs = [subprocess.Popen([*base, "--port", str(port), "--processes", str(processes),
                               "--process-id", str(i)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(processes)]
    try:
        outs = [p.communicate(timeout=3600) for p in procs]
    finally:
        for p in procs:
            p.kill()
    if any(p.returncode for p in procs):
        raise RuntimeError("\n".join(o[0][-2000:] + o[1][-2000:] for o in outs))
    return json.loads(outs[0][0].strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--images", type=int, default=8, help="timed images per repeat")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-masks", type=int, default=500, help="RISE masks")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--model", choices=("resnet_small", "tiny"), default="resnet_small",
                        help="tiny: the test suite's CNN at 32² (dispatch-bound), no gradcam")
    parser.add_argument("--multi-process", type=int, default=2,
                        help="processes of the multi-process row (0: none)")
    parser.add_argument("--name", default="scale", help="results/<name>.json")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return

    import numpy as np

    from benchmarks import common

    rows = []
    for devices in args.devices:
        r = _run(args, devices)
        rows.append(r)
        print(json.dumps(r), flush=True)
    if args.multi_process > 1:
        r = _run(args, 1, processes=args.multi_process)
        rows.append(r)
        print(json.dumps(r), flush=True)
    for r in rows:
        for k in ("loop_images_per_s", "batched_images_per_s", "bound_images_per_s"):
            if k in r:
                r[k.replace("images_per_s", "median")] = float(np.median(r[k]))
        if "loop_median" in r:
            r["speedup"] = r["batched_median"] / r["loop_median"]
        if "bound_median" in r:
            r["loop_of_bound"] = r["loop_median"] / r["bound_median"]
            r["batched_of_bound"] = r["batched_median"] / r["bound_median"]
    payload = {
        "what": "images/s of the main job (explanations + deletion/insertion/pointing/IoU/F1 of "
                f"every method) on {args.model} {112 if args.model == 'resnet_small' else 32}², "
                f"methods {args.methods}, RISE N = "
                f"{args.num_masks}; per-image loop vs batched engine (batch {args.batch_size}), "
                "interleaved, medians, compile excluded; bound = bare forward images/s (batch 32) ÷ the "
                "forward passes per image (methods' queries + deletion/insertion curves)",
        "rows": rows,
        "environment": common.environment(),
        "command": " ".join(["python", *sys.argv]),
    }
    print(f"wrote {common.write_result(args.name, payload)}")


if __name__ == "__main__":
    main()
