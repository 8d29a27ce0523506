"""The main job: methods x metrics over the images of a dataset, batched, sharded, resumable.

:func:`run_evaluate` is the engine of ``saliency-jax evaluate``.

**Batched.** Images go through in batches of ``config.batch_size``: per method one jitted
``vmap`` over the batch of the explainer (each explainer's own mask/step axis inside, split over
the process's devices), then one jitted ``vmap`` of the metrics (deletion and insertion curves,
pointing game, IoU/F1/precision/recall), and one host transfer per batch. The last batch is
padded to the same shape (the padding rows are dropped), so each method compiles once. Image
``i``'s key is ``method_key(seed, i, method)``: results do not depend on the batch size or the
number of processes (up to float rounding). A method whose explainer cannot be traced under
``vmap`` (LIME's host-side quickshift superpixels) explains image by image inside the batch;
its metrics are still batched. Examples are read by a background thread, a batch ahead, so
decoding overlaps compute.

**Sharded.** ``process_count`` processes split the images: process ``p`` takes the images
``i`` with ``i % process_count == p`` (stable when ``num_images`` grows, balanced), runs them on
its *local* devices (:func:`saliency_jax.sharding.use_devices`) and never talks to the
other processes while it runs: a killed process loses only its own unfinished batch.

**Store** (``out_dir``):

* ``run.json``: the arguments that change results (dataset, split, model, checkpoint, image
  size, seed, number of masks (``None`` = RISE's default N), target rule, IoU threshold).
  Another run with different ones is refused, naming them; the methods, their order, the
  number of images, the batch size and the process count may change freely: only the missing
  (image, method) records are computed.
* ``maps/<method>/``: a zarr array (tensorstore) ``float32[len(dataset), h, w]``, chunk = one
  map, compressed; every process writes its own chunks concurrently. Unwritten maps read NaN.
  float32 keeps the maps exact; at ImageNet scale (224², 50 000 images) that is ~10 GB per
  method before compression.
* ``records/process-<p>.jsonl``: one line per image x method (AUCs, both curves, localisation
  metrics, seconds, queries), appended and fsync'd by process ``p`` after its maps are
  written. A record is the unit of resumption: a restart with the same arguments skips every
  (image, method) with a record (in any process's file), so adding a method or raising
  ``num_images`` reuses what is done. A torn last line (a kill mid-write) is ignored, and cut
  off the process's own file before it appends again; a corrupt line elsewhere stops the run.
* ``results.json``, ``table.md``, ``examples.png`` (every image up to :data:`EXAMPLE_ROWS`,
  the selection stated in its title), ``curves.png``: the merged table of the first
  ``num_images`` images (:func:`merge`), written when every record is there: by the only
  process, by process 0 after a barrier under ``jax.distributed``, or by whichever process of
  an uncoordinated job finishes last; ``saliency-jax evaluate --merge`` writes it on its own.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
import queue
import threading
import time
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax import metrics, sharding
from saliency_jax._src.metrics import aggregate
from saliency_jax.app import methods
from saliency_jax.app import progress as _progress

RECORD_VERSION = 4
METRIC_KEYS = ("deletion", "insertion", "pointing", "iou", "f1", "precision", "recall")
LOCALISATION_KEYS = ("pointing", "iou", "f1", "precision", "recall")
RESULT_FIELDS = ("dataset", "split", "model", "checkpoint", "num_masks", "image_size", "seed",
                 "target", "data_dir", "iou_threshold")
"""The :class:`EvaluateConfig` fields that change results: an output directory is bound to them."""


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
    batch_size: int = 8
    """Images per compiled call (does not change results)."""

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


def _check_config(config: EvaluateConfig) -> None:
    for name in ("num_images", "batch_size", "image_size"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if config.num_masks is not None and (isinstance(config.num_masks, bool) or not isinstance(
            config.num_masks, int) or config.num_masks < 1):
        raise ValueError(f"num_masks must be None (RISE's default) or a positive int, got "
                         f"{config.num_masks!r}")
    if isinstance(config.seed, bool) or not isinstance(config.seed, int) or config.seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {config.seed!r}")
    if config.target not in ("auto", "label", "top1"):
        raise ValueError(f"target must be 'auto', 'label' or 'top1', got {config.target!r}")


CONSTANT_MAP_REASONS = {
    "rise": "every masked image got the same score (p_keep = 1 keeps every pixel, or the model "
            "ignores what the masks hide)",
    "lime": "quickshift found a single superpixel (the image is too small or too uniform), or "
            "the score did not change with any superpixel switched off",
    "occlusion": "no occluding window changed the score",
    "gradcam": "the class score's gradient at the chosen stage is zero or negative everywhere",
}


def constant_map_reason(name: str) -> str:
    """Why ``name``'s map can come out constant: it ranks no pixel above another, and its
    deletion and insertion curves then follow the tie rule alone."""
    return CONSTANT_MAP_REASONS.get(
        name, "the target score did not change under any perturbation the method made")


def _effective_num_masks(config: EvaluateConfig) -> int:
    """The RISE N a run uses (``None`` means the registry's default)."""
    if config.num_masks is not None:
        return config.num_masks
    ctx = methods.ModelContext(config.model, {}, (config.image_size, config.image_size))
    return methods.FACTORIES["rise"](ctx, None).queries


def _check_run_dir(out: pathlib.Path, config: EvaluateConfig, weights: str | None = None) -> None:
    """Bind ``out`` to the result-changing arguments, or refuse a mismatch (any process).

    Only arguments that change a record's values bind it: the methods, their order, the number
    of images, the batch size and the process count do not, so runs accumulate (image x method
    records). A setting that changes results (seed, N, model, the classifier's weights, ...) is
    refused rather than mixed in: its records would be indistinguishable from the ones there,
    and a table over both would silently average two protocols. ``run.json`` is created
    atomically (a complete file linked into place, never overwritten), so processes racing to
    create it end with one file, and the loser compares with it."""
    run_file = out / "run.json"
    full = _canonical(config)
    full["num_masks"] = _effective_num_masks(config)
    wanted = {"version": RECORD_VERSION, "config": {k: full[k] for k in RESULT_FIELDS},
              "weights_sha256": weights}
    _writable_dir(out)
    if not run_file.exists():
        _create_once(run_file, wanted)
    try:
        found = json.loads(run_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{run_file} is corrupt ({err}); move it or the output directory away"
        ) from None
    if found.get("version") != RECORD_VERSION:
        raise ValueError(
            f"{out} holds results of another record version ({found.get('version')}, this "
            f"is {RECORD_VERSION}); use another --out directory"
        )
    if found != wanted:
        there = {**found.get("config", {}), "weights": found.get("weights_sha256")}
        now = {**wanted["config"], "weights": weights}
        diff = {k: (there.get(k), v) for k, v in now.items() if there.get(k) != v}
        options = ", ".join(f"{k}: {f!r} there, {w!r} now" for k, (f, w) in diff.items())
        raise ValueError(
            f"{out} holds results computed with other settings ({options}); give another "
            "--out for these settings, or the same settings to add methods or images there"
        )


def _writable_dir(out: pathlib.Path) -> None:
    """Create ``out`` (with its parents) or refuse, naming it, before anything is computed."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {out} is an existing file; give a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"cannot write in the output folder {out}: "
                         f"{err.strerror or err}") from None


def _create_once(path: pathlib.Path, obj) -> bool:
    """Write ``obj`` as JSON to ``path`` unless it exists: a complete temporary file is linked
    into place (``link`` fails on an existing name), so a reader never sees a partial file and
    two writers cannot both succeed. Returns whether this call created it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    tmp.write_text(json.dumps(obj))
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink()


def _settings_file(out: pathlib.Path, name: str) -> pathlib.Path:
    return out / "methods" / f"{name}.json"


def _settings_diff(there: dict, now: dict, prefix: str = "") -> list[str]:
    """``"field: a there, b now"`` for every leaf where two settings dicts differ."""
    diffs = []
    for key in sorted(set(there) | set(now)):
        a, b = there.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _settings_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}: {a!r} there, {b!r} now")
    return diffs


