"""What a batch of data looks like (chapter 8): input statistics with warnings, and
where predictions go wrong.

- :func:`input_stats` — are the inputs normalised? (range, mean, spread, constant
  features, non-finite values, with warnings);
- :func:`confusion_matrix` — counts of each true class against each prediction.

:mod:`companion.diagnose` uses both on a model's data, and offers them under its name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from jax.typing import ArrayLike

from companion.checks import check_labels

__all__ = ["InputStats", "check_batch", "confusion_matrix", "input_stats"]


@dataclass(frozen=True)
class InputStats:
    """Statistics of a batch of inputs, over its finite values."""

    mean: float
    std: float
    min: float
    max: float
    constant_features: int  # features equal in every example: per-feature std is 0
    non_finite: int  # NaN or infinite values
    warnings: tuple[str, ...]  # what looks wrong, in words


def check_batch(x: ArrayLike, y: ArrayLike | None = None) -> tuple[np.ndarray, ...]:
    """Refuse an empty or non-numeric batch ``x`` ``(N, ...)``, or labels ``y`` that
    are not ``(N,)``; return them as numpy arrays."""
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"x must be a batch (N, features...); got shape {x.shape}")
    if len(x) == 0:
        raise ValueError("an empty batch: x has 0 examples")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(
        x.dtype, np.complexfloating
    ):
        raise TypeError(f"x must hold real numbers; got dtype {x.dtype}")
    if y is None:
        return (x,)
    y = np.asarray(y)
    if y.shape != (len(x),):
        raise ValueError(
            f"y must have shape ({len(x)},), one label per example; got {y.shape}"
        )
    return x, y


def input_stats(x: ArrayLike) -> InputStats:
    """Range, mean and spread of ``x`` ``(N, ...)``, with warnings when it looks
    unnormalised.

    Warnings: values beyond ±10 (raw pixels in [0, 255]: divide by 255); a mean more
    than twice the spread away from 0 (subtract the mean); NaN or infinite values.
    ``constant_features`` counts features with one value in every example: standardising
    those per feature divides 0 by 0.

    Examples:
        >>> input_stats(np.full((4, 3), 200.0)).warnings[0][:24]
        'values reach 200, far ou'
    """
    (x,) = check_batch(x)
    x = x.reshape(len(x), -1).astype(np.float64)
    finite = np.isfinite(x)
    values = x[finite]
    warnings = []
    if not finite.all():
        warnings.append(f"{int((~finite).sum())} values are NaN or infinite")
    if values.size == 0:
        return InputStats(*(4 * [math.nan]), 0, int((~finite).sum()), tuple(warnings))
    mean, std = float(values.mean()), float(values.std())
    lo, hi = float(values.min()), float(values.max())
    if max(abs(lo), abs(hi)) > 10:
        bytes_like = lo >= 0 and hi <= 255  # raw pixels
        hint = (
            "pixels in [0, 255]? divide by 255" if bytes_like else "check the scaling"
        )
        warnings.append(
            f"values reach {hi if abs(hi) >= abs(lo) else lo:g}, far outside the "
            f"[-1, 1] scale initialisations assume: {hint}"
        )
    elif abs(mean) > 2 * std:
        warnings.append(
            f"the mean {mean:.3g} is far from 0 for values of spread {std:.3g}: "
            "subtract the mean"
        )
    # one value in every example: a NaN or an infinity is not a value of the feature
    same = (x.max(axis=0) == x.min(axis=0)) & finite.all(axis=0)
    constant = int(same.sum()) if len(x) > 1 else 0
    return InputStats(
        mean, std, lo, hi, constant, int((~finite).sum()), tuple(warnings)
    )


def confusion_matrix(
    y_true: ArrayLike, y_pred: ArrayLike, num_classes: int
) -> np.ndarray:
    """Counts ``(C, C)``: row ``i``, column ``j`` = examples of class ``i`` predicted as
    ``j``.

    Examples:
        >>> confusion_matrix([0, 1, 1], [0, 0, 1], 2)
        array([[1, 0],
               [1, 1]])
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(
            f"y_true and y_pred must be 1-D of the same length; got {y_true.shape} "
            f"and {y_pred.shape}"
        )
    check_labels(y_true, num_classes, name="y_true")
    check_labels(y_pred, num_classes, name="y_pred")
    counts = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(counts, (y_true, y_pred), 1)
    return counts
