"""The saliency-jax command line: evaluate, explain, train classifiers and agents, convert weights.

Parsing imports no JAX: each subcommand is one entry of :data:`COMMANDS`, ``name -> (help,
"module:add_arguments", "module:run")``, and a subcommand's module is imported (and JAX with
it) only when that subcommand runs. Values outside their accepted range are refused by the
parser, naming the option; Ctrl-C ends with one line saying what was kept and how to resume
(exit status 130).
"""

from __future__ import annotations

import _thread
import argparse
import contextlib
import importlib
import json
import os
import pathlib
import re
import signal
import sys
import threading

# Kept here (not imported from saliency_jax.app.methods / models / data) so that --help and
# argument errors import no JAX; tests/test_cli.py checks them against the registries.
METHOD_NAMES = ("rise", "rise_anytime", "occlusion", "gradcam", "lime", "iassa",
                "iassa_reference", "rexl", "rexl_rollouts", "rexl_masked", "rexl_insertion",
                "rlcam", "rlcam_greedy", "rlcam_output", "random")
DEFAULT_METHOD_NAMES = ("rise", "iassa", "rexl", "rexl_masked", "rlcam", "occlusion", "gradcam",
                        "lime", "random")
DATASET_NAMES = ("saliency_shapes", "photos", "imagenet2012", "voc/2007", "coco/2014")
APP_MODULES = ("tensorflow_datasets", "tensorstore", "PIL", "skimage", "safetensors",
               "matplotlib", "tqdm")
"""The modules of the ``app`` extra's packages (``pip install 'saliency-jax[app]'``)."""
INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT), as shells report it."""

EPILOG = """\
examples:
  saliency-jax evaluate                       # all methods, synthetic benchmark, resnet_small
  saliency-jax evaluate rise gradcam --num-images 50
  saliency-jax explain photo.jpg              # RISE on EfficientNet-Lite0 (real ImageNet weights)
  saliency-jax explain --dataset saliency_shapes --indices 0 1 2 --method occlusion
  saliency-jax train-classifier --model resnet_small --out runs/resnet_small
  saliency-jax train-agent --method rl-cam --model vgg_small

