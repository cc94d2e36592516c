"""The training loop both ``fit`` s share: epochs, shuffle keys, timing, history,
progress, NaN check.

:func:`companion.training.fit` (the hand-written MLP, chapter 5) and
:func:`companion.nnx_training.fit` (NNX models with optax, chapter 6) differ only in how
they run one epoch. Each hands :func:`run` a function that trains one epoch; :func:`run`
does the rest, the same way for both: the per-epoch shuffle key, the timing, the
:class:`History`, the progress bar, the evaluation and the check that the loss stayed
finite.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import jax
import jax.numpy as jnp
from tqdm import tqdm  # plain text bar: tqdm.auto would want ipywidgets in a notebook

from companion.batching import epoch_key

__all__ = [
    "EpochStats",
    "History",
    "Metrics",
    "NonFiniteLossError",
    "Progress",
    "check_fit_args",
    "diverged",
    "evaluate_batches",
    "run",
]


class NonFiniteLossError(FloatingPointError):
    """The loss or the gradients became NaN or infinite during training."""


class Metrics(NamedTuple):
    """Mean loss and accuracy over a dataset, as Python floats."""

    loss: float
    accuracy: float


class EpochStats(NamedTuple):
    """What one epoch of training reports to :func:`run`."""

    loss: float  # mean training loss over the epoch's steps
    # running training accuracy (nan: measured after the epoch instead)
    accuracy: float = math.nan
    grad_norm: float = math.nan  # mean global gradient norm (nan: not measured)


@dataclass
class History:
    """Per-epoch records of a ``fit``, as plain floats (a list stays empty when not
    measured).
    """

    loss: list[float] = field(
        default_factory=list
    )  # mean training loss over the epoch's steps
    train_accuracy: list[float] = field(default_factory=list)  # on the training data
    grad_norm: list[float] = field(
        default_factory=list
    )  # mean global gradient norm (before clipping)
    val_loss: list[float] = field(
        default_factory=list
    )  # after the epoch, without validation data: empty
    val_accuracy: list[float] = field(default_factory=list)
    learning_rate: list[float] = field(
        default_factory=list
    )  # the schedule's value at the epoch's end
    epoch_time: list[float] = field(
        default_factory=list
    )  # seconds of training steps (no evaluation)


def diverged(epoch: int, detail: str, where: str = "") -> NonFiniteLossError:
    """The one error both ``fit`` s raise when training stops being finite (``epoch``
    counts from 0).

    Examples:
        >>> print(diverged(1, "the mean training loss is nan"))
        training diverged (epoch 2): the mean training loss is nan. Lower the learning
            rate, or check the data for NaN/inf.
    """
    at = f" {where}" if where else ""
    return NonFiniteLossError(
        f"training diverged{at} (epoch {epoch + 1}): {detail}. Lower the learning "
        f"rate, or check the data for NaN/inf."
    )


def check_fit_args(
    *, epochs: int, start_epoch: int, has_x_val: bool, has_y_val: bool
) -> None:
    """Refuse an epoch range or validation pair that ``fit`` cannot honour."""
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1; got {epochs}")
    if not 0 <= start_epoch <= epochs:
        raise ValueError(
            "need 0 <= start_epoch <= epochs; "
            f"got start_epoch={start_epoch}, epochs={epochs}"
        )
    if has_x_val != has_y_val:
        raise ValueError("give both x_val and y_val, or neither")


class Progress:
    """A tqdm bar over the training steps of a run, the latest figures beside it."""

    def __init__(self, total_steps: int, desc: str, enabled: bool):
        self._bar = tqdm(total=total_steps, desc=desc, unit="step", disable=not enabled)

    def advance(self, steps: int, **figures: str) -> None:
        """Count ``steps`` more steps done; show ``figures`` (already formatted) after
        the bar.
        """
        if figures:
            self._bar.set_postfix(figures, refresh=False)
        self._bar.update(steps)

    def close(self) -> None:
        self._bar.close()


# One epoch of training: (epoch index, its shuffle key or None, the progress bar) -> its
# stats. It must return only once the epoch's work is done (block_until_ready), so that
# run times it.
TrainEpoch = Callable[[int, "jax.Array | None", Progress], EpochStats]


def run(
    train_epoch: TrainEpoch,
    *,
    epochs: int,
    steps_per_epoch: int,
    start_epoch: int = 0,
    key: jax.Array | None = None,
    train_accuracy: Callable[[], float] | None = None,
    validate: Callable[[], Metrics] | None = None,
    learning_rate: Callable[[], float] | None = None,
    after_epoch: Callable[[int], None] | None = None,
    progress: bool = True,
    desc: str = "training",
) -> History:
    """Run epochs ``start_epoch .. epochs - 1`` of ``train_epoch``; return the History.

    Epoch ``e`` gets the key :func:`companion.batching.epoch_key` ``(key, e)``: every
    epoch a new shuffle, and the same one in a run interrupted and resumed at ``e``.

    Args:
        train_epoch: trains one epoch (see ``TrainEpoch``); only its time is
            ``epoch_time``.
        epochs: train until this many epochs are done in total.
        steps_per_epoch: optimizer steps per epoch (the length of the progress bar).
        start_epoch: epochs already done (e.g. restored from a checkpoint).
        key: PRNG key for shuffling; ``None`` keeps the order.
        train_accuracy: measures the training accuracy after the epoch, when
            ``train_epoch`` does not report a running one.
        validate: the validation metrics after each epoch.
        learning_rate: the learning rate at the end of the epoch, to record it.
        after_epoch: called with the epoch index last (e.g. to save a checkpoint).
        progress: show the progress bar.
        desc: the bar's label.

    Raises:
        ValueError: ``epochs``, ``start_epoch`` or ``steps_per_epoch`` out of range.
        NonFiniteLossError: an epoch's mean training loss is NaN or infinite.
    """
    check_fit_args(
        epochs=epochs, start_epoch=start_epoch, has_x_val=False, has_y_val=False
    )
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be at least 1; got {steps_per_epoch}")
    history = History()
    bar = Progress((epochs - start_epoch) * steps_per_epoch, desc, progress)
    try:
        for epoch in range(start_epoch, epochs):
            start = time.perf_counter()
            stats = train_epoch(epoch, epoch_key(key, epoch), bar)
            history.epoch_time.append(time.perf_counter() - start)
            if not math.isfinite(stats.loss):
                raise diverged(epoch, f"the mean training loss is {stats.loss}")
            history.loss.append(stats.loss)
            accuracy = stats.accuracy if train_accuracy is None else train_accuracy()
            history.train_accuracy.append(accuracy)
            if not math.isnan(stats.grad_norm):
                history.grad_norm.append(stats.grad_norm)
            if learning_rate is not None:
                history.learning_rate.append(learning_rate())
            figures = {
                "epoch": str(epoch + 1),
                "loss": f"{stats.loss:.4f}",
                "train_acc": f"{accuracy:.3f}",
            }
            if validate is not None:
                val = validate()
                history.val_loss.append(val.loss)
                history.val_accuracy.append(val.accuracy)
                figures["val_acc"] = f"{val.accuracy:.3f}"
            bar.advance(0, **figures)
            if after_epoch is not None:
                after_epoch(epoch)
    finally:
        bar.close()
    return history


# Sums over one batch: (x (B, ...), y (B,)) -> (sum of the per-example losses, number
# correct).
BatchSums = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def evaluate_batches(
    batch_sums: BatchSums, x: jax.Array, y: jax.Array, batch_size: int
) -> Metrics:
    """Mean loss and accuracy over ``(x, y)`` from per-batch sums; the last batch may be
    smaller.

    Sums, not means, per batch: every example then weighs the same, whatever the batch
    sizes.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive; got {batch_size}")
    if y.shape[0] == 0:
        raise ValueError("no examples to evaluate: y is empty")
    total_loss, correct = jnp.float32(0.0), jnp.int32(0)
    for start in range(0, y.shape[0], batch_size):
        loss_sum, right = batch_sums(
            x[start : start + batch_size], y[start : start + batch_size]
        )
        # summed on the device: one sync at the end, not one per batch
        total_loss, correct = total_loss + loss_sum, correct + right
    n = int(y.shape[0])
    return Metrics(float(total_loss) / n, int(correct) / n)
