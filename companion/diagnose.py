"""Diagnosing a training run that goes wrong (chapter 8), on a reader's model and data.

Each function answers one question of the field guide and returns plain numbers:

- :func:`input_stats` — are the inputs normalised? (range, mean, spread, constant
  features, non-finite values, with warnings);
- :func:`activation_stats` — per hidden layer, the mean and spread of the activations
  and the fraction of *dead* units (no gradient for any example of the batch);
- :func:`grad_norms` — the gradient norm of every parameter array;
- :func:`overfit_one_batch` — can the model drive the loss on one small batch to ~0?
- :func:`report` — all of the above as a short, readable verdict;
- :func:`confusion_matrix` — where the mistakes go.

Models: chapter-2 parameters (a list of ``(W, b)``, with ``activation=``), and the NNX
``MLP`` and ``CNN`` of :mod:`companion.nnx_models` (anything with a ``preactivations``
method and a ``__call__`` giving logits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.typing import ArrayLike

from companion import mlp, nnx_steps
from companion.checks import check_labels

__all__ = [
    "InputStats",
    "LayerStats",
    "OverfitResult",
    "Report",
    "activation_stats",
    "confusion_matrix",
    "grad_norms",
    "input_stats",
    "overfit_one_batch",
    "report",
]

# A unit counts as dead when its derivative is below this share of its maximum for every
# example: exactly 0 for a ReLU (z <= 0), saturation for tanh and sigmoid.
_SATURATED = 0.01


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


@dataclass(frozen=True)
class LayerStats:
    """One hidden layer's activations on a batch."""

    name: str
    mean: float  # of σ(z)
    std: float
    dead_fraction: float  # units (channels) with no gradient for any example


@dataclass(frozen=True)
class OverfitResult:
    """The overfit-one-batch check: ``passed`` if ``final_loss < target``."""

    first_loss: float
    final_loss: float
    steps: int
    target: float
    passed: bool


@dataclass(frozen=True)
class Report:
    """What :func:`report` found: the measurements and the problems; print it."""

    lines: tuple[str, ...]  # one measurement per line
    problems: tuple[str, ...]  # what looks wrong; empty if nothing does

    def __str__(self) -> str:
        if not self.problems:
            verdict = ["verdict: nothing looks wrong"]
        else:
            verdict = [f"verdict: {len(self.problems)} problem(s)"]
            verdict += [f"  - {p}" for p in self.problems]
        return "\n".join([*self.lines, *verdict])


def _check_batch(x: ArrayLike, y: ArrayLike | None = None) -> tuple[np.ndarray, ...]:
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
    (x,) = _check_batch(x)
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
    # fmax/fmin skip NaN (an all-NaN feature is NaN, not constant), without a warning
    hi_f, lo_f = np.fmax.reduce(x, axis=0), np.fmin.reduce(x, axis=0)
    constant = int((hi_f == lo_f).sum()) if len(x) > 1 else 0
    return InputStats(
        mean, std, lo, hi, constant, int((~finite).sum()), tuple(warnings)
    )


def _preactivations(model, x, activation):
    # {name: z} for each hidden layer, and the activation that follows it
    if isinstance(model, list | tuple):
        mlp.check_params(list(model))
        sigma = mlp.get_activation(activation)
        pre, a = {}, jnp.asarray(x)
        if a.ndim != 2 or a.shape[1] != model[0][0].shape[0]:
            raise ValueError(
                f"x must be (B, {model[0][0].shape[0]}) for these params; got {a.shape}"
            )
        for i, (W, b) in enumerate(model[:-1]):
            pre[f"layer {i + 1}"] = z = a @ W + b
            a = sigma(z)
        return pre, activation
    if not hasattr(model, "preactivations"):
        raise TypeError(
            "diagnose knows chapter-2 params (a list of (W, b)) and models with a "
            "preactivations(x) method (companion.nnx_models); got "
            f"{type(model).__name__}"
        )
    return model.preactivations(jnp.asarray(x)), getattr(model, "activation", "relu")


