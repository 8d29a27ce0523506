"""Sums over many items (masks, perturbations), a chunk at a time, split across devices.

Monte-Carlo explainers and metrics reduce a per-item quantity over ``N`` items that are
generated from their index (``fold_in(key, index)``). :func:`sharded_chunk_sum` computes

    total = sum_{chunks c} fn(operands, indices_c, valid_c)

where chunk ``c`` holds items ``c * chunk, ..., c * chunk + chunk - 1``. The chunks are split
over a 1-D mesh of the devices (``jax.shard_map``): device ``d`` runs a ``lax.scan`` over its
contiguous share of chunk indices, accumulating in place, and the per-device sums are added
with ``psum``. Memory is one chunk per device whatever ``N``; the result does not depend on the
chunk size or the number of devices except for float summation order.

``N`` need not be a multiple of the chunk size: the last chunk (and any whole chunks added to
give every device the same number) holds indices ``>= N``, flagged ``valid = False``; ``fn`` must
give them zero weight (``jnp.where(valid, ...)``, not a multiplication, so that a NaN score on a
padding item cannot leak in).

Transformations: the function may be called under ``jax.jit`` and ``jax.vmap``. Under ``vmap``
(e.g. over images), the batched operands stay replicated on every device and each device runs
its share of chunks for the whole batch of images: the item (mask) axis is what is sharded,
never the image axis. The mask axis is the long one (thousands of masks against a handful of
images), so this keeps every device busy even for a single image.

Placement: the computation spans all devices, so a concrete argument committed to one device
(``jax.device_put(x, jax.devices()[1])``) must first be put on all of them: public functions
call :func:`replicate` on their array arguments outside ``jit``. Under the caller's own ``jit``
that is the caller's business. With ``jax.distributed`` the default devices are every host's
(the same code path; not tested here on several hosts).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

_AXIS = "items"


def _local_sum(fn, operands, chunk_ids, *, num_items: int, chunk: int):
    """``sum_c fn(operands, indices_c, valid_c)`` over ``chunk_ids`` with a ``lax.scan``."""

    def contribution(chunk_id):
        indices = chunk_id * chunk + jnp.arange(chunk, dtype=jnp.int32)
        return fn(operands, indices, indices < num_items)

    shapes = jax.eval_shape(contribution, chunk_ids[0])
    init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def body(total, chunk_id):
        return jax.tree.map(jnp.add, total, contribution(chunk_id)), None

    total, _ = jax.lax.scan(body, init, chunk_ids)
    return total


def sharded_chunk_sum(
    fn: Callable,
    operands,
    *,
    num_items: int,
    chunk_size: int,
    devices: Sequence[jax.Device] | None = None,
):
    """``sum over items [0, num_items)`` of ``fn``, a chunk at a time, chunks split over devices.

    Args:
      fn: ``fn(operands, indices: i32[chunk], valid: bool[chunk]) -> pytree of arrays``, the
        sum of the chunk's items. Items with ``valid == False`` (indices ``>= num_items``) are
        padding and must contribute zero. ``fn`` must not close over traced values: pass
        them in ``operands``.
      operands: a pytree of arrays (model parameters, image, key, ...), replicated on every
        device (outside ``jit``, pass concrete inputs through :func:`replicate` first).
      num_items: ``N >= 1`` (static).
      chunk_size: items per chunk (static); clamped to ``N``.
      devices: the devices to split the chunks over; default ``jax.devices()``. Each device
        runs ``ceil(num_chunks / num_devices)`` chunks (padding chunks when there are fewer
        chunks than devices).

    Returns:
      The pytree ``fn`` returns, summed over all valid items (replicated).
    """
    if num_items < 1 or chunk_size < 1:
        raise ValueError(f"num_items and chunk_size must be >= 1, got {num_items}, {chunk_size}")
    chunk = min(int(chunk_size), int(num_items))
    num_chunks = math.ceil(num_items / chunk)
    devices = _devices(devices)
    # Every device takes the same number of chunks (the padding chunks are all invalid), so
    # the mesh is always all the devices, matching what replicate() puts the operands on.
    per_device = math.ceil(num_chunks / len(devices))
    chunk_ids = jnp.arange(len(devices) * per_device, dtype=jnp.int32)

    if len(devices) == 1:
        return _local_sum(fn, operands, chunk_ids, num_items=num_items, chunk=chunk)

    def per_device_sum(operands, local_ids):
        total = _local_sum(fn, operands, local_ids, num_items=num_items, chunk=chunk)
        return jax.tree.map(lambda t: jax.lax.psum(t, _AXIS), total)

    return jax.shard_map(
        per_device_sum,
        mesh=item_mesh(devices),
        in_specs=(PartitionSpec(), PartitionSpec(_AXIS)),
        out_specs=PartitionSpec(),
        check_vma=False,
    )(operands, chunk_ids)


_DEFAULT_DEVICES = jax.make_user_context(default_value=None)


def use_devices(devices: Sequence[jax.Device]):
    """Context manager: the devices that ``devices=None`` means inside the block.

    By default the item axis is split over all of ``jax.devices()`` (every process's devices
    under ``jax.distributed``). A process that works alone on its own images (a shard of a
    dataset-wide evaluation) scopes every explainer and metric to its own devices with
    ``with use_devices(jax.local_devices()): ...``. The choice is part of ``jax.jit``'s cache
    key (``jax.make_user_context``): a function traced inside the block is traced again
    outside it.
    """
    devices = tuple(devices)
    if not devices or not all(isinstance(d, jax.Device) for d in devices):
        raise ValueError(f"devices must be a non-empty sequence of jax.Device, got {devices!r}")
    return _DEFAULT_DEVICES(devices)


def _devices(devices) -> list:
    return list((_DEFAULT_DEVICES.value or jax.devices()) if devices is None else devices)


def item_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The 1-D mesh (axis ``"items"``) the chunks are split over; default all devices."""
    return Mesh(np.asarray(_devices(devices)), (_AXIS,))


def replicate(tree, devices: Sequence[jax.Device] | None = None):
    """Put the concrete array leaves of ``tree`` on every device of :func:`item_mesh`.

    Call it outside ``jit`` on the operands of a function that uses :func:`sharded_chunk_sum`:
    an argument committed to one device (``jax.device_put(x, jax.devices()[1])``) cannot enter
    a computation over all devices. A no-op with one device, for tracers, and for arrays
    already replicated there.
    """
    devices = _devices(devices)
    if len(devices) == 1:
        return tree
    replicated = NamedSharding(item_mesh(devices), PartitionSpec())

    def put(leaf):
        if isinstance(leaf, jax.core.Tracer) or not isinstance(leaf, jax.Array | np.ndarray):
            return leaf
        return jax.device_put(leaf, replicated)

    return jax.tree.map(put, tree)
