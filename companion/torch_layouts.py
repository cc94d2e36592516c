"""How PyTorch and the book's JAX models lay out the same numbers, and the functions
that convert one layout to the other (appendix, "JAX for PyTorch users"):

- a dense layer: ``nnx.Linear.kernel`` and the book's ``W`` are ``(n_in, n_out)``
  (``y = x W + b``); ``torch.nn.Linear.weight`` is ``(n_out, n_in)`` (``y = x Wᵀ + b``);
- a convolution: NNX kernels are ``(kh, kw, C_in, C_out)`` (HWIO) on ``(B, H, W, C)``
  images (NHWC); ``torch.nn.Conv2d.weight`` is ``(C_out, C_in, kh, kw)`` (OIHW) on
  ``(B, C, H, W)`` images (NCHW): :func:`conv_kernel_to_torch`;
- flattening a feature map for the first dense layer: NHWC flattens in ``(h, w, c)``
  order, NCHW in ``(c, h, w)``, so that layer's rows must be reordered, not only
  transposed: :func:`flat_rows_to_torch`.

:mod:`companion.torch_bridge` copies whole models with them. numpy only: neither torch
nor flax is imported.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "CNN_FEATURES",
    "CNN_KERNELS",
    "cnn_kernel_from_torch",
    "cnn_kernel_to_torch",
    "conv_kernel_from_torch",
    "conv_kernel_to_torch",
    "flat_rows_from_torch",
    "flat_rows_to_torch",
    "torch_shape",
]

#: The book's CNN (:class:`companion.nnx_models.CNN`): each layer's kernel shape in
#: NNX's layout.
CNN_KERNELS = {
    "conv1": (3, 3, 1, 32),
    "conv2": (3, 3, 32, 64),
    "dense1": (7 * 7 * 64, 256),
    "dense2": (256, 10),
}
#: The ``(h, w, c)`` of the CNN's conv2 output after pooling, which dense1 reads
#: flattened.
CNN_FEATURES = (7, 7, 64)


def torch_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """The shape PyTorch stores an NNX kernel of ``shape`` in: a conv kernel HWIO →
    OIHW, a dense kernel ``(n_in, n_out)`` → ``(n_out, n_in)``.

    Examples:
        >>> [torch_shape(s) for s in CNN_KERNELS.values()]
        [(32, 1, 3, 3), (64, 32, 3, 3), (256, 3136), (10, 256)]
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    if len(shape) == 2:
        return shape[::-1]
    raise ValueError(f"a kernel has 2 (dense) or 4 (conv) dimensions; got {shape}")


def conv_kernel_to_torch(kernel) -> np.ndarray:
    """An NNX/``lax`` conv kernel ``(kh, kw, C_in, C_out)`` (HWIO) as PyTorch's
    ``(C_out, C_in, kh, kw)`` (OIHW).

    Examples:
        >>> conv_kernel_to_torch(np.zeros((3, 5, 2, 4))).shape
        (4, 2, 3, 5)
    """
    kernel = np.asarray(kernel)
    if kernel.ndim != 4:
        raise ValueError(f"a 2-D conv kernel has 4 dimensions; got {kernel.shape}")
    return np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))


def conv_kernel_from_torch(weight) -> np.ndarray:
    """A PyTorch conv weight ``(C_out, C_in, kh, kw)`` (OIHW) as NNX's ``(kh, kw, C_in,
    C_out)`` (HWIO): the inverse of :func:`conv_kernel_to_torch`.
    """
    weight = np.asarray(weight)
    if weight.ndim != 4:
        raise ValueError(f"a 2-D conv weight has 4 dimensions; got {weight.shape}")
    return np.ascontiguousarray(weight.transpose(2, 3, 1, 0))