def _dead(z: jax.Array, activation: str) -> jax.Array:
    # per example and unit: is σ′(z) below _SATURATED of its maximum?
    if activation == "relu":
        return z <= 0
    if activation == "tanh":
        return 1 - jnp.tanh(z) ** 2 < _SATURATED
    s = jax.nn.sigmoid(z)
    return s * (1 - s) < _SATURATED * 0.25  # σ′ peaks at 1/4


def activation_stats(
    model, x: ArrayLike, *, activation: str = "relu"
) -> list[LayerStats]:
    """Per hidden layer: mean and std of ``σ(z)`` on the batch ``x``, and the fraction
    of dead units.

    A unit (a channel, for a convolution) is *dead* on the batch when its activation's
    derivative is ~0 for every example (and every position): for a ReLU, ``z <= 0``
    everywhere, so no gradient reaches its weights; for tanh and sigmoid, saturation
    (derivative below 1 % of its maximum).

    Args:
        model: chapter-2 params (then ``activation`` names σ), or an NNX model with
            ``preactivations`` (``companion.nnx_models.MLP``/``CNN``).
        x: a batch ``(B, ...)`` the model takes.
    """
    (_,) = _check_batch(x)
    pre, activation = _preactivations(model, x, activation)
    sigma = mlp.get_activation(activation)
    stats = []
    for name, z in pre.items():
        a = sigma(z)
        dead = _dead(z, activation).reshape(-1, z.shape[-1]).all(axis=0)  # (units,)
        stats.append(
            LayerStats(name, float(a.mean()), float(a.std()), float(dead.mean()))
        )
    return stats


def _loss_and_grads(model, x, y, activation):
    x, y = jnp.asarray(x), jnp.asarray(y)
    if isinstance(model, list | tuple):
        from companion.sgd import loss_fn

        loss, grads = jax.value_and_grad(loss_fn)(list(model), x, y, activation)
        names = [f"{k}{i + 1}" for i in range(len(model)) for k in ("W", "b")]
        return loss, dict(zip(names, jax.tree.leaves(grads), strict=True))
    (loss, _), grads = nnx.value_and_grad(nnx_steps.loss_fn, has_aux=True)(model, x, y)
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    # the state's path: dict keys and list indices (the Variable's ".value" left out)
    names = [
        "/".join(str(getattr(k, "key", getattr(k, "idx", ""))) for k in p).strip("/")
        for p, _ in flat
    ]
    return loss, dict(zip(names, (g for _, g in flat), strict=True))


def grad_norms(
    model, x: ArrayLike, y: ArrayLike, *, activation: str = "relu"
) -> dict[str, float]:
    """The L2 norm of the loss gradient for every parameter array, by name, on the
    batch ``(x, y)``.

    Names: ``W1``, ``b1``, ... for chapter-2 params; the NNX state path (e.g.
    ``layers/0/kernel``) for NNX models. The loss is the mean cross-entropy; labels
    are checked against the model's number of classes.
    """
    x, y = _check_batch(x, y)
    _check_classes(model, x, y, activation)
    _, grads = _loss_and_grads(model, x, y, activation)
    return {name: float(jnp.linalg.norm(g.ravel())) for name, g in grads.items()}


def _check_classes(model, x, y, activation) -> int:
    logits = (
        mlp.forward(list(model), x, activation)
        if isinstance(model, list | tuple)
        else model(jnp.asarray(x[:1]))
    )
    classes = int(logits.shape[-1])
    check_labels(y, classes, name="y")
    return classes


