"""Training NNX models with optax (chapter 6): the optimizer, the steps, ``fit``, a NaN guard.

The readable step is :func:`train_step`: ``nnx.value_and_grad`` of the loss (with the logits as
auxiliary output), one optimizer update, metrics accumulated in an ``nnx.MultiMetric``. Wrapping
it in ``nnx.jit`` works but re-walks the Python object graph on every call; :func:`fit` uses the
fast path instead: ``nnx.split`` the model, optimizer and metrics once into a static ``GraphDef``
and a ``State`` of arrays, run a plain ``jax.jit`` step on the state (donated), and ``nnx.update``
the objects at the end.

NaN guard (chosen behaviour): a step whose loss, gradient norm or updated parameters are not
finite is *undone* — model and optimizer keep the state from before it (the idea of
``optax.apply_if_finite``, applied to whatever optimizer is used) — and the first such step is
recorded; :func:`fit` then raises :class:`NonFiniteLossError` naming it, at the next check (every
``check_every`` steps and at the end of each epoch). Training never continues silently on a NaN,
and the model is left with the last finite parameters.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.typing import ArrayLike
from tqdm import tqdm  # plain text bar: tqdm.auto would want ipywidgets in a notebook

from companion.data import check_dataset, epoch_key, num_batches, shuffle
from companion.losses import softmax_cross_entropy_with_integer_labels

__all__ = [
    "EvalMetrics",
    "FitHistory",
    "NonFiniteGuard",
    "NonFiniteLossError",
    "OptimizerConfig",
    "eval_step",
    "evaluate",
    "fit",
    "make_metrics",
    "make_optimizer",
    "make_schedule",
    "make_tx",
    "num_classes",
    "train_step",
]


class NonFiniteLossError(FloatingPointError):
    """The loss or the gradients became NaN or infinite during training."""


@dataclass(frozen=True)
class OptimizerConfig:
    """AdamW with linear warmup, cosine decay and global-norm clipping."""

    peak_lr: float = 1e-3  # learning rate reached at the end of the warmup
    warmup_steps: int = 100  # linear ramp from 0 to peak_lr
    total_steps: int = 1000  # warmup + cosine decay; after it the rate stays at end_lr
    end_lr: float = 0.0  # learning rate at the end of the decay
    weight_decay: float = 1e-4  # AdamW's decoupled decay: θ ← θ − lr·wd·θ, not added to the gradient
    clip_norm: float | None = 1.0  # rescale gradients whose global norm exceeds this (None: off)


def make_schedule(cfg: OptimizerConfig) -> optax.Schedule:
    """The learning rate as a function of the step: linear warmup, then cosine decay.

    Examples:
        >>> s = make_schedule(OptimizerConfig(peak_lr=1.0, warmup_steps=10, total_steps=110))
        >>> float(s(0)), float(s(5)), float(s(10)), float(s(60)), float(s(110))
        (0.0, 0.5, 1.0, 0.5, 0.0)
    """
    if not 0 <= cfg.warmup_steps < cfg.total_steps:
        raise ValueError(
            f"need 0 <= warmup_steps < total_steps; got {cfg.warmup_steps} and {cfg.total_steps}")
    if cfg.peak_lr <= 0:
        raise ValueError(f"peak_lr must be positive; got {cfg.peak_lr}")
    return optax.warmup_cosine_decay_schedule(0.0, cfg.peak_lr, cfg.warmup_steps, cfg.total_steps, cfg.end_lr)


def make_tx(cfg: OptimizerConfig) -> optax.GradientTransformation:
    """``clip_by_global_norm → adamw(schedule)``: clipping first, so AdamW sees the clipped gradient."""
    parts = [] if cfg.clip_norm is None else [optax.clip_by_global_norm(cfg.clip_norm)]
    parts.append(optax.adamw(make_schedule(cfg), weight_decay=cfg.weight_decay))
    return optax.chain(*parts)


def make_optimizer(model: nnx.Module, cfg: OptimizerConfig | optax.GradientTransformation) -> nnx.Optimizer:
    """An ``nnx.Optimizer`` over the model's ``nnx.Param`` s (a config, or any optax transformation)."""
    tx = make_tx(cfg) if isinstance(cfg, OptimizerConfig) else cfg
    return nnx.Optimizer(model, tx, wrt=nnx.Param)