'saliency-jax COMMAND --help' lists a command's options.
"""


# ---------------------------------------------------------------------------------------------
# Argument types: a value outside its range is refused by the parser, which names the option.


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


positive_int = _int_at_least(1)
non_negative_int = _int_at_least(0)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def image_size(text: str) -> int:
    """Image side in pixels: at least 16 (the smallest grid any method uses is 7 x 7 cells)."""
    value = _int_at_least(16)(text)
    if value > 4096:
        raise argparse.ArgumentTypeError(f"must be at most 4096 pixels, got {text!r}")
    return value


# ---------------------------------------------------------------------------------------------
# Shared pieces of the commands (they import JAX: called only inside a command).


def _init_distributed(args) -> None:
    """``jax.distributed.initialize`` from the launch options (before any JAX computation)."""
    explicit = (args.coordinator, args.num_processes, args.process_id)
    if args.coordinator is None and args.distributed is False:
        if (args.num_processes is None) != (args.process_id is None):
            raise ValueError("give --num-processes and --process-id together")
        if args.num_processes is not None and args.process_id >= args.num_processes:
            raise ValueError(f"--process-id must be in [0, --num-processes), got "
                             f"{args.process_id} of {args.num_processes}")
        return  # one process, or an uncoordinated job of independent shards
    import jax

    if args.coordinator is not None and None in explicit:
        raise ValueError("--coordinator needs --num-processes and --process-id")
    if args.distributed and args.coordinator is not None:
        raise ValueError("give --distributed (auto-detected cluster) or --coordinator, not both")
    # CPU processes need a collectives implementation for the final barrier; no effect elsewhere.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    options = {}
    if args.heartbeat_timeout is not None:
        options["heartbeat_timeout_seconds"] = args.heartbeat_timeout
    if args.coordinator is not None:
        jax.distributed.initialize(args.coordinator, num_processes=args.num_processes,
                                   process_id=args.process_id, **options)
    else:  # TPU pods, SLURM, Open MPI: jax finds the coordinator and the process ids
        jax.distributed.initialize(**options)


def _split_cpu(num_devices: int | None) -> None:
    """One JAX CPU device per core (or ``--cpu-devices``), so that the explainers' chunks run
    in parallel (:func:`saliency_jax.sharding.set_cpu_devices`). A count already asked for by
    ``XLA_FLAGS`` or ``JAX_NUM_CPU_DEVICES`` is kept unless ``--cpu-devices`` is given; when
    JAX has already computed (``main`` called inside a program that uses JAX), its devices
    are kept (with set_cpu_devices' warning), and an explicit other count is refused."""
    from saliency_jax._src import sharding

    try:
        sharding.set_cpu_devices(num_devices)
    except RuntimeError:  # only an explicit count raises
        raise ValueError(f"--cpu-devices {num_devices}: JAX in this process has already "
                         "computed with another number of CPU devices") from None


def _unreadable(what: str, path, err: BaseException) -> ValueError:
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    first = first if len(first) <= 160 else first[:157] + "..."
    return ValueError(
        f"{what} {path} cannot be read ({type(err).__name__}: {first}); it is truncated, "
        "corrupt or not an orbax checkpoint: write it again (saliency-jax train-classifier or "
        "convert-weights) or give another one"
    )


def _storage_error(err: BaseException) -> bool:
    """An error of the storage layer (tensorstore's ``OUT_OF_RANGE: ...``, orbax, OS), not one
    of saliency-jax's own ValueErrors, which already say what is wrong."""
    if isinstance(err, (KeyboardInterrupt, SystemExit)):
        return False
    if isinstance(err, ValueError):
        return re.match(r"^[A-Z][A-Z_]+: ", str(err)) is not None
    return True


def _quiet_closed_loop() -> None:
    """After a failed orbax restore, tensorstore may still complete a future on orbax's closed
    asyncio loop ("RuntimeError: Event loop is closed", printed as an ignored exception, often
    at exit): drop exactly that one; every other unraisable exception is reported as before."""
    previous = sys.unraisablehook

    def hook(unraisable):
        value = unraisable.exc_value
        if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
            return
        previous(unraisable)

    sys.unraisablehook = hook


def _reading(what: str, where, load, *args, **kwargs):
    try:
        return load(*args, **kwargs)
    except Exception as err:
        if _storage_error(err) and not isinstance(err, FileNotFoundError):
            _quiet_closed_loop()
            raise _unreadable(what, where, err) from None
        raise


def load_classifier(model: str, checkpoint):
    """``classifiers.load_classifier`` with an unreadable checkpoint as a ValueError naming it."""
    from saliency_jax.app import classifiers

    where = checkpoint if checkpoint is not None else f"the packaged checkpoint of {model}"
    return _reading("--checkpoint", where, classifiers.load_classifier, model, checkpoint)


def class_names(num_classes: int, dataset=None) -> tuple[str, ...] | None:
    """Readable class names for a model with ``num_classes`` outputs: the dataset's where they
    match, ImageNet's for 1000 classes, the synthetic shapes' for 6; None otherwise."""
    names = getattr(dataset, "class_names", None)
    if names is not None and len(names) == num_classes:
        return tuple(names)
    if num_classes == 1000:
        from saliency_jax.models import imagenet_labels

        return tuple(imagenet_labels.imagenet_class_names())
    from saliency_jax.data import shapes

    if num_classes == shapes.NUM_CLASSES:
        return shapes.CLASS_NAMES
    return None


def class_label(target: int, names) -> str:
    """``"tabby (class 281)"``, or ``"class 281"`` without names."""
    return f"{names[target]} (class {target})" if names else f"class {target}"


# ---------------------------------------------------------------------------------------------
# evaluate


def add_evaluate_arguments(ev: argparse.ArgumentParser) -> None:
    ev.add_argument("methods", nargs="*", default=[], metavar="METHOD",
                    help=f"methods to run, in table order (default: "
                    f"{' '.join(DEFAULT_METHOD_NAMES)}, leaving out those unavailable for the "
                    f"model); choose from: {', '.join(METHOD_NAMES)}")
    ev.add_argument("--dataset", default="saliency_shapes",
                    help=f"dataset name: {', '.join(DATASET_NAMES)} (default: %(default)s, "
                    "generated offline; the others are read through TFDS from --data-dir), or "
                    "folder:PATH, a folder of images (one sub-folder per class, or flat with a "
                    "labels.csv of filename,label lines)")
    ev.add_argument("--split", default=None,
                    help="dataset split (default: the dataset's evaluation split)")
    ev.add_argument("--model", default=None,
                    help="classifier registry name, e.g. resnet_small, vgg_small, resnet50, "
                    "efficientnet_lite0 (default: resnet_small, or efficientnet_lite0 for "
                    "--dataset photos and folder:PATH)")
    ev.add_argument("--checkpoint", default=None, metavar="DIR",
                    help="orbax variables of --model (default: its packaged or converted weights)")
    ev.add_argument("--num-images", type=positive_int, default=8, metavar="N",
                    help="evaluate the first N images (default: %(default)s); raising it later "
                    "reuses the images done")
    ev.add_argument("--num-masks", type=positive_int, default=None, metavar="N",
                    help="RISE masks per map (default 4000)")
    ev.add_argument("--image-size", type=image_size, default=None, metavar="PX",
                    help="model input side (default: 112 for saliency_shapes, 224 otherwise)")
    ev.add_argument("--target", choices=("auto", "label", "top1"), default="auto",
                    help="class explained: the label where there is one (auto, the default), "
                    "always the label, or the top-1 class")
    ev.add_argument("--seed", type=non_negative_int, default=0,
                    help="seed of every method's key (default: %(default)s)")
    ev.add_argument("--data-dir", default=None, metavar="DIR",
                    help="TFDS data directory (default: TFDS's own, ~/tensorflow_datasets)")
    ev.add_argument("--out", default=None, metavar="DIR",
                    help="results folder (default: runs/evaluate-<dataset>-<model>); a run with "
                    "other methods or more images accumulates there")
    ev.add_argument("--batch-size", type=positive_int, default=8, metavar="B",
                    help="images per compiled call (default: %(default)s; does not change "
                    "results)")
    ev.add_argument("--no-progress", action="store_true",
                    help="no progress bar, time estimate or stage notes")
    ev.add_argument("--merge", action="store_true",
                    help="compute nothing: write the table from the records in --out")
    several = ev.add_argument_group(
        "several processes", "each process evaluates the images i with i % N == its id on its "
        "own devices; all write into the same --out (a shared file system)")
    several.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                         help="jax.distributed coordinator (process 0's address); with "
                         "--num-processes and --process-id")
    several.add_argument("--num-processes", type=positive_int, default=None, metavar="N",
                         help="without --coordinator: an uncoordinated job of independent "
                         "shards (e.g. a SLURM array); the last to finish merges")
    several.add_argument("--process-id", type=non_negative_int, default=None, metavar="I",
                         help="this process's index in [0, N)")
    several.add_argument("--distributed", action="store_true",
                         help="jax.distributed.initialize() with auto-detected settings "
                         "(TPU pods, SLURM, Open MPI)")
    several.add_argument("--heartbeat-timeout", type=positive_int, default=None, metavar="S",
                         help="seconds before jax.distributed takes the job down after a "
                         "process died (jax's default: 100)")


