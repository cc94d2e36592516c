"""How the book's training steps use a CPU's cores (chapters 5 and 6).

A training step of the book's MLP is a chain of *small* matrix products (the largest is
``(64, 784) @ (784, 128)``), and XLA:CPU's matrix library gains little from splitting
one product this small across cores. XLA also runs *independent* operations of a
compiled step at the same time, one per core. So :func:`batch_groups` splits a batch
into one group of rows per core, each group its own forward and backward pass
(``groups`` in :func:`companion.sgd.loss_fn` and :func:`companion.nnx_steps.loss_fn`):
the same loss, summed in another order, as products that do not wait for each other.
Chapter 5 times it.

On one core, or on another backend (a GPU runs a whole product across its many cores),
one group.
"""

from __future__ import annotations

import os

import jax

__all__ = ["batch_groups", "row_groups", "threads"]


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
