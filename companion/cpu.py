"""An opt-in CPU speed path: one group of a batch's rows per core (the benchmark).

A training step of the book's MLP is a chain of *small* matrix products (the largest is
``(64, 784) @ (784, 128)``), and XLA:CPU's matrix library gains little from splitting
one product this small across cores. XLA also runs *independent* operations of a
compiled step at the same time, one per core. So :func:`batch_groups` splits a batch
into one group of rows per core, each group its own forward and backward pass
(:func:`grouped_loss_fn`, :func:`grouped_scan_epoch`): the same loss, summed in another
order, as products that do not wait for each other. A speed path for a CPU, opt-in:
nothing the chapters teach uses it by default; ``python -m companion.bench`` times it.

On one core, or on another backend (a GPU runs a whole product across its many cores),
one group.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp

from companion import mlp
from companion.batching import batch_indices
from companion.losses import softmax_cross_entropy_with_integer_labels

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
    least ``min_rows`` rows per group (below some size a product is not worth a core:
    chapter 5 times one group against two at several batch sizes); 1 on any other
    backend.

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


# --- Opt-in: the chapter-5 SGD epoch with each batch split into row groups ---------


def grouped_loss_fn(
    params: mlp.Params, x: jax.Array, y: jax.Array, groups: int
) -> jax.Array:
    """:func:`companion.sgd.loss_fn` with the batch split into ``groups`` row groups.

    Each group is its own forward pass: the same mean (its sum taken in another order),
    but the groups' products are independent, so XLA:CPU can run them on different
    cores at once. ``groups`` must divide ``B``.
    """
    total = 0.0
    for part in row_groups(x.shape[0], groups):  # x[part]: (B / groups, 784)
        logits = mlp.apply(params, x[part])
        total += jnp.sum(softmax_cross_entropy_with_integer_labels(logits, y[part]))
    return total / x.shape[0]


@functools.partial(jax.jit, static_argnames=("batch_size", "groups"))
def _grouped_epoch(params, x, y, lr, key, *, batch_size, groups):
    def body(params, idx):  # idx: (B,) rows of this step's batch
        loss, grads = jax.value_and_grad(grouped_loss_fn)(
            params, x[idx], y[idx], groups
        )
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
    """``sgd.train_epoch(..., mode="scan")`` with each batch in row groups: a CPU
    speed path (the benchmark's ``scan+groups``), opt-in.

    The same batches and the same update as the chapter's scanned epoch, on data
    already validated (``x`` ``(N, 784)``, ``y`` ``(N,)`` on the device); ``groups``
    ``None``: :func:`batch_groups`. Returns ``(new_params, mean_loss)``.
    """
    groups = batch_groups(batch_size) if groups is None else groups
    row_groups(batch_size, groups)  # checks that groups divides the batch
    return _grouped_epoch(params, x, y, lr, key, batch_size=batch_size, groups=groups)