def _count_records(out: pathlib.Path) -> int:
    from saliency_jax.app.evaluate import read_records

    try:
        return len(read_records(out))
    except ValueError:
        return 0


MERGE_SETTINGS = ("dataset", "split", "model", "checkpoint", "num_masks", "image_size", "seed",
                  "target", "data_dir")
"""``evaluate --merge`` reads these from the folder's run.json; one given on the command line
must agree with it."""


def _merge_config(args, config, out: pathlib.Path):
    """``evaluate --merge``: the folder's own settings (run.json), the methods given or else
    every method it holds; a setting given on the command line that disagrees is refused."""
    import dataclasses

    from saliency_jax.app.evaluate import _effective_num_masks, config_from_run_dir

    found = config_from_run_dir(out)
    given = {k: getattr(args, k) for k in MERGE_SETTINGS
             if getattr(args, k) != EVALUATE_DEFAULTS.get(k)}
    differ = [f"--{k.replace('_', '-')} {v!r} (the folder has {getattr(found, k)!r})"
              for k, v in given.items()
              if (k != "num_masks" and v != getattr(found, k))
              or (k == "num_masks" and v != _effective_num_masks(found))]
    if differ:
        raise ValueError(f"{out} was evaluated with other settings: {', '.join(differ)}; "
                         "--merge takes them from its run.json, give them as they were or not "
                         "at all")
    # Without methods: no record is required, and the folder's whole table is written.
    return dataclasses.replace(found, methods=tuple(args.methods),
                               num_images=args.num_images if args.methods else 1,
                               batch_size=config.batch_size)


EVALUATE_DEFAULTS = {"dataset": "saliency_shapes", "split": None, "model": None,
                     "checkpoint": None, "num_masks": None, "image_size": None, "seed": 0,
                     "target": "auto", "data_dir": None}
"""What ``evaluate`` gets for a setting not given on the command line."""


