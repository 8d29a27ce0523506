"""Under jax.distributed (2 processes x 2 CPU devices, gloo on localhost) and on 4 simulated
devices, every explainer and metric gives the single-process, one-device result.

The jobs run tests/multihost_worker.py; the reference is the same calls in this process.
"""

import functools
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import multihost_worker

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
TIMEOUT_S = 240  # per job of the default test; the every-method jobs get twice that
CHEAP = ("rise", "deletion")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_job(tmp_path, methods, *, num_processes, local_devices, timeout_s=TIMEOUT_S):
    """Start ``num_processes`` workers (bounded by ``timeout_s``, killed on failure), compute the
    one-process reference meanwhile; ``(reference, [each worker's results])``."""
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={local_devices}",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO),
                                                        os.environ.get("PYTHONPATH")])))
    port = _free_port()
    procs, logs, outs = [], [], []
    for i in range(num_processes):
        out, log = tmp_path / f"out{i}.npz", open(tmp_path / f"log{i}.txt", "w+")
        cmd = [sys.executable, str(TESTS / "multihost_worker.py"), str(out),
               "--methods", ",".join(methods)]
        if num_processes > 1:
            cmd += ["--coordinator", f"127.0.0.1:{port}", "--num-processes",
                    str(num_processes), "--process-id", str(i)]
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log,
                                      stderr=subprocess.STDOUT))
        logs.append(log)
        outs.append(out)
    deadline = time.monotonic() + timeout_s
    try:
        reference = _reference(tuple(methods))  # while the workers start and connect
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if any(p.poll() not in (None, 0) for p in procs):
                break  # one failed: the other would wait for it forever
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    report = []
    for i, (p, log) in enumerate(zip(procs, logs)):
        log.seek(0)
        report.append(f"--- process {i}: exit {p.returncode}\n{log.read()[-8000:]}")
        log.close()
    if any(p.returncode != 0 for p in procs):
        pytest.fail(f"worker job failed or timed out after {timeout_s} s:\n" + "\n".join(report))
    return reference, [dict(np.load(out)) for out in outs]


@functools.lru_cache(maxsize=None)
def _reference(methods):
    return multihost_worker.compute(methods)


def _check(ref, results, *, processes, devices):
    assert len(results) == processes
    for got in results:
        assert int(got["process_count"]) == processes
        assert int(got["device_count"]) == devices
        for name in ref:
            if name.startswith("spans/"):
                assert bool(got[name]), f"{name}: the result is not on all {devices} devices"
                continue
            assert got[name].shape == ref[name].shape, name
            if ref[name].dtype == bool or np.issubdtype(ref[name].dtype, np.integer):
                np.testing.assert_array_equal(got[name], ref[name], err_msg=name)
            else:
                np.testing.assert_allclose(got[name], ref[name], rtol=0, atol=1e-5,
                                           err_msg=name)
    for name in ref:  # every process holds the same value
        for got in results[1:]:
            np.testing.assert_array_equal(got[name], results[0][name], err_msg=name)


def test_two_processes_give_the_single_process_results(tmp_path):
    ref, results = _run_job(tmp_path, CHEAP, num_processes=2, local_devices=2)
    _check(ref, results, processes=2, devices=4)


@pytest.mark.slow
def test_two_processes_every_method(tmp_path):
    methods = multihost_worker.METHODS
    ref, results = _run_job(tmp_path, methods, num_processes=2, local_devices=2,
                            timeout_s=2 * TIMEOUT_S)
    _check(ref, results, processes=2, devices=4)


@pytest.mark.slow
def test_four_devices_every_method(tmp_path):
    methods = multihost_worker.METHODS
    ref, results = _run_job(tmp_path, methods, num_processes=1, local_devices=4,
                            timeout_s=2 * TIMEOUT_S)
    _check(ref, results, processes=1, devices=4)


def test_worker_rejects_unknown_methods():
    with pytest.raises(ValueError, match="unknown methods"):
        multihost_worker.compute(("rise", "nope"))