def _check_method_settings(out: pathlib.Path, method_list) -> None:
    """Bind each method of ``out`` to its full settings (``methods/<name>.json``, created once,
    atomically), or refuse a method whose settings changed, naming the fields: a changed window
    budget or a retrained agent would otherwise reuse the old records."""
    (out / "methods").mkdir(exist_ok=True)
    for method in method_list:
        wanted = {"method": method.name, "digest": method.digest,
                  "description": method.description, "settings": method.settings}
        path = _settings_file(out, method.name)
        if not path.exists():
            _create_once(path, wanted)
        try:
            found = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is corrupt ({err}); move it away") from None
        if found.get("digest") != method.digest:
            fields = "; ".join(_settings_diff(found.get("settings", {}), method.settings))
            if not fields:
                fields = f"digest {found.get('digest')} there, {method.digest} now"
            raise ValueError(
                f"{out} holds {method.name} records made with other settings ({fields}); give "
                "another --out for these settings"
            )


def folder_methods(out_dir) -> dict[str, dict]:
    """The methods ``out_dir`` holds settings for: ``name -> methods/<name>.json``."""
    directory = pathlib.Path(out_dir) / "methods"
    found = {}
    for path in sorted(directory.glob("*.json")) if directory.exists() else ():
        found[path.stem] = json.loads(path.read_text())
    return found


