"""One training step of an NNX model with optax (chapter 6): readable, and guarded.

:func:`train_step` is four lines, as in Flax's MNIST example: ``nnx.value_and_grad`` of
the loss (with the logits as auxiliary output), one optimizer update, the metrics.
:func:`guarded_train_step` is the same step with a NaN guard; it is what
:func:`companion.nnx_training.fit` runs.

NaN guard (chosen behaviour): a step whose loss, gradient norm or updated parameters are
not finite is *undone* — model and optimizer keep the state from before it — and the
first such step is recorded; :func:`companion.nnx_training.fit` then raises
:class:`~companion.loop.NonFiniteLossError` naming it, at the next check (every
``check_every`` steps and at the end of each epoch). Training never continues silently
on a NaN, and the model is left with the last finite parameters.

Why not ``optax.apply_if_finite``: it wraps the optimizer and skips an update whose
*gradients* are not finite, but it does not look at the loss or at parameters that a
finite update pushed to inf, it does not say which step it skipped, and after
``max_consecutive_errors`` skipped steps it applies the non-finite update anyway. Here
training must stop with an error that names the step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from companion import cpu
from companion.losses import softmax_cross_entropy_with_integer_labels

T = TypeVar("T")

__all__ = [
    "NonFiniteGuard",
    "guarded_train_step",
    "loss_fn",
    "make_metrics",
    "train_step",
]


def make_metrics() -> nnx.MultiMetric:
    """Running averages of the loss, the accuracy and the global gradient norm."""
    return nnx.MultiMetric(
        loss=nnx.metrics.Average("loss"),
        accuracy=nnx.metrics.Accuracy(),
        grad_norm=nnx.metrics.Average("grad_norm"),
    )


class NonFiniteGuard(nnx.Module):
    """Remembers the first optimizer step whose loss or gradients were not finite (-1:
    none).
    """

    def __init__(self):
        self.first_bad_step = nnx.Variable(jnp.array(-1, jnp.int32))
        self.bad_loss = nnx.Variable(
            jnp.array(0.0, jnp.float32)
        )  # the loss at that step
        self.bad_grad_norm = nnx.Variable(
            jnp.array(0.0, jnp.float32)
        )  # its gradient norm
        self.bad_params = nnx.Variable(
            jnp.array(False)
        )  # did the update make parameters non-finite?


def loss_fn(
    model: nnx.Module, x: jax.Array, y: jax.Array, groups: int = 1
) -> tuple[jax.Array, jax.Array]:
    """Mean cross-entropy of ``model`` on a batch, and its logits ``(B, C)`` as
    auxiliary output.

    The loss in float32, whatever the model computes in. Labels are not checked here (a
    step on validated data): a label outside ``[0, C)`` makes the loss NaN.

    ``groups`` runs the model on that many equal groups of rows, one call each, as
    :func:`companion.sgd.loss_fn` does (independent products XLA:CPU can run on
    different cores at once): the same loss for a model that treats examples
    independently (not one that mixes them, as batch normalisation does). It must
    divide ``B``.
    """
    if groups == 1:
        logits = model(x).astype(jnp.float32)
        return jnp.mean(softmax_cross_entropy_with_integer_labels(logits, y)), logits
    parts = cpu.row_groups(x.shape[0], groups)
    logits = [model(x[part]).astype(jnp.float32) for part in parts]
    total = sum(
        jnp.sum(softmax_cross_entropy_with_integer_labels(z, y[part]))
        for z, part in zip(logits, parts, strict=True)
    )
    return total / x.shape[0], jnp.concatenate(logits)


def train_step(
    model: nnx.Module,
    optimizer: nnx.Optimizer,
    metrics: nnx.MultiMetric,
    x: jax.Array,
    y: jax.Array,
) -> None:
    """One optimizer step on a batch ``x`` ``(B, ...)``, ``y`` ``(B,)``, all in place.

    The readable step, as in Flax's MNIST example (jit it with ``nnx.jit``);
    :func:`companion.nnx_training.fit` runs :func:`guarded_train_step`, the same step
    with a NaN guard.
    """
    (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model, x, y)
    optimizer.update(model, grads)
    metrics.update(loss=loss, logits=logits, labels=y, grad_norm=optax.tree.norm(grads))


def guarded_train_step(
    model: nnx.Module,
    optimizer: nnx.Optimizer,
    metrics: nnx.MultiMetric,
    guard: NonFiniteGuard,
    x: jax.Array,
    y: jax.Array,
    groups: int = 1,
) -> jax.Array:
    """:func:`train_step` with a NaN guard: a non-finite step is undone and recorded in
    ``guard``.

    Args:
        model: the NNX model (updated in place).
        optimizer: its ``nnx.Optimizer`` (updated in place).
        metrics: from :func:`make_metrics` (accumulates loss, accuracy and gradient
            norm).
        guard: records the first non-finite step (see the module docstring).
        x: a batch of inputs ``(B, ...)``; y: integer labels ``(B,)``.
        groups: row groups of the batch, as in :func:`loss_fn`.

    Returns:
        The batch loss, before the step.
    """
    grad_fn = nnx.value_and_grad(loss_fn, has_aux=True)
    (loss, logits), grads = grad_fn(model, x, y, groups)
    grad_norm = optax.tree.norm(grads)
    graphdef, state = nnx.split((model, optimizer))
    # A snapshot: the state refers to the live Variables, tree.map takes their current
    # arrays (immutable, so keeping them costs no copy).
    before = jax.tree.map(lambda a: a, state)
    step = optimizer.step[...]

    def update(state):
        # merge takes over the state's Variables and the update writes into them: a
        # copy, so that `before` keeps the old arrays
        model, optimizer = nnx.merge(graphdef, jax.tree.map(lambda a: a, state))
        optimizer.update(model, grads)
        return nnx.state((model, optimizer))

    grads_finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    after = _either(grads_finite, update, before)
    nnx.update((model, optimizer), after)
    # A finite update can still overflow a parameter (a huge learning rate).
    params_finite = jnp.isfinite(optax.tree.norm(nnx.state(model, nnx.Param)))
    nnx.update((model, optimizer), _either(params_finite, lambda _: after, before))
    finite = grads_finite & params_finite
    first = (guard.first_bad_step[...] < 0) & ~finite
    guard.first_bad_step[...] = jnp.where(first, step, guard.first_bad_step[...])
    guard.bad_loss[...] = jnp.where(first, loss, guard.bad_loss[...])
    guard.bad_grad_norm[...] = jnp.where(first, grad_norm, guard.bad_grad_norm[...])
    guard.bad_params[...] = jnp.where(first, ~params_finite, guard.bad_params[...])
    metrics.update(loss=loss, logits=logits, labels=y, grad_norm=grad_norm)
    return loss


def _either(finite: jax.Array, new: Callable[[T], T], old: T) -> T:
    """``new(old)`` if ``finite``, else ``old`` (pytrees of arrays, one structure).

    On a CPU, a branch (``lax.cond``): XLA runs only the branch taken, so a finite step
    costs one scalar test, where a select (``jnp.where(finite, new, old)`` on every
    array) is one more pass over the parameters and both of Adam's moments in every
    step. On a GPU, picking a branch can mean copying the predicate to the host and
    waiting for it, once per step; there the select, one pass at the accelerator's
    memory bandwidth, is kept.
    """
    if jax.default_backend() == "cpu":
        return jax.lax.cond(finite, new, lambda state: state, old)
    return jax.tree.map(lambda a, b: jnp.where(finite, a, b), new(old), old)
