"""One group of a batch's rows per core: an opt-in CPU speed path.

A training step of the book's models is a chain of *small* matrix products (the MLP's
largest is ``(64, 784) @ (784, 128)``), and XLA:CPU's matrix library gains little from
splitting one product this small across cores. XLA also runs *independent* operations of
a compiled step at the same time, one per core. So :func:`batch_groups` splits a batch
into one group of rows per core, each group its own forward and backward pass
(:func:`grouped_loss_fn`, for the MLP's loss and the NNX models' alike;
:func:`grouped_scan_epoch`): the same loss, summed in another order, as products that do
not wait for each other. Nothing the chapters teach uses it by default;
``python -m companion.bench`` times it.

On one core, or on another backend (a GPU runs a whole product across its many cores),
one group.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp

from companion import mlp, sgd
from companion.batching import batch_indices

__all__ = [
    "batch_groups",
    "grouped_loss_fn",
    "grouped_scan_epoch",
    "row_groups",
    "threads",
]


def threads() -> int:
    """The number of cores this process may run on (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def batch_groups(batch_size: int, min_rows: int = 32) -> int:
    """How many equal groups of rows to split a batch of ``batch_size`` into: one per
    core on a CPU.

    The largest divisor of ``batch_size`` that is at most :func:`threads` and leaves at
    least ``min_rows`` rows per group (below some size a product is not worth a core);
    1 on any other backend.

    Examples:
        >>> batch_groups(1)
        1
    """
    if batch_size < 1 or min_rows < 1:
        raise ValueError(
            f"batch_size and min_rows must be positive; got {batch_size}, {min_rows}"
        )
    if jax.default_backend() != "cpu":
        return 1
    most = max(1, min(threads(), batch_size // min_rows))
    return max(g for g in range(1, most + 1) if batch_size % g == 0)


def row_groups(batch_size: int, groups: int) -> list[slice]:
    """The ``groups`` equal, consecutive row ranges of a batch of ``batch_size``.

    ``ValueError`` unless ``groups`` is a positive divisor of ``batch_size``.

    Examples:
        >>> row_groups(64, 2)
        [slice(0, 32, None), slice(32, 64, None)]
    """
    if groups < 1 or batch_size % groups:
        raise ValueError(
            f"groups must be a positive divisor of the batch size {batch_size}; "
            f"got {groups}"
        )
    rows = batch_size // groups
    return [slice(g * rows, (g + 1) * rows) for g in range(groups)]


def grouped_loss_fn(loss_fn: Callable, groups: int) -> Callable:
    """``loss_fn`` computed on ``groups`` equal groups of the batch's rows, one call
    each: the mean of the groups' mean losses, which is the batch's mean loss summed in
    another order.

    ``loss_fn(model, x, y, *args)`` returns a batch's mean loss, or ``(mean loss,
    per-row output)`` as :func:`companion.nnx_steps.loss_fn` does (its logits); the
    grouped function returns the same, the outputs put back together in row order. For
    the MLP's :func:`companion.sgd.loss_fn` and the NNX models' loss alike, and any
    model that treats examples independently (not one that mixes them, as batch
    normalisation does). ``groups`` must divide the batch.

    Examples:
        >>> params = mlp.init_params([4, 3], jax.random.key(0))
        >>> x, y = jnp.linspace(-1, 1, 24).reshape(6, 4), jnp.array([0, 1, 2, 0, 1, 2])
        >>> whole = sgd.loss_fn(params, x, y)
        >>> bool(jnp.allclose(grouped_loss_fn(sgd.loss_fn, 3)(params, x, y), whole))
        True
    """

    def loss(model, x, y, *args):
        parts = row_groups(x.shape[0], groups)
        outs = [loss_fn(model, x[p], y[p], *args) for p in parts]
        if not isinstance(outs[0], tuple):
            return sum(outs) / len(parts)  # equal groups: the mean of the means
        total = sum(value for value, _ in outs) / len(parts)
        return total, jnp.concatenate([rows for _, rows in outs])

    return loss


@functools.partial(jax.jit, static_argnames=("batch_size", "groups"))
def _grouped_epoch(params, x, y, lr, key, *, batch_size, groups):
    loss_fn = grouped_loss_fn(sgd.loss_fn, groups)

    def body(params, idx):  # idx: (B,) rows of this step's batch
        loss, grads = jax.value_and_grad(loss_fn)(params, x[idx], y[idx])
        return jax.tree.map(lambda p, g: p - lr * g, params, grads), loss

    batches = batch_indices(key, y.shape[0], batch_size)  # (steps, B)
    params, losses = jax.lax.scan(body, params, batches)
    return params, jnp.mean(losses)


def grouped_scan_epoch(
    params: mlp.Params,
    x: jax.Array,
    y: jax.Array,
    *,
    lr: float,
    batch_size: int,
    groups: int | None = None,
    key: jax.Array | None = None,
) -> tuple[mlp.Params, jax.Array]:
    """``sgd.train_epoch(..., mode="scan")`` with each batch in row groups (the
    benchmark's ``scan+groups``).

    The same batches and the same update as the chapter's scanned epoch, on data
    already validated (``x`` ``(N, 784)``, ``y`` ``(N,)`` on the device); ``groups``
    ``None``: :func:`batch_groups`. Returns ``(new_params, mean_loss)``.
    """
    groups = batch_groups(batch_size) if groups is None else groups
    row_groups(batch_size, groups)  # checks that groups divides the batch
    return _grouped_epoch(params, x, y, lr, key, batch_size=batch_size, groups=groups)
