"""Minibatches: counting, validating and shuffling a dataset, and the per-epoch key.

What every training loop needs between :func:`companion.data.load_mnist` and a step:
:func:`check_dataset` (once, at the entry), :func:`epoch_key` and :func:`batch_indices`
(each epoch: chapter 5's shuffled full batches, as row indices), and :func:`batches` (a
plain iterator of batches, validated once).
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from companion.checks import check_finite, check_labels
from companion.data import NUM_CLASSES

__all__ = [
    "batch_indices",
    "batches",
    "check_dataset",
    "epoch_key",
    "full_batches",
    "num_batches",
]


def num_batches(n: int, batch_size: int, *, drop_last: bool = False) -> int:
    """How many batches :func:`batches` yields for ``n`` examples.

    Examples:
        >>> num_batches(100, 32), num_batches(100, 32, drop_last=True)
        (4, 3)
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive; got {batch_size}")
    return n // batch_size if drop_last else -(-n // batch_size)


def full_batches(n: int, batch_size: int) -> int:
    """Steps per epoch of a loop that skips the last partial batch; refused if none.

    Examples:
        >>> full_batches(1000, 64)
        15
    """
    steps = num_batches(n, batch_size, drop_last=True)
    if steps == 0:
        raise ValueError(
            f"batch_size {batch_size} is larger than the {n} examples: no full batch"
        )
    return steps


def batch_indices(key: jax.Array | None, n: int, batch_size: int) -> jax.Array:
    """The rows of each full batch of an epoch: ``(n // batch_size, batch_size)``.

    Row ``i`` holds the example indices of step ``i``: a random permutation of
    ``range(n)`` by ``key`` (``None``: in order), cut into full batches; the last
    ``n % batch_size`` examples of the permutation are left out, so every step has the
    same shape. Works under ``jit`` (``n`` and ``batch_size`` are static there).

    Examples:
        >>> batch_indices(None, 7, 3).tolist()
        [[0, 1, 2], [3, 4, 5]]
        >>> idx = batch_indices(jax.random.key(0), 10, 5)
        >>> idx.shape, sorted(idx.ravel().tolist()) == list(range(10))
        ((2, 5), True)
    """
    if not isinstance(batch_size, int | np.integer):
        raise TypeError(f"batch_size must be an integer; got {batch_size!r}")
    steps = full_batches(n, batch_size)  # refuses batch_size <= 0 or > n
    order = jnp.arange(n) if key is None else jax.random.permutation(key, n)
    return order[: steps * batch_size].reshape(steps, batch_size)


def check_dataset(
    x: ArrayLike,
    y: ArrayLike,
    *,
    name: str = "",
    num_classes: int = NUM_CLASSES,
    flat: bool = False,
) -> None:
    """Raise unless ``(x, y)`` has matching lengths, labels in range and finite inputs.

    The one check every entry point runs once, before any training (inside ``jit`` it
    cannot).

    Args:
        x: inputs ``(N, ...)`` (``(N, D)`` with ``flat=True``).
        y: integer labels ``(N,)`` in ``[0, num_classes)``.
        name: a prefix for the messages, e.g. ``"val_"``.
        num_classes: the number of classes.
        flat: require 2-D inputs.

    Raises:
        ValueError: shapes that do not match (both are named), a label out of range (its
            value and index are named), or a NaN/inf in ``x``.
        TypeError: labels that are not integers.

    Examples:
        >>> check_dataset(np.zeros((3, 784), np.float32), np.array([0, 9, 2]))
        >>> check_dataset(np.zeros((3, 784), np.float32), np.array([0, 9]))
        Traceback (most recent call last):
        ...
        ValueError: x must be (N, ...) and y (N,), the same N; got x (3, 784) and y (2,)
    """
    xs, ys = tuple(jnp.shape(x)), tuple(jnp.shape(y))
    ok_x = len(xs) == 2 if flat else len(xs) >= 1
    if not ok_x or len(ys) != 1 or ys[0] != xs[0]:
        wanted = "(N, D)" if flat else "(N, ...)"
        raise ValueError(
            f"{name}x must be {wanted} and {name}y (N,), the same N; "
            f"got {name}x {xs} and {name}y {ys}"
        )
    check_labels(
        y if isinstance(y, jax.Array) else np.asarray(y), num_classes, name=f"{name}y"
    )
    check_finite(x, name=f"{name}x")


def epoch_key(key: jax.Array | None, epoch: int) -> jax.Array | None:
    """The shuffling key of an epoch: ``fold_in(key, epoch)`` (``None`` stays ``None``).

    A function of the epoch alone, not of a split sequence: a run resumed at epoch ``e``
    derives the same key as one that went straight through. Both training loops use it
    (:func:`companion.training.fit`, :func:`companion.nnx_training.fit`).
    """
    return None if key is None else jax.random.fold_in(key, epoch)


def batches(
    x: ArrayLike,
    y: ArrayLike,
    batch_size: int,
    *,
    key: jax.Array | None = None,
    drop_last: bool = False,
    num_classes: int = NUM_CLASSES,
) -> Iterator[tuple[jax.Array, jax.Array]]:
    """Iterate over ``(x, y)`` minibatches, optionally shuffled by a JAX PRNG key.

    Inputs are validated once, before the first batch: matching lengths, integer labels
    in ``[0, num_classes)``, finite images.

    Args:
        x: inputs of shape ``(N, ...)``, e.g. ``(N, 784)``.
        y: integer labels of shape ``(N,)``.
        batch_size: examples per batch, ``> 0``.
        key: a PRNG key to shuffle with (the same key gives the same order); ``None``
            keeps order.
        drop_last: drop the last batch when it is smaller than ``batch_size``.
        num_classes: labels must lie in ``[0, num_classes)``.

    Yields:
        ``(xb, yb)`` with shapes ``(B, ...)`` and ``(B,)``, ``B <= batch_size``.

    Examples:
        >>> x, y = np.zeros((5, 2), np.float32), np.arange(5, dtype=np.int32)
        >>> [tuple(yb.tolist()) for _, yb in batches(x, y, 2)]
        [(0, 1), (2, 3), (4,)]
        >>> [tuple(yb.tolist()) for _, yb in batches(x, y, 2, drop_last=True)]
        [(0, 1), (2, 3)]
    """
    x_arr = x if isinstance(x, jax.Array) else np.asarray(x)
    y_arr = y if isinstance(y, jax.Array) else np.asarray(y)
    check_dataset(x_arr, y_arr, num_classes=num_classes)
    n = y_arr.shape[0]
    count = num_batches(n, batch_size, drop_last=drop_last)
    order = np.arange(n) if key is None else np.asarray(jax.random.permutation(key, n))
    for i in range(count):
        idx = order[i * batch_size : (i + 1) * batch_size]
        yield jnp.asarray(x_arr[idx]), jnp.asarray(y_arr[idx])
