"""Training NNX models (chapter 6): ``fit`` and ``evaluate``.

:func:`fit` runs chapter 6's loop: the step of :mod:`companion.nnx_steps` under
``nnx.jit``, one call per batch, wrapped in ``nnx.cached_partial`` (Flax's advice: the
model, optimizer and metrics are traversed once, not at every call). Around it, what a
training run needs beyond the chapter's loop: the data validated once (shapes, labels in
``[0, C)``, finite inputs) and put on the device once, a shuffle per epoch
(:func:`companion.batching.epoch_key`), the history, a progress bar, evaluation,
checkpoints, and a guard against non-finite values that stops training with
:class:`~companion.loop.NonFiniteLossError` naming the step. The epochs, history and
bar are :func:`companion.loop.run`'s, shared with :func:`companion.training.fit`.

Examples:
    >>> import numpy as np, optax
    >>> from companion import optim
    >>> from companion.nnx_models import MLP
    >>> x = np.random.default_rng(0).random((64, 4), dtype=np.float32)
    >>> y = (x[:, 0] > 0.5).astype(np.int32)
    >>> model = MLP([4, 16, 2], rngs=nnx.Rngs(0))
    >>> opt = optim.make_optimizer(model, optax.adam(1e-2))
    >>> history = fit(model, opt, x, y, epochs=3, batch_size=16, progress=False)
    >>> len(history.loss), evaluate(model, x, y).accuracy > 0.5
    (3, True)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import ArrayLike

from companion.batching import batch_indices, check_dataset, full_batches
from companion.loop import (
    EpochStats,
    History,
    Metrics,
    check_fit_args,
    diverged,
    run,
)
from companion.nnx_steps import (
    NonFiniteGuard,
    eval_step,
    guarded_train_step,
    make_metrics,
)

# fit and evaluate return companion.loop's History and Metrics, and raise its
# NonFiniteLossError (shared with training, and documented there).
__all__ = ["evaluate", "fit", "num_classes"]

SHOW_EVERY = 50  # steps between updates of the progress bar (each waits for the device)


@nnx.jit
def _train_batch(model, optimizer, metrics, guard, x, y, batches, i):
    # chapter 6's batch: the rows of step i of batch_indices, gathered on the device
    rows = batches[i]  # (B,)
    guarded_train_step(model, optimizer, metrics, guard, x[rows], y[rows])


_eval_batch = nnx.jit(eval_step)


def num_classes(model: nnx.Module, x: ArrayLike) -> int:
    """The width of ``model``'s output for inputs like ``x`` (``(N, ...)``): its number
    of classes.

    Found by ``jax.eval_shape`` on a copy of the model: no computation, and no side
    effect on ``model`` (a layer that updates statistics when called is left untouched).
    """
    graphdef, state = nnx.split(model)
    example = jax.ShapeDtypeStruct((1, *jnp.shape(x)[1:]), jnp.result_type(x))
    out = jax.eval_shape(lambda s, xb: nnx.merge(graphdef, s)(xb), state, example)
    if len(out.shape) != 2:
        raise ValueError(
            f"the model must map (B, ...) to logits (B, C); it gives {out.shape} "
            f"for one example"
        )
    return int(out.shape[-1])


def _validate(x: ArrayLike, y: ArrayLike, model: nnx.Module, name: str = "") -> None:
    if jnp.ndim(x) < 1:
        check_dataset(x, y, name=name)  # raises: num_classes needs x of shape (N, ...)
    check_dataset(x, y, name=name, num_classes=num_classes(model, x))


def evaluate(
    model: nnx.Module, x: ArrayLike, y: ArrayLike, batch_size: int = 1000
) -> Metrics:
    """Mean loss and accuracy of ``model`` over ``(x, y)``, batched (the last batch may
    be smaller: every example weighs the same).

    Args:
        model: an NNX model mapping ``(B, ...)`` to logits ``(B, C)``.
        x: inputs ``(N, ...)``; y: integer labels ``(N,)`` in ``[0, C)``.
        batch_size: examples per forward pass.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive; got {batch_size}")
    _validate(x, y, model)
    return _evaluate(model, jnp.asarray(x), jnp.asarray(y), batch_size)


def _evaluate(
    model: nnx.Module, x: jax.Array, y: jax.Array, batch_size: int
) -> Metrics:
    if y.shape[0] == 0:
        raise ValueError("no examples to evaluate: y is empty")
    metrics = make_metrics(grad_norm=False)
    step = nnx.cached_partial(_eval_batch, model, metrics)
    for start in range(0, y.shape[0], batch_size):
        step(x[start : start + batch_size], y[start : start + batch_size])
    result = metrics.compute()
    return Metrics(float(result["loss"]), float(result["accuracy"]))


