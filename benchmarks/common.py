"""Timing, memory and reporting helpers shared by the benchmark scripts.

* :func:`compile_and_time`: compile time (``jit(fn).lower(*args).compile()``) apart from the
  steady state (median of ``repeats`` calls of the compiled executable after one warm-up call).
* :func:`compare`: the same for several functions, their timed calls interleaved (for ratios).
* :func:`peak_rss_mb`: the process's peak resident memory (``getrusage``), for memory figures
  measured in a fresh subprocess (:func:`run_fresh`).
* :func:`environment`: device kind, device count, library versions, CPU count.
* :func:`write_result`: JSON to ``benchmarks/results/<name>.json``.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import jax

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def compile_and_time(fn, *args, repeats: int = 3) -> dict:
    """Compile ``jax.jit(fn)`` for ``args`` and time it.

    Returns ``compile_s`` (lowering + XLA compilation), ``first_run_s`` (the warm-up call),
    ``steady_s`` (median of ``repeats`` further calls), ``runs_s`` (all of them) and the
    compiled callable under ``compiled`` (not JSON: pop it before writing).
    """
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    first = _seconds(lambda: compiled(*args))
    runs = [_seconds(lambda: compiled(*args)) for _ in range(repeats)]
    return dict(compile_s=compile_s, first_run_s=first, steady_s=statistics.median(runs),
                runs_s=runs, compiled=compiled)


def compare(cases: dict, *, repeats: int = 3) -> dict:
    """Compile and time several functions, interleaving their timed calls.

    ``cases`` maps a name to ``(fn, args)``. Each is compiled (``compile_s``) and warmed up
    (``first_run_s``); then ``repeats`` rounds call every case once, in turn, so that a change
    of machine load hits all of them alike; ``steady_s`` is each case's median. Use it for
    ratios: on a shared machine, timing one case after the other confounds load with cost.
    """
    compiled, out = {}, {}
    for name, (fn, args) in cases.items():
        t0 = time.perf_counter()
        compiled[name] = jax.jit(fn).lower(*args).compile()
        out[name] = dict(compile_s=time.perf_counter() - t0)
    for name, (_, args) in cases.items():
        out[name]["first_run_s"] = _seconds(functools.partial(compiled[name], *args))
        out[name]["runs_s"] = []
    for _ in range(repeats):
        for name, (_, args) in cases.items():
            out[name]["runs_s"].append(_seconds(functools.partial(compiled[name], *args)))
    for name in cases:
        out[name]["steady_s"] = statistics.median(out[name]["runs_s"])
    return out


def _seconds(call) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    return time.perf_counter() - t0


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    ``VmHWM`` from ``/proc/self/status`` where there is one. ``getrusage``'s ``ru_maxrss`` is the
    fallback only: on Linux a process started by ``fork`` + ``exec`` inherits its parent's
    high-water mark there, which would hide a small child's own peak.
    """
    hwm = _proc_status_mb("VmHWM")
    if hwm == hwm:  # not NaN
        return hwm
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def current_rss_mb() -> float:
    """Current resident set size of this process in MiB (``/proc/self/status``), or NaN."""
    return _proc_status_mb("VmRSS")


def _proc_status_mb(field: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def environment() -> dict:
    """What the numbers were measured on."""
    devices = jax.devices()
    versions = {}
    for package in ("jax", "jaxlib", "flax", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return dict(
        device_kind=devices[0].device_kind,
        platform=devices[0].platform,
        device_count=len(devices),
        cpu_count=os.cpu_count(),
        load_average=list(os.getloadavg()),
        python=platform.python_version(),
        machine=platform.machine(),
        versions=versions,
    )


def run_fresh(script: Path, *args: str, timeout: float = 1800) -> dict:
    """Run ``python script *args`` in a fresh process; it must print one JSON object last."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, str(script), *args], cwd=REPO, env=env, check=True,
                         capture_output=True, text=True, timeout=timeout)
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_result(name: str, payload: dict) -> Path:
    """Write ``payload`` (plus a timestamp) to ``benchmarks/results/<name>.json``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = dict(payload, written=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