def config_from_run_dir(out_dir) -> EvaluateConfig:
    """The :class:`EvaluateConfig` a results folder was made with (its ``run.json``), with the
    methods it holds; for ``evaluate --merge --out DIR`` without the original command line."""
    run_file = pathlib.Path(out_dir) / "run.json"
    try:
        found = json.loads(run_file.read_text())
    except FileNotFoundError:
        raise ValueError(f"{run_file} not found: {out_dir} is not an evaluate results folder"
                         ) from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{run_file} is corrupt ({err})") from None
    if found.get("version") != RECORD_VERSION:
        raise ValueError(f"{out_dir} holds results of another record version "
                         f"({found.get('version')}, this is {RECORD_VERSION})")
    known = list(methods.FACTORIES)
    held = sorted(folder_methods(out_dir), key=lambda n: known.index(n) if n in known else 99)
    return EvaluateConfig(**found["config"], methods=tuple(held), num_images=1)


def _write_json(path: pathlib.Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # several processes may write
    tmp.write_text(json.dumps(obj))
    tmp.replace(path)


# ----------------------------------------------------------------------------------------------
# Records: one JSON line per image x method, one append-only file per process.


def _records_dir(out: pathlib.Path) -> pathlib.Path:
    return out / "records"


def _record_file(out: pathlib.Path, process_index: int) -> pathlib.Path:
    return _records_dir(out) / f"process-{process_index:05d}.jsonl"


def _parse_lines(path: pathlib.Path) -> tuple[list[dict], int]:
    """The complete records of ``path`` and the byte length they span; a torn last line (no
    newline: a kill mid-write) is left out, a bad complete line raises ValueError."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    records = []
    for number, line in enumerate(data[:end].splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"results file {path} is corrupt at line {number} ({err}); move it away to "
                "recompute its records"
            ) from None
        if not isinstance(record, dict) or record.get("v") != RECORD_VERSION or not {
                "index", "method"} <= set(record):
            raise ValueError(f"results file {path} line {number} does not match this run "
                             f"(record version {RECORD_VERSION}); move it away to recompute")
        records.append(record)
    return records, end


def read_records(out_dir) -> dict[tuple[int, str], dict]:
    """Every complete record under ``out_dir/records``, keyed by ``(image index, method)`` (the
    first one where a pair appears twice: they hold the same results)."""
    found = {}
    directory = _records_dir(pathlib.Path(out_dir))
    for path in sorted(directory.glob("process-*.jsonl")) if directory.exists() else ():
        for record in _parse_lines(path)[0]:
            found.setdefault((int(record["index"]), record["method"]), record)
    return found


class _RecordWriter:
    """Appends records to this process's file, fsync'd per batch; cuts a torn tail first.

    Holds an exclusive lock on ``process-<p>.lock`` beside the file for its lifetime (released
    by the system if the process dies): a second writer of the same file (another job in the
    same folder, a repeated ``--process-id``) is refused instead of interleaving lines."""

    def __init__(self, path: pathlib.Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = _take_lock(path.with_suffix(".lock"))
        if path.exists():
            _, end = _parse_lines(path)
            if end != path.stat().st_size:
                with open(path, "r+b") as f:
                    f.truncate(end)
        self._file = open(path, "ab")  # noqa: SIM115 - held for the run, closed by close()

    def write(self, records) -> None:
        self._file.write(b"".join(json.dumps(r).encode() + b"\n" for r in records))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()
        self._lock.close()


def _take_lock(path: pathlib.Path):
    """An open file holding ``flock(LOCK_EX)`` on ``path``, with this process's pid in it; a
    ValueError naming the holder when another process has it."""
    import fcntl

    handle = open(path, "a+")  # noqa: SIM115 - held for the run, closed by the writer
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise ValueError(
            f"another process (pid {holder}) is writing these records ({path} is locked): two "
            "jobs in one --out need different --process-id values; wait for it to finish, or "
            "give another --out"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


# ----------------------------------------------------------------------------------------------
# Maps: one zarr array per method (tensorstore), chunk = one map.


def open_maps(out_dir, name: str, *, num_rows: int | None = None, hw=None):
    """The tensorstore array of ``name``'s maps under ``out_dir/maps`` (created when
    ``num_rows`` and ``hw`` are given and it does not exist yet)."""
    import tensorstore as ts

    spec = {"driver": "zarr", "kvstore": {"driver": "file",
                                          "path": str(pathlib.Path(out_dir) / "maps" / name)}}
    if num_rows is None:
        return ts.open(spec, open=True).result()
    h, w = hw
    spec["metadata"] = {"shape": [num_rows, h, w], "chunks": [1, h, w], "dtype": "<f4",
                        "fill_value": "NaN"}
    return ts.open(spec, open=True, create=True).result()


def read_map(out_dir, name: str, index: int) -> np.ndarray:
    """Map ``index`` of method ``name`` (NaN where it was never written)."""
    return np.asarray(open_maps(out_dir, name)[index].read().result())


def method_key(seed: int, index: int, name: str):
    key = jax.random.fold_in(jax.random.key(seed), index)
    return jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)


def evaluate_image(model_fn, example, method_list, config: EvaluateConfig, index: int):
    """All methods and metrics on one example, image by image and method by method (the loop
    of earlier versions, kept as the reference the batched engine is checked and benchmarked
    against); returns ``(record, maps)`` with ``record["methods"][name]`` as a stored record."""
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




# ----------------------------------------------------------------------------------------------
# The batched engine.


def shard_indices(num_images: int, process_index: int, process_count: int) -> range:
    """The image indices process ``process_index`` of ``process_count`` evaluates:
    ``i % process_count == process_index`` (stable as ``num_images`` grows, balanced)."""
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"process_index must be in [0, process_count), got {process_index} of "
                         f"{process_count}")
    return range(process_index, num_images, process_count)


def _example_arrays(example, hw, index):
    image = np.asarray(example["image"])
    if image.shape != (*hw, 3) or image.dtype != np.uint8:
        raise ValueError(f"example {index}: image must be uint8{[*hw, 3]}, got {image.dtype}"
                         f"{list(image.shape)}")
    mask = example.get("mask")
    has_mask = mask is not None and bool(np.any(mask))
    gt = np.asarray(mask, bool) if has_mask else np.zeros(hw, bool)
    return image, int(example.get("label", -1)), gt, has_mask


def _stack(dataset, batch, batch_size, hw):
    rows = [_example_arrays(dataset[i], hw, i) for i in batch]
    pad = batch_size - len(rows)
    rows += [rows[-1]] * pad  # padding rows: computed, never written
    images, labels, gts, has = (np.stack(column) for column in zip(*rows, strict=True))
    indices = np.asarray([*batch, *[batch[-1]] * pad], np.int32)
    return {"indices": indices, "images": images, "labels": labels.astype(np.int32),
            "gt": gts, "has_mask": has, "valid": np.arange(batch_size) < len(batch)}


def _prefetch(dataset, batches, batch_size, hw, depth: int = 2):
    """Yield the stacked batches, read by a background thread ``depth`` batches ahead."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def work():
        try:
            for batch in batches:
                if stop.is_set():
                    return
                q.put(_stack(dataset, batch, batch_size, hw))
            q.put(done)
        except BaseException as err:  # noqa: BLE001 - re-raised in the consumer
            q.put(err)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)


