"""``sharding.set_cpu_devices``: one JAX CPU device per core, set before JAX computes; the CLI
splits the CPU by itself unless told otherwise. Each case runs in a fresh process (JAX fixes its
device count when it first computes)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from saliency_jax._src import sharding

REPO = Path(__file__).resolve().parents[1]


def _fresh(code: str, **env) -> dict:
    """Run ``code`` in a new interpreter (no XLA_FLAGS / JAX_NUM_CPU_DEVICES unless given);
    it prints one JSON line, returned."""
    base = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    base.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO), **env)
    out = subprocess.run([sys.executable, "-c", code], env=base, capture_output=True, text=True,
                         timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_set_count_then_refuse_another_after_jax_computed():
    got = _fresh("""
import json, jax
from saliency_jax import sharding
n = sharding.set_cpu_devices(3)
jax.numpy.ones(2).block_until_ready()
again = sharding.set_cpu_devices(3)          # the same count after computing: fine
try:
    sharding.set_cpu_devices(2)
    err = None
except RuntimeError as e:
    err = str(e)
import warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    late = sharding.set_cpu_devices() if len(__import__("os").sched_getaffinity(0)) != 3 else 3
print(json.dumps(dict(n=n, again=again, devices=len(jax.devices()), err=err, late=late,
                      warned=[str(w.message) for w in caught])))
""")
    assert got["n"] == got["again"] == got["devices"] == got["late"] == 3
    if got["warned"]:  # the default (one per core) differs from 3: kept, with a warning
        assert "JAX has already computed, with 3 CPU device(s); kept" in got["warned"][0]
    assert "wants 2 CPU devices but JAX has already computed with 3" in got["err"]


@pytest.mark.parametrize("env, expected", [
    ({}, "cores"),
    ({"XLA_FLAGS": "--xla_force_host_platform_device_count=3"}, 3),
    ({"JAX_NUM_CPU_DEVICES": "4"}, 4),
])
def test_default_is_what_was_asked_else_one_per_core(env, expected):
    got = _fresh("""
import json, os, jax
from saliency_jax import sharding
n = sharding.set_cpu_devices()
print(json.dumps(dict(n=n, devices=len(jax.devices()), cores=len(os.sched_getaffinity(0)))))
""", **env)
    expected = got["cores"] if expected == "cores" else expected
    assert got["n"] == got["devices"] == expected


def test_cli_splits_the_cpu_unless_told():
    code = """
import json, os, jax
from saliency_jax.app import cli
cli._split_cpu({})
print(json.dumps(dict(devices=len(jax.devices()), cores=len(os.sched_getaffinity(0)))))
"""
    auto = _fresh(code.format(None))
    assert auto["devices"] == auto["cores"]
    assert _fresh(code.format(3))["devices"] == 3
    kept = _fresh(code.format(None), XLA_FLAGS="--xla_force_host_platform_device_count=3")
    assert kept["devices"] == 3


def test_cli_option_is_parsed_and_checked():
    from saliency_jax.app import cli

    args = cli.build_parser().parse_args(["bench", "--cpu-devices", "2"])
    assert args.cpu_devices == 2
    assert cli.main(["bench", "--cpu-devices", "0"]) == 2  # refused by the parser


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_num_devices(bad):
    with pytest.raises(ValueError, match="num_devices must be a positive integer or None"):
        sharding.set_cpu_devices(bad)
