"""A ``lax.cond`` that skips its costly branch under ``vmap`` too."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def skip_cond(skip, skipped_fn, compute_fn, operands):
    """``skipped_fn(operands)`` if ``skip`` else ``compute_fn(operands)``; ``skip``: ``bool[]``.

    For a cheap ``skipped_fn`` and a costly ``compute_fn`` (model queries). Unbatched it is
    ``lax.cond``. Under ``vmap`` with a batched ``skip``, ``lax.cond`` becomes a ``select``
    that runs both branches on operands all broadcast to the batch, model weights included
    (a grouped convolution per element: 2.5-4x slower per image, measured on IASSA). Here
    ``compute_fn`` runs batched over the operands that are batched, unless every element
    skips, and each element takes its own branch's result.
    """

    @jax.custom_batching.custom_vmap
    def run(skip, operands):
        return jax.lax.cond(skip, skipped_fn, compute_fn, operands)

    @run.def_vmap
    def run_batched(axis_size, in_batched, skip, operands):
        skip_batched, ops_batched = in_batched
        skip = skip if skip_batched else jnp.broadcast_to(skip, (axis_size,))
        axes = (jax.tree.map(lambda b: 0 if b else None, ops_batched),)
        skipped = lambda ops: jax.vmap(skipped_fn, in_axes=axes, axis_size=axis_size)(ops)  # noqa: E731

        def compute(ops):
            done, out = skipped(ops), jax.vmap(compute_fn, in_axes=axes, axis_size=axis_size)(ops)
            return jax.tree.map(
                lambda d, o: jnp.where(skip.reshape((-1,) + (1,) * (o.ndim - 1)), d, o), done, out)

        out = jax.lax.cond(jnp.all(skip), skipped, compute, operands)
        return out, jax.tree.map(lambda _: True, out)

    return run(skip, operands)