def weights_digest(model_fn) -> str | None:
    """SHA-256 of the arrays a ``Partial`` model function carries (its weights); None for a
    plain callable, whose weights are out of sight."""
    leaves = jax.tree.leaves(model_fn) if isinstance(model_fn, jax.tree_util.Partial) else []
    if not leaves:
        return None
    import hashlib

    digest = hashlib.sha256()
    for leaf in leaves:
        digest.update(np.asarray(leaf).tobytes())
    return digest.hexdigest()


def _check_record_digests(out, records: dict, method_list) -> None:
    """Refuse records of a current method made with other settings (its digest differs)."""
    digests = {m.name: m.digest for m in method_list}
    for (index, name), record in records.items():
        if name in digests and record.get("digest") != digests[name]:
            raise ValueError(
                f"{out}: the {name} record of image {index} was made with other settings "
                f"(digest {record.get('digest')}, now {digests[name]}); give another --out"
            )


def _as_partial(model_fn):
    return model_fn if isinstance(model_fn, jax.tree_util.Partial) else jax.tree_util.Partial(
        model_fn)


def _keys(seed: int, indices, name: str):
    salt = zlib.crc32(name.encode()) & 0x7FFFFFFF
    root = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(root, i), salt))(indices)


class _BatchedMethod:
    """One method as ``jit(vmap(explain))`` over a batch of images; image by image if the
    method is not ``vmappable`` or its explainer cannot be traced under ``vmap``."""

    def __init__(self, method, seed: int):
        self.method = method
        self.seed = seed
        self.vmapped = method.vmappable

        def one(model_fn, key, image, target):
            if method.explain_counted is None:
                saliency = method.explain(key, model_fn, image, target)
                queries = jnp.int32(method.queries)
            else:
                saliency, queries = method.explain_counted(key, model_fn, image, target)
            return jnp.asarray(saliency, jnp.float32), jnp.asarray(queries, jnp.int32)

        def batched(model_fn, indices, images, targets):
            keys = _keys(seed, indices, method.name)
            images = images.astype(jnp.float32) / 255.0
            return jax.vmap(one, in_axes=(None, 0, 0, 0))(model_fn, keys, images, targets)

        self._one = one
        self._batched = jax.jit(batched)

    def __call__(self, model_fn, indices, images, targets):
        if self.vmapped:
            try:
                return self._batched(model_fn, indices, images, targets)
            except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError,
                    jax.errors.TracerBoolConversionError,
                    jax.errors.TracerIntegerConversionError, ValueError):
                # Not traceable (LIME's quickshift runs in numpy on the image): image by image,
                # where a genuine error in the arguments is raised again.
                self.vmapped = False
        maps, queries = [], []
        for index, image, target in zip(indices, images, targets, strict=True):
            key = method_key(self.seed, int(index), self.method.name)
            saliency, count = self._one(model_fn, key, jnp.asarray(image, jnp.float32) / 255.0,
                                        jnp.asarray(target, jnp.int32))
            maps.append(saliency)
            queries.append(count)
        return jnp.stack(maps), jnp.stack(queries)