def make_metrics() -> nnx.MultiMetric:
    """Running averages of the loss, the accuracy and the global gradient norm."""
    return nnx.MultiMetric(
        loss=nnx.metrics.Average("loss"),
        accuracy=nnx.metrics.Accuracy(),
        grad_norm=nnx.metrics.Average("grad_norm"),
    )


class NonFiniteGuard(nnx.Module):
    """Remembers the first optimizer step whose loss or gradients were not finite (-1: none)."""

    def __init__(self):
        self.first_bad_step = nnx.Variable(jnp.array(-1, jnp.int32))
        self.bad_loss = nnx.Variable(jnp.array(0.0, jnp.float32))  # the loss at that step
        self.bad_grad_norm = nnx.Variable(jnp.array(0.0, jnp.float32))  # its gradient norm
        self.bad_params = nnx.Variable(jnp.array(False))  # did the update make parameters non-finite?


def _loss(model: nnx.Module, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    logits = model(x).astype(jnp.float32)  # the loss in float32, whatever the compute dtype
    return jnp.mean(softmax_cross_entropy_with_integer_labels(logits, y)), logits


def train_step(model: nnx.Module, optimizer: nnx.Optimizer, metrics: nnx.MultiMetric, guard: NonFiniteGuard,
               x: jax.Array, y: jax.Array) -> jax.Array:
    """One optimizer step on a batch, in place; returns the batch loss (before the step).

    Args:
        model: the NNX model (updated in place).
        optimizer: its ``nnx.Optimizer`` (updated in place).
        metrics: from :func:`make_metrics` (accumulates loss, accuracy and gradient norm).
        guard: records the first non-finite step (see the module docstring).
        x: a batch of inputs ``(B, ...)``; y: integer labels ``(B,)``.
    """
    (loss, logits), grads = nnx.value_and_grad(_loss, has_aux=True)(model, x, y)
    grad_norm = optax.tree.norm(grads)
    # A snapshot: nnx.state refers to the live Variables, tree.map takes their current arrays
    # (immutable, so keeping them costs no copy).
    before = jax.tree.map(lambda a: a, nnx.state((model, optimizer)))
    step = optimizer.step[...]
    optimizer.update(model, grads)
    params_finite = jnp.isfinite(optax.tree.norm(nnx.state(model, nnx.Param)))
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & params_finite
    # Undo a non-finite step: select the old state (a select, not a branch, so it works under jit).
    after = nnx.state((model, optimizer))
    nnx.update((model, optimizer), jax.tree.map(lambda new, old: jnp.where(finite, new, old), after, before))
    first = (guard.first_bad_step[...] < 0) & ~finite
    guard.first_bad_step[...] = jnp.where(first, step, guard.first_bad_step[...])
    guard.bad_loss[...] = jnp.where(first, loss, guard.bad_loss[...])
    guard.bad_grad_norm[...] = jnp.where(first, grad_norm, guard.bad_grad_norm[...])
    guard.bad_params[...] = jnp.where(first, ~params_finite, guard.bad_params[...])
    metrics.update(loss=loss, logits=logits, labels=y, grad_norm=grad_norm)
    return loss


def eval_step(model: nnx.Module, metrics: nnx.MultiMetric, x: jax.Array, y: jax.Array) -> None:
    """Accumulate loss and accuracy on a batch, without updating the model."""
    logits = model(x).astype(jnp.float32)
    # per-example losses: Average then weighs every example equally, even in a smaller last batch
    losses = softmax_cross_entropy_with_integer_labels(logits, y)
    metrics.update(loss=losses, logits=logits, labels=y, grad_norm=jnp.float32(0.0))


# --- the fast path: split once, jax.jit the pure function of the state ---------------------------

@functools.partial(jax.jit, static_argnums=(0, 1, 6), donate_argnums=2)
def _fast_train_step(graphdef, treedef, leaves, xs, ys, i, batch_size):
    # The state travels as a flat list of arrays: jit's C++ dispatch handles a list at full speed,
    # while a custom pytree (nnx.State) is flattened by Python code on every call.
    model, optimizer, metrics, guard = nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))
    x = jax.lax.dynamic_slice_in_dim(xs, i * batch_size, batch_size)  # batch i, sliced on the device
    y = jax.lax.dynamic_slice_in_dim(ys, i * batch_size, batch_size)
    train_step(model, optimizer, metrics, guard, x, y)
    return jax.tree.leaves(nnx.state((model, optimizer, metrics, guard)))


