"""The main job: methods x metrics over the images of a dataset, resumable.

Each image's results are written to ``records/NNNNN.json`` (atomically: temp file + rename) as
soon as it is done, with its maps in ``maps/``. A killed run restarted with the same arguments
skips finished images and ends with the same table; arguments that differ from the
``run.json`` of the output directory, or a record that does not parse, stop the run with an
error instead of overwriting anything.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax import metrics
from saliency_jax._src.metrics import aggregate
from saliency_jax.app import methods

RECORD_VERSION = 2
METRIC_KEYS = ("deletion", "insertion", "pointing", "iou", "f1", "precision", "recall")


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    dataset: str = "saliency_shapes"
    split: str | None = None
    model: str = "resnet_small"
    checkpoint: str | None = None
    """Orbax variables; None = the packaged checkpoint of ``model`` (embedded default)."""
    methods: tuple[str, ...] = methods.DEFAULT_METHODS
    num_images: int = 8
    num_masks: int | None = None
    image_size: int = 112
    seed: int = 0
    target: str = "auto"
    """``label`` (ground-truth class, as in the pointing game), ``top1`` (RISE Table 1), or
    ``auto``: the label where the example has one (>= 0), else the top-1 class."""
    data_dir: str | None = None
    iou_threshold: float = 0.3
    """Min-max relative threshold of the IASSA code for IoU/F1."""

    @property
    def scale(self) -> float:
        return self.image_size / 224.0

    @property
    def step(self) -> int:
        """Deletion/insertion pixels per step: 224 at 224 x 224, scaled with the area so the
        curve keeps its 224 steps (the same fraction of the image per step)."""
        return max(1, round(224 * self.scale**2))

    @property
    def tolerance(self) -> float:
        """Pointing-game tolerance: 15 px at 224 x 224, scaled."""
        return 15.0 * self.scale


def _canonical(config: EvaluateConfig) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _check_run_dir(out: pathlib.Path, config: EvaluateConfig) -> None:
    run_file = out / "run.json"
    wanted = {"version": RECORD_VERSION, "config": _canonical(config)}
    if run_file.exists():
        try:
            found = json.loads(run_file.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{run_file} is corrupt ({err}); move it or the output directory away"
            ) from None
        if found != wanted:
            diff = {
                k: (found.get("config", {}).get(k), v)
                for k, v in wanted["config"].items()
                if found.get("config", {}).get(k) != v
            }
            raise ValueError(
                f"{out} holds results from different arguments {diff} (found, wanted); "
                "use another --out directory or the same arguments"
            )
    else:
        out.mkdir(parents=True, exist_ok=True)
        _write_json(run_file, wanted)


def _write_json(path: pathlib.Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj))
    tmp.replace(path)


def _read_record(path: pathlib.Path, method_names) -> dict:
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"results file {path} is corrupt ({err}); move it away to recompute") from None
    if record.get("version") != RECORD_VERSION or set(record.get("methods", {})) != set(method_names):
        raise ValueError(f"results file {path} does not match this run; move it away to recompute")
    return record


def method_key(seed: int, index: int, name: str):
    key = jax.random.fold_in(jax.random.key(seed), index)
    return jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)


def evaluate_image(model_fn, example, method_list, config: EvaluateConfig, index: int):
    """All methods and metrics on one example; returns ``(record, maps)``."""
    image = jnp.asarray(example["image"], jnp.float32) / 255.0
    label = int(example.get("label", -1))
    if config.target == "label" and label < 0:
        raise ValueError(f"example {index} has no label; use target 'top1' or 'auto'")
    if config.target == "label" or (config.target == "auto" and label >= 0):
        target = jnp.asarray(label, jnp.int32)
    else:
        target = methods.top1(model_fn, image)
    record = {"version": RECORD_VERSION, "index": index, "target": int(target), "methods": {}}
    maps = {}
    for method in method_list:
        key = method_key(config.seed, index, method.name)
        t0 = time.perf_counter()
        if method.explain_counted is None:  # a fixed cost: method.queries
            saliency = jax.block_until_ready(method.explain(key, model_fn, image, target))
            queries = method.queries
        else:  # the cost varies per image (RL-CAM stops early)
            saliency, queries = jax.block_until_ready(
                method.explain_counted(key, model_fn, image, target))
            queries = int(queries)
        seconds = time.perf_counter() - t0
        saliency = jnp.asarray(saliency, jnp.float32)
        maps[method.name] = np.asarray(saliency)
        dele = metrics.deletion(model_fn, image, saliency, target, step=config.step)
        ins = metrics.insertion(model_fn, image, saliency, target, step=config.step)
        entry = {
            "seconds": seconds,
            "queries": queries,
            "deletion": float(dele.auc),
            "insertion": float(ins.auc),
            "deletion_curve": np.asarray(dele.scores).tolist(),
            "insertion_curve": np.asarray(ins.scores).tolist(),
        }
        if example.get("mask") is not None and np.any(example["mask"]):
            gt = np.asarray(example["mask"], bool)
            entry["pointing"] = bool(metrics.pointing_game(saliency, gt, tolerance=config.tolerance))
            overlap = metrics.overlap(saliency, gt, threshold=config.iou_threshold,
                                      mode="relative")
            for name in ("iou", "f1", "precision", "recall"):
                entry[name] = float(getattr(overlap, name))
        record["methods"][method.name] = entry
    return record, maps


def summarize(records, method_list) -> dict:
    """Per-method mean and std of every metric, median seconds per image and queries."""
    summary = {}
    for method in method_list:
        rows = [r["methods"][method.name] for r in records]
        table = {k: [row[k] for row in rows] for k in METRIC_KEYS
                 if all(k in row for row in rows)}
        stats = aggregate.mean_std(table)
        seconds = np.array([row["seconds"] for row in rows])
        queries = [row["queries"] for row in rows]
        summary[method.name] = {
            "description": method.description,
            "metrics": stats,
            "queries": queries[0] if len(set(queries)) == 1 else round(float(np.mean(queries)), 1),
            "median_seconds": float(np.median(seconds)),
            "first_seconds": float(seconds[0]),
            "num_images": len(rows),
            "mean_deletion_curve": np.mean([r["deletion_curve"] for r in rows], 0).tolist(),
            "mean_insertion_curve": np.mean([r["insertion_curve"] for r in rows], 0).tolist(),
        }
    return summary


COLUMNS = (("deletion", "Deletion ↓"), ("insertion", "Insertion ↑"), ("pointing", "Pointing ↑"),
           ("iou", "IoU ↑"), ("f1", "F1 ↑"), ("precision", "Precision"), ("recall", "Recall"))


def markdown_table(summary: dict) -> str:
    present = [(k, title) for k, title in COLUMNS
               if all(k in s["metrics"] for s in summary.values())]
    head = ["Method", *[t for _, t in present], "Queries", "s / image"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in summary.items():
        cells = [name]
        for k, _ in present:
            m = s["metrics"][k]
            cells.append(f"{m['mean']:.4f} ± {m['std']:.4f}")
        cells += [str(s["queries"]), f"{s['median_seconds']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_evaluate(config: EvaluateConfig, out_dir, *, model_fn, dataset, context=None,
                 progress: bool = True, skip_unavailable: bool | None = None):
    """Evaluate ``config.methods`` on the first ``config.num_images`` items of ``dataset``.

    ``dataset[i]`` must give DESIGN's example dict (``image`` uint8, ``label``, optional
    ``mask``). ``context`` (a :class:`methods.ModelContext`) is needed by the methods that use
    more than the black box (Grad-CAM, IASSA, the RL agents). ``skip_unavailable`` (default:
    when ``config.methods`` is the default set) leaves out, with a printed note, the methods
    unavailable for the model (e.g. RExL without an agent for this classifier) instead of
    raising. Writes records, maps,
    ``results.json``, ``table.md``, ``examples.png`` and ``curves.png`` under ``out_dir``;
    returns the summary dict.
    """
    from saliency_jax.app import plots

    if config.num_images > len(dataset):
        raise ValueError(
            f"num_images={config.num_images} exceeds the {len(dataset)} images of {config.dataset}"
        )
    if context is None:
        context = methods.ModelContext(config.model, {}, (config.image_size, config.image_size))
    if skip_unavailable is None:
        skip_unavailable = tuple(config.methods) == methods.DEFAULT_METHODS
    note = lambda name, why: print(f"note: {name} skipped: {why}")  # noqa: E731
    method_list = methods.build_methods(config.methods, context, num_masks=config.num_masks,
                                        on_unavailable=note if skip_unavailable else None)
    out = pathlib.Path(out_dir)
    _check_run_dir(out, config)
    (out / "records").mkdir(exist_ok=True)
    (out / "maps").mkdir(exist_ok=True)
    names = [m.name for m in method_list]

    records = []
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=config.num_images, desc="evaluate", unit="image")
    for i in range(config.num_images):
        path = out / "records" / f"{i:05d}.json"
        if path.exists():
            records.append(_read_record(path, names))
        else:
            record, maps = evaluate_image(model_fn, dataset[i], method_list, config, i)
            for name, sal in maps.items():
                np.save(out / "maps" / f"{i:05d}_{name}.npy", sal)
            _write_json(path, record)
            records.append(record)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

    summary = summarize(records, method_list)
    table = markdown_table(summary)
    _write_json(out / "results.json", {"config": _canonical(config), "summary": summary,
                                       "device": jax.devices()[0].device_kind,
                                       "jax": jax.__version__})
    (out / "table.md").write_text(table + "\n")
    examples = [dataset[i] for i in range(min(6, config.num_images))]
    maps = {i: {n: np.load(out / "maps" / f"{i:05d}_{n}.npy") for n in names}
            for i in range(len(examples))}
    plots.example_grid(out / "examples.png", examples, maps, names)
    plots.curves(out / "curves.png", summary)
    return summary
