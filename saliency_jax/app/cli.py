"""The ``saliency-jax`` console script.

``saliency-jax evaluate``       methods x metrics table on a dataset (embedded default: the
                                synthetic benchmark with the packaged small ResNet)
``saliency-jax explain``        maps for image files or dataset items, as .npy and PNG overlays
``saliency-jax train-classifier``  retrain a default classifier on the synthetic benchmark
``saliency-jax train-agent``    train (resumably) the RExL or RL-CAM agent for a classifier
``saliency-jax convert-weights``   torch/safetensors state dict -> orbax variables
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys


def _init_distributed(args) -> None:
    """``jax.distributed.initialize`` from the launch options (before any JAX computation)."""
    explicit = (args.coordinator, args.num_processes, args.process_id)
    if args.coordinator is None and args.distributed is False:
        if (args.num_processes is None) != (args.process_id is None):
            raise ValueError("give --num-processes and --process-id together")
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


def _evaluate(args) -> int:
    _init_distributed(args)
    from saliency_jax import data
    from saliency_jax.app import classifiers
    from saliency_jax.app.evaluate import EvaluateConfig, run_evaluate
    from saliency_jax.app.methods import DEFAULT_METHODS

    synthetic = args.dataset.startswith("saliency_shapes")
    model = args.model or ("resnet_small" if synthetic or args.dataset != "photos"
                           else "efficientnet_lite0")
    config = EvaluateConfig(
        dataset=args.dataset, split=args.split, model=model, checkpoint=args.checkpoint,
        methods=tuple(args.methods) or DEFAULT_METHODS, num_images=args.num_images,
        num_masks=args.num_masks,
        image_size=args.image_size or (112 if synthetic else 224), seed=args.seed,
        target=args.target, data_dir=args.data_dir, batch_size=args.batch_size,
    )
    out = pathlib.Path(args.out or f"runs/evaluate-{config.dataset.replace('/', '_')}-{config.model}")
    from saliency_jax.app import methods

    model_fn, variables = classifiers.load_classifier(config.model, config.checkpoint)
    dataset = data.load(config.dataset, split=config.split, data_dir=config.data_dir,
                        image_size=config.image_size)
    context = methods.model_context(config.model, variables, (config.image_size,) * 2)
    uncoordinated = args.coordinator is None and not args.distributed
    summary = run_evaluate(
        config, out, model_fn=model_fn, dataset=dataset, context=context,
        progress=not args.no_progress, skip_unavailable=not args.methods,
        process_index=args.process_id if uncoordinated else None,
        process_count=args.num_processes if uncoordinated else None,
        merge_only=args.merge)
    if summary is None:
        print(f"shard done: records in {out}/records")
        return 0
    from saliency_jax.app.evaluate import markdown_table
    print(markdown_table(summary))
    print(f"\nresults: {out}/results.json, {out}/table.md, {out}/examples.png, {out}/curves.png")
    return 0


def _explain(args) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from saliency_jax import data
    from saliency_jax.app import classifiers, methods, plots
    from saliency_jax.app.evaluate import method_key

    if not args.images and args.dataset is None:
        raise ValueError("give image files, or --dataset with --indices")
    model = args.model or ("efficientnet_lite0" if args.images else "resnet_small")
    model_fn, variables = classifiers.load_classifier(model, args.checkpoint)
    size = args.image_size or (224 if args.images else 112)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.images:
        items = [(pathlib.Path(p).stem, data.load_image_file(p, image_size=size), None)
                 for p in args.images]
    else:
        ds = data.load(args.dataset, split=args.split, data_dir=args.data_dir, image_size=size)
        items = [(f"{args.dataset.replace('/', '_')}-{i}",
                  np.asarray(ds[i]["image"], np.float32) / 255.0, ds[i]) for i in args.indices]
    context = methods.model_context(model, variables, (size, size))
    (method,) = methods.build_methods([args.method], context, num_masks=args.num_masks)
    for index, (stem, image, example) in enumerate(items):
        image = jnp.asarray(image)
        probs = model_fn(image[None])[0]
        target = (jnp.asarray(args.target) if args.target is not None
                  else jnp.argmax(probs))
        saliency = jax.block_until_ready(
            method.explain(method_key(args.seed, index, method.name), model_fn, image, target)
        )
        np.save(out / f"{stem}_{method.name}.npy", np.asarray(saliency))
        mask = None if example is None else example.get("mask")
        title = f"{method.name}: class {int(target)} (p={float(probs[target]):.2f})"
        plots.overlay(out / f"{stem}_{method.name}.png",
                      np.asarray(image * 255).astype(np.uint8), saliency, title=title, mask=mask)
        print(f"{stem}: class {int(target)} p={float(probs[target]):.3f} -> "
              f"{out / (stem + '_' + method.name)}.png")
    return 0


def _train_classifier(args) -> int:
    from saliency_jax.app.train_classifier import ClassifierTrainConfig, train_classifier

    config = ClassifierTrainConfig(model=args.model, num_steps=args.steps,
                                   steps_per_checkpoint=args.steps_per_checkpoint,
                                   num_train=args.num_train, data_seed=args.seed,
                                   learning_rate=args.learning_rate, batch_size=args.batch_size,
                                   augment=not args.no_augment, init_from=args.init_from)
    _, metrics = train_classifier(config, args.out, progress=not args.no_progress)
    print(json.dumps({k: metrics[k] for k in ("test_accuracy", "train_seconds_this_run")}))
    return 0


def _command_line(args) -> str:
    """The parsed arguments as a command line (recorded with the agent)."""
    words = ["saliency-jax", args.command]
    for name, value in vars(args).items():
        if name in ("func", "command") or value is None or value is False:
            continue
        words.append(f"--{name.replace('_', '-')}")
        if value is not True:
            words.append(str(value))
    return " ".join(words)


def _train_agent(args) -> int:
    from saliency_jax.app import agents

    args.method = args.method.replace("-", "")  # "rl-cam", the issue tracker's spelling
    if args.method == "rlcam" and args.mode is not None:
        raise ValueError("--mode applies to --method rexl only")
    if args.install and args.out is not None:
        raise ValueError("give --out or --install, not both")
    agent = "rlcam" if args.method == "rlcam" else f"rexl_{args.mode or 'deletion'}"
    name = agents.agent_name(agent, args.model)
    run_dir = pathlib.Path(args.run_dir or pathlib.Path("runs") / "agents" / name)
    out = agents.packaged_agent_dir(agent, args.model) if args.install else args.out
    variables = agents.load_classifier_variables(args.classifier, model=args.model)
    options = {k: v for k, v in (("updates", args.updates), ("num_envs", args.num_envs),
                                 ("num_images", args.num_images),
                                 ("checkpoint_every", args.checkpoint_every)) if v is not None}
    common = dict(classifier_variables=variables, run_dir=run_dir, out=out, model=args.model,
                  seed=args.seed, image_size=args.image_size, progress=not args.no_progress,
                  command=_command_line(args), **options)
    if args.method == "rexl":
        summary = agents.train_rexl(args.mode or "deletion", **common)
    else:
        summary = agents.train_rlcam_default(**common)
    if summary is None:
        print(f"interrupted; run the same command again to resume from {run_dir}")
        return 1
    print(f"{name}: {summary['wall_s']:.0f} s of training, mean episode return (first/last "
          f"tenth) {summary['first_episode_return']:.3f} -> {summary['last_episode_return']:.3f}"
          f"\nagent: {summary['agent_dir']}")
    return 0


def _convert_weights(args) -> int:
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


def build_parser() -> argparse.ArgumentParser:
    from saliency_jax.app.methods import DEFAULT_METHODS, available_methods

    parser = argparse.ArgumentParser(prog="saliency-jax", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("evaluate", help="methods x metrics table on a dataset")
    ev.add_argument("methods", nargs="*", default=[],
                    help=f"methods to run (default: {' '.join(DEFAULT_METHODS)}, leaving out "
                    f"those unavailable for the model); available: {available_methods()}")
    ev.add_argument("--dataset", default="saliency_shapes")
    ev.add_argument("--split", default=None, help="default: the dataset's evaluation split")
    ev.add_argument("--model", default=None,
                    help="default: resnet_small, or efficientnet_lite0 for --dataset photos")
    ev.add_argument("--checkpoint", default=None)
    ev.add_argument("--num-images", type=int, default=8)
    ev.add_argument("--num-masks", type=int, default=None, help="RISE masks (default 4000)")
    ev.add_argument("--image-size", type=int, default=None,
                    help="default: 112 for saliency_shapes, 224 otherwise")
    ev.add_argument("--target", choices=("auto", "label", "top1"), default="auto",
                    help="class explained: the label where there is one (auto), or top-1")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--data-dir", default=None)
    ev.add_argument("--out", default=None)
    ev.add_argument("--batch-size", type=int, default=8,
                    help="images per compiled call (does not change results)")
    ev.add_argument("--no-progress", action="store_true")
    ev.add_argument("--merge", action="store_true",
                    help="compute nothing: write the table from the records in --out")
    several = ev.add_argument_group(
        "several processes", "each process evaluates the images i with i %% N == its id on its "
        "own devices; all write into the same --out (a shared file system)")
    several.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                         help="jax.distributed coordinator (process 0's address); with "
                         "--num-processes and --process-id")
    several.add_argument("--num-processes", type=int, default=None, metavar="N",
                         help="without --coordinator: an uncoordinated job of independent "
                         "shards (e.g. a SLURM array); the last to finish merges")
    several.add_argument("--process-id", type=int, default=None, metavar="I")
    several.add_argument("--distributed", action="store_true",
                         help="jax.distributed.initialize() with auto-detected settings "
                         "(TPU pods, SLURM, Open MPI)")
    several.add_argument("--heartbeat-timeout", type=int, default=None, metavar="S",
                         help="seconds before jax.distributed takes the job down after a "
                         "process died (jax's default: 100)")
    ev.set_defaults(func=_evaluate)

    ex = sub.add_parser("explain", help="saliency maps for image files or dataset items")
    ex.add_argument("images", nargs="*")
    ex.add_argument("--method", default="rise")
    ex.add_argument("--model", default=None,
                    help="default: efficientnet_lite0 for image files, resnet_small for --dataset")
    ex.add_argument("--checkpoint", default=None)
    ex.add_argument("--dataset", default=None)
    ex.add_argument("--split", default=None)
    ex.add_argument("--indices", type=int, nargs="+", default=[0])
    ex.add_argument("--data-dir", default=None)
    ex.add_argument("--image-size", type=int, default=None)
    ex.add_argument("--num-masks", type=int, default=None)
    ex.add_argument("--target", type=int, default=None, help="class to explain (default top-1)")
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument("--out", default="runs/explain")
    ex.set_defaults(func=_explain)

    tc = sub.add_parser("train-classifier", help="train a default classifier on the synthetic set")
    tc.add_argument("--model", default="resnet_small")
    tc.add_argument("--steps", type=int, default=3000)
    tc.add_argument("--steps-per-checkpoint", type=int, default=250)
    tc.add_argument("--num-train", type=int, default=8000)
    tc.add_argument("--seed", type=int, default=0)
    tc.add_argument("--learning-rate", type=float, default=2e-3)
    tc.add_argument("--batch-size", type=int, default=64)
    tc.add_argument("--no-augment", action="store_true",
                    help="no random flips/90-degree rotations of training images")
    tc.add_argument("--init-from", default=None,
                    help="fine-tune: start from these saved variables of the same model")
    tc.add_argument("--out", required=True)
    tc.add_argument("--no-progress", action="store_true")
    tc.set_defaults(func=_train_classifier)

    ta = sub.add_parser("train-agent", help="train the RExL or RL-CAM agent for a classifier",
                        description="Train a dataset-wide agent on the synthetic shapes training "
                        "images for a classifier (resumable: the same command again resumes "
                        "from the last checkpoint in --run-dir).")
    ta.add_argument("--method", choices=("rexl", "rlcam", "rl-cam"), required=True)
    ta.add_argument("--mode", choices=("deletion", "insertion"), default=None,
                    help="RExL's environment (default deletion)")
    ta.add_argument("--model", default="resnet_small", help="the classifier's registry name")
    ta.add_argument("--classifier", default=None,
                    help="its variables folder (default: the packaged one of --model)")
    ta.add_argument("--updates", type=int, default=None,
                    help="PPO updates (default 600 for rexl, 48 for rlcam)")
    ta.add_argument("--num-envs", type=int, default=None,
                    help="parallel episodes (default 16 for rexl, a multiple of 4; 8 for rlcam)")
    ta.add_argument("--num-images", type=int, default=None,
                    help="training images (default 2048 for rexl, 128 for rlcam)")
    ta.add_argument("--image-size", type=int, default=112)
    ta.add_argument("--checkpoint-every", type=int, default=None,
                    help="updates between checkpoints (default 20 for rexl, 5 for rlcam)")
    ta.add_argument("--seed", type=int, default=0)
    ta.add_argument("--run-dir", default=None,
                    help="checkpoints (default runs/agents/<agent name>)")
    ta.add_argument("--out", default=None,
                    help="where the final agent goes (default <run-dir>/agent)")
    ta.add_argument("--install", action="store_true",
                    help="write the agent into the package as the default for --model "
                    "(replacing the packaged one)")
    ta.add_argument("--no-progress", action="store_true")
    ta.set_defaults(func=_train_agent)

    cw = sub.add_parser("convert-weights", help="torch state dict -> orbax variables")
    cw.add_argument("src", nargs="?", default=None, help=".pth/.pt/.safetensors (default: the "
                    "packaged file, for models that ship one)")
    cw.add_argument("dst", nargs="?", default=None)
    cw.add_argument("--model", required=True)
    cw.set_defaults(func=_convert_weights)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"saliency-jax {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

