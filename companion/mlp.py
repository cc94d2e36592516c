"""The MLP of chapter 2: parameters as a list of ``(W, b)``, and its forward pass.

A layer computes ``a = σ(a_prev @ W + b)`` with ``W`` of shape ``(n_in, n_out)``, so a
batch of row vectors ``(B, n_in)`` maps to ``(B, n_out)`` with one matrix product; the
last layer is linear and returns logits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from companion.checks import check_labels

__all__ = [
    "ACTIVATIONS",
    "SCHEMES",
    "Params",
    "accuracy",
    "apply",
    "check_params",
    "check_sizes",
    "forward",
    "get_activation",
    "init_params",
    "num_classes",
    "param_count",
    "predict",
]

Params = list[tuple[jax.Array, jax.Array]]

# The hidden-layer nonlinearities σ (chapter 4 adds their derivatives).
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
}

# Initialisation schemes: the standard deviation of W for n_in inputs, n_out outputs.
SCHEMES: dict[str, Callable[[int, int, float], float]] = {
    # the original tutorial: N(0, 1)·scale
    "normal": lambda n_in, n_out, scale: scale,
    # Glorot & Bengio (2010)
    "xavier": lambda n_in, n_out, scale: float(np.sqrt(2.0 / (n_in + n_out))),
    # He et al. (2015), for ReLU
    "he": lambda n_in, n_out, scale: float(np.sqrt(2.0 / n_in)),
}


def check_sizes(sizes: Sequence[int]) -> list[int]:
    """``sizes`` as a list of ints; ``ValueError`` unless two or more positive ints."""
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(
            f"sizes needs at least 2 entries (inputs and outputs); got {sizes}"
        )
    for i, n in enumerate(sizes):
        if not isinstance(n, int | np.integer) or isinstance(n, bool) or n <= 0:
            raise ValueError(
                f"sizes must be positive integers; got {n!r} at position {i} of {sizes}"
            )
    return [int(n) for n in sizes]


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The nonlinearity called ``name``; ``ValueError`` with the choices if unknown."""
    if name not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}"
        )
    return ACTIVATIONS[name]


def init_params(
    sizes: Sequence[int], key: jax.Array, scale: float = 0.02, *, scheme: str = "normal"
) -> Params:
    """Random parameters for an MLP with layer widths ``sizes``.

    Args:
        sizes: ``[n_0, n_1, ..., n_L]``, e.g. ``[784, 128, 10]``; at least two positive
            integers.
        key: a PRNG key (``jax.random.key(s)`` or the older ``jax.random.PRNGKey(s)``).
        scale: the standard deviation for ``scheme="normal"`` (ignored by the others).
        scheme: ``"normal"`` — the original tutorial's: ``W`` and ``b`` drawn from
            ``N(0, 1)·scale``; ``"xavier"`` — ``W ~ N(0, 2/(n_in+n_out))``, ``b = 0``;
            ``"he"`` — ``W ~ N(0, 2/n_in)``, ``b = 0``.

    Returns:
        A list of ``L`` pairs ``(W, b)``, ``W`` of shape ``(n_in, n_out)``, ``b`` of
        shape ``(n_out,)``, float32. The same ``sizes``, ``key`` and ``scheme`` always
        give the same parameters.

    Examples:
        >>> params = init_params([784, 128, 10], jax.random.PRNGKey(516))
        >>> [(W.shape, b.shape) for W, b in params]
        [((784, 128), (128,)), ((128, 10), (10,))]
    """
    sizes = check_sizes(sizes)
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; choose one of {sorted(SCHEMES)}")
    params = []
    for layer_key, n_in, n_out in zip(
        jax.random.split(key, len(sizes) - 1), sizes[:-1], sizes[1:], strict=True
    ):
        w_key, b_key = jax.random.split(layer_key)
        std = SCHEMES[scheme](n_in, n_out, scale)
        W = std * jax.random.normal(w_key, (n_in, n_out))
        b = (
            scale * jax.random.normal(b_key, (n_out,))
            if scheme == "normal"
            else jnp.zeros(n_out)
        )
        params.append((W, b))
    return params


