"""The backward pass of chapter 4 by hand: what ``jax.grad`` computes for the MLP.

For the loss ``cross_entropy(forward(params, x), labels)`` of an MLP with layers
``z^(l) = a^(l-1) W^(l) + b^(l)``, ``a^(l) = σ(z^(l))`` (linear last layer), backprop is

- output error: ``δ^(L) = (softmax(z^(L)) − onehot(y)) / B``
- back one layer: ``δ^(l) = (δ^(l+1) W^(l+1)ᵀ) ⊙ σ′(z^(l))``
- gradients: ``∇W^(l) = a^(l-1)ᵀ δ^(l)``, ``∇b^(l) = Σ_batch δ^(l)``

(row-vector convention: examples are rows, so ``δ aᵀ`` of the column form becomes
``aᵀ δ``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from companion import mlp
from companion.checks import check_labels
from companion.losses import softmax

__all__ = [
    "DERIVATIVES",
    "Cache",
    "backward",
    "finite_difference_check",
    "forward_layers",
    "forward_with_cache",
    "manual_grads",
    "propagate",
]

# The derivative σ′ of each of companion.mlp.ACTIVATIONS, written in terms of z and
# a = σ(z) (tanh and sigmoid reuse the stored output instead of recomputing the
# exponential). Operators only, so they apply to numpy arrays as well as to JAX arrays.
SigmaPrime = Callable[[jax.Array, jax.Array], jax.Array]
DERIVATIVES: dict[str, SigmaPrime] = {
    "relu": lambda z, a: (z > 0).astype(z.dtype),
    "tanh": lambda z, a: 1 - a**2,
    "sigmoid": lambda z, a: a * (1 - a),
}


class Cache(NamedTuple):
    """What the forward pass keeps for the backward pass."""

    # a^(0) = x, a^(1), ..., a^(L-1): the input of each layer, (B, n_in)
    inputs: list[jax.Array]
    pre: list[jax.Array]  # z^(1), ..., z^(L-1): hidden pre-activations, for σ′
    logits: jax.Array  # z^(L), (B, C)


def _lookup(activation: str) -> tuple[Callable[[jax.Array], jax.Array], SigmaPrime]:
    # the name is checked by mlp
    return mlp.get_activation(activation), DERIVATIVES[activation]


# The two kernels below are the chapter's equations and nothing else: no checks, and
# only the operators @, .T, + and * (and the σ, σ′ they are given), so the same lines
# run on numpy arrays. The benchmark's numpy variant
# (companion.bench.peers.numpy_epoch) runs them with numpy's σ.


def forward_layers(params: mlp.Params, x: ArrayLike, sigma: Callable) -> Cache:
    """The forward pass, keeping each layer's input and pre-activation; no checks.

    ``x`` is a batch ``(B, n_in)``. Use :func:`forward_with_cache` on raw input; this
    kernel trusts its arguments.
    """
    inputs, pre, a = [], [], x
    for W, b in params[:-1]:
        inputs.append(a)
        z = a @ W + b  # (B, n_out)
        pre.append(z)
        a = sigma(z)
    inputs.append(a)
    W, b = params[-1]
    return Cache(inputs, pre, a @ W + b)


def propagate(
    params: mlp.Params, cache: Cache, delta: ArrayLike, sigma_prime: SigmaPrime
) -> mlp.Params:
    """Back-propagate the output error ``δ^(L)`` ``(B, C)``: each layer's ``(∇W, ∇b)``.

    ``δ^(L) = ∂L/∂z^(L)`` is where the loss enters (see :func:`backward`); from there
    the recursion is the same for any loss. No checks: use :func:`backward` on raw
    input.
    """
    grads = []
    for layer in range(len(params) - 1, -1, -1):
        W, _ = params[layer]
        # ∇W = aᵀδ: (n_in, n_out);  ∇b = Σ_batch δ: (n_out,)
        grads.append((cache.inputs[layer].T @ delta, delta.sum(axis=0)))
        if layer > 0:
            # δWᵀ ⊙ σ′(z)
            delta = (delta @ W.T) * sigma_prime(
                cache.pre[layer - 1], cache.inputs[layer]
            )
    return grads[::-1]


def forward_with_cache(
    params: mlp.Params, x: ArrayLike, activation: str = "relu"
) -> tuple[jax.Array, Cache]:
    """The forward pass of :func:`companion.mlp.forward`, keeping what backprop needs.

    Args:
        params: a list of ``(W, b)``, ``W`` of shape ``(n_in, n_out)``.
        x: a batch ``(B, n_in)`` or one example ``(n_in,)`` (treated as a batch of one).
        activation: ``"relu"``, ``"tanh"`` or ``"sigmoid"``.

    Returns:
        ``(logits, cache)``: logits ``(B, C)`` equal to ``mlp.forward(params, x)`` (with
        a batch axis added for one example), and a :class:`Cache`.
    """
    sigma, _ = _lookup(activation)
    mlp.check_params(params)
    n_in = jnp.shape(params[0][0])[0]
    x = jnp.asarray(x)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != n_in:
        raise ValueError(
            f"x must be (B, {n_in}) or ({n_in},), the first layer's input size; "
            f"got {x.shape}"
        )
    cache = forward_layers(params, x, sigma)
    return cache.logits, cache


def backward(
    params: mlp.Params, cache: Cache, labels: ArrayLike, activation: str = "relu"
) -> mlp.Params:
    """Hand-computed gradients of the mean cross-entropy for every ``W`` and ``b``.

    Args:
        params: the parameters the cache was computed with.
        cache: from :func:`forward_with_cache`.
        labels: integer labels ``(B,)`` (or ``()`` for one example) in ``[0, C)``.
        activation: the activation the forward pass used.

    Returns:
        A list of ``(dW, db)`` with exactly the structure, shapes and dtypes of
        ``params``.
    """
    _, sigma_prime = _lookup(activation)
    mlp.check_params(params)
    if len(cache.inputs) != len(params):
        raise ValueError(
            f"the cache holds {len(cache.inputs)} layers but params has {len(params)}"
        )
    labels = labels if isinstance(labels, jax.Array) else np.asarray(labels)
    labels = (
        jnp.reshape(jnp.asarray(labels), (-1,)) if jnp.ndim(labels) == 0 else labels
    )
    batch, num_classes = cache.logits.shape
    check_labels(labels, num_classes)
    if jnp.shape(labels) != (batch,):
        raise ValueError(
            f"labels must have shape ({batch},) to match the batch of the cache; "
            f"got {jnp.shape(labels)}"
        )
    # ∂L/∂z^(L) of the mean cross-entropy, (softmax − onehot) / B: where the loss enters
    delta = (
        softmax(cache.logits)
        - jax.nn.one_hot(labels, num_classes, dtype=cache.logits.dtype)
    ) / batch
    return propagate(params, cache, delta, sigma_prime)


def manual_grads(
    params: mlp.Params, x: ArrayLike, labels: ArrayLike, activation: str = "relu"
) -> mlp.Params:
    """Gradients of the MLP's mean cross-entropy, computed by hand (no autodiff).

    The loss is ``cross_entropy(mlp.forward(params, x, activation), labels)``.

    Examples:
        >>> params = mlp.init_params([4, 3, 2], jax.random.key(0), scheme="he")
        >>> x, y = jnp.ones((5, 4)), jnp.array([0, 1, 1, 0, 1])
        >>> from companion.losses import cross_entropy
        >>> auto = jax.grad(lambda p: cross_entropy(mlp.forward(p, x), y))(params)
        >>> bool(jnp.allclose(manual_grads(params, x, y)[0][0], auto[0][0], atol=1e-6))
        True
    """
    _, cache = forward_with_cache(params, x, activation)
    return backward(params, cache, labels, activation)


def finite_difference_check(
    f: Callable[[object], ArrayLike],
    params: object,
    grads: object | None = None,
    *,
    num_coords: int = 20,
    eps: float = 1e-6,
    key: jax.Array | None = None,
) -> float:
    r"""Check ``grads`` against central differences of ``f`` at sampled coordinates.

    .. math::

        \frac{\partial f}{\partial \theta_i}
        \approx \frac{f(\theta + \varepsilon e_i)
        - f(\theta - \varepsilon e_i)}{2\varepsilon}

    Everything inside runs in float64 (``jax.enable_x64``): in float32 the rounding
    error of the difference, about ``1e-7 / eps``, would swamp the comparison.

    Args:
        f: a scalar function of a parameter pytree.
        params: the pytree to differentiate at.
        grads: the gradients to check (same structure as ``params``); default
            ``jax.grad(f)``.
        num_coords: how many coordinates to sample (across all leaves, uniformly).
        eps: the finite-difference step.
        key: PRNG key for the sampling; default ``jax.random.key(0)``.

    Returns:
        ``max_i |fd_i − g_i| / max(|fd_i| + |g_i|, 1e-12)`` over the sampled
        coordinates.
    """
    if num_coords <= 0:
        raise ValueError(f"num_coords must be positive; got {num_coords}")
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), params)
        g = (
            jax.grad(lambda p: jnp.asarray(f(p), jnp.float64))(p64)
            if grads is None
            else grads
        )
        leaves, treedef = jax.tree.flatten(p64)
        g_leaves = [np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(g)]
        if [x.size for x in g_leaves] != [int(np.prod(x.shape)) for x in leaves]:
            raise ValueError("grads must have the structure and shapes of params")
        sizes = np.array([int(np.prod(x.shape)) for x in leaves])
        flat = jax.random.choice(
            key if key is not None else jax.random.key(0),
            int(sizes.sum()),
            (min(num_coords, int(sizes.sum())),),
            replace=False,
        )
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        worst = 0.0
        for i in np.asarray(flat):
            leaf = int(np.searchsorted(starts, i, side="right") - 1)
            j = int(i - starts[leaf])

            def shifted(delta, leaf=leaf, j=j):
                new = list(leaves)
                new[leaf] = (
                    leaves[leaf].ravel().at[j].add(delta).reshape(leaves[leaf].shape)
                )
                return float(f(jax.tree.unflatten(treedef, new)))

            fd = (shifted(eps) - shifted(-eps)) / (2 * eps)
            an = float(g_leaves[leaf][j])
            worst = max(worst, abs(fd - an) / max(abs(fd) + abs(an), 1e-12))
    return worst
