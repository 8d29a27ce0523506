"""Placing inputs and fetching results across devices and processes.

The explainers and metrics split their mask/step/window axis over every device of every process
(``jax.devices()``) by themselves; these helpers are for a caller's own batched, jitted code and
for ``jax.distributed`` runs:

* :func:`replicate`: concrete arrays as global arrays replicated on every device (every process
  passes the same values);
* :func:`shard_batch`: a batch (images, environments) sharded along its leading axis over every
  device, from the whole batch or from each process's own rows;
* :func:`gather`: any result, sharded or not, as numpy on every process;
* :func:`set_cpu_devices`: on a CPU, one JAX device per core (call it right after
  ``import jax``), so that the chunks of every explainer and metric run in parallel;
* :func:`use_devices`: a context in which the explainers split their items over the given
  devices only (``with sj.sharding.use_devices(jax.local_devices()):`` for a process that works
  alone on its share of a dataset); part of ``jax.jit``'s cache key.
"""

from saliency_jax._src.sharding import (
    cpu_device_count_asked,
    gather,
    item_mesh,
    replicate,
    set_cpu_devices,
    shard_batch,
    use_devices,
)

__all__ = ["cpu_device_count_asked", "gather", "item_mesh", "replicate", "set_cpu_devices",
           "shard_batch", "use_devices"]