def check_guard(guard: NonFiniteGuard, epoch: int) -> None:
    """Raise :class:`~companion.loop.NonFiniteLossError` naming the first step the
    guard undid, if any (waits for the device)."""
    bad = int(guard.first_bad_step[...])
    if bad >= 0:
        what = (
            f"loss {float(guard.bad_loss[...])}, "
            f"gradient norm {float(guard.bad_grad_norm[...])}"
        )
        if bool(guard.bad_params[...]):
            what += ", and the update made the parameters non-finite"
        raise diverged(
            epoch,
            f"{what}. That step and the ones after it were undone: the model "
            "holds the parameters from before it",
            where=f"at optimizer step {bad}",
        )


def epoch_stats(metrics: nnx.MultiMetric) -> EpochStats:
    """The epoch's running loss, accuracy and gradient norm; the metrics reset."""
    stats = {k: float(v) for k, v in metrics.compute().items()}
    metrics.reset()
    return EpochStats(stats["loss"], stats["accuracy"], stats["grad_norm"])


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
    progress: bool = True,
) -> History:
    """Train ``model`` in place for epochs ``start_epoch .. epochs - 1``; return the
    ``History``.

    Each epoch takes ``N // batch_size`` full batches (shuffled with ``fold_in(key,
    epoch)``: a run resumed at an epoch sees the same batches as one that went straight
    through), evaluates on ``(x_val, y_val)``, and, with a ``checkpointer``, saves
    model and optimizer as step ``epoch + 1``. The same arguments as
    :func:`companion.training.fit` (chapter 5), with an optimizer for its ``lr``.

    Args:
        model: the NNX model (updated in place).
        optimizer: its ``nnx.Optimizer`` (updated in place).
        x_train: inputs ``(N, ...)``, validated once.
        y_train: integer labels ``(N,)`` in ``[0, C)``, validated once.
        epochs: train until this many epochs are done in total.
        batch_size: examples per step.
        x_val: inputs to evaluate on after each epoch (validated once).
        y_val: their labels.
        key: PRNG key for shuffling; ``None`` keeps the order.
        start_epoch: epochs already done (e.g. restored from a checkpoint).
        checkpointer: a :class:`companion.checkpoint.Checkpointer`: saves every epoch.
        progress: a tqdm progress bar with the running loss and accuracy.

    Raises:
        NonFiniteLossError: the loss, the gradients or the parameters became NaN or
            infinite; the message names the optimizer step, and the model holds the
            parameters from before it.
    """
    check_fit_args(
        epochs=epochs,
        start_epoch=start_epoch,
        has_x_val=x_val is not None,
        has_y_val=y_val is not None,
    )
    _validate(x_train, y_train, model)
    if x_val is not None:
        _validate(x_val, y_val, model, name="val_")
        x_val, y_val = jnp.asarray(x_val), jnp.asarray(y_val)  # on the device once
    x_dev, y_dev = jnp.asarray(x_train), jnp.asarray(y_train)  # on the device once
    steps = full_batches(len(y_dev), batch_size)
    metrics, guard = make_metrics(), NonFiniteGuard()
    train_batch = nnx.cached_partial(_train_batch, model, optimizer, metrics, guard)

    def one_epoch(epoch, key, bar):
        batches = batch_indices(key, len(y_dev), batch_size)  # (steps, B)
        for i in range(steps):
            train_batch(x_dev, y_dev, batches, i)
            if (i + 1) % SHOW_EVERY == 0 or i + 1 == steps:
                check_guard(guard, epoch)
                running = metrics.compute()
                bar.advance(
                    (i % SHOW_EVERY) + 1,
                    epoch=str(epoch + 1),
                    loss=f"{float(running['loss']):.4f}",
                    acc=f"{float(running['accuracy']):.3f}",
                )
        return epoch_stats(metrics)

    return run(
        one_epoch,
        epochs=epochs,
        steps_per_epoch=steps,
        start_epoch=start_epoch,
        key=key,
        progress=progress,
        validate=None
        if x_val is None
        else lambda: _evaluate(model, x_val, y_val, 1000),
        after_epoch=None
        if checkpointer is None
        else lambda epoch: checkpointer.save(epoch + 1, model, optimizer),
    )