def _metrics_fn(config: EvaluateConfig):
    return _metrics_jit(config.step, config.tolerance, config.iou_threshold)


@functools.lru_cache(maxsize=8)
def _metrics_jit(step: int, tolerance: float, iou_threshold: float):
    def one(model_fn, image, saliency, target, gt):
        dele = metrics.deletion(model_fn, image, saliency, target, step=step)
        ins = metrics.insertion(model_fn, image, saliency, target, step=step)
        overlap = metrics.overlap(saliency, gt, threshold=iou_threshold, mode="relative")
        return {"deletion": dele.auc, "insertion": ins.auc, "deletion_curve": dele.scores,
                "insertion_curve": ins.scores,
                "pointing": metrics.pointing_game(saliency, gt, tolerance=tolerance),
                "iou": overlap.iou, "f1": overlap.f1, "precision": overlap.precision,
                "recall": overlap.recall}

    def batched(model_fn, images, maps, targets, gts):
        images = images.astype(jnp.float32) / 255.0
        return jax.vmap(one, in_axes=(None, 0, 0, 0, 0))(model_fn, images, maps, targets, gts)

    return jax.jit(batched)


@jax.jit
def _top1(model_fn, images):
    return jnp.argmax(model_fn(images.astype(jnp.float32) / 255.0), axis=-1).astype(jnp.int32)


def _targets(model_fn, batch, rule: str) -> np.ndarray:
    labels = batch["labels"]
    if rule == "label" or (rule == "auto" and np.all(labels >= 0)):
        missing = np.flatnonzero(batch["valid"] & (labels < 0))
        if missing.size:
            raise ValueError(f"example {int(batch['indices'][missing[0]])} has no label; use "
                             "target 'top1' or 'auto'")
        return labels
    top1 = np.asarray(_top1(model_fn, batch["images"]))
    return top1 if rule == "top1" else np.where(labels >= 0, labels, top1).astype(np.int32)


def _record(index, method, target, seconds, queries, values, row, has_mask) -> dict:
    record = {"v": RECORD_VERSION, "index": int(index), "method": method.name,
              "digest": method.digest, "target": int(target),
              "seconds": seconds, "queries": int(queries),
              "deletion": float(values["deletion"][row]),
              "insertion": float(values["insertion"][row]),
              "deletion_curve": values["deletion_curve"][row].tolist(),
              "insertion_curve": values["insertion_curve"][row].tolist()}
    if has_mask:
        record["pointing"] = bool(values["pointing"][row])
        for key in ("iou", "f1", "precision", "recall"):
            record[key] = float(values[key][row])
    return record