@functools.partial(jax.jit, static_argnums=0)
def _fast_eval_step(graphdef, state, x, y):
    model, metrics = nnx.merge(graphdef, state)
    eval_step(model, metrics, x, y)
    return nnx.state((model, metrics))


class EvalMetrics(NamedTuple):
    """Loss and accuracy on a dataset."""

    loss: float
    accuracy: float


def num_classes(model: nnx.Module, x: ArrayLike) -> int:
    """The width of ``model``'s output for inputs like ``x`` (``(N, ...)``): its number of classes.

    Found by ``jax.eval_shape`` on a copy of the model: no computation, and no side effect on
    ``model`` (a layer that updates statistics when called is left untouched).
    """
    graphdef, state = nnx.split(model)
    example = jax.ShapeDtypeStruct((1, *jnp.shape(x)[1:]), jnp.result_type(x))
    out = jax.eval_shape(lambda s, xb: nnx.merge(graphdef, s)(xb), state, example)
    if len(out.shape) != 2:
        raise ValueError(f"the model must map (B, ...) to logits (B, C); it gives {out.shape} "
                         f"for one example")
    return int(out.shape[-1])


def _validate(x: ArrayLike, y: ArrayLike, model: nnx.Module, name: str = "") -> None:
    if jnp.ndim(x) < 1:
        check_dataset(x, y, name=name)  # raises: num_classes needs x of shape (N, ...)
    check_dataset(x, y, name=name, num_classes=num_classes(model, x))


