"""One sharding layer for every method: item sums and maps over all devices of all processes.

Monte-Carlo explainers and metrics reduce a per-item quantity over ``N`` items that are
generated from their index (``fold_in(key, index)``). :func:`sharded_chunk_sum` computes

    total = sum_{chunks c} fn(operands, indices_c, valid_c)

where chunk ``c`` holds items ``c * chunk, ..., c * chunk + chunk - 1``. The chunks are split
over a 1-D mesh of the devices (``jax.shard_map``): device ``d`` runs a ``lax.scan`` over its
contiguous share of chunk indices, accumulating in place, and the per-device sums are added
with ``psum``. Memory is one chunk per device whatever ``N``; the result does not depend on the
chunk size or the number of devices except for float summation order. :func:`sharded_item_map`
is the same split for per-item outputs (a look-ahead, one row per image): exact, gathered.

``N`` need not be a multiple of the chunk size: the last chunk (and any whole chunks added to
give every device the same number) holds indices ``>= N``, flagged ``valid = False``; ``fn`` must
give them zero weight (``jnp.where(valid, ...)``, not a multiplication, so that a NaN score on a
padding item cannot leak in).

Transformations: the function may be called under ``jax.jit`` and ``jax.vmap``. Under ``vmap``
(e.g. over images), the batched operands stay replicated on every device and each device runs
its share of chunks for the whole batch of images: the item (mask) axis is what is sharded,
never the image axis. The mask axis is the long one (thousands of masks against a handful of
images), so this keeps every device busy even for a single image.

**Placement, one or many processes.** The mesh is every device of every process
(``jax.devices()``; under ``jax.distributed`` that includes other hosts' devices). A concrete
array can only be placed on the devices its own process addresses, so the public functions pass
their array arguments through :func:`replicate` outside ``jit``: it builds *global* arrays from
each process's local copy (``jax.make_array_from_process_local_data``; every process must call
with the same values, as SPMD programs do) and leaves arrays already global alone. The results
are then fully replicated global arrays: ``np.asarray`` works on every process and they may be
passed straight to another method. :func:`shard_batch` puts a batch (images, environments)
sharded along its leading axis; :func:`gather` fetches any result, sharded or not, as numpy on
every process. Under the caller's own ``jit`` the placement of its arguments is the caller's
business (pass them through :func:`replicate` or :func:`shard_batch` first).
"""

from __future__ import annotations

import math
import os
import re
import warnings
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