def _evaluate_shard(out, config, method_list, model_fn, dataset, todo, done, writer, bar,
                    runners=None):
    hw = (config.image_size, config.image_size)
    stores = {m.name: open_maps(out, m.name, num_rows=len(dataset), hw=hw) for m in method_list}
    runners = runners or {m.name: _BatchedMethod(m, config.seed) for m in method_list}
    metrics_fn = _metrics_fn(config)
    batches = [todo[i:i + config.batch_size] for i in range(0, len(todo), config.batch_size)]
    compiled = set()
    constant = {}
    for batch in _prefetch(dataset, batches, config.batch_size, hw):
        targets = _targets(model_fn, batch, config.target)
        valid_rows = np.flatnonzero(batch["valid"])
        for method in method_list:
            rows = [r for r in valid_rows if (int(batch["indices"][r]), method.name) not in done]
            if not rows:
                continue
            if bar is not None:
                bar.set_postfix_str(f"{'compiling and ' if method.name not in compiled else ''}"
                                    f"running {method.name}", refresh=True)
            compiled.add(method.name)
            t0 = time.perf_counter()
            maps, queries = jax.block_until_ready(
                runners[method.name](model_fn, batch["indices"], batch["images"], targets))
            seconds = (time.perf_counter() - t0) / len(valid_rows)
            values = jax.device_get(metrics_fn(model_fn, batch["images"], maps, targets,
                                               batch["gt"]))
            maps, queries = np.asarray(maps), np.asarray(queries)
            flat = maps[rows].reshape(len(rows), -1)
            count = int(np.sum(flat.max(axis=1) == flat.min(axis=1)))
            if count:
                constant[method.name] = constant.get(method.name, 0) + count
            store = stores[method.name]
            writes = [store[int(batch["indices"][r])].write(maps[r]) for r in rows]
            for w in writes:
                w.result()  # the maps are stored before their records say so
            writer.write([_record(batch["indices"][r], method, targets[r], seconds,
                                  queries[r], values, r, batch["has_mask"][r]) for r in rows])
            if bar is not None:
                bar.update(len(rows))  # maps: the bar moves after every method of a batch
    if bar is not None:
        bar.set_postfix_str("")
    for name, count in constant.items():
        print(f"warning: {count} {name} map(s) are constant (they rank no pixel above another): "
              f"{constant_map_reason(name)}", flush=True)


def estimate(config: EvaluateConfig, method_list, num_images: int, throughput: float) -> dict:
    """Seconds to expect: ``queries / throughput`` per method and image (the explanation's
    ``method.queries`` plus both curves' steps), compilation and host work left out."""
    curves = _progress.metric_queries((config.image_size,) * 2, config.step)
    per_image = {m.name: (m.queries + curves) / throughput for m in method_list}
    return {"per_image": per_image, "total": num_images * sum(per_image.values()),
            "throughput": throughput}


def estimate_line(est: dict, num_images: int, num_methods: int, compile_s: float) -> str:
    """The estimate as printed: the model queries' time, and what it leaves out."""
    slowest = sorted(est["per_image"].items(), key=lambda kv: -kv[1])[:3]
    parts = ", ".join(f"{n} {_progress.format_duration(t)}" for n, t in slowest)
    return (f"estimate: about {_progress.format_duration(est['total'])} of model queries for "
            f"{num_images} image(s) at {est['throughput']:.0f} images/s (per image: {parts}); "
            f"compilation is not included: {num_methods + 2} programs compile first (one per "
            f"method, the metrics, the targets), each at least the "
            f"{_progress.format_duration(compile_s)} the bare forward pass took to compile here")


def _announce(config, method_list, model_fn, num_images: int) -> None:
    device = jax.devices()[0].platform
    _progress.note(f"measuring {config.model}'s forward rate on this {device} (one compile) ...")
    t0 = time.perf_counter()
    rate = _progress.forward_throughput(model_fn, (config.image_size,) * 2, batch=32, repeats=2)
    compile_s = max(0.0, time.perf_counter() - t0 - 3 * 32 / rate)  # less the 3 timed calls
    est = estimate(config, method_list, num_images, rate)
    _progress.note(estimate_line(est, num_images, len(method_list), compile_s))
    for m in method_list:
        text = _progress.slow_note(m.name, m.queries, est["per_image"][m.name], device=device,
                                  num_masks=m.queries if m.name == "rise" else None)
        if text:
            _progress.note(text)


def summarize(entries: dict, method_list) -> dict:
    """Per-method mean and std of every metric, median seconds per image and queries, from
    ``entries[method name]``: the method's records in image order."""
    summary = {}
    for method in method_list:
        rows = entries[method.name]
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


