"""The command line's progress display, estimates and slow-setting notes (issue 19, item 1)."""

import io
import re

import pytest

from saliency_jax.app import progress


@pytest.mark.parametrize("seconds, text", [(0.4, "0 s"), (40, "40 s"), (89, "89 s"),
                                           (90, "1.5 min"), (561, "9.3 min"),
                                           (7200, "2.0 h"), (float("nan"), "?"), (-1, "?")])
def test_format_duration(seconds, text):
    assert progress.format_duration(seconds) == text


def test_chunk_progress_draws_every_chunk_and_restarts_per_explanation():
    out = io.StringIO()
    bar = progress.ChunkProgress("rise", file=out, mininterval=0)
    for done in (100, 200, 300, 400):
        bar(done, 400)
    assert bar._bar is None  # closed at the last chunk
    text = out.getvalue()
    for done in (100, 200, 300, 400):
        assert f"{done}/400" in text
    assert "rise" in text and "mask" in text
    # A second explanation (the count restarts) starts a new bar, with another total.
    out.truncate(0)
    bar(50, 100)
    assert bar._bar is not None and bar._bar.n == 50 and bar._bar.total == 100
    bar(10, 100)  # a new explanation before the last one finished: a fresh bar
    assert bar._bar.n == 10
    bar.close()
    assert bar._bar is None


def test_metric_queries_counts_both_curves():
    # 112 x 112 with 56 pixels per step: 224 steps + the unperturbed image, twice.
    assert progress.metric_queries((112, 112), 56) == 2 * 225
    assert progress.metric_queries((224, 224), 224) == 2 * 225
    assert progress.metric_queries((10, 10), 30) == 2 * (4 + 1)  # a partial last step


def test_slow_note_offers_fewer_masks_for_rise():
    # The case: RISE N = 4000 took 561 s per image on 2 CPU cores.
    text = progress.slow_note("rise", 4000, 561.0, device="cpu", num_masks=4000)
    assert "4000 model queries" in text and "9.3 min" in text
    n = int(re.search(r"--num-masks (\d+)", text).group(1))
    assert n == 500 and "about 70 s" in text  # 561 * 500 / 4000 s
    assert progress.rise_faster_masks(4000, 120.0) == 2000  # 60 s at 0.03 s per mask
    assert progress.rise_faster_masks(500, 120.0) is None  # nothing smaller to offer
    # Not slow: no note; slow without a knob: the generic advice.
    assert progress.slow_note("rise", 4000, 30.0, device="cpu", num_masks=4000) is None
    other = progress.slow_note("iassa", 4352, 72.0, device="cpu")
    assert "a GPU or a smaller --image-size" in other


def test_forward_throughput_is_images_per_second():
    import jax.numpy as jnp

    rate = progress.forward_throughput(lambda x: jnp.mean(x, axis=(1, 2)), (8, 8), batch=4)
    assert rate > 0 and rate != float("inf")
