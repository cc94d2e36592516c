"""The models chapter 6 writes in Flax NNX: the chapter-2 MLP, and a small CNN.

Both are the chapter's classes, with validation and docstrings added: ``MLP`` keeps its
``nnx.Linear`` layers in an ``nnx.List``; ``CNN`` is the network of Flax's MNIST
tutorial (two 3×3 ``nnx.Conv`` layers with 32 and 64 channels, each followed by a ReLU
and 2×2 ``nnx.avg_pool``, then ``nnx.Linear`` layers of 256 units and of 10 logits).
Built with the same ``nnx.Rngs`` seed, the chapter's classes and these draw the same
parameters (the layers are created in the same order) and compute the same logits.
(The same CNN with its convolutions computed another way, faster on XLA:CPU, is the
opt-in :func:`companion.fast.conv.fast_cnn`, measured in the performance appendix.)

Examples:
    >>> model = CNN(rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((2, 784))).shape
    (2, 10)
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import ArrayLike

from companion import mlp

__all__ = ["CNN", "MLP"]


class MLP(nnx.Module):
    """The chapter-2 network: ``Linear → σ → ... → Linear``, logits out.

    Args:
        sizes: layer widths ``[n_0, ..., n_L]`` (at least two positive integers).
        rngs: ``nnx.Rngs`` for the initial parameters (``nnx.Linear``'s defaults:
            LeCun-normal kernels, zero biases).
        activation: σ, ``"relu"``, ``"tanh"`` or ``"sigmoid"``.
        dtype: the computation dtype (``jnp.bfloat16`` for mixed precision); ``None``:
            the inputs' and parameters' dtype.
        param_dtype: the dtype the parameters are stored in.

    Examples:
        >>> model = MLP([784, 128, 10], rngs=nnx.Rngs(0))
        >>> model(jnp.ones((5, 784))).shape
        (5, 10)
        >>> [layer.kernel.shape for layer in model.layers]
        [(784, 128), (128, 10)]
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
        # a plain list holding layers is refused by NNX: nnx.List makes it state
        self.layers = nnx.List(
            [
                nnx.Linear(n_in, n_out, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
                for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)
            ]
        )

    def __call__(self, x: ArrayLike) -> jax.Array:
        """Logits ``(B, n_L)`` of inputs ``x`` ``(B, n_0)``."""
        x = self._check(x)
        sigma = mlp.get_activation(self.activation)
        for layer in self.layers[:-1]:
            x = sigma(layer(x))
        return self.layers[-1](x)

    def preactivations(self, x: ArrayLike) -> dict[str, jax.Array]:
        """Each hidden layer's input to σ, ``z = a W + b`` ``(B, n_out)``, by name
        (``layers/0``, ...): what ``companion.diagnose`` inspects.
        """
        x = self._check(x)
        sigma = mlp.get_activation(self.activation)
        pre = {}
        for i, layer in enumerate(self.layers[:-1]):
            pre[f"layers/{i}"] = z = layer(x)
            x = sigma(z)
        return pre

    def _check(self, x: ArrayLike) -> jax.Array:
        x = jnp.asarray(x)
        if x.ndim == 0 or x.shape[-1] != self.sizes[0]:
            raise ValueError(
                f"x's last dimension must be the input size {self.sizes[0]}; "
                f"got {x.shape}"
            )
        return x

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
            # copies: the model must not share `params`' buffers (training may donate)
            layer.kernel.set_value(jnp.array(W, layer.kernel.dtype, copy=True))
            layer.bias.set_value(jnp.array(b, layer.bias.dtype, copy=True))

    @classmethod
    def from_params(cls, params: mlp.Params, *, activation: str = "relu") -> MLP:
        """An NNX ``MLP`` holding exactly the given chapter-2 parameters."""
        mlp.check_params(params)
        sizes = [jnp.shape(params[0][0])[0]] + [jnp.shape(W)[1] for W, _ in params]
        # the layers' shapes only: drawing random values to overwrite them would cost
        # a compilation of the initialiser per layer shape
        model = nnx.eval_shape(
            lambda: cls(sizes, rngs=nnx.Rngs(0), activation=activation)
        )
        model.load_params(params)
        return model


class CNN(nnx.Module):
    """Flax's MNIST-tutorial convnet: two 3×3 convolutions (32, 64 channels), each with
    ReLU and 2×2 average pooling, then dense 256 (ReLU) and dense 10.

    Takes images ``(B, 28, 28, 1)`` (NHWC) or flat ``(B, 784)``; returns logits
    ``(B, 10)``. Kernels are ``(3, 3, C_in, C_out)`` (HWIO), as ``nnx.Conv`` stores
    them; ``dense1`` reads the pooled ``(7, 7, 64)`` maps flattened in ``(h, w, c)``
    order.

    Args:
        rngs: ``nnx.Rngs`` for the initial parameters.
        dtype: the computation dtype (e.g. ``jnp.bfloat16``); ``None``: the inputs'.
        param_dtype: the dtype the parameters are stored in.

    Examples:
        >>> CNN(rngs=nnx.Rngs(0))(jnp.ones((2, 28, 28, 1))).shape
        (2, 10)
    """

    def __init__(
        self,
        *,
        rngs: nnx.Rngs,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
    ):
        kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.conv1 = nnx.Conv(1, 32, kernel_size=(3, 3), **kw)
        self.conv2 = nnx.Conv(32, 64, kernel_size=(3, 3), **kw)
        self.dense1 = nnx.Linear(7 * 7 * 64, 256, **kw)
        self.dense2 = nnx.Linear(256, 10, **kw)

    def __call__(self, x: ArrayLike) -> jax.Array:
        x = self._images(x)  # (B, 28, 28, 1)
        x = self._pool(nnx.relu(self.conv1(x)))  # (B, 14, 14, 32)
        x = self._pool(nnx.relu(self.conv2(x)))  # (B, 7, 7, 64)
        x = x.reshape(x.shape[0], -1)  # (B, 3136)
        x = nnx.relu(self.dense1(x))  # (B, 256)
        return self.dense2(x)  # (B, 10)

    def preactivations(self, x: ArrayLike) -> dict[str, jax.Array]:
        """The inputs of the ReLUs by layer: ``conv1`` ``(B, 28, 28, 32)``, ``conv2``
        ``(B, 14, 14, 64)``, ``dense1`` ``(B, 256)`` (what ``companion.diagnose``
        inspects).
        """
        pre = {"conv1": self.conv1(self._images(x))}
        pre["conv2"] = self.conv2(self._pool(nnx.relu(pre["conv1"])))
        x = self._pool(nnx.relu(pre["conv2"]))
        pre["dense1"] = self.dense1(x.reshape(x.shape[0], -1))
        return pre

    def _images(self, x: ArrayLike) -> jax.Array:
        x = jnp.asarray(x)
        if x.shape[1:] not in ((784,), (28, 28, 1)):
            raise ValueError(
                f"CNN takes images of shape (B, 784) or (B, 28, 28, 1); got {x.shape}"
            )
        return x.reshape(-1, 28, 28, 1)

    def _pool(self, x: jax.Array) -> jax.Array:
        # 2×2 windows, stride 2: (B, H, W, C) -> (B, H/2, W/2, C)
        return nnx.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