def writable_dir(path: pathlib.Path, option: str) -> None:
    """Create the output folder ``path`` (and its parents) and prove it can be written, before
    any computing; a ValueError naming ``option`` and the path otherwise."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path} is an existing file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".saliency-jax-write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"{option} {path} cannot be written: {err.strerror or err}") from None


def dataset_slug(dataset: str) -> str:
    """A folder-name form of a dataset name: ``voc_2007``, ``folder-val`` for ``folder:~/x/val``."""
    if dataset.startswith("folder:"):
        base = pathlib.Path(dataset[len("folder:"):].rstrip("/")).name or "root"
        return "folder-" + re.sub(r"[^A-Za-z0-9._-]+", "_", base)
    return dataset.replace("/", "_")


def real_images(dataset: str) -> bool:
    """Whether ``dataset`` holds real photos (the bundled photos, an image folder): their
    defaults are an ImageNet model at 224."""
    return dataset == "photos" or dataset.startswith("folder:")


def run_evaluate(args) -> int:
    synthetic = args.dataset.startswith("saliency_shapes")
    model = args.model or ("efficientnet_lite0" if real_images(args.dataset) else "resnet_small")
    out = pathlib.Path(args.out or f"runs/evaluate-{dataset_slug(args.dataset)}-{model}")
    args.interrupted = lambda: (
        f"{_count_records(out)} image x method records are kept in {out}/records; run the "
        "same command again to resume (what has a record is not computed again)")
    _init_distributed(args)
    from saliency_jax import data
    from saliency_jax.app import methods
    from saliency_jax.app.evaluate import EvaluateConfig, markdown_table
    from saliency_jax.app.evaluate import run_evaluate as evaluate

    config = EvaluateConfig(
        dataset=args.dataset, split=args.split, model=model, checkpoint=args.checkpoint,
        methods=tuple(args.methods) or methods.DEFAULT_METHODS, num_images=args.num_images,
        num_masks=args.num_masks,
        image_size=args.image_size or (112 if synthetic else 224), seed=args.seed,
        target=args.target, data_dir=args.data_dir, batch_size=args.batch_size,
    )
    writable_dir(out, "--out")
    if args.merge and (out / "run.json").exists():
        config = _merge_config(args, config, out)
    model_fn, variables = load_classifier(config.model, config.checkpoint)
    dataset = data.load(config.dataset, split=config.split, data_dir=config.data_dir,
                        image_size=config.image_size)
    context = methods.model_context(config.model, variables, (config.image_size,) * 2)
    uncoordinated = args.coordinator is None and not args.distributed
    summary = evaluate(
        config, out, model_fn=model_fn, dataset=dataset, context=context,
        progress=not args.no_progress, skip_unavailable=not args.methods,
        process_index=args.process_id if uncoordinated else None,
        process_count=args.num_processes if uncoordinated else None,
        merge_only=args.merge)
    if summary is None:
        print(f"shard done: records in {out}/records")
        return 0
    table = (out / "table.md").read_text().rstrip()
    print(markdown_table(summary) if summary else table)
    if summary and markdown_table(summary) != table:
        print(f"\n{out}/table.md has the folder's whole table (every method run there):\n"
              f"{table}")
    print(f"\nresults: {out}/results.json, {out}/table.md, {out}/examples.png, {out}/curves.png")
    return 0


# ---------------------------------------------------------------------------------------------
# explain


def add_explain_arguments(ex: argparse.ArgumentParser) -> None:
    ex.add_argument("images", nargs="*", metavar="IMAGE",
                    help="image files (any format Pillow reads); or give --dataset")
    ex.add_argument("--method", default="rise", choices=METHOD_NAMES,
                    help="explainer (default: %(default)s)")
    ex.add_argument("--model", default=None,
                    help="classifier registry name (default: efficientnet_lite0 for image "
                    "files, photos and folder:PATH, resnet_small for saliency_shapes)")
    ex.add_argument("--checkpoint", default=None, metavar="DIR",
                    help="orbax variables of --model (default: its packaged or converted weights)")
    ex.add_argument("--dataset", default=None,
                    help=f"explain dataset items instead of files: {', '.join(DATASET_NAMES)}")
    ex.add_argument("--split", default=None, help="dataset split (default: its evaluation split)")
    ex.add_argument("--indices", type=non_negative_int, nargs="+", default=[0], metavar="I",
                    help="dataset items to explain (default: 0)")
    ex.add_argument("--data-dir", default=None, metavar="DIR", help="TFDS data directory")
    ex.add_argument("--image-size", type=image_size, default=None, metavar="PX",
                    help="model input side (default: 112 for saliency_shapes, else 224); "
                    "the figure shows the map at the image's own size and aspect ratio")
    ex.add_argument("--num-masks", type=positive_int, default=None, metavar="N",
                    help="RISE masks (default 4000)")
    ex.add_argument("--target", type=non_negative_int, default=None, metavar="CLASS",
                    help="class index to explain (default: the top-1 class)")
    ex.add_argument("--seed", type=non_negative_int, default=0,
                    help="seed of the method's key (default: %(default)s)")
    ex.add_argument("--out", default="runs/explain", metavar="DIR",
                    help="where the maps (.npy) and figures (.png) go (default: %(default)s)")
    ex.add_argument("--no-progress", action="store_true",
                    help="no progress bar, time estimate or stage notes")


def _rise_with_progress(method, bar):
    """RISE's explain with ``progress=bar`` where ``sj.rise`` takes it (else None)."""
    import inspect

    from saliency_jax._src.rise import RiseConfig, rise

    if method.name != "rise" or "progress" not in inspect.signature(rise).parameters:
        return None
    config = RiseConfig(num_masks=method.queries, grid=7, p_keep=0.5)
    if method.description != f"RISE, N={config.num_masks}, s={config.grid}, p={config.p_keep}":
        return None  # the registry's RISE settings changed: use its explain as it is

    def explain(key, model_fn, image, target):
        return rise(key, model_fn, image, target, config=config, progress=bar)

    return explain


def _resized_map(saliency, hw):
    """The map bilinearly resized to the original image's ``hw`` (the model saw the image
    resized directly to its square input, so this puts every value back over its pixels)."""
    import numpy as np
    from PIL import Image

    s = np.asarray(saliency, np.float32)
    if s.shape == tuple(hw):
        return s
    return np.asarray(Image.fromarray(s, mode="F").resize((hw[1], hw[0]), Image.BILINEAR))


