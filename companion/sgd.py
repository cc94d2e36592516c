"""Chapter 5's training step and epoch for the chapter-2 MLP: plain SGD, three ways.

The chapter writes these functions cell by cell; this module holds the same code, with
validation and docstrings:

- :func:`loss_fn`: the mean cross-entropy of a batch (chapter 2's forward pass, chapter
  3's loss).
- :func:`sgd_update`: one step, ``θ ← θ − lr · ∇L(θ)``, with ``jax.value_and_grad``.
- :func:`train_epoch`: one epoch over shuffled full batches
  (:func:`companion.batching.batch_indices`), run ``"eager"`` (no ``jit``: every array
  operation dispatched from Python), ``"jit"`` (:data:`jit_update`, one compiled step
  per batch, called from a Python loop) or ``"scan"`` (:func:`train_epoch_scan`, the
  whole epoch one compiled ``lax.scan``).

Every mode runs the same update on the same batches, so they compute the same numbers
(to float rounding); they differ only in how much Python runs per step. An epoch uses
``N // batch_size`` full batches (the last ``N % batch_size`` examples are skipped;
shuffle with a key so different ones are skipped each epoch): every step then has the
same shape, and nothing recompiles.
"""

from __future__ import annotations

import collections
import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from companion import mlp
from companion.batching import batch_indices, check_dataset
from companion.losses import softmax_cross_entropy_with_integer_labels

__all__ = [
    "MODES",
    "check_inputs",
    "jit_update",
    "loss_fn",
    "sgd_update",
    "trace_counts",
    "train_epoch",
    "train_epoch_scan",
]

MODES = ("eager", "jit", "scan")

# How many times each compiled function has been traced: incremented by Python code
# inside the traced functions, which runs only while JAX traces. A count that grows
# every epoch means the function is recompiled every epoch (the classic silent
# slowdown).
_TRACES: collections.Counter[str] = collections.Counter()


def trace_counts() -> dict[str, int]:
    """How often the jitted SGD step (``"step"``) and the scanned epoch (``"epoch"``)
    were traced.
    """
    return dict(_TRACES)


def loss_fn(
    params: mlp.Params, x: jax.Array, y: jax.Array, activation: str = "relu"
) -> jax.Array:
    """Mean cross-entropy of the MLP on a batch: ``x`` ``(B, 784)``, ``y`` ``(B,)``.

    The training kernel: :func:`companion.mlp.apply` and the per-example loss, with no
    value checks (no device→host copy per step). Validate the data once first (``fit``
    does); a label outside ``[0, C)`` makes the loss NaN.

    .. math:: L(θ) = \\frac{1}{B} \\sum_i -\\log \\mathrm{softmax}(f_θ(x_i))_{y_i}
    """
    logits = mlp.apply(params, x, activation)  # (B, C)
    return jnp.mean(softmax_cross_entropy_with_integer_labels(logits, y))


def sgd_update(
    params: mlp.Params,
    x: ArrayLike,
    y: ArrayLike,
    lr: float,
    activation: str = "relu",
) -> tuple[mlp.Params, jax.Array]:
    """One step of SGD: ``θ ← θ − lr · ∇L(θ)``, for any depth (``tree.map`` over all
    layers).

    A training step on validated data: it checks no values (see :func:`loss_fn`).

    Args:
        params: list of ``(W, b)``.
        x: a batch ``(B, n_in)``.
        y: integer labels ``(B,)`` in ``[0, C)``.
        lr: the learning rate.
        activation: the hidden layers' nonlinearity (static under ``jit``).

    Returns:
        ``(new_params, loss)`` where ``loss`` is the batch loss *before* the update.

    Examples:
        >>> params = mlp.init_params([4, 3], jax.random.key(0))
        >>> x, y = jnp.ones((2, 4)), jnp.array([0, 2])
        >>> new, loss = sgd_update(params, x, y, lr=0.1)
        >>> bool(loss_fn(new, x, y) < loss)
        True
    """
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y, activation)
    params = jax.tree.map(lambda p, g: p - lr * g, params, grads)
    return params, loss


@functools.partial(jax.jit, static_argnames="activation")
def jit_update(params, x, y, lr, activation="relu"):
    """:func:`sgd_update`, compiled: one dispatch per step."""
    _TRACES["step"] += 1
    return sgd_update(params, x, y, lr, activation)


@functools.partial(jax.jit, static_argnames=("batch_size", "activation"))
def train_epoch_scan(params, x, y, key, lr, batch_size, activation="relu"):
    """One epoch as one compiled ``lax.scan`` over the rows of
    :func:`companion.batching.batch_indices` (``key`` ``None``: in order), on data
    already validated. Returns ``(new_params, mean_loss)``.
    """
    _TRACES["epoch"] += 1

    def body(params, rows):  # (carry, one row of xs) -> (carry, output)
        return sgd_update(params, x[rows], y[rows], lr, activation)

    batches = batch_indices(key, len(y), batch_size)  # (steps, B)
    params, batch_losses = jax.lax.scan(body, params, batches)
    return params, batch_losses.mean()


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
    n_in = jnp.shape(params[0][0])[0]
    if jnp.shape(x)[1] != n_in:
        raise ValueError(
            f"{name}x must have the first layer's input size {n_in} per example; "
            f"got {name}x of shape {tuple(jnp.shape(x))}"
        )


def train_epoch(
    params: mlp.Params,
    x: ArrayLike,
    y: ArrayLike,
    key: jax.Array | None = None,
    *,
    lr: float,
    batch_size: int,
    mode: str = "scan",
    validate: bool = True,
    activation: str = "relu",
) -> tuple[mlp.Params, jax.Array]:
    """One epoch of SGD over ``N // batch_size`` full batches.

    Args:
        params: list of ``(W, b)``.
        x: inputs ``(N, 784)``; pass a ``jax.Array`` to keep the data on the device
            between epochs.
        y: integer labels ``(N,)``.
        key: shuffle the examples with this PRNG key; ``None`` keeps their order.
        lr: learning rate.
        batch_size: examples per step.
        mode: ``"eager"``, ``"jit"`` or ``"scan"`` (see the module docstring).
        validate: check shapes, labels and finiteness first (``fit`` does it once, then
            skips it).
        activation: the hidden layers' nonlinearity, as in
            :func:`companion.mlp.forward`.

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
    if mode == "scan":  # its batch_indices, traced, checks the batch size
        return train_epoch_scan(params, x, y, key, lr, batch_size, activation)
    batches = batch_indices(key, len(y), batch_size)  # (steps, B), checked
    step = jit_update if mode == "jit" else sgd_update
    batch_losses = []
    for rows in batches:
        params, loss = step(params, x[rows], y[rows], lr, activation)  # (B, 784)
        batch_losses.append(loss)  # kept on the device: no host round-trip per step
    return params, jnp.mean(jnp.stack(batch_losses))
