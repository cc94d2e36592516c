"""Diagnosing a training run that goes wrong (chapter 8), on any NNX model and data.

Each function answers one question of the field guide and returns plain numbers:
:func:`layer_stats` (per ``nnx.Linear``/``nnx.Conv`` layer: its outputs' mean and
spread, and the fraction of *dead* units, with no gradient for any example),
:func:`grad_norms` (by parameter path), :func:`overfit_one_batch` (can a copy of the
model memorise one small batch?), and :func:`report`, a short verdict with all of them
and :func:`~companion.data_stats.input_stats`, offered here with
:func:`~companion.data_stats.confusion_matrix`.

Models: any ``nnx.Module`` mapping ``(B, ...)`` to logits ``(B, C)``, with nothing added
to it: while it runs, every ``nnx.Linear`` and ``nnx.Conv`` (subclasses too) is
intercepted and its output recorded by its path in the model. Chapter-2 parameters (a
list of ``(W, b)``) are converted once into :class:`companion.nnx_models.MLP`. The model
passed in is never changed.
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

from companion.checks import check_labels
from companion.data_stats import (  # confusion_matrix: offered here too (chapter 8)
    check_batch,
    confusion_matrix,  # noqa: F401
    input_stats,
)
from companion.intercept import layer_names, layer_summaries

__all__ = [
    "LayerStats",
    "OverfitResult",
    "Report",
    "grad_norms",
    "layer_stats",
    "overfit_one_batch",
    "report",
]


@dataclass(frozen=True)
class LayerStats:
    """One layer's outputs (pre-activations) on a batch."""

    name: str  # the layer's path in the model, e.g. "layers/0" or "conv2"
    mean: float
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


def _as_model(model, activation: str = "relu") -> nnx.Module:
    """A copy of ``model`` to look at: chapter-2 params become an NNX ``MLP``."""
    if isinstance(model, list | tuple):
        from companion.nnx_models import MLP

        return MLP.from_params(list(model), activation=activation)
    if not isinstance(model, nnx.Module):
        raise TypeError(
            "diagnose takes an nnx.Module (mapping (B, ...) to logits) or chapter-2 "
            f"params (a list of (W, b)); got {type(model).__name__}"
        )
    return nnx.clone(model)


def _loss(logits: jax.Array, y: jax.Array) -> jax.Array:
    logits = logits.astype(jnp.float32)  # (B, C)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


# The computations below are compiled once per model structure and batch shape
# (module-level nnx.jit): run eagerly, each of their many small operations would be
# compiled on its own, for every new shape.


@nnx.jit
def _batch_loss(model: nnx.Module, x: jax.Array, y: jax.Array) -> jax.Array:
    return _loss(model(x), y)


@nnx.jit
def _outputs(model: nnx.Module, x: jax.Array, y: jax.Array):
    """Whether the outputs look like probabilities (rows in [0, 1] summing to 1), and
    the loss."""
    logits = model(x)  # (B, C)
    rows = jnp.sum(logits, axis=-1)
    unit = jnp.all((logits >= 0) & (logits <= 1)) & jnp.all(jnp.abs(rows - 1) < 1e-3)
    return unit, _loss(logits, y)


@nnx.jit
def _grad_norms(model: nnx.Module, x: jax.Array, y: jax.Array) -> nnx.State:
    grads = nnx.grad(lambda m: _loss(m(x), y))(model)
    return jax.tree.map(lambda g: jnp.linalg.norm(jnp.ravel(g)), grads)


def _prepare(model, x, y, activation):
    x, y = check_batch(x, y)
    model = _as_model(model, activation)
    x, y = jnp.asarray(x), jnp.asarray(y)
    logits = jax.eval_shape(model, x[:1])
    if len(logits.shape) != 2:
        raise ValueError(f"the model must return logits (B, C); got {logits.shape}")
    check_labels(np.asarray(y), int(logits.shape[-1]), name="y")
    return model, x, y


def layer_stats(
    model, x: ArrayLike, y: ArrayLike, *, activation: str = "relu"
) -> list[LayerStats]:
    """Per layer, in call order: mean and std of its output ``z`` on the batch, and
    the fraction of its units that are dead.

    A unit (a channel, for a convolution) is *dead* on the batch when the loss's
    gradient with respect to its output is exactly 0 for every example and position:
    nothing it does reaches the loss, so nothing reaches its weights (a ReLU whose
    input is ≤ 0 everywhere; a sigmoid saturated to 1.0 in float32).

    Args:
        model: an ``nnx.Module`` returning logits, or chapter-2 params (then
            ``activation`` names their σ).
        x: a batch ``(B, ...)`` the model takes; y: its labels ``(B,)``.
    """
    model, x, y = _prepare(model, x, y, activation)
    names = layer_names(model, x)
    summaries = layer_summaries(model, x, y, _loss)
    return [
        LayerStats(name, *map(float, summary))
        for name, summary in zip(names, summaries, strict=True)
    ]


