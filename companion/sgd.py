"""One SGD step and one SGD epoch of the chapter-2 MLP, run three ways: eager, jit
per step, and a fused epoch.

Every mode runs the same update on the same batches, so they compute the same numbers
(to float rounding); they differ only in how much Python runs per step:

- ``"eager"``: no ``jit``; every array operation is dispatched from Python, one by one.
- ``"jit"``: one compiled SGD step, called from a Python loop once per batch.
- ``"scan"``: the whole epoch compiled as one ``lax.scan`` over the batches, with the
  data on the device and the parameters donated (their buffers reused for the result):
  one call per epoch.

The compiled modes split each batch into one group of rows per CPU core (``groups`` of
:func:`loss_fn`, from :func:`companion.cpu.batch_groups`), and each step slices its
batch out of the dataset on the device: the epoch never copies the whole dataset (a
reshape into batches would, when the batch size does not divide ``N``).

An epoch uses ``N // batch_size`` full batches (the last ``N % batch_size`` examples are
skipped; shuffle with a key so different ones are skipped each epoch): every step then
has the same shape, and nothing recompiles.
"""

from __future__ import annotations

import collections
import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from companion import cpu, mlp
from companion.batching import check_dataset, full_batches, shuffle
from companion.losses import softmax_cross_entropy_with_integer_labels

__all__ = [
    "MODES",
    "check_inputs",
    "loss_fn",
    "sgd_update",
    "trace_counts",
    "train_epoch",
]

MODES = ("eager", "jit", "scan")

# How many times each compiled function has been traced: incremented by Python code
# inside the traced functions, which runs only while JAX traces. A count that grows
# every epoch means the function is recompiled every epoch (the classic silent
# slowdown).
_TRACES: collections.Counter[str] = collections.Counter()


def trace_counts() -> dict[str, int]:
    """How often the jitted SGD step (``"step"``) and fused epoch (``"epoch"``) were
    traced.
    """
    return dict(_TRACES)


def loss_fn(
    params: mlp.Params,
    x: jax.Array,
    y: jax.Array,
    activation: str = "relu",
    groups: int = 1,
) -> jax.Array:
    """Mean cross-entropy of the MLP on a batch: ``x`` ``(B, 784)``, ``y`` ``(B,)``.

    The training kernel: :func:`companion.mlp.apply` and the per-example loss, with no
    value checks (no device→host copy per step). Validate the data once first (``fit``
    does); a label outside ``[0, C)`` makes the loss NaN.

    ``groups`` splits the batch into that many equal groups of rows, each its own
    forward pass: the same mean (its sum taken in another order), but the groups'
    products are independent, so XLA:CPU can run them on different cores at once (see
    :func:`companion.cpu.batch_groups`). ``groups`` must divide ``B``.
    """
    if groups == 1:
        logits = mlp.apply(params, x, activation)
        return jnp.mean(softmax_cross_entropy_with_integer_labels(logits, y))
    total = 0.0
    for part in cpu.row_groups(x.shape[0], groups):  # x[part]: (B / groups, 784)
        logits = mlp.apply(params, x[part], activation)
        total += jnp.sum(softmax_cross_entropy_with_integer_labels(logits, y[part]))
    return total / x.shape[0]


def sgd_update(
    params: mlp.Params,
    x: ArrayLike,
    y: ArrayLike,
    lr: float,
    activation: str = "relu",
    groups: int = 1,
) -> tuple[mlp.Params, jax.Array]:
    """One step of SGD: ``θ ← θ − lr · ∇L(θ)``, for any depth (``tree_map`` over all
    layers).

    A training step on validated data: it checks no values (see :func:`loss_fn`).

    Args:
        params: list of ``(W, b)``.
        x: a batch ``(B, n_in)``.
        y: integer labels ``(B,)`` in ``[0, C)``.
        lr: the learning rate.
        activation: the hidden layers' nonlinearity (static under ``jit``).
        groups: row groups of the batch, as in :func:`loss_fn` (static under ``jit``).

    Returns:
        ``(new_params, loss)`` where ``loss`` is the batch loss *before* the update.

    Examples:
        >>> params = mlp.init_params([4, 3], jax.random.key(0))
        >>> x, y = jnp.ones((2, 4)), jnp.array([0, 2])
        >>> new, loss = sgd_update(params, x, y, lr=0.1)
        >>> bool(loss_fn(new, x, y) < loss)
        True
    """
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y, activation, groups)
    return jax.tree.map(lambda p, g: p - lr * g, params, grads), loss


def _batch(x, y, i, batch_size, perm=None):
    # Batch i of the epoch, sliced inside jit out of the data already on the device: a
    # copy of B rows per step, never of the whole dataset. Shuffled: the rows that the
    # permutation puts at positions [i·B, (i+1)·B), gathered.
    start = i * batch_size
    if perm is None:
        return (
            jax.lax.dynamic_slice_in_dim(x, start, batch_size),
            jax.lax.dynamic_slice_in_dim(y, start, batch_size),
        )
    rows = jax.lax.dynamic_slice_in_dim(perm, start, batch_size)  # (B,)
    return x[rows], y[rows]