def explain_title(method: str, target: int, prob: float, names, true_label: int | None = None,
                  *, predicted: bool = True) -> str:
    """The title of an ``explain`` figure: the class explained (the prediction or ``--target``)
    with its probability and, for a dataset item with a label, the true class, saying so where
    the two differ."""
    why = "the prediction" if predicted else "--target"
    title = f"{method}: explained {class_label(target, names)} ({why}), p = {prob:.2f}"
    if true_label is None or true_label < 0:
        return title
    if true_label == target:
        return title + "\n= the true label"
    return title + f"\ntrue label: {class_label(true_label, names)} (differs)"


def run_explain(args) -> int:
    out = pathlib.Path(args.out)
    if not args.images and args.dataset is None:
        raise ValueError("give image files, or --dataset with --indices")
    if args.images and args.dataset is not None:
        raise ValueError("give image files or --dataset, not both")
    writable_dir(out, "--out")
    args.interrupted = lambda: f"the maps written so far are kept in {out}"
    import jax
    import jax.numpy as jnp
    import numpy as np

    from saliency_jax import data
    from saliency_jax.app import methods, plots, progress
    from saliency_jax.app.evaluate import constant_map_reason, method_key

    model = args.model or ("efficientnet_lite0" if args.images or real_images(args.dataset)
                           else "resnet_small")
    size = args.image_size or (224 if args.images or real_images(args.dataset) else 112)
    model_fn, variables = load_classifier(model, args.checkpoint)
    dataset = None
    if args.images:
        items = []
        for p in args.images:
            original = data.load_image_file(p, image_size=None)
            items.append((pathlib.Path(p).stem, data.load_image_file(p, image_size=size),
                          original, None))
    else:
        dataset = data.load(args.dataset, split=args.split, data_dir=args.data_dir,
                            image_size=size)
        bad = [i for i in args.indices if i >= len(dataset)]
        if bad:
            raise ValueError(f"--indices {bad[0]} is out of range: {args.dataset} "
                             f"({args.split or 'default split'}) has {len(dataset)} items, "
                             f"0 to {len(dataset) - 1}")
        items = []
        for i in args.indices:
            example = dataset[i]
            image = np.asarray(example["image"], np.float32) / 255.0
            items.append((f"{dataset_slug(args.dataset)}-{i}", image, image, example))
    context = methods.model_context(model, variables, (size, size))
    (method,) = methods.build_methods([args.method], context, num_masks=args.num_masks)
    num_classes = int(jax.eval_shape(model_fn, jax.ShapeDtypeStruct((1, size, size, 3),
                                                                    jnp.float32)).shape[-1])
    if args.target is not None and args.target >= num_classes:
        raise ValueError(f"--target {args.target} is out of range: {model} has {num_classes} "
                         f"classes, 0 to {num_classes - 1}")
    names = class_names(num_classes, dataset)
    show = not args.no_progress
    explain, bar = method.explain, None
    if show:
        device = jax.devices()[0].platform
        rate = progress.forward_throughput(model_fn, (size, size))
        per_image = method.queries / rate
        progress.note(f"estimate: {method.name} makes {method.queries} model queries per image, "
                      f"about {progress.format_duration(per_image)} each at {rate:.0f} images/s "
                      f"({model}'s measured forward rate on this {device}), plus compilation")
        slow = progress.slow_note(method.name, method.queries, per_image, device=device,
                                  num_masks=method.queries if method.name == "rise" else None)
        if slow:
            progress.note(slow)
        bar = progress.ChunkProgress(f"{method.name}", unit="mask")
        explain = _rise_with_progress(method, bar) or method.explain
    out.mkdir(parents=True, exist_ok=True)
    for index, (stem, image, original, example) in enumerate(items):
        image = jnp.asarray(image)
        probs = model_fn(image[None])[0]
        target = int(args.target if args.target is not None else jnp.argmax(probs))
        if show:
            progress.note(f"{stem}: {'compiling and ' if index == 0 else ''}running "
                          f"{method.name} ...")
        saliency = np.asarray(jax.block_until_ready(
            explain(method_key(args.seed, index, method.name), model_fn, image,
                    jnp.asarray(target))), np.float32)
        if bar is not None:
            bar.close()
        if saliency.max() == saliency.min():
            progress.note(f"warning: the {method.name} map of {stem} is constant "
                          f"({float(saliency.flat[0]):.4g}): {constant_map_reason(method.name)}")
        elif plots.nearly_constant(saliency):
            progress.note(f"note: the {method.name} map of {stem} is nearly constant "
                          f"({float(saliency.min()):.4g} to {float(saliency.max()):.4g}, under "
                          f"{plots.NEARLY_CONSTANT:.1%} of its values): it ranks pixels by "
                          "differences at the level of noise")
        np.save(out / f"{stem}_{method.name}.npy", saliency)
        mask = None if example is None else example.get("mask")
        true_label = None if example is None else int(example.get("label", -1))
        label = class_label(target, names)
        title = explain_title(method.name, target, float(probs[target]), names,
                              true_label, predicted=args.target is None)
        original_u8 = np.asarray(np.round(np.asarray(original) * 255), np.uint8)
        plots.overlay(out / f"{stem}_{method.name}.png", original_u8,
                      _resized_map(saliency, original_u8.shape[:2]), title=title, mask=mask)
        differs = (true_label is not None and true_label >= 0 and true_label != target)
        if differs:
            label += f" (true label: {class_label(true_label, names)})"
        print(f"{stem}: {label} p={float(probs[target]):.3f} -> "
              f"{out / (stem + '_' + method.name)}.png")
    return 0


