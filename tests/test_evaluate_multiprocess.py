"""``evaluate`` as a 2-process x 2-device ``jax.distributed`` job on localhost (CPU, gloo): the
maps, curves and table equal the single-process run, and a process killed mid-run, restarted
with the same arguments, ends with the same table.

Every process is a subprocess of ``tests/evaluate_worker.py`` under a timeout; on a failure all
are killed and their output is shown.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from saliency_jax import testing
from saliency_jax.app import evaluate as ev
from saliency_jax.data import shapes

REPO = pathlib.Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "evaluate_worker.py"
SIZE, NUM_IMAGES, METHODS = 32, 4, ("rise", "random")
TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=2",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return env


def _start(out, port, ids=(0, 1), heartbeat=5, batch_size=2):
    return {i: subprocess.Popen(
        [sys.executable, str(WORKER), str(out), "--num-processes", "2", "--process-id", str(i),
         "--port", str(port), "--num-images", str(NUM_IMAGES), "--size", str(SIZE),
         "--heartbeat-timeout", str(heartbeat), "--batch-size", str(batch_size),
         "--methods", *METHODS],
        env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in ids}


def _finish(procs, deadline, *, expect_ok=True):
    """Wait for every process (killing all at the deadline); the outputs, and return codes."""
    outputs, codes = {}, {}
    try:
        for i, p in procs.items():
            outputs[i], _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            codes[i] = p.returncode
    except subprocess.TimeoutExpired:
        for p in procs.values():
            p.kill()
        for i, p in procs.items():
            outputs[i] = p.communicate()[0]
        pytest.fail("processes did not end in time:\n" + _show(outputs))
    if expect_ok and any(codes.values()):
        pytest.fail(f"return codes {codes}:\n" + _show(outputs))
    return outputs, codes


def _show(outputs):
    return "\n".join(f"--- process {i} ---\n{text[-3000:]}" for i, text in outputs.items())


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The single-process run (in this process, one device)."""
    out = tmp_path_factory.mktemp("single")
    model_fn = testing.tiny_cnn(jax.random.key(0), (SIZE, SIZE))[0]
    dataset = [shapes.render_example(0, "test", i, image_size=SIZE) for i in range(NUM_IMAGES)]
    config = ev.EvaluateConfig(model="tiny", methods=METHODS, num_images=NUM_IMAGES,
                               num_masks=24, image_size=SIZE, target="top1", batch_size=2)
    ev.run_evaluate(config, out, model_fn=model_fn, dataset=dataset, progress=False,
                    process_index=0, process_count=1)
    return out


def _summary(out):
    summary = json.loads((out / "results.json").read_text())["summary"]
    for s in summary.values():  # wall times differ from run to run
        s.pop("median_seconds")
        s.pop("first_seconds")
    return summary


def _assert_same_results(out, reference):
    a, b = ev.read_records(out), ev.read_records(reference)
    assert set(a) == set(b) == {(i, m) for i in range(NUM_IMAGES) for m in METHODS}
    for key, rec in b.items():
        got = a[key]
        assert got["target"] == rec["target"] and got["queries"] == rec["queries"]
        for name in ("deletion_curve", "insertion_curve"):
            np.testing.assert_allclose(got[name], rec[name], atol=1e-5, err_msg=str(key))
        for name in ("deletion", "insertion", "iou", "f1", "precision", "recall"):
            assert got[name] == pytest.approx(rec[name], abs=1e-5), (key, name)
        assert got["pointing"] == rec["pointing"]
        np.testing.assert_allclose(ev.read_map(out, key[1], key[0]),
                                   ev.read_map(reference, key[1], key[0]), atol=1e-5)
    sa, sb = _summary(out), _summary(reference)
    assert list(sa) == list(sb)
    for m in sb:
        assert sa[m]["queries"] == sb[m]["queries"] and sa[m]["num_images"] == NUM_IMAGES
        np.testing.assert_allclose(sa[m]["mean_deletion_curve"], sb[m]["mean_deletion_curve"],
                                   atol=1e-5)
        for k, stats in sb[m]["metrics"].items():
            assert sa[m]["metrics"][k]["mean"] == pytest.approx(stats["mean"], abs=1e-5)
            assert sa[m]["metrics"][k]["std"] == pytest.approx(stats["std"], abs=1e-5)


def test_two_processes_equal_one(tmp_path, single):
    out = tmp_path / "two"
    outputs, _ = _finish(_start(out, _free_port()), time.monotonic() + TIMEOUT_S)
    assert "process 0/2: local devices 2, merged" in outputs[0], _show(outputs)
    assert "process 1/2: local devices 2, shard done" in outputs[1], _show(outputs)
    # Each process wrote its own shard: images i with i % 2 == its id.
    for p in (0, 1):
        lines = (out / "records" / f"process-{p:05d}.jsonl").read_text().splitlines()
        assert sorted({json.loads(line)["index"] for line in lines}) == list(
            range(p, NUM_IMAGES, 2))
    _assert_same_results(out, single)
    assert (out / "table.md").read_text().count("\n") == len(METHODS) + 2


@pytest.mark.slow
def test_a_killed_process_restarted_gives_the_same_table(tmp_path, single):
    out = tmp_path / "killed"
    deadline = time.monotonic() + TIMEOUT_S
    procs = _start(out, _free_port(), batch_size=1)  # 2 batches of one image each
    mine = out / "records" / "process-00001.jsonl"
    while not (mine.exists() and mine.read_text().count("\n") >= len(METHODS)):
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs.values()):
            for p in procs.values():
                p.kill()
            pytest.fail("process 1 wrote no record:\n" + _show(
                {i: p.communicate()[0] for i, p in procs.items()}))
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGKILL)  # mid-run: it has more batches to go
    # jax 0.10's health check aborts the survivor once the dead task misses its heartbeats
    # ("Terminating process because the JAX distributed service detected fatal errors"),
    # 5 s here; it must not have merged a partial table.
    _, codes = _finish(procs, deadline, expect_ok=False)
    assert codes[1] == -signal.SIGKILL
    assert not (out / "results.json").exists()
    done = ev.read_records(out)
    assert 0 < len(done) < NUM_IMAGES * len(METHODS)
    # Restart every process that is not running (here: both), with the same arguments.
    outputs, _ = _finish(_start(out, _free_port(), batch_size=1), deadline)
    assert "merged" in outputs[0], _show(outputs)
    lines = [json.loads(line) for p in (0, 1)
             for line in (out / "records" / f"process-{p:05d}.jsonl").read_text().splitlines()]
    assert len(lines) == len({(r["index"], r["method"]) for r in lines})  # nothing twice
    _assert_same_results(out, single)
