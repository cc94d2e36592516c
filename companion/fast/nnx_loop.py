"""An NNX training loop for XLA:CPU that runs many steps per compiled call: an opt-in
speed path (the benchmark's ``fast`` variants).

:func:`fast_fit` trains like :func:`companion.nnx_training.fit` — the same guarded
step, the same batches — but ``nnx.split`` s the model, optimizer, metrics and NaN guard
once per epoch; runs many steps per compiled call in one ``lax.scan`` (a plain
``jax.jit`` of the state, donated); and runs each batch as one group of rows per core
(:func:`companion.fast.rows.grouped_loss_fn`: independent products XLA:CPU runs at the
same time). Inside a loop, XLA:CPU computes ``lax.conv``'s kernel gradient slowly, so a
model holding an ``nnx.Conv`` other than :class:`companion.fast.conv.FastConv` takes
one step per call there (:func:`loops_well`). None of it is used by
:mod:`companion.nnx_training`; it trains the same network to float32 rounding.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from companion import nnx_steps, nnx_training
from companion.batching import batch_indices, full_batches
from companion.fast import rows
from companion.fast.conv import FastConv
from companion.loop import History, run

__all__ = ["fast_fit", "loops_well"]


@functools.partial(jax.jit, static_argnums=(0, 1, 7, 8), donate_argnums=2)
def _fast_train_steps(graphdef, treedef, leaves, x, y, batches, first, count, groups):
    # Steps first .. first + count - 1 of the epoch in one call (a lax.scan over the
    # step index), each on the rows batches[i] (chapter 6's batch_indices) gathered on
    # the device. The state travels as a flat list of arrays: jit's C++ dispatch
    # handles a list at full speed.
    loss = rows.grouped_loss_fn(nnx_steps.loss_fn, groups)

    def step(leaves, i):
        objects = nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))
        idx = batches[i]  # (B,)
        nnx_steps.guarded_train_step(*objects, x[idx], y[idx], loss)
        return jax.tree.leaves(nnx.state(objects)), None

    if count == 1:
        return step(leaves, first)[0]
    return jax.lax.scan(step, leaves, first + jnp.arange(count))[0]


def loops_well(model: nnx.Module) -> bool:
    """Whether many steps of ``model`` can run in one ``lax.scan`` at full speed: False
    on the CPU backend for a model holding an ``nnx.Conv`` (or ``ConvTranspose``) other
    than :class:`companion.fast.conv.FastConv`.
    """
    if jax.default_backend() != "cpu":
        return True
    return not any(
        isinstance(node, (nnx.Conv, nnx.ConvTranspose))
        and not isinstance(node, FastConv)
        for _, node in nnx.iter_graph(model)
    )


def fast_fit(
    model: nnx.Module,
    optimizer: nnx.Optimizer,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    start_epoch: int = 0,
    key: jax.Array | None = None,
    steps_per_call: int | None = None,
    groups: int | None = None,
) -> History:
    """Train like :func:`companion.nnx_training.fit` (the guarded step, the same
    batches, no validation or checkpoints), many steps per compiled call.

    Args:
        model, optimizer: updated in place; x ``(N, ...)``, y ``(N,)``, validated.
        epochs, batch_size, start_epoch, key: as for ``nnx_training.fit``.
        steps_per_call: steps per compiled call (``None``: 50, or 1 for a model that
            does not loop well here, :func:`loops_well`).
        groups: row groups per batch (``None``: one per core on a CPU,
            :func:`companion.fast.rows.batch_groups`; 1 for a model with
            ``nnx.BatchNorm``).
    """
    if steps_per_call is None:
        steps_per_call = 50 if loops_well(model) else 1
    if steps_per_call < 1:
        raise ValueError(f"steps_per_call must be at least 1; got {steps_per_call}")
    if groups is None:
        mixes = any(isinstance(n, nnx.BatchNorm) for _, n in nnx.iter_graph(model))
        groups = 1 if mixes else rows.batch_groups(batch_size)
    rows.row_groups(batch_size, groups)  # checks that groups divides the batch
    nnx_training._validate(x, y, model)
    x_dev, y_dev = jnp.asarray(x), jnp.asarray(y)
    steps = full_batches(len(y_dev), batch_size)
    metrics, guard = nnx_steps.make_metrics(), nnx_steps.NonFiniteGuard()
    objects = (model, optimizer, metrics, guard)

    def one_epoch(epoch, key, bar):
        batches = batch_indices(key, len(y_dev), batch_size)  # (steps, B)
        graphdef, state = nnx.split(objects)
        leaves, treedef = jax.tree.flatten(state)
        for first in range(0, steps, steps_per_call):
            count = min(steps_per_call, steps - first)
            leaves = _fast_train_steps(
                graphdef, treedef, leaves, x_dev, y_dev, batches, first, count, groups
            )
        nnx.update(objects, jax.tree.unflatten(treedef, leaves))
        nnx_training.check_guard(guard, epoch)
        return nnx_training.epoch_stats(metrics)

    return run(
        one_epoch,
        epochs=epochs,
        steps_per_epoch=steps,
        start_epoch=start_epoch,
        key=key,
        progress=False,
    )
