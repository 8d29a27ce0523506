"""Deletion + insertion of one map from one library in one process, for ``bench_metrics_peers.py``.

    python metrics_peers_worker.py --library reference --image img.npy --weights w.npz \
        --saliency map.npy --step 224 --target 281 --threads 2

Prints one JSON line when ready (setup and a warm-up run done, timed apart), then answers each
stdin line: ``run`` -> ``{"s", "cpu_s"}`` of one deletion + one insertion (Quantus: deletion
only, it has no insertion); ``curves PATH`` -> saves ``del``/``ins`` score curves to ``PATH``
(``.npz``); ``quit``. Libraries: ``saliency-jax`` (``sj.metrics.deletion``/``insertion``, after
``sj.sharding.set_cpu_devices()``, under the library's venv; ``saliency-jax-one-device`` the
same without it); under a peers venv ``reference`` (our PyTorch port of the authors'
``CausalMetric.single_run``, eclique/RISE ``evaluation.py``: a Python loop over steps, one
image per model call, pixels replaced in place in the normalised tensor, substrates
``zeros_like`` and the ``gkern(11, 5)`` blur; run under ``torch.no_grad``, which the authors'
code omits and which changes no value) and ``quantus`` (``quantus.PixelFlipping``, baseline 0
in normalised space, i.e. the model's mean colour as ours and the reference's deletion).

Every library scores the same model (EfficientNet-Lite0, the real weights), image, map, class
and step. Quantus' curve has no step-0 point (the unperturbed image); ``curves`` stores it
with the reference's step-0 score prepended so that all curves have ``n_steps + 1`` points.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers_worker import MEAN, STD, _peak_rss_mb, installed_versions  # noqa: E402


def torch_side(args, image, saliency):
    import numpy as np
    import torch
    from scipy.ndimage import gaussian_filter

    from peers_worker import torch_model

    torch.set_num_threads(args.threads)
    model = torch_model(args.model, args.weights)
    mean = np.asarray(MEAN[args.model], np.float32)
    std = np.asarray(STD[args.model], np.float32)
    x = torch.from_numpy(((image - mean) / std).transpose(2, 0, 1)[None].copy())
    h, w = image.shape[:2]
    hw, step, c = h * w, args.step, args.target

    if args.library == "reference":
        klen, ksig = 11, 5  # the authors' gkern: a smoothed delta on the channel diagonal
        inp = np.zeros((klen, klen))
        inp[klen // 2, klen // 2] = 1
        k = gaussian_filter(inp, ksig)
        kern = np.zeros((3, 3, klen, klen), np.float32)
        for i in range(3):
            kern[i, i] = k
        kern = torch.from_numpy(kern)

        def blur(t):
            return torch.nn.functional.conv2d(t, kern, padding=klen // 2)

        def single_run(mode):
            n_steps = (hw + step - 1) // step
            if mode == "del":
                start, finish = x.clone(), torch.zeros_like(x)
            else:
                start, finish = blur(x), x.clone()
            scores = np.empty(n_steps + 1)
            order = np.flip(np.argsort(saliency.reshape(-1, hw), axis=1), axis=-1)
            for i in range(n_steps + 1):
                with torch.no_grad():
                    pred = model(start)
                scores[i] = pred[0, c]
                if i < n_steps:
                    coords = order[:, step * i:step * (i + 1)]
                    start.numpy().reshape(1, 3, hw)[0, :, coords] = \
                        finish.numpy().reshape(1, 3, hw)[0, :, coords]
            return scores

        def curves():
            return dict(**{"del": single_run("del")}, ins=single_run("ins"))
    elif args.library == "quantus":
        import quantus

        # Quantus flips features (pixel x channel), ``step`` a step: 3x the steps of the
        # others, and every third point of its curve is theirs (a pixel's three features
        # sort next to each other: the map has no ties). Its features_in_step must divide
        # the map's size, so 3 * step is refused.
        metric = quantus.PixelFlipping(features_in_step=step, perturb_baseline=0.0,
                                       normalise=False, abs=False, disable_warnings=True,
                                       display_progressbar=False)
        x_np = x.numpy()
        with torch.no_grad():
            first = float(model(x)[0, c])

        def curves():
            curve = metric(model=model, x_batch=x_np, y_batch=np.array([c]),
                           a_batch=saliency[None, None].astype(np.float32), device="cpu",
                           softmax=True, channel_first=True)  # False strips our Softmax: logits
            return {"del": np.concatenate([[first], np.asarray(curve[0], np.float64)])}
    else:
        raise SystemExit(f"unknown library {args.library!r}")
    return curves


def jax_side(args, image, saliency):
    import jax
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import saliency_jax as sj
    from saliency_jax import models

    if args.library == "saliency-jax":  # the README's CPU set-up: one JAX device per core
        sj.sharding.set_cpu_devices()
    variables = models.convert_state_dict(args.model, dict(np.load(args.weights)))
    model_fn = sj.classifier(args.model, variables)
    image = jax.numpy.asarray(image)
    saliency = jax.numpy.asarray(saliency)

    def curves():
        d = sj.metrics.deletion(model_fn, image, saliency, args.target, step=args.step)
        i = sj.metrics.insertion(model_fn, image, saliency, args.target, step=args.step)
        return {"del": np.asarray(d.scores, np.float64), "ins": np.asarray(i.scores, np.float64)}
    return curves


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--library", required=True, choices=["saliency-jax",
                                                             "saliency-jax-one-device",
                                                             "reference", "quantus"])
    parser.add_argument("--model", default="efficientnet_lite0", choices=sorted(MEAN))
    parser.add_argument("--image", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--saliency", required=True)
    parser.add_argument("--step", type=int, default=224)
    parser.add_argument("--target", type=int, required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import numpy as np

    image = np.load(args.image).astype(np.float32)
    saliency = np.load(args.saliency).astype(np.float32)
    t0 = time.perf_counter()
    side = jax_side if args.library.startswith("saliency-jax") else torch_side
    curves = side(args, image, saliency)
    setup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    curves()  # warm-up: compile / primitive caches
    versions = installed_versions(("jax", "flax", "torch", "quantus", "numpy"))
    print(json.dumps({"ready": True, "setup_s": setup_s, "warmup_s": time.perf_counter() - t0,
                      "versions": versions, "pid": os.getpid()}), flush=True)
    for line in sys.stdin:
        cmd, *rest = line.split()
        if cmd == "run":
            c0, t0 = time.process_time(), time.perf_counter()
            curves()
            print(json.dumps({"s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}),
                  flush=True)
        elif cmd == "curves":
            np.savez(rest[0], **curves())
            print(json.dumps({"saved": rest[0]}), flush=True)
        elif cmd == "rss":
            print(json.dumps({"peak_rss_mb": _peak_rss_mb()}), flush=True)
        elif cmd == "quit":
            break


if __name__ == "__main__":
    main()