EXAMPLE_ROWS = 16
"""``examples.png`` shows every evaluated image up to this many (the first ones beyond)."""

COLUMNS = (("deletion", "Deletion ↓"), ("insertion", "Insertion ↑"), ("pointing", "Pointing ↑"),
           ("iou", "IoU ↑"), ("f1", "F1 ↑"), ("precision", "Precision"), ("recall", "Recall"))


def markdown_table(summary: dict) -> str:
    present = [(k, title) for k, title in COLUMNS
               if all(k in s["metrics"] for s in summary.values())]
    counts = {s["num_images"] for s in summary.values()}
    images = len(counts) > 1  # rows over different images: say how many each covers
    head = ["Method", *(["Images"] if images else []), *[t for _, t in present],
            "Queries", "s / image"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in summary.items():
        cells = [name, *([str(s["num_images"])] if images else [])]
        for k, _ in present:
            m = s["metrics"][k]
            cells.append(f"{m['mean']:.4f} ± {m['std']:.4f}")
        cells += [str(s["queries"]), f"{s['median_seconds']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)




def _atomic_figure(path: pathlib.Path, draw, *args) -> None:
    tmp = path.with_name(f".{path.stem}.{os.getpid()}{path.suffix}")
    draw(tmp, *args)
    tmp.replace(path)


def _class_names(config: EvaluateConfig, dataset):
    """The dataset's class names, else the model's (ImageNet's for a 1000-class model, e.g.
    on the unlabelled photos); None when neither is known."""
    from saliency_jax import models

    names = tuple(getattr(dataset, "class_names", ()) or ())
    if names:
        return names
    try:
        num_classes = models.get(config.model).num_classes
    except ValueError:  # not a registry model
        return None
    if num_classes == 1000:
        from saliency_jax.models import imagenet_labels

        return tuple(imagenet_labels.imagenet_class_names())
    return None


@dataclasses.dataclass(frozen=True)
class _HeldMethod:
    """A method of the folder that this run did not build: its name and stored description."""

    name: str
    description: str


def _folder_rows(out: pathlib.Path, records: dict, method_list):
    """Every method the folder holds records of, in the registry's order, with its records
    in image order: ``[(method, [record, ...]), ...]``. Records of a method not built by this
    run count when their digest is the one its ``methods/<name>.json`` binds."""
    built = {m.name: m for m in method_list}
    held = folder_methods(out)
    known = list(methods.FACTORIES)
    names = sorted({n for _, n in records} | set(built),
                   key=lambda n: (known.index(n) if n in known else len(known), n))
    rows = []
    for name in names:
        if name in built:
            method, digest = built[name], built[name].digest
        elif name in held:
            method = _HeldMethod(name, held[name].get("description", name))
            digest = held[name].get("digest")
        else:
            continue  # records without a settings file: not this record version's
        mine = sorted((i for i, n in records if n == name and records[(i, n)].get("digest")
                       == digest))
        if mine:
            rows.append((method, [records[(i, name)] for i in mine]))
    return rows


def merge(config: EvaluateConfig, out_dir, *, method_list, dataset) -> dict:
    """The folder's table: writes ``results.json``, ``table.md``, ``examples.png`` and
    ``curves.png`` over every (image, method) record ``out_dir`` holds (every method run there
    with its settings, each over the images it has); returns the summary of ``method_list``
    over the first ``config.num_images`` images (this run's). ValueError if one of those
    records is missing (run the evaluation to compute it)."""
    from saliency_jax.app import plots

    out = pathlib.Path(out_dir)
    records = read_records(out)
    names = [m.name for m in method_list]
    missing = [(i, n) for n in names for i in range(config.num_images) if (i, n) not in records]
    if missing:
        raise ValueError(
            f"{out}: {len(missing)} of {config.num_images * len(names)} image x method records "
            f"are missing (first: image {missing[0][0]}, {missing[0][1]}); run the same evaluate "
            "command (every process) to compute them"
        )
    this_run = summarize({n: [records[(i, n)] for i in range(config.num_images)]
                          for n in names}, method_list)
    rows = _folder_rows(out, records, method_list)
    folder = summarize({m.name: entries for m, entries in rows}, [m for m, _ in rows])
    table = markdown_table(folder)
    whole = {**_canonical(config), "methods": list(folder),
             "num_images": {n: s["num_images"] for n, s in folder.items()}}
    _write_json(out / "results.json", {"config": whole, "summary": folder,
                                       "device": jax.devices()[0].device_kind,
                                       "jax": jax.__version__})
    tmp = out / f".table.md.{os.getpid()}.tmp"
    tmp.write_text(table + "\n")
    tmp.replace(out / "table.md")
    folder_names = list(folder)
    common = sorted(set.intersection(*({int(r["index"]) for r in entries} for _, entries in rows))
                    ) if rows else []
    shown = common[:EXAMPLE_ROWS]
    examples = [dataset[i] for i in shown]
    maps = {r: {n: read_map(out, n, i) for n in folder_names} for r, i in enumerate(shown)}
    targets = [records[(i, folder_names[0])]["target"] for i in shown] if folder_names else None
    _atomic_figure(out / "examples.png", plots.example_grid, examples, maps, folder_names,
                   _class_names(config, dataset), targets, len(common))
    _atomic_figure(out / "curves.png", plots.curves, folder)
    return this_run


def run_evaluate(config: EvaluateConfig, out_dir, *, model_fn, dataset, context=None,
                 progress: bool = True, skip_unavailable: bool | None = None,
                 process_index: int | None = None, process_count: int | None = None,
                 coordinated: bool | None = None, merge_only: bool = False):
    """Evaluate ``config.methods`` on the first ``config.num_images`` items of ``dataset``.

    ``dataset[i]`` must give DESIGN's example dict (``image`` uint8, ``label``, optional
    ``mask``). ``context`` (a :class:`methods.ModelContext`) is needed by the methods that use
    more than the black box (Grad-CAM, IASSA, the RL agents). ``skip_unavailable`` (default:
    when ``config.methods`` is the default set) leaves out, with a printed note, the methods
    unavailable for the model (e.g. RExL without an agent for this classifier) instead of
    raising.

    This process evaluates its shard (:func:`shard_indices`) of the images that lack a record
    (module docstring), on its local devices. ``process_index`` / ``process_count`` default to
    ``jax.process_index()`` / ``jax.process_count()``; ``coordinated`` (default: when
    ``jax.distributed`` spans several processes) means the processes can meet at a barrier at
    the end, after which process 0 merges; an uncoordinated job's last process to finish
    merges. ``merge_only`` computes nothing and only merges.

    Returns the summary dict where this process wrote the table, else ``None``.
    """
    _check_config(config)
    if config.num_images > len(dataset):
        raise ValueError(
            f"num_images={config.num_images} exceeds the {len(dataset)} images of {config.dataset}"
        )
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    shard = shard_indices(config.num_images, process_index, process_count)
    if coordinated is None:
        coordinated = jax.process_count() > 1
    if context is None:
        context = methods.ModelContext(config.model, {}, (config.image_size, config.image_size))
    if skip_unavailable is None:
        skip_unavailable = tuple(config.methods) == methods.DEFAULT_METHODS
    note = lambda name, why: print(f"note: {name} skipped: {why}")  # noqa: E731
    method_list = methods.build_methods(config.methods, context, num_masks=config.num_masks,
                                        on_unavailable=note if skip_unavailable else None)
    out = pathlib.Path(out_dir)
    _check_run_dir(out, config, weights_digest(model_fn))
    _check_method_settings(out, method_list)
    if merge_only:
        return merge(config, out, method_list=method_list, dataset=dataset)

    writer = _RecordWriter(_record_file(out, process_index))  # cuts a torn tail of our file
    try:
        records = read_records(out)
        _check_record_digests(out, records, method_list)
        done = set(records)
        names = [m.name for m in method_list]
        todo = [i for i in shard if any((i, n) not in done for n in names)]
        bar = None
        if progress and todo:
            from tqdm.auto import tqdm

            _announce(config, method_list, _as_partial(model_fn), len(todo))
            maps = sum((i, n) not in done for i in todo for n in names)
            bar = tqdm(total=maps, desc=f"evaluate [{process_index}/{process_count}]",
                       unit="map")
        model_fn = _as_partial(model_fn)
        with sharding.use_devices(jax.local_devices()):
            _evaluate_shard(out, config, method_list, model_fn, dataset, todo, done, writer,
                            bar)
        if bar is not None:
            bar.close()
    finally:
        writer.close()

    if process_count > 1 and coordinated:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("saliency_jax.evaluate: every shard done")
        if process_index != 0:
            return None
    elif process_count > 1:  # uncoordinated: whoever finds every record there merges
        records = read_records(out)
        if any((i, m.name) not in records for i in range(config.num_images)
               for m in method_list):
            print(f"process {process_index}: shard done; the table is merged by the last "
                  "process to finish (or: saliency-jax evaluate --merge)")
            return None
    return merge(config, out, method_list=method_list, dataset=dataset)