# ---------------------------------------------------------------------------------------------
# train-classifier


def add_train_classifier_arguments(tc: argparse.ArgumentParser) -> None:
    tc.add_argument("--model", default="resnet_small", choices=("resnet_small", "vgg_small"),
                    help="classifier to train (default: %(default)s)")
    tc.add_argument("--steps", type=positive_int, default=3000,
                    help="training steps (default: %(default)s; a multiple of "
                    "--steps-per-checkpoint)")
    tc.add_argument("--steps-per-checkpoint", type=positive_int, default=250,
                    help="steps between checkpoints and held-out evaluations (default: "
                    "%(default)s)")
    tc.add_argument("--num-train", type=positive_int, default=8000,
                    help="synthetic training images (default: %(default)s)")
    tc.add_argument("--seed", type=non_negative_int, default=0,
                    help="data and initialisation seed (default: %(default)s)")
    tc.add_argument("--learning-rate", type=positive_float, default=2e-3,
                    help="peak learning rate (default: %(default)s)")
    tc.add_argument("--warmup-steps", type=non_negative_int, default=100,
                    help="linear learning-rate warm-up steps before the cosine decay, fewer "
                    "than --steps (default: %(default)s)")
    tc.add_argument("--batch-size", type=positive_int, default=64,
                    help="images per step (default: %(default)s)")
    tc.add_argument("--no-augment", action="store_true",
                    help="no random flips/90-degree rotations of training images")
    tc.add_argument("--init-from", default=None, metavar="DIR",
                    help="fine-tune: start from these saved variables of the same model")
    tc.add_argument("--out", required=True, metavar="DIR",
                    help="run folder: checkpoints (train_state/), variables/ and metrics.json; "
                    "the same command again resumes from its last checkpoint")
    tc.add_argument("--no-progress", action="store_true",
                    help="no progress bar (one JSON line per checkpoint instead)")


