"""Data-parallel training on several devices with ``jax.sharding`` (chapter 7).

A ``Mesh`` names the devices along a ``"data"`` axis. A batch is *sharded* along that
axis (each device holds ``B / n`` examples) and the parameters are *replicated* (every
device holds all of them). Jitting the ordinary SGD step on such inputs lets XLA's SPMD
partitioner run it on every device and insert the all-reduce that averages the
gradients; :func:`shard_map_sgd_step` writes the same step explicitly, per device, with
``jax.shard_map`` and the mean of the loss taken across devices by ``jax.lax.pmean``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from companion import mlp
from companion.sgd import loss_fn, sgd_update

__all__ = [
    "AXIS",
    "data_parallel_sgd_step",
    "make_mesh",
    "replicate",
    "shard_batch",
    "shard_map_sgd_step",
]

AXIS = "data"

Step = Callable[[mlp.Params, jax.Array, jax.Array, float], tuple[mlp.Params, jax.Array]]


def make_mesh(
    n_devices: int | None = None, *, devices: Sequence[jax.Device] | None = None
) -> Mesh:
    """A 1-D mesh over the first ``n_devices`` of ``devices``, with axis ``"data"``.

    Args:
        n_devices: how many devices (default: all of ``devices``).
        devices: the devices to use (default ``jax.devices()``, the default backend's);
            pass ``jax.devices("cpu")`` for a mesh of CPU devices whatever the default
            backend is.

    The axis is *auto*-sharded: XLA's partitioner decides the layout of intermediate
    values, and only the inputs' shardings are given (``jax.make_mesh`` defaults to
    explicit axes in recent JAX).

    Examples:
        >>> dict(make_mesh(1).shape)
        {'data': 1}
    """
    pool = list(jax.devices() if devices is None else devices)
    n = len(pool) if n_devices is None else n_devices
    if not 1 <= n <= len(pool):
        raise ValueError(
            f"n_devices must be between 1 and the {len(pool)} available device(s); "
            f"got {n}"
        )
    return jax.make_mesh((n,), (AXIS,), axis_types=(AxisType.Auto,), devices=pool[:n])


def shard_batch(batch, mesh: Mesh):
    """Split every array of ``batch`` (a pytree) along its first axis over the mesh.

    Raises:
        ValueError: a leading dimension is not divisible by the number of devices (the
            message gives both numbers).
    """
    n = mesh.size

    def put(x):
        x = jnp.asarray(x)
        if x.ndim == 0 or x.shape[0] % n:
            raise ValueError(
                f"a batch of {x.shape[0] if x.ndim else 'a scalar'} examples "
                f"cannot be split evenly over {n} devices: "
                f"use a batch size divisible by {n}"
            )
        return jax.device_put(x, NamedSharding(mesh, P(AXIS)))

    return jax.tree.map(put, batch)


def replicate(tree, mesh: Mesh):
    """Place a full copy of every array of ``tree`` on every device of the mesh."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def data_parallel_sgd_step(mesh: Mesh) -> Step:
    """The chapter-5 SGD step, jitted for replicated ``params`` and sharded ``(x, y)``.

    The function body is the single-device ``sgd_update``: the shardings alone make it
    data parallel, and XLA inserts the gradient all-reduce. Returns
    ``(new_params, loss)``, the parameters replicated.
    """
    replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P(AXIS))
    return jax.jit(
        sgd_update,
        in_shardings=(replicated, sharded, sharded, None),
        out_shardings=(replicated, replicated),
    )


def shard_map_sgd_step(mesh: Mesh) -> Step:
    """The same step written per device with ``jax.shard_map``, as chapter 7 writes it.

    Each device sees its ``B / n`` examples. Its loss is the mean over its shard; the
    ``pmean`` over ``"data"`` makes it the mean over the whole batch, *inside* the
    differentiated function. Under ``shard_map``'s default ``check_vma=True`` JAX
    tracks which values vary across devices: the parameters are replicated
    (invariant), so their gradient comes out summed over the devices — here the sum of
    the ``1/n``-weighted shard gradients, the full-batch gradient. (Averaging the
    local gradients with a ``pmean`` *after* ``grad`` would count them ``n`` times
    under the default; that older form needs ``check_vma=False``.)
    """

    def local_loss(params, x, y):  # x: (B / n, 784) on each device
        return jax.lax.pmean(loss_fn(params, x, y), AXIS)  # the batch's mean

    def local_step(params, x, y, lr):
        loss, grads = jax.value_and_grad(local_loss)(params, x, y)
        return jax.tree.map(lambda p, g: p - lr * g, params, grads), loss

    step = jax.shard_map(
        local_step,
        mesh=mesh,
        in_specs=(P(), P(AXIS), P(AXIS), P()),  # params, x, y, lr
        out_specs=(P(), P()),  # new params and loss: the same on every device
    )
    return jax.jit(step)
