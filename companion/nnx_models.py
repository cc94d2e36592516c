"""The book's models in Flax NNX (chapter 6): the chapter-2 MLP, and a small CNN.

An ``nnx.Module`` holds its parameters as attributes (``nnx.Param``); ``nnx.split``
separates the static structure (a ``GraphDef``) from the arrays (a ``State``) so that
plain JAX transformations can work on the arrays, and ``nnx.merge`` puts them back
together.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import ArrayLike

from companion import mlp
from companion.conv import FastConv, avg_pool

__all__ = ["CNN", "CONV_FORMS", "MLP"]

CONV_FORMS = ("winograd", "patches", "lax")  # what CNN(conv=...) takes


class MLP(nnx.Module):
    """The chapter-2 network: ``Linear → σ → ... → Linear``, logits out.

    Args:
        sizes: layer widths ``[n_0, ..., n_L]`` (at least two positive integers).
        rngs: ``nnx.Rngs`` for the initial parameters (LeCun normal, NNX's default).
        activation: ``"relu"``, ``"tanh"`` or ``"sigmoid"``.
        dtype: the computation dtype (e.g. ``jnp.bfloat16`` for mixed precision);
            parameters stay ``param_dtype``.
        param_dtype: the dtype the parameters are stored in.

    Examples:
        >>> model = MLP([784, 128, 10], rngs=nnx.Rngs(0))
        >>> model(jnp.ones((5, 784))).shape
        (5, 10)
    """

    def __init__(
        self,
        sizes: Sequence[int],
        *,
        rngs: nnx.Rngs,
        activation: str = "relu",
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
    ):
        sizes = mlp.check_sizes(sizes)
        mlp.get_activation(activation)  # validates the name
        self.sizes = tuple(sizes)
        self.activation = activation
        self.layers = nnx.List(
            [
                nnx.Linear(n_in, n_out, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
                for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)
            ]
        )

    def __call__(self, x: ArrayLike) -> jax.Array:
        return self.layers[-1](self._hidden(x)[1])

    def preactivations(self, x: ArrayLike) -> dict[str, jax.Array]:
        """Each hidden layer's input to σ, ``z = a W + b`` ``(B, n_out)``, by name
        (``layers/0``, ...): what ``companion.diagnose`` inspects.
        """
        return self._hidden(x)[0]

    def _hidden(self, x: ArrayLike) -> tuple[dict[str, jax.Array], jax.Array]:
        x = jnp.asarray(x)
        if x.ndim == 0 or x.shape[-1] != self.sizes[0]:
            raise ValueError(
                f"x's last dimension must be the input size {self.sizes[0]}; "
                f"got {x.shape}"
            )
        sigma = mlp.get_activation(self.activation)
        pre = {}
        for i, layer in enumerate(self.layers[:-1]):
            pre[f"layers/{i}"] = z = layer(x)
            x = sigma(z)
        return pre, x

    def load_params(self, params: mlp.Params) -> None:
        """Copy chapter-2 ``(W, b)`` pairs in, ``W`` of shape ``(n_in, n_out)``.

        ``nnx.Linear`` stores its ``kernel`` as ``(in_features, out_features)`` — the
        book's layout — so the copy needs no transpose.
        """
        mlp.check_params(params)
        shapes = [tuple(jnp.shape(W)) for W, _ in params]
        expected = [(layer.in_features, layer.out_features) for layer in self.layers]
        if shapes != expected:
            raise ValueError(
                f"params have layer shapes {shapes}; this MLP has {expected}"
            )
        for layer, (W, b) in zip(self.layers, params, strict=True):
            # copies: the model must not share `params`' buffers (training donates them)
            layer.kernel[...] = jnp.array(W, layer.kernel.dtype, copy=True)
            layer.bias[...] = jnp.array(b, layer.bias.dtype, copy=True)

    @classmethod
    def from_params(cls, params: mlp.Params, *, activation: str = "relu") -> MLP:
        """An NNX ``MLP`` holding exactly the given chapter-2 parameters."""
        mlp.check_params(params)
        sizes = [jnp.shape(params[0][0])[0]] + [jnp.shape(W)[1] for W, _ in params]
        model = cls(sizes, rngs=nnx.Rngs(0), activation=activation)
        model.load_params(params)
        return model


class CNN(nnx.Module):
    """A small convnet for MNIST: two 3×3 convolutions (32, 64 channels) with 2×2
    average pooling, then dense 256 and dense 10.

    Takes images as ``(B, 28, 28, 1)`` or flat ``(B, 784)``; returns logits ``(B, 10)``.
    The convolutions are :class:`companion.conv.FastConv`: ``nnx.Conv`` layers
    (kernels ``(3, 3, C_in, C_out)``, HWIO) computed the way XLA:CPU runs fast inside a
    loop (chapter 6): the second by Winograd's F(2×2, 3×3) products, the first (one
    channel in) as shifted taps; pooling is :func:`companion.conv.avg_pool`.
    ``conv="patches"`` computes the second as patches × matrix instead, and
    ``conv="lax"`` builds the textbook version (``nnx.Conv``, ``lax.conv`` and
    ``nnx.avg_pool``): the same parameters and the same function, for comparison.

    Examples:
        >>> CNN(rngs=nnx.Rngs(0))(jnp.ones((2, 784))).shape
        (2, 10)
    """

    def __init__(
        self,
        *,
        rngs: nnx.Rngs,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        conv: str = "winograd",
    ):
        if conv not in CONV_FORMS:
            raise ValueError(f"conv must be one of {CONV_FORMS}; got {conv!r}")
        self.conv = conv
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        if conv == "lax":
            layer = nnx.Conv
        else:
            layer = partial(FastConv, winograd=conv == "winograd")
        self.conv1 = layer(1, 32, (3, 3), **kw)  # (B, 28, 28, 32)
        self.conv2 = layer(32, 64, (3, 3), **kw)  # (B, 14, 14, 64)
        self.dense1 = nnx.Linear(7 * 7 * 64, 256, **kw)
        self.dense2 = nnx.Linear(256, 10, **kw)

    def __call__(self, x: ArrayLike) -> jax.Array:
        return self.dense2(nnx.relu(self.preactivations(x)["dense1"]))

    def preactivations(self, x: ArrayLike) -> dict[str, jax.Array]:
        """The inputs of the ReLUs by layer: ``conv1`` ``(B, 28, 28, 32)``, ``conv2``
        ``(B, 14, 14, 64)``, ``dense1`` ``(B, 256)`` (what ``companion.diagnose``
        inspects).
        """
        x = jnp.asarray(x)
        if x.shape[1:] not in ((784,), (28, 28, 1)):
            raise ValueError(
                f"CNN takes images of shape (B, 784) or (B, 28, 28, 1); got {x.shape}"
            )
        x = x.reshape(-1, 28, 28, 1)
        if self.conv != "lax":
            pool = avg_pool
        else:

            def pool(h):
                return nnx.avg_pool(h, window_shape=(2, 2), strides=(2, 2))

        pre = {"conv1": self.conv1(x)}
        x = pool(nnx.relu(pre["conv1"]))  # (B, 14, 14, 32)
        pre["conv2"] = self.conv2(x)
        x = pool(nnx.relu(pre["conv2"]))  # (B, 7, 7, 64)
        pre["dense1"] = self.dense1(x.reshape(x.shape[0], -1))  # (B, 3136) -> (B, 256)
        return pre
