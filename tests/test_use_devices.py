"""``sharding.use_devices``: the devices ``devices=None`` means, scoped, and part of jit's key."""

import jax
import jax.numpy as jnp
import pytest

from saliency_jax._src import sharding


def test_scoped_devices_and_jit_retrace():
    traces = []

    @jax.jit
    def f(x):
        traces.append(len(sharding._devices(None)))
        return x + 1

    one = jax.local_devices()[:1]
    f(jnp.float32(0))
    with sharding.use_devices(one):
        assert sharding._devices(None) == one
        assert sharding.item_mesh().devices.tolist() == one
        f(jnp.float32(0))  # another context: traced again, not served from the cache
    assert sharding._devices(None) == jax.devices()
    assert len(traces) == 2


def test_bad_devices():
    with pytest.raises(ValueError, match="devices must be a non-empty sequence"):
        sharding.use_devices([])
    with pytest.raises(ValueError, match="devices must be a non-empty sequence"):
        sharding.use_devices(["cpu:0"])
