"""Train a ``models`` classifier on the synthetic ground-truth dataset with Optax.

The training set is rendered once into device memory; minibatch ``s`` is drawn from
``fold_in(key, s)``, so the run is a pure function of ``(config, key)``. The whole train state
is checkpointed with orbax every ``steps_per_checkpoint`` steps, and a restarted run resumes
from the last checkpoint to the same result.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from saliency_jax import models
from saliency_jax.data import shapes


@dataclasses.dataclass(frozen=True)
class ClassifierTrainConfig:
    model: str = "resnet_small"
    image_size: int = 112
    num_train: int = 8000
    num_test: int = 600
    batch_size: int = 64
    num_steps: int = 3000
    steps_per_checkpoint: int = 250
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    data_seed: int = 0
    augment: bool = True
    init_from: str | None = None

    def __post_init__(self):
        for name in ("image_size", "num_train", "num_test", "batch_size", "num_steps",
                     "steps_per_checkpoint"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.num_steps % self.steps_per_checkpoint:
            raise ValueError(
                f"num_steps ({self.num_steps}) must be a multiple of steps_per_checkpoint "
                f"({self.steps_per_checkpoint})"
            )
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or \
                not 0 <= self.warmup_steps < self.num_steps:
            raise ValueError(
                f"warmup_steps (--warmup-steps) must be an integer in [0, num_steps), got "
                f"{self.warmup_steps!r} with num_steps (--steps) {self.num_steps}"
            )
        if not isinstance(self.augment, bool):
            raise ValueError(f"augment must be True or False, got {self.augment!r}")
        if self.batch_size > self.num_train:
            raise ValueError(f"batch_size ({self.batch_size}) exceeds num_train ({self.num_train})")


class TrainState(NamedTuple):
    params: Any
    batch_stats: Any
    opt_state: Any
    step: jax.Array


def _optimizer(config: ClassifierTrainConfig) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, config.warmup_steps, config.num_steps
    )
    return optax.adamw(schedule, weight_decay=config.weight_decay)


def _normalise(spec, images_u8):
    x = images_u8.astype(jnp.float32) / 255.0
    return (x - jnp.asarray(spec.mean_rgb).reshape(1, 1, 1, 3)) / jnp.asarray(
        spec.std_rgb).reshape(1, 1, 1, 3)


def dihedral_augment(key, images):
    """A random element of the dihedral group D4 per image (flips and 90-degree rotations).

    ``images[n, s, s, c]`` (square); the shape classes are closed under these maps, so labels
    are kept. Each image: transpose, flip rows, flip columns, each with probability 1/2.
    """
    if images.shape[1] != images.shape[2]:
        raise ValueError(f"dihedral_augment needs square images, got {images.shape[1:3]}")
    flips = jax.random.bernoulli(key, 0.5, (3, images.shape[0], 1, 1, 1))
    x = jnp.where(flips[0], jnp.swapaxes(images, 1, 2), images)
    x = jnp.where(flips[1], x[:, ::-1], x)
    return jnp.where(flips[2], x[:, :, ::-1], x)


def make_train_step(config: ClassifierTrainConfig, num_classes: int):
    """``step(state, key, images u8[n,h,w,3], labels i32[n]) -> (state, metrics)``, jitted.

    Minibatch ``s`` and its dropout key come from ``fold_in(key, s)``. (One jitted step per
    call: XLA:CPU runs conv backward passes ~25x slower inside ``lax.scan``, measured here.)
    """
    spec = models.get(config.model, num_classes=num_classes)
    module = spec.build()
    tx = _optimizer(config)

    def loss_fn(params, batch_stats, x, y, dropout_key):
        logits, updates = module.apply(
            {"params": params, "batch_stats": batch_stats}, x, train=True,
            mutable=["batch_stats"], rngs={"dropout": dropout_key},
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        accuracy = jnp.mean(jnp.argmax(logits, -1) == y)
        return loss, (updates["batch_stats"], accuracy)

    @jax.jit
    def step(state: TrainState, key, images, labels):
        step_key = jax.random.fold_in(key, state.step)
        idx_key, dropout_key, aug_key = jax.random.split(step_key, 3)
        idx = jax.random.choice(idx_key, images.shape[0], (config.batch_size,), replace=False)
        x = _normalise(spec, images[idx])
        if config.augment:
            x = dihedral_augment(aug_key, x)
        (loss, (batch_stats, accuracy)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.batch_stats, x, labels[idx], dropout_key
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new = TrainState(params, batch_stats, opt_state, state.step + 1)
        return new, {"loss": loss, "accuracy": accuracy}

    return step


def init_state(config: ClassifierTrainConfig, key, num_classes: int) -> TrainState:
    variables = models.init(
        config.model, key, input_hw=(config.image_size, config.image_size),
        num_classes=num_classes,
    )
    if config.init_from is not None:  # fine-tuning: start from saved variables of this model
        variables = models.load_variables(config.init_from, name=config.model)
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    return TrainState(params, batch_stats, _optimizer(config).init(params), jnp.zeros((), jnp.int32))


@functools.partial(jax.jit, static_argnames="batch_size")
def _probabilities(model_fn, images, *, batch_size: int = 100):
    """``model_fn`` on ``images[n, h, w, 3]`` (uint8, or floats in [0, 1]), ``batch_size`` at a
    time; the model is an argument, so its weights are not baked into the program."""
    def probs(x):  # one image; lax.map vmaps it over chunks of batch_size
        if x.dtype == jnp.uint8:
            x = x.astype(jnp.float32) / 255.0
        return model_fn(x[None])[0]
    return jax.lax.map(probs, images, batch_size=batch_size)


def evaluate_accuracy(model_fn, images_u8, labels, *, batch_size: int = 100) -> float:
    """Top-1 accuracy of ``model_fn`` on uint8 images."""
    probs = _probabilities(model_fn, jnp.asarray(images_u8), batch_size=batch_size)
    return float(np.mean(np.asarray(probs).argmax(-1) == np.asarray(labels)))


def same_area_elsewhere(mask, rng: np.random.Generator, *, margin: int = 2) -> np.ndarray:
    """A compact region with exactly ``mask.sum()`` pixels that stays ``margin`` px off ``mask``.

    The pixels outside the dilated object nearest to a random seed point outside it.
    """
    from scipy import ndimage

    area = int(mask.sum())
    free = ~ndimage.binary_dilation(mask, iterations=margin)
    if free.sum() < area:
        raise ValueError(f"the object covers too much of the image to occlude {area} px elsewhere")
    ys, xs = np.nonzero(free)
    pick = rng.integers(len(ys))
    dist = (ys - ys[pick]) ** 2 + (xs - xs[pick]) ** 2
    nearest = np.argsort(dist, kind="stable")[:area]
    region = np.zeros_like(mask)
    region[ys[nearest], xs[nearest]] = True
    return region


def _box_region(mask) -> np.ndarray:
    ymin, xmin, ymax, xmax = shapes.tight_box(mask).astype(int)
    region = np.zeros_like(mask, dtype=bool)
    region[ymin:ymax, xmin:xmax] = True
    return region


def object_reliance(model_fn, images_u8, labels, masks, *, seed: int = 0) -> dict:
    """Does the classifier use the object? True-class probability and accuracy on the originals
    and with regions filled with the model's mean colour:

    * ``object_box_occluded``: the object's tight box (hides the object and its outline);
    * ``same_area_elsewhere_occluded``: a compact region of the box's area away from the object;
    * ``object_silhouette_occluded``: exactly the object's pixels (its outline stays visible
      as a mean-colour silhouette, so the shape can still be read off it).
    """
    rng = np.random.default_rng(seed)
    boxes = np.stack([_box_region(m) for m in masks])
    elsewhere = np.stack([same_area_elsewhere(b, rng) for b in boxes])
    mean = np.asarray(model_fn.keywords.get("mean_rgb", np.zeros(3)), np.float32)
    x = images_u8.astype(np.float32) / 255.0

    def occluded(region):
        return np.where(region[..., None], mean, x)

    def scores(images):
        probs = np.asarray(_probabilities(model_fn, jnp.asarray(images, jnp.float32)))
        true = probs[np.arange(len(labels)), labels]
        return {"true_class_prob": float(true.mean()),
                "accuracy": float(np.mean(probs.argmax(-1) == labels))}

    return {"original": scores(x), "object_box_occluded": scores(occluded(boxes)),
            "same_area_elsewhere_occluded": scores(occluded(elsewhere)),
            "object_silhouette_occluded": scores(occluded(masks)),
            "mean_box_fraction": float(boxes.mean()),
            "num_images": len(labels)}


def train_classifier(config: ClassifierTrainConfig, out_dir, *, key=None, progress=True,
                     max_steps: int | None = None):
    """Train (or resume) and save ``out_dir/variables`` (orbax) plus ``out_dir/metrics.json``.

    Returns ``(variables, metrics)``. ``out_dir/train_state`` holds the resumable checkpoints,
    written every ``config.steps_per_checkpoint`` steps; a restarted run continues from the last
    one and ends with the same parameters. ``max_steps`` stops this call early (time slicing);
    ``(None, None)`` is returned while training is unfinished.
    """
    out = pathlib.Path(out_dir).resolve()
    key = jax.random.key(config.data_seed) if key is None else key
    num_classes = shapes.NUM_CLASSES
    t0 = time.perf_counter()
    train = shapes.generate_arrays("train", config.num_train, seed=config.data_seed,
                                   image_size=config.image_size)
    images = jnp.asarray(train["image"])
    labels = jnp.asarray(train["label"], jnp.int32)
    data_seconds = time.perf_counter() - t0

    init_key, run_key = jax.random.split(key)
    state = init_state(config, init_key, num_classes)
    manager = ocp.CheckpointManager(
        out / "train_state", options=ocp.CheckpointManagerOptions(max_to_keep=2)
    )
    _check_run_config(out, config)
    if manager.latest_step() is not None:
        state = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(state))
    step_fn = make_train_step(config, num_classes)

    test = shapes.generate_arrays("test", config.num_test, seed=config.data_seed,
                                  image_size=config.image_size)
    history = []
    done = int(state.step)
    stop = config.num_steps if max_steps is None else min(config.num_steps, done + max_steps)
    bar = _progress(config.num_steps, done, progress)
    t1 = time.perf_counter()
    window = []
    if bar is not None:
        bar.set_postfix_str("compiling the training step ...")
    try:  # a Ctrl-C keeps the last checkpoint: its (async) save is finished first
        for _ in range(done, stop):
            state, metrics = step_fn(state, run_key, images, labels)
            window.append(metrics)
            if int(state.step) % config.steps_per_checkpoint == 0:
                manager.save(int(state.step), args=ocp.args.StandardSave(state))
                last = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
                held_out = evaluate_accuracy(
                    models.classifier(config.model, {"params": state.params,
                                                     "batch_stats": state.batch_stats}),
                    test["image"], test["label"])
                history.append({"step": int(state.step), **last, "test_accuracy": held_out})
                window = []
                if bar is not None:
                    bar.set_postfix(loss=f"{last['loss']:.3f}", acc=f"{last['accuracy']:.3f}",
                                    test_acc=f"{held_out:.3f}")
                else:
                    print(json.dumps(history[-1]), flush=True)
            if bar is not None:
                bar.update(1)
    finally:
        manager.wait_until_finished()
        manager.close()
        if bar is not None:
            bar.close()
    train_seconds = time.perf_counter() - t1
    if int(state.step) < config.num_steps:
        return None, None

    variables = {"params": state.params, "batch_stats": state.batch_stats}
    model_fn = models.classifier(config.model, variables)
    accuracy = evaluate_accuracy(model_fn, test["image"], test["label"])
    metrics = {
        "config": dataclasses.asdict(config),
        "test_accuracy": accuracy,
        "object_reliance": object_reliance(model_fn, test["image"], test["label"], test["mask"]),
        "data_seconds": data_seconds,
        "train_seconds_this_run": train_seconds,
        "history_this_run": history,
        "device": jax.devices()[0].device_kind,
        "jax": jax.__version__,
    }
    models.save_variables(out / "variables", variables, name=config.model, overwrite=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return variables, metrics


def _check_run_config(out: pathlib.Path, config: ClassifierTrainConfig) -> None:
    """Writes ``out/config.json`` on the first call; a resumed run must use the same config."""
    path = out / "config.json"
    wanted = dataclasses.asdict(config)
    if path.exists():
        try:
            saved = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is corrupt ({err}); remove {out} to start over") from None
        if saved != wanted:
            diff = {k: (saved.get(k), v) for k, v in wanted.items() if saved.get(k) != v}
            raise ValueError(
                f"{out} holds a run with another config (saved, given): {diff}; "
                "use another --out or the same arguments"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(wanted, indent=2))


def _progress(total, initial, enabled):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc="train-classifier", unit="step")
