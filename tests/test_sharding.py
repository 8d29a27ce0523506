"""The sharding layer's helpers in one process (multi-device and multi-process: test_multihost)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saliency_jax._src import sharding


def _rows(operands, indices, valid):
    scale, offset = operands
    return {"square": jnp.where(valid, scale * indices.astype(jnp.float32) ** 2, 0.0),
            "pair": jnp.stack([indices, indices + offset], axis=-1)}


@pytest.mark.parametrize("num_items,chunk_size", [(1, 4), (10, 3), (12, 4), (7, 100)])
def test_item_map_equals_a_loop_whatever_the_chunking(num_items, chunk_size):
    rows = jax.jit(lambda s, o: sharding.sharded_item_map(
        _rows, (s, o), num_items=num_items, chunk_size=chunk_size))(2.0, 5)
    i = np.arange(num_items)
    np.testing.assert_array_equal(rows["square"], 2.0 * i.astype(np.float32) ** 2)
    np.testing.assert_array_equal(rows["pair"], np.stack([i, i + 5], axis=-1))


def test_item_map_vmaps():
    f = lambda s: sharding.sharded_item_map(_rows, (s, 0), num_items=5, chunk_size=2)  # noqa: E731
    got = jax.vmap(f)(jnp.array([1.0, 3.0]))["square"]
    np.testing.assert_array_equal(got, np.array([1.0, 3.0])[:, None] * np.arange(5.0) ** 2)


def test_item_map_rejects_bad_sizes():
    with pytest.raises(ValueError, match="num_items"):
        sharding.sharded_item_map(_rows, (1.0, 0), num_items=0, chunk_size=2)


def test_replicate_and_shard_batch_keep_values():
    tree = {"x": np.arange(8.0).reshape(4, 2), "n": 3, "y": jnp.ones((4,))}
    for put in (sharding.replicate, sharding.shard_batch):
        out = put(tree)
        assert out["n"] == 3
        got = sharding.gather(out)
        np.testing.assert_array_equal(got["x"], tree["x"])
        np.testing.assert_array_equal(got["y"], np.ones(4))
    sharded = sharding.shard_batch(tree)["x"]
    assert len(sharded.sharding.device_set) == jax.device_count()


@pytest.mark.parametrize("tree,match", [
    ({"x": np.zeros((4, 2)), "y": np.zeros((3,))}, "leading axis"),
    (np.float32(1.0), "leading axis"),
])
def test_shard_batch_rejects_mismatched_leaves(tree, match):
    with pytest.raises(ValueError, match=match):
        sharding.shard_batch(tree)


def test_shard_batch_rejects_a_batch_that_does_not_split():
    devices = [jax.devices()[0]] * 1
    sharding.shard_batch(np.zeros((3, 2)), devices)  # one device: anything splits
    fake = list(jax.devices()) * 2  # a batch of 3 cannot split over 2k devices
    with pytest.raises(ValueError, match="multiple of"):
        sharding.shard_batch(np.zeros((3, 2)), fake)