def grad_norms(
    model, x: ArrayLike, y: ArrayLike, *, activation: str = "relu"
) -> dict[str, float]:
    """The L2 norm of the loss gradient for every parameter, by its path in the model
    (``layers/0/kernel``, ``conv2/bias``), on the batch ``(x, y)``.

    The loss is the mean cross-entropy of the model's logits (in float32).
    """
    model, x, y = _prepare(model, x, y, activation)
    return {
        "/".join(map(str, path)): float(norm[...])
        for path, norm in nnx.to_flat_state(_grad_norms(model, x, y))
    }


@nnx.jit
def _adam_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(lambda m: _loss(m(x), y))(model)
    optimizer.update(model, grads)
    return loss


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
    if steps < 1:
        raise ValueError(f"steps must be at least 1; got {steps}")
    model, x, y = _prepare(model, x, y, activation)
    optimizer = nnx.Optimizer(model, optax.adam(learning_rate), wrt=nnx.Param)
    first = float(_batch_loss(model, x, y))
    for _ in range(steps):
        _adam_step(model, optimizer, x, y)
    final = float(_batch_loss(model, x, y))
    return OverfitResult(first, final, steps, target, bool(final < target))


def report(
    model,
    x: ArrayLike,
    y: ArrayLike,
    *,
    activation: str = "relu",
    overfit: bool = True,
    dead_warn: float = 0.5,
) -> Report:
    """A short verdict on a model and a batch: inputs, outputs, initial loss, each
    layer's outputs and dead units, gradients, and (``overfit``) the overfit check.

    Flags: input warnings (:func:`~companion.data_stats.input_stats`); outputs that
    are probabilities (in [0, 1], each row summing to 1) where the loss expects logits;
    a loss not finite, or above 3 × ln C (a fresh model should be near ln C, chance); a
    layer with more than ``dead_warn`` of its units dead; a parameter whose gradient is
    not finite or exactly 0 (nothing flows back to it); a failed overfit check. Print
    it.
    """
    model, xa, ya = _prepare(model, x, y, activation)
    problems, lines = [], []
    stats = input_stats(x)
    lines.append(
        f"inputs: mean {stats.mean:.3g}, std {stats.std:.3g}, range [{stats.min:.3g}, "
        f"{stats.max:.3g}], {stats.constant_features} constant feature(s)"
    )
    problems += [f"inputs: {w}" for w in stats.warnings]
    classes = int(jax.eval_shape(model, xa[:1]).shape[-1])
    probabilities, loss = _outputs(model, xa, ya)
    if bool(probabilities):
        problems.append(
            "outputs: every row is in [0, 1] and sums to 1 — probabilities, where "
            "the cross-entropy expects logits: remove the softmax from the model"
        )
    loss, chance = float(loss), math.log(classes)
    lines.append(f"loss: {loss:.4g} (chance, ln {classes}: {chance:.4g})")
    if not math.isfinite(loss):
        problems.append(f"loss: {loss} — not finite")
    elif loss > 3 * chance:
        problems.append(
            f"loss: {loss:.3g} is over 3 × ln {classes}: confidently wrong "
            "(input scale? initialisation?)"
        )
    for layer in layer_stats(model, xa, ya):
        lines.append(
            f"{layer.name}: output mean {layer.mean:.3g}, std {layer.std:.3g}, "
            f"dead {100 * layer.dead_fraction:.0f}%"
        )
        if layer.dead_fraction > dead_warn:
            problems.append(
                f"{layer.name}: {100 * layer.dead_fraction:.0f}% of units dead (no "
                "gradient for any example)"
            )
    for name, norm in grad_norms(model, xa, ya).items():
        lines.append(f"grad {name}: norm {norm:.3g}")
        if not math.isfinite(norm):
            problems.append(f"grad {name}: not finite")
        elif norm == 0:
            problems.append(f"grad {name}: exactly 0 (no gradient flows back to it)")
    if overfit:
        result = overfit_one_batch(model, xa[:32], ya[:32])
        lines.append(
            f"overfit {min(32, len(ya))} examples: loss {result.first_loss:.3g} -> "
            f"{result.final_loss:.3g} in {result.steps} Adam steps"
        )
        if not result.passed:
            problems.append(
                f"overfit: loss stayed at {result.final_loss:.3g} (> {result.target}) "
                "on one batch: a bug in the model, the loss or the labels"
            )
    return Report(tuple(lines), tuple(problems))
