"""What the command line says while it works: stage notes, time estimates, progress bars.

Everything here writes to ``stderr`` (the tables and paths a command prints go to ``stdout``).
An estimate is ``queries / throughput``: the model's forward passes per second, measured on this
device with one compiled batch before the long work starts, times the model queries the work
makes (a method's ``queries`` per image, plus the deletion and insertion curves' steps). It
leaves out compilation and the explainers' own arithmetic, so it is a lower bound on the order
of the real time.
"""

from __future__ import annotations

import io
import math
import sys
import time

SLOW_SECONDS = 60.0
"""A setting whose estimate per image exceeds this gets a note offering the faster option."""


def note(message: str, *, file=None) -> None:
    """One line on ``stderr`` (``file``), flushed: a stage ("compiling rise …") or a warning."""
    print(message, file=file or sys.stderr, flush=True)


def format_duration(seconds: float) -> str:
    """``seconds`` for a person: ``"40 s"``, ``"3.5 min"``, ``"2.1 h"``."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def forward_throughput(model_fn, image_hw, *, batch: int = 32, repeats: int = 2) -> float:
    """Images per second of one compiled ``model_fn`` call on a batch of ``batch`` images of
    ``image_hw`` on this device (the median of ``repeats`` calls after one to compile)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    forward = jax.jit(lambda f, x: f(x))
    fn = model_fn if isinstance(model_fn, jax.tree_util.Partial) else jax.tree_util.Partial(
        model_fn)
    images = jnp.full((batch, *image_hw, 3), 0.5, jnp.float32)
    jax.block_until_ready(forward(fn, images))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(forward(fn, images))
        times.append(time.perf_counter() - t0)
    return batch / max(float(np.median(times)), 1e-9)


def metric_queries(image_hw, step: int) -> int:
    """Model queries of one deletion plus one insertion curve: ``2 (ceil(h w / step) + 1)``."""
    return 2 * (math.ceil(image_hw[0] * image_hw[1] / step) + 1)


def rise_faster_masks(num_masks: int, seconds_per_image: float,
                      target_seconds: float = SLOW_SECONDS) -> int | None:
    """A smaller RISE N (a multiple of 500, at least 500) that fits ``target_seconds`` per image
    at the measured rate, or None where N is already that small."""
    per_mask = seconds_per_image / max(num_masks, 1)
    n = int(round(target_seconds / max(per_mask, 1e-12), 6)) // 500 * 500
    n = max(500, n)
    return n if n < num_masks else None


def slow_note(name: str, queries: int, seconds_per_image: float, *, device: str,
              num_masks: int | None = None) -> str | None:
    """The note for a method whose estimate per image exceeds :data:`SLOW_SECONDS`, with the
    faster option where there is one; None when it is not slow."""
    if seconds_per_image <= SLOW_SECONDS:
        return None
    text = (f"note: {name} makes {queries} model queries per image: about "
            f"{format_duration(seconds_per_image)} per image on this {device}")
    if name == "rise" and num_masks:
        faster = rise_faster_masks(num_masks, seconds_per_image)
        if faster is not None:
            text += (f"; --num-masks {faster} takes about "
                     f"{format_duration(seconds_per_image * faster / num_masks)} (a noisier map)")
    elif device == "cpu":
        text += "; a GPU or a smaller --image-size is faster"
    return text


class ChunkProgress:
    """``progress(done, total)`` for the chunks inside one explanation (RISE's masks): a bar on
    ``file`` (default ``stderr``) with the rate and the time left, drawn from the host callback
    after each chunk. ``close()`` ends the line; it is cheap enough to call for every chunk
    (tqdm redraws at most ``mininterval`` seconds apart)."""

    def __init__(self, desc: str, *, unit: str = "mask", file=None, mininterval: float = 0.5):
        self.desc = desc
        self.unit = unit
        self.file = file or sys.stderr
        self.mininterval = mininterval
        self._bar = None
        from tqdm.auto import tqdm  # imported here, not inside the first chunk's callback

        self._tqdm = tqdm
        # tqdm's first bar in a process starts its monitor thread and locks (~10-30 ms): pay
        # that here, before the explanation, not in its first chunk.
        tqdm(total=1, file=io.StringIO(), leave=False).close()

    def __call__(self, done, total) -> None:
        done, total = int(done), int(total)
        if self._bar is None or self._bar.total != total or done < self._bar.n:
            self.close()  # a new explanation (or another N)
            self._bar = self._tqdm(total=total, desc=self.desc, unit=self.unit, file=self.file,
                             mininterval=self.mininterval, leave=False, dynamic_ncols=True)
        self._bar.update(done - self._bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
