"""Fitting the chapter-2 MLP: :func:`fit` trains it for some epochs with
:func:`companion.sgd.train_epoch` and records a history; :func:`evaluate` measures its
loss and accuracy on a dataset.

The same API as :mod:`companion.nnx_training` for the NNX models: both run the epoch
loop of :func:`companion.loop.run`, and return its ``History`` and ``Metrics``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from companion import mlp
from companion.batching import full_batches
from companion.loop import (
    EpochStats,
    History,
    Metrics,
    check_fit_args,
    evaluate_batches,
    run,
)
from companion.losses import softmax_cross_entropy_with_integer_labels
from companion.sgd import MODES, check_inputs, train_epoch

# fit and evaluate return companion.loop's History and Metrics, and raise its
# NonFiniteLossError (shared with nnx_training, and documented there).
__all__ = ["evaluate", "fit"]


@functools.partial(jax.jit, static_argnames="activation")
def _eval_sums(params, x, y, activation):
    logits = mlp.apply(params, x, activation)
    losses = softmax_cross_entropy_with_integer_labels(logits, y)
    return jnp.sum(losses), jnp.sum(jnp.argmax(logits, -1) == y)


def evaluate(
    params: mlp.Params,
    x: ArrayLike,
    y: ArrayLike,
    batch_size: int = 1000,
    activation: str = "relu",
) -> Metrics:
    """Mean cross-entropy and accuracy over all of ``(x, y)``, in batches of
    ``batch_size``.

    Args:
        params: list of ``(W, b)``.
        x: inputs ``(N, 784)``.
        y: integer labels ``(N,)`` in ``[0, C)``, ``C`` the width of the last layer.
        batch_size: examples per forward pass (memory, not results, depends on it).
        activation: the hidden layers' nonlinearity, as in
            :func:`companion.mlp.forward`.

    Returns:
        ``Metrics(loss, accuracy)`` as Python floats, over every example (the last batch
        may be smaller).
    """
    check_inputs(x, y, params, activation)
    return _evaluate(params, jnp.asarray(x), jnp.asarray(y), batch_size, activation)


def _evaluate(
    params: mlp.Params, x: jax.Array, y: jax.Array, batch_size: int, activation: str
) -> Metrics:
    return evaluate_batches(
        lambda xb, yb: _eval_sums(params, xb, yb, activation), x, y, batch_size
    )


def fit(
    params: mlp.Params,
    x_train: ArrayLike,
    y_train: ArrayLike,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    mode: str = "scan",
    x_val: ArrayLike | None = None,
    y_val: ArrayLike | None = None,
    key: jax.Array | None = None,
    progress: bool = True,
    activation: str = "relu",
) -> tuple[mlp.Params, History]:
    """Train for ``epochs`` epochs with :func:`companion.sgd.train_epoch`, recording a
    :class:`~companion.loop.History`.

    The loop is :func:`companion.loop.run`, shared with
    :func:`companion.nnx_training.fit`. The data is validated once and moved to the
    device once. With a ``key``, epoch ``e`` shuffles with
    :func:`companion.batching.epoch_key` ``(key, e)``, so every epoch sees a new order,
    and the same one in a run that was interrupted and resumed. ``epoch_time`` measures
    the updates only (the work ``block_until_ready`` waits for), not the evaluation; the
    training accuracy is measured after each epoch, and the validation metrics when
    ``x_val``, ``y_val`` are given.

    Args:
        params: initial list of ``(W, b)``.
        x_train: ``(N, 784)``; y_train: ``(N,)`` integer labels.
        epochs: number of epochs, ``>= 1``.
        lr: learning rate.
        batch_size: examples per step.
        mode: ``"eager"``, ``"jit"`` or ``"scan"``.
        x_val: optional validation inputs; y_val: their labels (validated once).
        key: PRNG key for shuffling; ``None`` keeps the order.
        progress: show a tqdm progress bar with the latest loss and accuracies.
        activation: the hidden layers' nonlinearity, as in
            :func:`companion.mlp.forward`.

    Returns:
        ``(params, history)``.

    Raises:
        NonFiniteLossError: an epoch's mean loss is NaN or infinite (the error names the
            epoch).
    """
    check_fit_args(
        epochs=epochs,
        start_epoch=0,
        has_x_val=x_val is not None,
        has_y_val=y_val is not None,
    )
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {list(MODES)}")
    check_inputs(x_train, y_train, params, activation)
    # on the device once, for all epochs
    x_dev, y_dev = jnp.asarray(x_train), jnp.asarray(y_train)
    steps = full_batches(len(y_dev), batch_size)
    if x_val is not None:
        check_inputs(x_val, y_val, params, activation, name="val_")
        x_val, y_val = jnp.asarray(x_val), jnp.asarray(y_val)
    state = {"params": params}

    def one_epoch(epoch, key, bar):
        state["params"], loss = train_epoch(
            state["params"],
            x_dev,
            y_dev,
            lr=lr,
            batch_size=batch_size,
            mode=mode,
            key=key,
            validate=False,
            activation=activation,
        )
        jax.block_until_ready(state["params"])
        bar.advance(steps)
        return EpochStats(float(loss))

    history = run(
        one_epoch,
        epochs=epochs,
        steps_per_epoch=steps,
        key=key,
        progress=progress,
        desc=f"training ({mode})",
        train_accuracy=lambda: (
            _evaluate(state["params"], x_dev, y_dev, 1000, activation).accuracy
        ),
        validate=None
        if x_val is None
        else lambda: _evaluate(state["params"], x_val, y_val, 1000, activation),
    )
    return state["params"], history