def overfit_one_batch(
    model,
    x: ArrayLike,
    y: ArrayLike,
    *,
    steps: int = 100,
    learning_rate: float = 1e-2,
    target: float = 0.05,
    activation: str = "relu",
) -> OverfitResult:
    """Train a *copy* of the model with Adam on one small batch; a healthy model and
    loss drive its loss below ``target``.

    If they cannot, the bug is in the model, the loss or the labels, not in the data's
    difficulty: one batch can be memorised. The model passed in is not changed.
    """
    x, y = _check_batch(x, y)
    if steps < 1:
        raise ValueError(f"steps must be at least 1; got {steps}")
    _check_classes(model, x, y, activation)
    if isinstance(model, list | tuple):
        from companion.nnx_models import MLP

        model = MLP.from_params(list(model), activation=activation)
    else:
        model = nnx.clone(model)
    opt = nnx.Optimizer(model, optax.adam(learning_rate), wrt=nnx.Param)
    metrics = nnx_steps.make_metrics()
    step = nnx.jit(nnx_steps.train_step)
    xb, yb = jnp.asarray(x), jnp.asarray(y)
    first = float(nnx_steps.loss_fn(model, xb, yb)[0])
    for _ in range(steps):
        step(model, opt, metrics, xb, yb)
    final = float(nnx_steps.loss_fn(model, xb, yb)[0])
    return OverfitResult(first, final, steps, target, bool(final < target))


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


def report(
    model,
    x: ArrayLike,
    y: ArrayLike,
    *,
    activation: str = "relu",
    overfit: bool = True,
    dead_warn: float = 0.5,
) -> Report:
    """A short verdict on a model and a batch: inputs, initial loss, activations, dead
    units, gradients and (``overfit``) the overfit-one-batch check. Print it.

    Flags: input warnings (:func:`input_stats`); a loss not finite, or above 3 × ln C
    (a fresh model should be near ln C, chance); a layer with more than ``dead_warn`` of
    its units dead; a gradient that is not finite or exactly 0; a failed overfit check.
    """
    x, y = _check_batch(x, y)
    classes = _check_classes(model, x, y, activation)
    problems, lines = [], []
    stats = input_stats(x)
    lines.append(
        f"inputs: mean {stats.mean:.3g}, std {stats.std:.3g}, range [{stats.min:.3g}, "
        f"{stats.max:.3g}], {stats.constant_features} constant feature(s)"
    )
    problems += [f"inputs: {w}" for w in stats.warnings]
    loss, grads = _loss_and_grads(model, x, y, activation)
    loss, chance = float(loss), math.log(classes)
    lines.append(f"loss: {loss:.4g} (chance, ln {classes}: {chance:.4g})")
    if not math.isfinite(loss):
        problems.append(f"loss: {loss} — not finite")
    elif loss > 3 * chance:
        problems.append(
            f"loss: {loss:.3g} is over 3 × ln {classes}: confidently wrong "
            "(input scale? initialisation?)"
        )
    for layer in activation_stats(model, x, activation=activation):
        lines.append(
            f"{layer.name}: activation mean {layer.mean:.3g}, std {layer.std:.3g}, "
            f"dead {100 * layer.dead_fraction:.0f}%"
        )
        if layer.dead_fraction > dead_warn:
            problems.append(
                f"{layer.name}: {100 * layer.dead_fraction:.0f}% of units dead (no "
                "gradient for any example)"
            )
    for name, g in grads.items():
        norm = float(jnp.linalg.norm(g.ravel()))
        lines.append(f"grad {name}: norm {norm:.3g}")
        if not math.isfinite(norm):
            problems.append(f"grad {name}: not finite")
        elif norm == 0:
            problems.append(f"grad {name}: exactly 0 (nothing flows back)")
    if overfit:
        result = overfit_one_batch(model, x[:32], y[:32], activation=activation)
        lines.append(
            f"overfit {min(32, len(y))} examples: loss {result.first_loss:.3g} -> "
            f"{result.final_loss:.3g} in {result.steps} Adam steps"
        )
        if not result.passed:
            problems.append(
                f"overfit: loss stayed at {result.final_loss:.3g} (> {result.target}) "
                "on one batch: a bug in the model, the loss or the labels"
            )
    return Report(tuple(lines), tuple(problems))
