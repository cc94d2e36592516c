"""Input validation shared by the companion modules.

JAX checks almost nothing at run time: an out-of-range integer index is silently
clamped, a NaN flows through every operation, and a shape mismatch may broadcast into a
wrong but valid result. These helpers run at the *eager boundary* (data loading and the
public functions, on concrete values) and raise errors that name both what was expected
and what was found. Under `jax.jit` values are abstract tracers, so value checks are
skipped there and only shapes and dtypes are checked: validate your data once, before
the jitted training loop.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.typing import ArrayLike

__all__ = ["check_finite", "check_labels", "is_concrete"]


def is_concrete(x: object) -> bool:
    """True unless ``x`` is an abstract tracer (inside ``jit``/``grad``/``vmap``)."""
    return not isinstance(x, jax.core.Tracer)


def check_labels(labels: ArrayLike, num_classes: int, *, name: str = "labels") -> None:
    """Raise unless ``labels`` are integers in ``[0, num_classes)``.

    Args:
        labels: integer class labels of any shape.
        num_classes: the number of classes ``C``.
        name: how the argument is called in error messages.

    Raises:
        TypeError: if the labels are not of an integer dtype (floats, booleans).
        ValueError: if a concrete label lies outside ``[0, num_classes)``; the message
            names the offending value and its position.

    Examples:
        >>> check_labels([0, 9, 3], num_classes=10)
        >>> check_labels([0, 10], num_classes=10)
        Traceback (most recent call last):
        ...
        ValueError: labels must lie in [0, 10); found 10 at index 1
    """
    dtype = (
        np.dtype(labels.dtype) if hasattr(labels, "dtype") else np.asarray(labels).dtype
    )
    if not np.issubdtype(dtype, np.integer):
        raise TypeError(
            f"{name} must have an integer dtype (class indices); got dtype {dtype}"
        )
    if not is_concrete(labels):
        return  # traced inside jit: values unknown here, see the module docstring
    values = np.asarray(labels)
    if values.size == 0:
        return
    bad = (values < 0) | (values >= num_classes)
    if bad.any():
        index, value = _first(bad, values)
        raise ValueError(
            f"{name} must lie in [0, {num_classes}); found {value} at index {index}"
        )


def check_finite(x: ArrayLike, *, name: str = "input") -> None:
    """Raise ``ValueError`` if a concrete ``x`` holds NaN or ±inf: how many, and where.

    Examples:
        >>> check_finite([1.0, 2.0])
        >>> check_finite([1.0, float("nan")], name="images")
        Traceback (most recent call last):
        ...
        ValueError: images must be finite; found 1 non-finite value(s), the first at
            index 1: nan
    """
    if not is_concrete(x):
        return
    values = np.asarray(x)
    if not np.issubdtype(values.dtype, np.inexact):
        return
    bad = ~np.isfinite(values)
    if bad.any():
        index, value = _first(bad, values)
        raise ValueError(
            f"{name} must be finite; found {int(bad.sum())} non-finite value(s), "
            f"the first at index {index}: {value}"
        )


def _first(bad: np.ndarray, values: np.ndarray) -> tuple[int | tuple[int, ...], object]:
    # The first flagged position (an int for 1-D arrays, a tuple of ints otherwise) and
    # the value there, for the error message.
    where = np.argwhere(bad)[0]
    index = int(where[0]) if values.ndim == 1 else tuple(int(i) for i in where)
    return index, values[tuple(where)]