def flat_rows_to_torch(kernel, features: Sequence[int]) -> np.ndarray:
    """The kernel ``(h·w·c, n_out)`` of a dense layer after an NHWC flatten as the
    ``nn.Linear`` weight ``(n_out, c·h·w)`` after an NCHW flatten.

    ``features`` is the ``(h, w, c)`` of the flattened map. Row ``(i, j, k)`` of the NNX
    kernel (feature ``k`` at pixel ``(i, j)``) becomes column ``(k, i, j)``.

    Examples:
        >>> flat_rows_to_torch(np.arange(6.0).reshape(6, 1), (1, 2, 3)).ravel()
        array([0., 3., 1., 4., 2., 5.])
    """
    kernel = np.asarray(kernel)
    h, w, c = _features(features)
    if kernel.ndim != 2 or kernel.shape[0] != h * w * c:
        raise ValueError(
            f"kernel must be (h*w*c, n_out) = ({h * w * c}, n_out) for features "
            f"{(h, w, c)}; got {kernel.shape}"
        )
    n_out = kernel.shape[1]
    return np.ascontiguousarray(
        kernel.reshape(h, w, c, n_out).transpose(3, 2, 0, 1).reshape(n_out, -1)
    )


def flat_rows_from_torch(weight, features: Sequence[int]) -> np.ndarray:
    """The inverse of :func:`flat_rows_to_torch`: an ``nn.Linear`` weight ``(n_out,
    c·h·w)`` as the NNX kernel ``(h·w·c, n_out)``.
    """
    weight = np.asarray(weight)
    h, w, c = _features(features)
    if weight.ndim != 2 or weight.shape[1] != h * w * c:
        raise ValueError(
            f"weight must be (n_out, c*h*w) = (n_out, {h * w * c}) for features "
            f"{(h, w, c)}; got {weight.shape}"
        )
    n_out = weight.shape[0]
    return np.ascontiguousarray(
        weight.reshape(n_out, c, h, w).transpose(2, 3, 1, 0).reshape(-1, n_out)
    )


def _features(features: Sequence[int]) -> tuple[int, int, int]:
    if len(features) != 3 or not all(int(n) > 0 for n in features):
        raise ValueError(
            f"features must be three positive sizes (h, w, c); got {features}"
        )
    return tuple(int(n) for n in features)


def cnn_kernel_to_torch(layer: str, kernel) -> np.ndarray:
    """The NNX kernel of the book's CNN's ``layer`` (a key of :data:`CNN_KERNELS`) as
    the PyTorch twin's weight: conv kernels HWIO → OIHW, ``dense1``'s rows reordered
    from the NHWC flatten to the NCHW one, ``dense2`` transposed."""
    kernel = _cnn_layer(layer, kernel, torch=False)
    if layer == "dense1":
        return flat_rows_to_torch(kernel, CNN_FEATURES)
    return conv_kernel_to_torch(kernel) if kernel.ndim == 4 else kernel.T.copy()


def cnn_kernel_from_torch(layer: str, weight) -> np.ndarray:
    """The inverse of :func:`cnn_kernel_to_torch`: the PyTorch twin's weight of
    ``layer`` as the NNX ``CNN``'s kernel."""
    weight = _cnn_layer(layer, weight, torch=True)
    if layer == "dense1":
        return flat_rows_from_torch(weight, CNN_FEATURES)
    return conv_kernel_from_torch(weight) if weight.ndim == 4 else weight.T.copy()


def _cnn_layer(layer: str, array, *, torch: bool) -> np.ndarray:
    """``array`` as layer ``layer``'s kernel (NNX's layout) or weight (PyTorch's), or a
    ``ValueError`` naming the layer and the shapes."""
    if layer not in CNN_KERNELS:
        raise ValueError(
            f"the book's CNN has layers {list(CNN_KERNELS)}; got {layer!r}"
        )
    shape = torch_shape(CNN_KERNELS[layer]) if torch else CNN_KERNELS[layer]
    array = np.asarray(array)
    if array.shape != shape:
        raise ValueError(f"{layer} of the book's CNN is {shape}; got {array.shape}")
    return array