def evaluate(model: nnx.Module, x: ArrayLike, y: ArrayLike, batch_size: int = 1000) -> EvalMetrics:
    """Mean loss and accuracy of ``model`` over ``(x, y)``, batched (the last batch may be smaller).

    Args:
        model: an NNX model mapping ``(B, ...)`` to logits ``(B, 10)``.
        x: inputs ``(N, ...)``; y: integer labels ``(N,)`` in ``[0, C)``, ``C`` the model's outputs.
        batch_size: examples per forward pass.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive; got {batch_size}")
    _validate(x, y, model)
    return _evaluate(model, x, y, batch_size)


def _evaluate(model, x, y, batch_size):
    metrics = make_metrics()
    graphdef, state = nnx.split((model, metrics))
    x, y = jnp.asarray(x), jnp.asarray(y)  # validated by the caller: slices of device arrays from here
    for start in range(0, y.shape[0], batch_size):
        state = _fast_eval_step(graphdef, state, x[start : start + batch_size], y[start : start + batch_size])
    nnx.update((model, metrics), state)
    result = metrics.compute()
    return EvalMetrics(float(result["loss"]), float(result["accuracy"]))


@dataclass
class FitHistory:
    """Per-epoch records of :func:`fit`, as plain floats."""

    loss: list[float] = field(default_factory=list)  # mean training loss over the epoch's steps
    train_accuracy: list[float] = field(default_factory=list)  # running accuracy during the epoch
    grad_norm: list[float] = field(default_factory=list)  # mean global gradient norm (before clipping)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    learning_rate: list[float] = field(default_factory=list)  # the schedule's value at the epoch's end
    epoch_time: list[float] = field(default_factory=list)  # seconds of training steps (no evaluation)


def fit(
    model: nnx.Module,
    optimizer: nnx.Optimizer,
    x_train: ArrayLike,
    y_train: ArrayLike,
    *,
    epochs: int,
    batch_size: int,
    x_val: ArrayLike | None = None,
    y_val: ArrayLike | None = None,
    key: jax.Array | None = None,
    start_epoch: int = 0,
    checkpointer=None,
    schedule: optax.Schedule | None = None,
    check_every: int = 50,
    progress: bool = True,
) -> FitHistory:
    """Train ``model`` in place for epochs ``start_epoch .. epochs - 1``.

    Each epoch shuffles with :func:`companion.data.epoch_key` (``fold_in(key, epoch)``: a run
    resumed at an epoch sees the same batches as one that went straight through), takes
    ``N // batch_size`` full batches,
    evaluates on the validation data, and, with a ``checkpointer``
    (:class:`companion.checkpoint.Checkpointer`), saves model and optimizer as step ``epoch + 1``.

    Args:
        model: the NNX model; optimizer: its ``nnx.Optimizer`` (both updated in place).
        x_train: ``(N, ...)`` inputs; y_train: ``(N,)`` integer labels, validated once.
        epochs: train until this many epochs are done in total.
        batch_size: examples per step.
        x_val, y_val: optional validation data (validated once).
        key: PRNG key for shuffling; ``None`` keeps the order.
        start_epoch: epochs already done (e.g. restored from a checkpoint).
        checkpointer: saves after every epoch when given.
        schedule: the learning-rate schedule, only to record it in the history.
        check_every: steps between checks of the NaN guard (each check waits for the device).
        progress: a tqdm progress bar over the steps with the running loss and accuracy.

    Raises:
        NonFiniteLossError: the loss or gradients became non-finite; the message names the step.
    """
    if not 0 <= start_epoch <= epochs:
        raise ValueError(f"need 0 <= start_epoch <= epochs; got start_epoch={start_epoch}, epochs={epochs}")
    if (x_val is None) != (y_val is None):
        raise ValueError("give both x_val and y_val, or neither")
    if check_every < 1:
        raise ValueError(f"check_every must be at least 1 (steps between NaN checks); got {check_every}")
    _validate(x_train, y_train, model)
    if x_val is not None:
        _validate(x_val, y_val, model, name="val_")
        x_val, y_val = jnp.asarray(x_val), jnp.asarray(y_val)  # on the device once, for every epoch
    x_dev, y_dev = jnp.asarray(x_train), jnp.asarray(y_train)  # on the device once
    steps = num_batches(len(y_dev), batch_size, drop_last=True)
    if steps == 0:
        raise ValueError(f"batch_size {batch_size} is larger than the {len(y_dev)} examples: no full batch")

    metrics, guard = make_metrics(), NonFiniteGuard()
    objects = (model, optimizer, metrics, guard)

    def split():
        graphdef, state = nnx.split(objects)
        leaves, treedef = jax.tree.flatten(state)
        return graphdef, treedef, leaves

    graphdef, treedef, leaves = split()
    history = FitHistory()
    bar = tqdm(total=(epochs - start_epoch) * steps, desc="training", unit="step", disable=not progress)

    def check(leaves, epoch):
        nnx.update(objects, jax.tree.unflatten(treedef, leaves))
        bad = int(guard.first_bad_step[...])
        if bad >= 0:
            bar.close()
            what = f"loss {float(guard.bad_loss[...])}, gradient norm {float(guard.bad_grad_norm[...])}"
            if bool(guard.bad_params[...]):
                what += ", and the update made the parameters non-finite"
            raise NonFiniteLossError(
                f"training diverged at optimizer step {bad} (epoch {epoch + 1}): {what}. That step and any "
                f"later non-finite ones were undone, so the model holds the parameters from before it. "
                f"Lower the learning rate, or check the data for NaN/inf.")

    for epoch in range(start_epoch, epochs):
        xs, ys = (x_dev, y_dev) if key is None else shuffle(epoch_key(key, epoch), x_dev, y_dev)
        start = time.perf_counter()
        for i in range(steps):
            leaves = _fast_train_step(graphdef, treedef, leaves, xs, ys, i, batch_size)
            if (i + 1) % check_every == 0 or i == steps - 1:
                check(leaves, epoch)  # the objects now share the state's arrays, read-only
                computed = metrics.compute()
                bar.set_postfix(epoch=epoch + 1, loss=f"{float(computed['loss']):.4f}",
                                acc=f"{float(computed['accuracy']):.3f}")
            bar.update(1)
        history.epoch_time.append(time.perf_counter() - start)
        computed = metrics.compute()
        history.loss.append(float(computed["loss"]))
        history.train_accuracy.append(float(computed["accuracy"]))
        history.grad_norm.append(float(computed["grad_norm"]))
        if schedule is not None:
            history.learning_rate.append(float(schedule(int(optimizer.step[...]))))
        metrics.reset()
        if x_val is not None:
            val = _evaluate(model, x_val, y_val, 1000)
            history.val_loss.append(val.loss)
            history.val_accuracy.append(val.accuracy)
            bar.set_postfix(epoch=epoch + 1, loss=f"{history.loss[-1]:.4f}", val_acc=f"{val.accuracy:.3f}")
        if checkpointer is not None:
            checkpointer.save(epoch + 1, model, optimizer)
        graphdef, treedef, leaves = split()
    bar.close()
    return history