def _plan(num_items: int, chunk_size: int, devices):
    """``(chunk, devices, chunk_ids)``: the chunk size (clamped to ``N``), the devices, and the
    chunk indices, the same number per device (the padding chunks are all invalid), so the
    mesh is always all the devices, matching what :func:`replicate` puts the operands on."""
    if num_items < 1 or chunk_size < 1:
        raise ValueError(f"num_items and chunk_size must be >= 1, got {num_items}, {chunk_size}")
    chunk = min(int(chunk_size), int(num_items))
    devices = _devices(devices)
    per_device = math.ceil(math.ceil(num_items / chunk) / len(devices))
    return chunk, devices, jnp.arange(len(devices) * per_device, dtype=jnp.int32)


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
      devices: the devices to split the chunks over; default ``jax.devices()`` (all devices of
        all processes under ``jax.distributed``). Each device
        runs ``ceil(num_chunks / num_devices)`` chunks (padding chunks when there are fewer
        chunks than devices).

    Returns:
      The pytree ``fn`` returns, summed over all valid items (replicated).
    """
    chunk, devices, chunk_ids = _plan(num_items, chunk_size, devices)

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


def _cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def cpu_device_count_asked() -> int | None:
    """The CPU device count already asked for, by ``jax_num_cpu_devices`` (or its environment
    variable ``JAX_NUM_CPU_DEVICES``) or by ``XLA_FLAGS``'
    ``--xla_force_host_platform_device_count``; ``None`` if neither sets it."""
    if jax.config.jax_num_cpu_devices > 0:
        return int(jax.config.jax_num_cpu_devices)
    found = re.findall(r"--xla_force_host_platform_device_count=(\d+)",
                       os.environ.get("XLA_FLAGS", ""))
    return int(found[-1]) if found else None


def set_cpu_devices(num_devices: int | None = None) -> int:
    """Split the host CPU into ``num_devices`` JAX devices, so that chunks run in parallel.

    XLA:CPU runs one program at a time per device, and its intra-op threads leave cores idle
    between the multi-threaded convolutions (ResNet50 224², 2 cores: 1.45 of 2 busy). With one
    device per core, every explainer and metric splits its chunks over them
    (:func:`sharded_chunk_sum`) and they run concurrently: RISE on ResNet50 1.4× faster on 2
    cores, the same map up to float summation order (``benchmarks/bench_peers.py``). JAX fixes
    the count when it first computes (``jax_num_cpu_devices``): call this right after
    ``import jax``. Devices of other platforms (GPU, TPU) are not affected.

    Args:
      num_devices: CPU devices, ``>= 1``. ``None``: the count already asked for by
        ``JAX_NUM_CPU_DEVICES`` / ``XLA_FLAGS`` (:func:`cpu_device_count_asked`), else one per
        core this process may use.

    Returns:
      The number of CPU devices. Called without ``num_devices`` after JAX has computed, it
      keeps the devices JAX has, with a warning, and returns their number.

    Raises:
      ValueError: ``num_devices`` is not a positive integer.
      RuntimeError: ``num_devices`` differs from the CPU devices JAX has already computed with.
    """
    if num_devices is not None and (isinstance(num_devices, bool)
                                    or not isinstance(num_devices, int | np.integer)
                                    or num_devices < 1):
        raise ValueError(f"num_devices must be a positive integer or None, got {num_devices!r}")
    n = int(num_devices) if num_devices is not None else (cpu_device_count_asked() or _cores())
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:  # the backends exist: fine if they already have n CPU devices
        have = len(jax.devices("cpu"))
        if have != n and num_devices is None:
            warnings.warn(f"set_cpu_devices(): JAX has already computed, with {have} CPU "
                          f"device(s); kept (call it right after `import jax` for {n})",
                          stacklevel=2)
            return have
        if have != n:
            raise RuntimeError(
                f"set_cpu_devices({num_devices!r}) wants {n} CPU devices but JAX has already "
                f"computed with {have}: call it right after `import jax`, before any JAX "
                "operation") from None
    return n


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



def _is_concrete_array(leaf) -> bool:
    return (not isinstance(leaf, jax.core.Tracer)
            and isinstance(leaf, jax.Array | np.ndarray | np.generic))


def _to_global(leaf, sharding: NamedSharding, global_shape=None):
    """``leaf`` as a global array with ``sharding``: built from this process's copy, or
    resharded when it already spans other processes' devices."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        if leaf.sharding.is_equivalent_to(sharding, leaf.ndim):
            return leaf
        return jax.device_put(leaf, sharding)  # global -> global: a collective reshard
    if isinstance(leaf, jax.Array) and leaf.sharding.is_equivalent_to(sharding, leaf.ndim):
        return leaf
    return jax.make_array_from_process_local_data(sharding, leaf, global_shape)


def replicate(tree, devices: Sequence[jax.Device] | None = None):
    """The concrete array leaves of ``tree`` replicated on every device of :func:`item_mesh`.

    Call it outside ``jit`` on the operands of a function that uses :func:`sharded_chunk_sum`:
    an argument committed to one device (``jax.device_put(x, jax.devices()[1])``) cannot enter
    a computation over all devices. Under ``jax.distributed`` the result is a global array
    built from each process's local copy (all processes must pass the same values); arrays
    that already span other processes are resharded, not copied from the host. A no-op with
    one device, for tracers, non-array leaves, and arrays already replicated there.
    """
    devices = _devices(devices)
    if len(devices) == 1:
        return tree
    replicated = NamedSharding(item_mesh(devices), PartitionSpec())
    return jax.tree.map(
        lambda leaf: _to_global(leaf, replicated) if _is_concrete_array(leaf) else leaf, tree)


