"""The training and evaluation steps chapter 6 writes for NNX models, and the NaN guard.

:func:`train_step` and :func:`eval_step` are the chapter's (jit them with ``nnx.jit``):
``nnx.value_and_grad`` of :func:`loss_fn`, whose logits come back as auxiliary output
for the metrics, then one optimizer update, all in place. :func:`guarded_train_step` is
the same step with a guard against non-finite values; it is what
:func:`companion.nnx_training.fit` runs.

The guard (chosen behaviour): a step whose loss, gradient norm or updated parameters
are not finite is undone (model and optimizer keep their state from before it), and
so is every step after it, so that the model stays at the last finite parameters; the
guard records that first bad step, and :func:`companion.nnx_training.fit` raises
:class:`~companion.loop.NonFiniteLossError` naming it. ``optax.apply_if_finite`` skips
an update whose gradients are not finite, but it does not look at the loss or at
parameters a finite update pushed to ``inf``, says nothing, and after
``max_consecutive_errors`` skipped steps applies the non-finite update (chapter 6 shows
it).

Examples:
    >>> from companion.nnx_models import MLP
    >>> model = MLP([4, 3], rngs=nnx.Rngs(0))
    >>> optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    >>> metrics = make_metrics()
    >>> x, y = jnp.ones((2, 4)), jnp.array([0, 2])
    >>> nnx.jit(train_step)(model, optimizer, metrics, x, y)
    >>> int(optimizer.step[...]), sorted(metrics.compute())
    (1, ['accuracy', 'grad_norm', 'loss'])
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

__all__ = [
    "NonFiniteGuard",
    "eval_step",
    "guarded_train_step",
    "loss_fn",
    "make_metrics",
    "train_step",
]

LossFn = Callable[[nnx.Module, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def loss_fn(
    model: nnx.Module, x: jax.Array, y: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Mean cross-entropy of ``model`` on a batch ``x`` ``(B, ...)``, ``y`` ``(B,)``,
    and its logits ``(B, C)`` as auxiliary output.

    The logits are cast to float32 first, whatever the model computes in (mixed
    precision: the loss, and the mean over the batch, to float32's precision; optax's
    cross-entropy is the stable log-sum-exp form, finite in 16-bit formats too). Labels
    are not checked here (a step on validated data): a label of ``C`` or more gives a
    NaN loss (optax picks the label's log-probability with ``take_along_axis``, which
    fills an out-of-range pick with NaN), and a label in ``[-C, 0)`` silently counts
    from the end, as a negative index does in Python.
    """
    logits = model(x).astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, logits


def make_metrics(*, grad_norm: bool = True) -> nnx.MultiMetric:
    """Running averages of the loss and the accuracy, and of the global gradient norm
    (``grad_norm=False``: not measured, as in an evaluation).
    """
    metrics = dict(loss=nnx.metrics.Average("loss"), accuracy=nnx.metrics.Accuracy())
    if grad_norm:
        metrics["grad_norm"] = nnx.metrics.Average("grad_norm")
    return nnx.MultiMetric(**metrics)


def train_step(
    model: nnx.Module,
    optimizer: nnx.Optimizer,
    metrics: nnx.MultiMetric,
    x: jax.Array,
    y: jax.Array,
) -> None:
    """One optimizer step on a batch ``x`` ``(B, ...)``, ``y`` ``(B,)``, in place.

    Chapter 6's step; the global gradient norm goes to the metrics too (ignored by
    metrics that do not average it).
    """
    grad_fn = nnx.value_and_grad(loss_fn, has_aux=True)
    (loss, logits), grads = grad_fn(model, x, y)
    metrics.update(loss=loss, logits=logits, labels=y, grad_norm=optax.tree.norm(grads))
    optimizer.update(model, grads)


def eval_step(
    model: nnx.Module, metrics: nnx.MultiMetric, x: jax.Array, y: jax.Array
) -> None:
    """Add a batch's per-example losses and predictions to ``metrics`` (from
    ``make_metrics(grad_norm=False)``).

    Per-example losses, not their mean: ``nnx.metrics.Average`` then weighs every
    example the same, in a smaller last batch too.
    """
    logits = model(x).astype(jnp.float32)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    metrics.update(loss=losses, logits=logits, labels=y)


class NonFiniteGuard(nnx.Module):
    """The first optimizer step whose loss, gradients or new parameters were not
    finite (-1: none yet), and what was seen there.
    """

    def __init__(self):
        self.first_bad_step = nnx.Variable(jnp.array(-1, jnp.int32))
        self.bad_loss = nnx.Variable(jnp.array(0.0, jnp.float32))
        self.bad_grad_norm = nnx.Variable(jnp.array(0.0, jnp.float32))
        # did a finite update make the parameters non-finite?
        self.bad_params = nnx.Variable(jnp.array(False))


def guarded_train_step(
    model: nnx.Module,
    optimizer: nnx.Optimizer,
    metrics: nnx.MultiMetric,
    guard: NonFiniteGuard,
    x: jax.Array,
    y: jax.Array,
    loss: LossFn = loss_fn,
) -> None:
    """:func:`train_step` with the guard: a non-finite step, and every step after it,
    is undone; the first is recorded in ``guard``.

    The undoing is a select, ``jnp.where(ok, new, old)`` on every array of the model
    and the optimizer: one pass over them per step, the same program on every backend.

    Args:
        model: the NNX model (updated in place).
        optimizer: its ``nnx.Optimizer`` (updated in place).
        metrics: from :func:`make_metrics` (the loss, accuracy and gradient norm).
        guard: a :class:`NonFiniteGuard` (see the module docstring).
        x: a batch of inputs ``(B, ...)``; y: integer labels ``(B,)``.
        loss: the loss function, ``(model, x, y) -> (loss, logits)``.
    """
    (value, logits), grads = nnx.value_and_grad(loss, has_aux=True)(model, x, y)
    grad_norm = optax.tree.norm(grads)
    # the arrays before the update (immutable: keeping them costs no copy)
    before = jax.tree.map(lambda a: a, nnx.state((model, optimizer)))
    step = optimizer.step[...]
    optimizer.update(model, grads)
    params = jax.tree.leaves(nnx.state(model, nnx.Param))
    params_finite = jnp.all(jnp.stack([jnp.isfinite(p).all() for p in params]))
    grads_finite = jnp.isfinite(value) & jnp.isfinite(grad_norm)
    finite = grads_finite & params_finite
    clean = guard.first_bad_step[...] < 0
    ok = finite & clean
    after = jax.tree.map(lambda a: a, nnx.state((model, optimizer)))
    nnx.update(
        (model, optimizer),
        jax.tree.map(lambda new, old: jnp.where(ok, new, old), after, before),
    )
    first = clean & ~finite
    guard.first_bad_step[...] = jnp.where(first, step, guard.first_bad_step[...])
    guard.bad_loss[...] = jnp.where(first, value, guard.bad_loss[...])
    guard.bad_grad_norm[...] = jnp.where(first, grad_norm, guard.bad_grad_norm[...])
    guard.bad_params[...] = jnp.where(
        first, grads_finite & ~params_finite, guard.bad_params[...]
    )
    metrics.update(loss=value, logits=logits, labels=y, grad_norm=grad_norm)
