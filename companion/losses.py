"""Chapter 3's losses: a numerically stable softmax, cross-entropy, MSE, an L2 penalty.

Public functions take ``ArrayLike`` and return ``jax.Array``. :func:`cross_entropy` is
the entry point a reader calls on raw input: it refuses float labels, labels out of
range and non-finite logits with a clear error (value checks need concrete values, so
they run outside ``jit``). :func:`softmax_cross_entropy_with_integer_labels` is its
kernel, per example, for training code on data validated once: it checks nothing that
costs a device→host copy, and an out-of-range label gives NaN rather than a plausible
wrong number.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from companion.checks import check_finite, check_labels, is_concrete

__all__ = [
    "cross_entropy",
    "cross_entropy_onehot",
    "l2_penalty",
    "log_softmax",
    "mse",
    "softmax",
    "softmax_cross_entropy_with_integer_labels",
]


def _shifted(logits: jax.Array, axis: int) -> jax.Array:
    # Subtracting the max leaves softmax unchanged (exp(z - m) / Σ exp(z - m) =
    # exp(z) / Σ exp(z)) and makes the largest exponent exp(0) = 1: no overflow, and at
    # least one term of the sum is 1, so the log of the sum never sees 0.
    # stop_gradient: the shift is a constant, its gradient 0.
    return logits - jax.lax.stop_gradient(jnp.max(logits, axis=axis, keepdims=True))


def softmax(logits: ArrayLike, axis: int = -1) -> jax.Array:
    r"""Probabilities from logits, computed without overflow.

    .. math::

        \mathrm{softmax}(z)_i = \frac{e^{z_i - \max_j z_j}}{\sum_k e^{z_k - \max_j z_j}}

    Args:
        logits: any shape, e.g. ``(B, C)``.
        axis: the class axis.

    Returns:
        Same shape as ``logits``; non-negative, summing to 1 along ``axis``.

    Examples:
        >>> softmax(jnp.array([1000.0, 1000.0]))  # the naive formula gives nan here
        Array([0.5, 0.5], dtype=float32)
    """
    shifted = _shifted(jnp.asarray(logits), axis)
    e = jnp.exp(shifted)
    return e / jnp.sum(e, axis=axis, keepdims=True)


def log_softmax(logits: ArrayLike, axis: int = -1) -> jax.Array:
    r"""Log-probabilities from logits, through a stable log-sum-exp.

    .. math::

        \log \mathrm{softmax}(z)_i = (z_i - m) - \log \sum_k e^{z_k - m},
        \quad m = \max_j z_j

    Unlike ``log(softmax(z))``, this never takes the log of an underflowed 0: a very
    negative logit gives a large negative number, not ``-inf``.

    Args:
        logits: any shape, e.g. ``(B, C)``.
        axis: the class axis.

    Returns:
        Same shape as ``logits``, all entries ``<= 0``.

    Examples:
        >>> log_softmax(jnp.array([0.0, -200.0]))  # log(softmax) gives [0, -inf]
        Array([   0., -200.], dtype=float32)
    """
    shifted = _shifted(jnp.asarray(logits), axis)
    return shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=axis, keepdims=True))


def _check_logits(logits: jax.Array) -> None:
    if logits.ndim < 1 or not jnp.issubdtype(logits.dtype, jnp.floating):
        raise TypeError(
            f"logits must be a float array with a class axis; "
            f"got {logits.dtype} {logits.shape}"
        )
    check_finite(logits, name="logits")


def cross_entropy(logits: ArrayLike, labels: ArrayLike) -> jax.Array:
    r"""Mean cross-entropy between logits and integer class labels.

    .. math:: L = -\frac{1}{B}\sum_{n=1}^{B} \log \mathrm{softmax}(z_n)_{y_n}

    Args:
        logits: shape ``(B, C)`` (or ``(C,)`` for one example), float.
        labels: integer labels of shape ``(B,)`` (or ``()``), in ``[0, C)``.

    Returns:
        The loss averaged over the batch, a scalar.

    Raises:
        TypeError: float labels, or non-float logits.
        ValueError: concrete labels outside ``[0, C)`` (the message names the value),
            batch sizes of logits and labels that differ, or non-finite concrete logits.

    Examples:
        >>> logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
        >>> cross_entropy(logits, jnp.array([0, 2]))
        Array(0.12..., dtype=float32)
        >>> cross_entropy(logits, jnp.array([0, 3]))
        Traceback (most recent call last):
        ...
        ValueError: labels must lie in [0, 3); found 3 at index 1
    """
    logits = jnp.asarray(logits)
    labels = labels if isinstance(labels, jax.Array) else np.asarray(labels)
    _check_logits(logits)
    if jnp.shape(labels) != logits.shape[:-1]:
        raise ValueError(
            f"logits and labels disagree on the batch: logits {logits.shape} "
            f"need labels of shape {logits.shape[:-1]}, got {jnp.shape(labels)}"
        )
    check_labels(labels, logits.shape[-1])
    return jnp.mean(
        softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(labels))
    )


def softmax_cross_entropy_with_integer_labels(
    logits: jax.Array, labels: jax.Array
) -> jax.Array:
    r"""The kernel of :func:`cross_entropy`: per-example ``-log softmax(z_n)[y_n]``.

    optax's name and contract: one loss per example (average them yourself), and no
    check of the label *values* — this is what jitted training code calls on data
    validated once, up front. A label outside ``[0, C)`` gives NaN for its example
    (never a plausible wrong number: an index would silently clamp it to a valid class).
    Shapes and dtypes are checked, which is free.

    Args:
        logits: shape ``(..., C)``, float.
        labels: integer labels of shape ``(...)``.

    Returns:
        Shape ``(...)``: the loss of each example.

    Examples:
        >>> logits = jnp.array([[2.0, 0.0], [0.0, 0.0]])
        >>> softmax_cross_entropy_with_integer_labels(logits, jnp.array([0, 1]))
        Array([0.12692805, 0.6931472 ], dtype=float32)
        >>> softmax_cross_entropy_with_integer_labels(logits[:1], jnp.array([2]))
        Array([nan], dtype=float32)
    """
    shapes_match = jnp.shape(labels) == jnp.shape(logits)[:-1]
    if not shapes_match or not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        raise TypeError(
            f"need logits (..., C) and integer labels (...); "
            f"got logits {jnp.shape(logits)} "
            f"and labels {jnp.shape(labels)} of dtype {jnp.result_type(labels)}"
        )
    num_classes = jnp.shape(logits)[-1]
    log_probs = log_softmax(logits)
    # Pick log p[y] with a one-hot product rather than an index: the gradient is then
    # elementwise (an indexed gather's gradient is a scatter, much slower on CPU), and
    # an out-of-range label, which indexing would silently clamp to a valid class, gives
    # an all-zero row, made NaN here.
    onehot = jax.nn.one_hot(labels, num_classes, dtype=log_probs.dtype)
    picked = jnp.sum(log_probs * onehot, axis=-1)
    valid = (labels >= 0) & (labels < num_classes)
    return -jnp.where(valid, picked, jnp.nan)


def cross_entropy_onehot(logits: ArrayLike, targets: ArrayLike) -> jax.Array:
    r"""Mean cross-entropy against target distributions (one-hot or soft labels).

    .. math::

        L = -\frac{1}{B}\sum_{n=1}^{B} \sum_{c=1}^{C} t_{nc}
        \log \mathrm{softmax}(z_n)_c

    Args:
        logits: shape ``(B, C)``.
        targets: shape ``(B, C)``, each row a distribution over the classes
            (non-negative).

    Returns:
        The loss averaged over the batch, a scalar.

    Examples:
        >>> logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
        >>> cross_entropy_onehot(logits, jax.nn.one_hot(jnp.array([0, 2]), 3))
        Array(0.12..., dtype=float32)
    """
    logits = jnp.asarray(logits)
    targets = jnp.asarray(targets)
    _check_logits(logits)
    if targets.shape != logits.shape:
        raise ValueError(
            f"targets must have the shape of logits {logits.shape} (one-hot rows); "
            f"got {targets.shape}"
        )
    if not jnp.issubdtype(targets.dtype, jnp.floating):
        targets = targets.astype(logits.dtype)
    check_finite(targets, name="targets")
    if is_concrete(targets) and bool(jnp.any(targets < 0)):
        raise ValueError(
            "targets must be non-negative (probabilities); found a negative entry"
        )
    return -jnp.mean(jnp.sum(targets * log_softmax(logits), axis=-1))


def mse(pred: ArrayLike, target: ArrayLike) -> jax.Array:
    r"""Mean squared error, :math:`\frac{1}{N}\sum_i (p_i - t_i)^2`, over all entries.

    Shapes must match exactly: ``(N, 1)`` against ``(N,)`` would broadcast to ``(N, N)``
    and average the wrong thing without any error.

    Examples:
        >>> mse(jnp.array([1.0, 2.0]), jnp.array([1.0, 4.0]))
        Array(2., dtype=float32)
    """
    pred, target = jnp.asarray(pred), jnp.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape; "
            f"got {pred.shape} and {target.shape}"
        )
    return jnp.mean((pred - target) ** 2)


def l2_penalty(params: object, *, weights_only: bool = True) -> jax.Array:
    r"""Sum of squares of the parameters, :math:`\sum_\ell \lVert W_\ell \rVert_F^2`.

    Add ``λ/2 · l2_penalty(params)`` to a loss for L2 regularisation. With SGD this
    equals weight decay; with Adam it does not (the penalty's gradient is rescaled per
    parameter), which is why AdamW *decouples* weight decay from the gradient (chapter
    6).

    Args:
        params: any pytree of arrays, e.g. a list of ``(W, b)``.
        weights_only: skip leaves with fewer than 2 dimensions (biases), as is
            customary.

    Examples:
        >>> l2_penalty([(jnp.ones((2, 3)), jnp.ones(3))])
        Array(6., dtype=float32)
        >>> l2_penalty([(jnp.ones((2, 3)), jnp.ones(3))], weights_only=False)
        Array(9., dtype=float32)
    """
    leaves = [jnp.asarray(p) for p in jax.tree.leaves(params)]
    leaves = [p for p in leaves if p.ndim >= 2 or not weights_only]
    return sum((jnp.sum(jnp.square(p)) for p in leaves), start=jnp.zeros(()))