@functools.partial(
    jax.jit, static_argnames=("batch_size", "activation", "groups"), donate_argnums=0
)
def _jit_step(params, x, y, i, lr, *, batch_size, activation, groups):
    _TRACES["step"] += 1
    return sgd_update(params, *_batch(x, y, i, batch_size), lr, activation, groups)


@functools.partial(
    jax.jit, static_argnames=("batch_size", "activation", "groups"), donate_argnums=0
)
def _scan_epoch(params, x, y, lr, key, *, batch_size, activation, groups):
    _TRACES["epoch"] += 1
    perm = None if key is None else jax.random.permutation(key, y.shape[0])

    def body(p, i):
        return sgd_update(p, *_batch(x, y, i, batch_size, perm), lr, activation, groups)

    # one step per loop iteration: unrolling two (fewer loop tests and copies of the
    # carried parameters) measured slower here once the steps were split into groups
    params, losses = jax.lax.scan(body, params, jnp.arange(y.shape[0] // batch_size))
    return params, jnp.mean(losses)


def check_inputs(
    x: ArrayLike, y: ArrayLike, params: mlp.Params, activation: str, name: str = ""
) -> None:
    """Raise a clear ``ValueError`` unless ``params`` are an MLP, ``activation`` is
    known and ``(x, y)`` a dataset for it: ``x`` ``(N, n_in)`` finite, ``y`` ``(N,)``
    integer labels below the width of the last layer. ``name`` prefixes the names.
    """
    mlp.check_params(params)
    mlp.get_activation(activation)
    check_dataset(x, y, name=name, flat=True, num_classes=mlp.num_classes(params))


def train_epoch(
    params: mlp.Params,
    x: ArrayLike,
    y: ArrayLike,
    *,
    lr: float,
    batch_size: int,
    mode: str = "scan",
    key: jax.Array | None = None,
    validate: bool = True,
    activation: str = "relu",
    groups: int | None = None,
) -> tuple[mlp.Params, jax.Array]:
    """One epoch of SGD over ``N // batch_size`` full batches.

    Args:
        params: list of ``(W, b)``. In ``"jit"`` and ``"scan"`` modes their buffers are
            *donated*: do not use the arrays you passed in after the call, use the
            returned ones.
        x: inputs ``(N, 784)``; pass a ``jax.Array`` to keep the data on the device
            between epochs.
        y: integer labels ``(N,)``.
        lr: learning rate.
        batch_size: examples per step.
        mode: ``"eager"``, ``"jit"`` or ``"scan"`` (see the module docstring).
        key: shuffle the examples with this PRNG key; ``None`` keeps their order.
        validate: check shapes, labels and finiteness first (``fit`` does it once, then
            skips it).
        activation: the hidden layers' nonlinearity, as in
            :func:`companion.mlp.forward`.
        groups: row groups per batch (:func:`loss_fn`), a divisor of ``batch_size``.
            ``None``: :func:`companion.cpu.batch_groups` in the compiled modes (one per
            core on a CPU), 1 in eager mode.

    Returns:
        ``(new_params, mean_loss)``: the mean of the per-batch losses, each taken before
        its step.

    Examples:
        >>> x, y = jnp.ones((10, 4)), jnp.arange(10) % 3
        >>> params = mlp.init_params([4, 3], jax.random.key(0))
        >>> params, loss = train_epoch(params, x, y, lr=0.1, batch_size=5, mode="jit")
        >>> loss.shape
        ()
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {list(MODES)}")
    if validate:
        check_inputs(x, y, params, activation)
    x, y = jnp.asarray(x), jnp.asarray(y)
    num = full_batches(y.shape[0], batch_size)
    if groups is None:
        groups = 1 if mode == "eager" else cpu.batch_groups(batch_size)
    cpu.row_groups(batch_size, groups)  # checks that groups divides the batch
    static = {"batch_size": batch_size, "activation": activation, "groups": groups}
    if mode == "scan":
        return _scan_epoch(params, x, y, lr, key, **static)
    if key is not None:
        x, y = shuffle(key, x, y)
    losses = []
    for i in range(num):
        if mode == "jit":
            params, loss = _jit_step(params, x, y, i, lr, **static)
        else:
            params, loss = sgd_update(
                params,
                x[i * batch_size : (i + 1) * batch_size],
                y[i * batch_size : (i + 1) * batch_size],
                lr,
                activation,
                groups,
            )
        losses.append(loss)  # kept on the device: no host round-trip per step
    return params, jnp.mean(jnp.stack(losses))