def _latest_step(directory: pathlib.Path) -> int | None:
    steps = [int(p.name) for p in directory.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(steps) if steps else None


def _kept_checkpoint(directory: pathlib.Path, unit: str) -> str:
    step = _latest_step(directory)
    if step is None:
        return f"no checkpoint was written yet ({directory}); run the same command to start again"
    return (f"the checkpoint at {unit} {step} is kept in {directory}; run the same command again "
            "to resume from it")


def run_train_classifier(args) -> int:
    out = pathlib.Path(args.out)
    args.interrupted = lambda: _kept_checkpoint(out / "train_state", "step")
    from saliency_jax.app.train_classifier import ClassifierTrainConfig, train_classifier

    config = ClassifierTrainConfig(model=args.model, num_steps=args.steps,
                                   steps_per_checkpoint=args.steps_per_checkpoint,
                                   num_train=args.num_train, data_seed=args.seed,
                                   learning_rate=args.learning_rate, batch_size=args.batch_size,
                                   warmup_steps=args.warmup_steps,
                                   augment=not args.no_augment, init_from=args.init_from)
    _, metrics = train_classifier(config, args.out, progress=not args.no_progress)
    print(json.dumps({k: metrics[k] for k in ("test_accuracy", "train_seconds_this_run")}))
    return 0


# ---------------------------------------------------------------------------------------------
# train-agent


def add_train_agent_arguments(ta: argparse.ArgumentParser) -> None:
    ta.add_argument("--method", choices=("rexl", "rlcam", "rl-cam"), required=True,
                    help="the agent to train")
    ta.add_argument("--mode", choices=("deletion", "insertion"), default=None,
                    help="RExL's environment (default deletion)")
    ta.add_argument("--substrate", choices=("noise", "baseline"), default=None,
                    help="RExL: what an unrevealed patch holds, U[-0.5, 0.5) noise as the "
                    "reference code (default) or the model's mean colour (the rexl_masked MDP)")
    ta.add_argument("--mask-visited", action="store_true",
                    help="RExL: each patch at most once (the rexl_masked MDP; the reference "
                    "allows revisits)")
    ta.add_argument("--init-agent", default=None, metavar="DIR",
                    help="RExL: warm-start from this agent's parameters (fresh optimiser)")
    ta.add_argument("--model", default="resnet_small",
                    help="the classifier's registry name (default: %(default)s)")
    ta.add_argument("--classifier", default=None, metavar="DIR",
                    help="its variables folder (default: the packaged one of --model)")
    ta.add_argument("--updates", type=positive_int, default=None,
                    help="PPO updates (default 600 for rexl, 48 for rlcam)")
    ta.add_argument("--num-envs", type=positive_int, default=None,
                    help="parallel episodes (default 16 for rexl, a multiple of 4; 8 for rlcam)")
    ta.add_argument("--num-images", type=positive_int, default=None,
                    help="training images (default 2048 for rexl, 128 for rlcam)")
    ta.add_argument("--image-size", type=image_size, default=112, metavar="PX",
                    help="training image side (default: %(default)s)")
    ta.add_argument("--checkpoint-every", type=positive_int, default=None,
                    help="updates between checkpoints (default 20 for rexl, 5 for rlcam)")
    ta.add_argument("--seed", type=non_negative_int, default=0,
                    help="training seed (default: %(default)s)")
    ta.add_argument("--run-dir", default=None, metavar="DIR",
                    help="checkpoints (default runs/agents/<agent name>)")
    ta.add_argument("--out", default=None, metavar="DIR",
                    help="where the final agent goes (default <run-dir>/agent)")
    ta.add_argument("--install", action="store_true",
                    help="write the agent into the package as the default for --model "
                    "(replacing the packaged one)")
    ta.add_argument("--no-progress", action="store_true", help="no progress bar")


def _command_line(args) -> str:
    """The parsed arguments as a command line (recorded with the agent)."""
    words = ["saliency-jax", args.command]
    for name, value in vars(args).items():
        if name in ("func", "command", "interrupted") or value is None or value is False:
            continue
        words.append(f"--{name.replace('_', '-')}")
        if value is not True:
            words.append(str(value))
    return " ".join(words)


def run_train_agent(args) -> int:
    args.method = args.method.replace("-", "")  # "rl-cam", the issue tracker's spelling
    if args.method == "rlcam" and (args.mode is not None or args.substrate is not None
                                   or args.mask_visited or args.init_agent is not None):
        raise ValueError("--mode, --substrate, --mask-visited and --init-agent apply to "
                         "--method rexl only")
    if args.install and args.out is not None:
        raise ValueError("give --out or --install, not both")
    command = _command_line(args)
    agent = "rlcam" if args.method == "rlcam" else f"rexl_{args.mode or 'deletion'}"
    if not args.no_progress:
        from saliency_jax.app import progress

        progress.note(f"train-agent: loading {args.model} and building the {args.method} "
                      "environment; the first chunk of updates compiles (a minute or more on "
                      "a CPU) before the bar moves")
    from saliency_jax.app import agents

    name = agents.agent_name(agent, args.model)
    run_dir = pathlib.Path(args.run_dir or pathlib.Path("runs") / "agents" / name)
    args.interrupted = lambda: _kept_checkpoint(run_dir / "checkpoints", "update")
    out = agents.packaged_agent_dir(agent, args.model) if args.install else args.out
    variables = _reading("--classifier", args.classifier or f"the packaged {args.model}",
                         agents.load_classifier_variables, args.classifier, model=args.model)
    options = {k: v for k, v in (("updates", args.updates), ("num_envs", args.num_envs),
                                 ("num_images", args.num_images),
                                 ("checkpoint_every", args.checkpoint_every)) if v is not None}
    common = dict(classifier_variables=variables, run_dir=run_dir, out=out, model=args.model,
                  seed=args.seed, image_size=args.image_size, progress=not args.no_progress,
                  command=command, **options)
    if args.method == "rexl":
        summary = agents.train_rexl(args.mode or "deletion", substrate=args.substrate or "noise",
                                    mask_visited=args.mask_visited, init_agent=args.init_agent,
                                    **common)
    else:
        summary = agents.train_rlcam_default(**common)
    if summary is None:
        print(f"interrupted; run the same command again to resume from {run_dir}")
        return 1
    print(f"{name}: {summary['wall_s']:.0f} s of training, mean episode return (first/last "
          f"tenth) {summary['first_episode_return']:.3f} -> {summary['last_episode_return']:.3f}"
          f"\nagent: {summary['agent_dir']}")
    return 0


# ---------------------------------------------------------------------------------------------
# convert-weights


def add_convert_weights_arguments(cw: argparse.ArgumentParser) -> None:
    cw.add_argument("src", nargs="?", default=None, help=".pth/.pt/.safetensors (default: the "
                    "packaged file, for models that ship one)")
    cw.add_argument("dst", nargs="?", default=None,
                    help="output folder (default: the converted-weights folder the CLI reads)")
    cw.add_argument("--model", required=True, help="registry name of the model the state dict "
                    "is for, e.g. efficientnet_lite0, resnet50, vgg16")


def run_convert_weights(args) -> int:
    from saliency_jax import models
    from saliency_jax.app import classifiers

    src = args.src
    if src is None:
        spec = models.get(args.model)
        finder = getattr(spec, "packaged_checkpoint", None)
        if finder is None:
            raise ValueError(f"give the state-dict file to convert for {args.model}")
        src = finder()
    dst = pathlib.Path(args.dst) if args.dst else classifiers.converted_weights_dir(args.model)
    models.convert_file(src, dst, name=args.model)
    print(f"converted {src} -> {dst}")
    return 0


# ---------------------------------------------------------------------------------------------
# The command table and the entry point.

_HERE = __name__
COMMANDS: dict[str, tuple[str, str, str]] = {
    "evaluate": ("methods x metrics table on a dataset (default: the synthetic benchmark with "
                 "the packaged small ResNet)",
                 f"{_HERE}:add_evaluate_arguments", f"{_HERE}:run_evaluate"),
    "explain": ("saliency maps for image files or dataset items, as .npy and PNG figures",
                f"{_HERE}:add_explain_arguments", f"{_HERE}:run_explain"),
    "train-classifier": ("train (resumably) a default classifier on the synthetic benchmark",
                         f"{_HERE}:add_train_classifier_arguments",
                         f"{_HERE}:run_train_classifier"),
    "train-agent": ("train (resumably) the RExL or RL-CAM agent for a classifier",
                    f"{_HERE}:add_train_agent_arguments", f"{_HERE}:run_train_agent"),
    "convert-weights": ("torch/safetensors state dict -> orbax variables",
                        f"{_HERE}:add_convert_weights_arguments", f"{_HERE}:run_convert_weights"),
    "bench": ("a model's bare forward and RISE throughput on this device (compile apart, MFU)",
              "saliency_jax.app.bench:add_arguments", "saliency_jax.app.bench:run"),
}
"""``name -> (help, "module:add_arguments", "module:run")``: ``add_arguments(parser)`` must import
no JAX (it runs for ``--help``); ``run(args) -> int`` is imported only when the command runs."""

_DESCRIPTIONS = {
    "train-agent": "Train a dataset-wide agent on the synthetic shapes training images for a "
                   "classifier (resumable: the same command again resumes from the last "
                   "checkpoint in --run-dir).",
}


def _resolve(target: str):
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saliency-jax", description=__doc__.split("\n")[0], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=_DESCRIPTIONS.get(name, help_text))
        _resolve(add_arguments)(p)
        p.add_argument("--cpu-devices", type=positive_int, default=None, metavar="N",
                       help="split the CPU into N JAX devices that run chunks in parallel "
                       "(default: one per core, or what XLA_FLAGS / JAX_NUM_CPU_DEVICES ask)")
        p.set_defaults(func=run)
    return parser


@contextlib.contextmanager
def _insistent_sigint(retry: float = 1.0):
    """Ctrl-C that is not lost. Python raises ``KeyboardInterrupt`` in whatever frame runs when
    SIGINT arrives; in a garbage-collector callback or a ``__del__`` it is printed as "Exception
    ignored" and dropped (seen in CI: jax's ``_xla_gc_callback``), and the command ran on to its
    end. After the first SIGINT the interrupt is raised again every ``retry`` seconds until it
    leaves this block, but never into the clean-up of one already raised (a second Ctrl-C
    there is ignored too: the clean-up keeps what was done). Left alone where SIGINT is not
    Python's default (ignored in a background job, or a handler of the caller's) or off the
    main thread."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    done = threading.Event()

    def repeat():
        while not done.wait(retry):
            _thread.interrupt_main()

    repeater = threading.Thread(target=repeat, daemon=True)

    def handler(signum, frame):
        # A repeat that was on its way as the block ended, or one that comes while an interrupt
        # is already on its way out (through ``finally`` blocks that keep what was done): no-op.
        if done.is_set() or isinstance(sys.exc_info()[1], KeyboardInterrupt):
            return
        if repeater.ident is None:
            repeater.start()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        done.set()
        if repeater.ident is not None:
            repeater.join()
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a refused value (2), already printed
        return 0 if exit_.code is None else int(exit_.code)
    args.interrupted = None
    try:
        _split_cpu(args.cpu_devices)
        with _insistent_sigint():
            return _resolve(args.func)(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"saliency-jax {args.command}: error: {err}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        top = (err.name or "").split(".")[0]
        if top not in APP_MODULES:
            raise
        print(f"saliency-jax {args.command}: error: this command needs the 'app' extra "
              f"(missing: {top}): pip install 'saliency-jax[app]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        kept = args.interrupted() if args.interrupted is not None else "nothing was written"
        print(f"\nsaliency-jax {args.command}: interrupted; {kept}", file=sys.stderr, flush=True)
        return INTERRUPTED


def entry() -> int:
    """The ``saliency-jax`` program: :func:`main`, ended at once after a Ctrl-C.

    By the time ``main`` returns :data:`INTERRUPTED`, whatever is kept is written and closed
    (checkpoints finished, record files flushed). A computation the interrupt abandoned may still
    be running on XLA's threads, and the interpreter's teardown under it can crash the process
    (SIGSEGV instead of 130, seen in CI under load), so the process exits without the teardown.
    """
    code = main()
    if code == INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(entry())