def shard_batch(tree, devices: Sequence[jax.Device] | None = None, *,
                process_local: bool = False):
    """The array leaves of ``tree`` sharded along their leading (batch) axis over all devices.

    For batches of images or environments fed to the caller's own ``jit(vmap(...))``: each
    device holds ``batch / num_devices`` rows. Outside ``jit`` only.

    Args:
      tree: a pytree of concrete arrays with the same leading size ``n`` (non-array leaves are
        left alone).
      devices: as :func:`item_mesh`; default all devices of all processes.
      process_local: ``False`` (default): every process passes the whole batch (the same
        values); ``True``: each process passes only its own rows, ``n`` per process, in
        ``jax.process_index()`` order, and the global batch has ``n * process_count()`` rows.

    Raises:
      ValueError: a leaf without a leading axis, leaves of different leading sizes, or a
        global batch that is not a multiple of the number of devices.
    """
    devices = _devices(devices)
    leaves = [leaf for leaf in jax.tree.leaves(tree) if _is_concrete_array(leaf)]
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
    if None in sizes or len(sizes) > 1:
        raise ValueError(f"shard_batch needs array leaves with one common leading axis, got "
                         f"shapes {[np.shape(leaf) for leaf in leaves]}")
    if not leaves:
        return tree
    (n,) = sizes
    processes = len({d.process_index for d in devices})
    total = n * processes if process_local else n
    if total % len(devices):
        raise ValueError(f"the batch of {total} rows must be a multiple of the {len(devices)} "
                         "devices it is split over (pad it)")
    sharded = NamedSharding(item_mesh(devices), PartitionSpec(_AXIS))

    def put(leaf):
        if not _is_concrete_array(leaf):
            return leaf
        return _to_global(leaf, sharded, (total, *np.shape(leaf)[1:]))

    return jax.tree.map(put, tree)


def gather(tree):
    """Every array leaf of ``tree`` as a numpy array holding its full value, on every process.

    Fully replicated and process-local arrays are read directly; arrays sharded over other
    processes' devices (the output of a ``jit`` over a :func:`shard_batch` input) are
    all-gathered (``multihost_utils.process_allgather``): under ``jax.distributed`` every
    process must call it. Non-array leaves are left alone.
    """
    from jax.experimental import multihost_utils

    def fetch(leaf):
        if not _is_concrete_array(leaf):
            return leaf
        if isinstance(leaf, jax.Array) and not (leaf.is_fully_addressable
                                                or leaf.is_fully_replicated):
            return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
        return np.asarray(leaf)

    return jax.tree.map(fetch, tree)


def sharded_item_map(
    fn: Callable,
    operands,
    *,
    num_items: int,
    chunk_size: int,
    devices: Sequence[jax.Device] | None = None,
):
    """``fn``'s per-item outputs for items ``[0, num_items)``, stacked, chunks split over devices.

    The map counterpart of :func:`sharded_chunk_sum` (same chunks, same split): device ``d``
    maps ``fn`` over its contiguous share of chunks with a ``lax.scan``, then the shares are
    all-gathered, so every device holds the whole result and no value is summed (exact).

    Args:
      fn: ``fn(operands, indices: i32[chunk], valid: bool[chunk]) -> pytree of arrays``, each
        with leading axis ``chunk`` (one row per item). Rows of padding items (``valid ==
        False``) are dropped.
      operands, num_items, chunk_size, devices: as :func:`sharded_chunk_sum`.

    Returns:
      The pytree ``fn`` returns, each leaf with leading axis ``num_items`` (replicated).
    """
    chunk, devices, chunk_ids = _plan(num_items, chunk_size, devices)

    def local_map(operands, local_ids):
        def body(_, chunk_id):
            indices = chunk_id * chunk + jnp.arange(chunk, dtype=jnp.int32)
            return None, fn(operands, indices, indices < num_items)

        _, rows = jax.lax.scan(body, None, local_ids)  # leaves [chunks, chunk, ...]
        return jax.tree.map(lambda r: r.reshape(-1, *r.shape[2:]), rows)

    if len(devices) == 1:
        rows = local_map(operands, chunk_ids)
    else:
        def per_device_rows(operands, local_ids):
            rows = local_map(operands, local_ids)
            return jax.tree.map(lambda r: jax.lax.all_gather(r, _AXIS, tiled=True), rows)

        rows = jax.shard_map(
            per_device_rows,
            mesh=item_mesh(devices),
            in_specs=(PartitionSpec(), PartitionSpec(_AXIS)),
            out_specs=PartitionSpec(),
            check_vma=False,
        )(operands, chunk_ids)
    return jax.tree.map(lambda r: r[:num_items], rows)
