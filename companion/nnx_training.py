"""Training NNX models (chapter 6): ``fit``, ``evaluate``, and the fast path they use.

:func:`fit` runs :func:`companion.nnx_steps.guarded_train_step` (the four-line step of
:func:`companion.nnx_steps.train_step` with a NaN guard). Wrapping a step in ``nnx.jit``
works but re-walks the Python object graph on every call; :func:`fit` uses the fast path
instead: ``nnx.split`` the model, optimizer and metrics once into a static ``GraphDef``
and a ``State`` of arrays, run a plain ``jax.jit`` function on the state (donated) that
does ``steps_per_call`` steps in one ``lax.scan``, and ``nnx.update`` the objects at the
end. The epochs, history, progress bar and NaN check
are :func:`companion.loop.run`'s, shared with :func:`companion.training.fit`.

A step that is not finite is undone by the guard; :func:`fit` raises
:class:`~companion.loop.NonFiniteLossError` naming the first such step, at the next
check (every ``check_every`` steps and at the end of each epoch).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.typing import ArrayLike

from companion import cpu
from companion.batching import check_dataset, full_batches, shuffle
from companion.conv import FastConv
from companion.loop import (
    EpochStats,
    History,
    Metrics,
    check_fit_args,
    diverged,
    evaluate_batches,
    run,
)
from companion.losses import softmax_cross_entropy_with_integer_labels
from companion.nnx_steps import NonFiniteGuard, guarded_train_step, make_metrics

# fit and evaluate return companion.loop's History and Metrics, and raise its
# NonFiniteLossError (shared with training, and documented there).
__all__ = ["evaluate", "fit", "loops_well", "num_classes"]


# --- the fast path: split once, jax.jit the pure function of the state
# ---------------------------


@functools.partial(jax.jit, static_argnums=(0, 1, 6, 7, 8), donate_argnums=2)
def _fast_train_steps(
    graphdef, treedef, leaves, xs, ys, first, count, batch_size, groups
):
    # Steps first .. first + count - 1 of the epoch in one call: a lax.scan over the
    # batch index (count == 1: one plain step). The state travels as a flat list of
    # arrays: jit's C++ dispatch handles a list at full speed, while a custom pytree
    # (nnx.State) is flattened by Python code on every call.
    def step(leaves, i):
        objects = nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))
        x = jax.lax.dynamic_slice_in_dim(xs, i * batch_size, batch_size)  # on device
        y = jax.lax.dynamic_slice_in_dim(ys, i * batch_size, batch_size)
        guarded_train_step(*objects, x, y, groups)
        return jax.tree.leaves(nnx.state(objects)), None

    if count == 1:
        return step(leaves, first)[0]
    return jax.lax.scan(step, leaves, first + jnp.arange(count))[0]


def loops_well(model: nnx.Module) -> bool:
    """Whether many steps of ``model`` can run in one ``lax.scan`` at full speed.

    False on the CPU backend for a model holding an ``nnx.Conv`` (or ``ConvTranspose``)
    other than :class:`companion.conv.FastConv`: inside a loop, XLA:CPU computes
    ``lax.conv``'s kernel gradient in a layout its fast convolution does not take, and
    falls back to a generic loop (chapter 6 measured a CNN step ≈ 10× slower).
    """
    if jax.default_backend() != "cpu":
        return True
    return not any(
        isinstance(node, (nnx.Conv, nnx.ConvTranspose))
        and not isinstance(node, FastConv)
        for _, node in nnx.iter_graph(model)
    )


@functools.partial(jax.jit, static_argnums=0)
def _eval_sums(graphdef, state, x, y):
    # per-example losses summed: every example weighs the same, even in a smaller last
    # batch
    logits = nnx.merge(graphdef, state)(x).astype(jnp.float32)
    losses = softmax_cross_entropy_with_integer_labels(logits, y)
    return jnp.sum(losses), jnp.sum(jnp.argmax(logits, -1) == y)


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
    be smaller).

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
    graphdef, state = nnx.split(
        model
    )  # once: each batch then calls a plain jitted function
    return evaluate_batches(
        lambda xb, yb: _eval_sums(graphdef, state, xb, yb), x, y, batch_size
    )


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
    steps_per_call: int | None = None,
    groups: int | None = None,
    progress: bool = True,
) -> History:
    """Train ``model`` in place for epochs ``start_epoch .. epochs - 1``, recording a
    ``History``.

    The loop is :func:`companion.loop.run`, shared with :func:`companion.training.fit`.

    Each epoch shuffles with :func:`companion.batching.epoch_key` (``fold_in(key,
    epoch)``: a run resumed at an epoch sees the same batches as one that went straight
    through), takes ``N // batch_size`` full batches, evaluates on the validation data,
    and, with a ``checkpointer`` (:class:`companion.checkpoint.Checkpointer`), saves
    model and optimizer as step ``epoch + 1``.

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
        check_every: steps between checks of the NaN guard (each check waits for the
            device; with ``steps_per_call`` > 1, at the first call that reaches it).
        steps_per_call: steps per compiled call, run as one ``lax.scan``: fewer calls,
            and one scratch allocation for many steps. ``None``: ``check_every``, or 1
            for a model that does not loop well on this backend (:func:`loops_well`).
        groups: run each batch as this many groups of rows
            (:func:`companion.nnx_steps.loss_fn`), a divisor of ``batch_size``.
            ``None``: :func:`companion.cpu.batch_groups` (one per core on a CPU), or 1
            for a model holding an ``nnx.BatchNorm``, whose statistics are taken over
            the whole batch.
        progress: a tqdm progress bar over the steps with the running loss and accuracy.

    Raises:
        NonFiniteLossError: the loss or gradients became non-finite; the message names
            the step.
    """
    check_fit_args(
        epochs=epochs,
        start_epoch=start_epoch,
        has_x_val=x_val is not None,
        has_y_val=y_val is not None,
    )
    if check_every < 1:
        raise ValueError(
            "check_every must be at least 1 (steps between NaN checks); "
            f"got {check_every}"
        )
    if steps_per_call is None:
        steps_per_call = check_every if loops_well(model) else 1
    if steps_per_call < 1:
        raise ValueError(f"steps_per_call must be at least 1; got {steps_per_call}")
    if groups is None:
        mixes = any(isinstance(n, nnx.BatchNorm) for _, n in nnx.iter_graph(model))
        groups = 1 if mixes else cpu.batch_groups(batch_size)
    cpu.row_groups(batch_size, groups)  # checks that groups divides the batch
    _validate(x_train, y_train, model)
    if x_val is not None:
        _validate(x_val, y_val, model, name="val_")
        # on the device once, for every epoch
        x_val, y_val = jnp.asarray(x_val), jnp.asarray(y_val)
    x_dev, y_dev = jnp.asarray(x_train), jnp.asarray(y_train)  # on the device once
    steps = full_batches(len(y_dev), batch_size)
    metrics, guard = make_metrics(), NonFiniteGuard()
    objects = (model, optimizer, metrics, guard)

    def check(leaves, treedef, epoch):
        # the objects take the state's arrays (no copy); then the guard is read on the
        # host
        nnx.update(objects, jax.tree.unflatten(treedef, leaves))
        bad = int(guard.first_bad_step[...])
        if bad >= 0:
            loss, norm = float(guard.bad_loss[...]), float(guard.bad_grad_norm[...])
            what = f"loss {loss}, gradient norm {norm}"
            if bool(guard.bad_params[...]):
                what += ", and the update made the parameters non-finite"
            raise diverged(
                epoch,
                f"{what}. That step and any later non-finite ones were undone, so the "
                f"model holds the parameters from before it",
                where=f"at optimizer step {bad}",
            )

    def one_epoch(epoch, key, bar):
        xs, ys = (x_dev, y_dev) if key is None else shuffle(key, x_dev, y_dev)
        graphdef, state = nnx.split(objects)
        leaves, treedef = jax.tree.flatten(state)
        done, shown = 0, 0
        while done < steps:
            count = min(steps_per_call, steps - done)
            leaves = _fast_train_steps(
                graphdef, treedef, leaves, xs, ys, done, count, batch_size, groups
            )
            done += count
            if done // check_every > (done - count) // check_every or done == steps:
                check(leaves, treedef, epoch)
                computed = metrics.compute()
                bar.advance(
                    done - shown,
                    epoch=str(epoch + 1),
                    loss=f"{float(computed['loss']):.4f}",
                    acc=f"{float(computed['accuracy']):.3f}",
                )
                shown = done
        computed = {k: float(v) for k, v in metrics.compute().items()}
        metrics.reset()
        return EpochStats(computed["loss"], computed["accuracy"], computed["grad_norm"])

    def save(epoch):
        checkpointer.save(epoch + 1, model, optimizer)

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
        learning_rate=None
        if schedule is None
        else lambda: float(schedule(int(optimizer.step[...]))),
        after_epoch=None if checkpointer is None else save,
    )