def check_params(params: Params) -> None:
    """Raise ``ValueError`` unless ``params`` is a non-empty chain of ``(W, b)``."""
    if not isinstance(params, list | tuple) or len(params) == 0:
        raise ValueError(
            f"params must be a non-empty list of (W, b) pairs; "
            f"got {type(params).__name__}"
        )
    for i, layer in enumerate(params):
        if not isinstance(layer, list | tuple) or len(layer) != 2:
            raise ValueError(
                f"layer {i} must be a pair (W, b); got {type(layer).__name__}"
            )
        W, b = layer
        if jnp.ndim(W) != 2 or jnp.shape(b) != (jnp.shape(W)[1],):
            raise ValueError(
                f"layer {i}: W must be (n_in, n_out) and b (n_out,); "
                f"got W {jnp.shape(W)}, b {jnp.shape(b)}"
            )
        if i > 0 and jnp.shape(W)[0] != jnp.shape(params[i - 1][0])[1]:
            raise ValueError(
                f"layer {i} expects {jnp.shape(W)[0]} inputs but layer {i - 1} gives "
                f"{jnp.shape(params[i - 1][0])[1]} outputs"
            )


def num_classes(params: Params) -> int:
    """The number of classes of an MLP: the width of its last layer (labels must lie
    below it). ``ValueError`` unless ``params`` is a chain of ``(W, b)``.

    Examples:
        >>> num_classes(init_params([784, 32, 12], jax.random.key(0)))
        12
    """
    check_params(params)
    return int(jnp.shape(params[-1][0])[1])


def forward(params: Params, x: ArrayLike, activation: str = "relu") -> jax.Array:
    """Logits of the MLP: ``σ`` after every layer but the last, which is linear.

    Args:
        params: a list of ``(W, b)`` as from :func:`init_params`.
        x: one example ``(n_in,)`` or a batch ``(B, n_in)`` (any leading dimensions
            work).
        activation: ``"relu"`` (default), ``"tanh"`` or ``"sigmoid"``.

    Returns:
        Logits of shape ``(n_out,)`` or ``(B, n_out)``.

    Raises:
        ValueError: if ``x``'s last dimension is not the first layer's input size (the
            message names both), if ``params`` is malformed, or the activation is
            unknown.

    Examples:
        >>> params = init_params([4, 3, 2], jax.random.key(0))
        >>> forward(params, jnp.ones(4)).shape, forward(params, jnp.ones((5, 4))).shape
        ((2,), (5, 2))
    """
    check_params(params)
    x = jnp.asarray(x)
    n_in = jnp.shape(params[0][0])[0]
    if x.ndim == 0 or x.shape[-1] != n_in:
        raise ValueError(
            f"x's last dimension must be the first layer's input size {n_in}; "
            f"got x of shape {x.shape}"
        )
    return apply(params, x, activation)


def apply(params: Params, x: jax.Array, activation: str = "relu") -> jax.Array:
    """The unchecked :func:`forward`: the kernel that training code jits.

    For parameters and inputs already validated (``fit`` checks them once); a wrong
    shape then fails inside JAX's matrix product rather than with :func:`forward`'s
    message.

    Examples:
        >>> params = init_params([4, 3, 2], jax.random.key(0))
        >>> x = jnp.ones((5, 4))
        >>> bool(jnp.array_equal(apply(params, x), forward(params, x)))
        True
    """
    sigma = get_activation(activation)
    a = x
    for W, b in params[:-1]:
        a = sigma(a @ W + b)  # (B, n_out) for a batch: one matmul per layer
    W, b = params[-1]
    return a @ W + b


def predict(params: Params, x: ArrayLike, activation: str = "relu") -> jax.Array:
    """The argmax of the logits: classes ``(B,)`` for ``x`` of shape ``(B, n_in)``."""
    return jnp.argmax(forward(params, x, activation), axis=-1)


def accuracy(logits: ArrayLike, labels: ArrayLike) -> jax.Array:
    """Fraction of examples whose largest logit is at the true label.

    Args:
        logits: shape ``(B, C)``.
        labels: integer labels of shape ``(B,)`` in ``[0, C)``.

    Returns:
        A float32 scalar in [0, 1].

    Examples:
        >>> logits = jnp.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
        >>> accuracy(logits, jnp.array([0, 1, 1]))
        Array(0.6666667, dtype=float32)
    """
    logits = jnp.asarray(logits)
    labels = labels if isinstance(labels, jax.Array) else np.asarray(labels)
    if logits.ndim != 2 or jnp.shape(labels) != logits.shape[:1]:
        raise ValueError(
            f"need logits (B, C) and labels (B,); got logits {logits.shape} "
            f"and labels {jnp.shape(labels)}"
        )
    check_labels(labels, logits.shape[-1])
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)


def param_count(params: Params) -> int:
    """The number of scalars in a parameter pytree.

    Examples:
        >>> param_count(init_params([784, 128, 10], jax.random.key(0)))
        101770
    """
    return sum(int(np.prod(jnp.shape(leaf))) for leaf in jax.tree.leaves(params))
