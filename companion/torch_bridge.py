"""Weights between the book's JAX models and their PyTorch twins (appendix, "JAX for
PyTorch users").

The two frameworks store the same numbers in different layouts:

- a dense layer: ``nnx.Linear.kernel`` and the book's ``W`` are ``(n_in, n_out)``
  (``y = x W + b``); ``torch.nn.Linear.weight`` is ``(n_out, n_in)`` (``y = x Wᵀ + b``);
- a convolution: NNX kernels are ``(kh, kw, C_in, C_out)`` (HWIO) on ``(B, H, W, C)``
  images (NHWC); ``torch.nn.Conv2d.weight`` is ``(C_out, C_in, kh, kw)`` (OIHW) on
  ``(B, C, H, W)`` images (NCHW);
- flattening a feature map for the first dense layer: NHWC flattens in ``(h, w, c)``
  order, NCHW in ``(c, h, w)``, so that layer's rows must be reordered, not only
  transposed.

``mlp_to_torch``/``mlp_from_torch`` and ``cnn_to_torch``/``cnn_from_torch`` copy the
book's MLP (chapter-2 parameters or the NNX ``MLP``) and the NNX ``CNN`` across;
``*_from_torch`` run both models on one batch and refuse a module that does not compute
what the book's model computes. torch is imported when a function is called, never on
import.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import jax.numpy as jnp
import numpy as np

from companion import mlp

if TYPE_CHECKING:
    from companion.nnx_models import CNN, MLP

__all__ = [
    "cnn_from_torch",
    "cnn_to_torch",
    "conv_kernel_from_torch",
    "conv_kernel_to_torch",
    "flat_rows_from_torch",
    "flat_rows_to_torch",
    "mlp_from_torch",
    "mlp_params_from_torch",
    "mlp_to_torch",
    "new_torch_cnn",
    "new_torch_mlp",
]

# the book's CNN (companion.nnx_models.CNN): kernel shapes in NNX's layout
CNN_KERNELS = {
    "conv1": (3, 3, 1, 32),
    "conv2": (3, 3, 32, 64),
    "dense1": (7 * 7 * 64, 256),
    "dense2": (256, 10),
}
FEATURES = (7, 7, 64)  # (h, w, c): conv2's pooled output, flattened into dense1
_TORCH_ACTIVATIONS = {"relu": "ReLU", "tanh": "Tanh", "sigmoid": "Sigmoid"}


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


def new_torch_mlp(sizes: Sequence[int], activation: str = "relu"):
    """The book's MLP in PyTorch, freshly initialised by PyTorch: ``nn.Sequential`` of
    ``Linear → σ → ... → Linear``.
    """
    from torch import nn

    sizes = mlp.check_sizes(sizes)
    mlp.get_activation(activation)  # the error for an unknown name
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        if i:
            layers.append(getattr(nn, _TORCH_ACTIVATIONS[activation])())
        layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


def new_torch_cnn():
    """The book's CNN in PyTorch, freshly initialised by PyTorch: flat ``(B, 784)``
    images in, as the NNX ``CNN`` takes them, reshaped to NCHW ``(B, 1, 28, 28)``.
    """
    from torch import nn

    return nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, 32, 3, padding=1),  # (B, 32, 28, 28)
        nn.ReLU(),
        nn.AvgPool2d(2),  # (B, 32, 14, 14)
        nn.Conv2d(32, 64, 3, padding=1),  # (B, 64, 14, 14)
        nn.ReLU(),
        nn.AvgPool2d(2),  # (B, 64, 7, 7)
        nn.Flatten(),  # (B, 3136) in (c, h, w) order
        nn.Linear(7 * 7 * 64, 256),
        nn.ReLU(),
        nn.Linear(256, 10),
    )


def _nnx_models():
    from companion import nnx_models

    return nnx_models


def _is_nnx_module(obj) -> bool:
    # an nnx.Module can only exist once flax is loaded: no need to load it to check
    flax = sys.modules.get("flax.nnx")
    return flax is not None and isinstance(obj, flax.Module)


def _tensor(a):
    import torch

    return torch.from_numpy(np.array(a, np.float32, order="C", copy=True))


def _param(p) -> np.ndarray:
    return np.asarray(p[...])


def mlp_to_torch(model, activation: str | None = None):
    """The PyTorch twin (:func:`new_torch_mlp`) of an NNX ``MLP`` or of chapter-2
    ``[(W, b), ...]`` parameters, holding the same weights (each ``W`` transposed).

    Args:
        model: an NNX :class:`companion.nnx_models.MLP`, or ``(W, b)`` pairs with ``W``
            ``(n_in, n_out)``.
        activation: σ for parameters (default ``"relu"``); an ``MLP`` brings its own.
    """
    import torch

    MLP = _nnx_models().MLP
    if isinstance(model, MLP):
        if activation not in (None, model.activation):
            raise ValueError(
                f"the MLP's activation is {model.activation!r}; got {activation!r}"
            )
        activation = model.activation
        params = [(_param(lin.kernel), _param(lin.bias)) for lin in model.layers]
    elif _is_nnx_module(model):
        raise TypeError(
            f"mlp_to_torch copies the book's MLP; got {type(model).__name__} "
            "(for the CNN: cnn_to_torch)"
        )
    else:
        mlp.check_params(model)
        params = [(np.asarray(W), np.asarray(b)) for W, b in model]
    sizes = [params[0][0].shape[0]] + [W.shape[1] for W, _ in params]
    twin = new_torch_mlp(sizes, activation or "relu")
    linears = [m for m in twin if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for linear, (W, b) in zip(linears, params, strict=True):
            linear.weight.copy_(_tensor(W.T))  # (n_in, n_out) -> (n_out, n_in)
            linear.bias.copy_(_tensor(b))
    return twin


def cnn_to_torch(model: CNN):
    """The PyTorch twin (:func:`new_torch_cnn`) of an NNX ``CNN``, holding the same
    weights: conv kernels HWIO → OIHW, ``dense1``'s rows reordered from the NHWC
    flatten ``(h, w, c)`` to the NCHW flatten ``(c, h, w)``, ``dense2`` transposed.
    """
    import torch

    found = {
        k: np.shape(getattr(getattr(model, k, None), "kernel", None))
        for k in CNN_KERNELS
    }
    if not _is_nnx_module(model) or found != CNN_KERNELS:
        raise ValueError(
            "cnn_to_torch copies the book's CNN (companion.nnx_models.CNN): kernels "
            f"{CNN_KERNELS}; got {found}"
        )
    twin = new_torch_cnn()
    conv1, conv2, dense1, dense2 = twin[1], twin[4], twin[8], twin[10]
    with torch.no_grad():
        for conv, src in ((conv1, model.conv1), (conv2, model.conv2)):
            conv.weight.copy_(_tensor(conv_kernel_to_torch(_param(src.kernel))))
            conv.bias.copy_(_tensor(_param(src.bias)))
        dense1.weight.copy_(
            _tensor(flat_rows_to_torch(_param(model.dense1.kernel), FEATURES))
        )
        dense1.bias.copy_(_tensor(_param(model.dense1.bias)))
        dense2.weight.copy_(_tensor(_param(model.dense2.kernel).T))
        dense2.bias.copy_(_tensor(_param(model.dense2.bias)))
    return twin


def _layers(module) -> list:
    """The modules of ``module`` that hold parameters themselves, in order."""
    import torch

    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"expected a torch.nn.Module; got {type(module).__name__}")
    return [m for m in module.modules() if list(m.parameters(recurse=False))]


def _numpy(t) -> np.ndarray:
    return t.detach().cpu().float().numpy()


def _check_same(module, jax_model, shape: tuple[int, ...], what: str) -> None:
    """Refuse a copy whose logits disagree with ``module``'s on one random batch."""
    import torch

    x = np.random.default_rng(0).random((3, *shape), dtype=np.float32)
    weight = next(module.parameters())
    batch = torch.from_numpy(x).to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        try:
            theirs = _numpy(module(batch))
        except RuntimeError as e:
            if shape != (784,):
                raise ValueError(
                    f"the module cannot run on a batch of shape {tuple(batch.shape)}: "
                    f"{e}"
                ) from e
            # a module that takes images (B, 1, 28, 28), not flat rows
            theirs = _numpy(module(batch.reshape(3, 1, 28, 28)))
    ours = np.asarray(jax_model(jnp.asarray(x)))
    scale = max(1.0, float(np.abs(theirs).max()))
    # float32 rounding of different summation orders: ~1e-6 relative (a module in
    # bfloat16 or float16 rounds far more: ~50 of its eps); a missed transpose, another
    # pooling or activation is off by the logits' own size
    tol = max(1e-4, 50 * torch.finfo(weight.dtype).eps) * scale
    if ours.shape != theirs.shape or not np.allclose(ours, theirs, atol=tol):
        diff = (
            float(np.abs(ours - theirs).max()) if ours.shape == theirs.shape else None
        )
        raise ValueError(
            f"the module does not compute the book's {what}: its logits on a random "
            f"batch differ from the copy's (shapes {theirs.shape} vs {ours.shape}, "
            f"max |difference| {diff}); only the weights are copied, so its "
            f"activations, pooling and flattening must be the book's"
        )


def mlp_params_from_torch(module) -> mlp.Params:
    """The chapter-2 ``[(W, b), ...]`` of a PyTorch MLP (its ``nn.Linear`` layers in
    order, each ``W`` transposed to ``(n_in, n_out)``)."""
    import torch

    layers = _layers(module)
    if not layers or not all(isinstance(m, torch.nn.Linear) for m in layers):
        kinds = [type(m).__name__ for m in layers]
        raise ValueError(
            f"an MLP's only layers with parameters are nn.Linear; got {kinds}"
        )
    if any(m.bias is None for m in layers):
        raise ValueError("the book's MLP has biases: nn.Linear(..., bias=True)")
    shapes = [tuple(m.weight.shape) for m in layers]
    if any(a[0] != b[1] for a, b in zip(shapes[:-1], shapes[1:], strict=True)):
        raise ValueError(
            f"the nn.Linear layers do not chain: weights (n_out, n_in) {shapes}"
        )
    return [
        (jnp.asarray(_numpy(m.weight).T), jnp.asarray(_numpy(m.bias))) for m in layers
    ]


def mlp_from_torch(module, activation: str | None = None) -> MLP:
    """An NNX ``MLP`` holding the weights of a PyTorch MLP (``W`` transposed).

    Args:
        module: a ``torch.nn.Module`` whose layers with parameters are ``nn.Linear``,
            in order (e.g. :func:`new_torch_mlp` or :func:`mlp_to_torch`'s result).
        activation: σ between the layers; ``None`` reads it from the module's
            ``nn.ReLU``/``nn.Tanh``/``nn.Sigmoid`` layers.

    Raises:
        ValueError: the layers are not a chain of ``nn.Linear``, σ cannot be read or is
            mixed, or the copy's logits differ from the module's on a random batch.
    """
    params = mlp_params_from_torch(module)
    if activation is None:
        names = {
            name
            for m in module.modules()
            for name, cls in _TORCH_ACTIVATIONS.items()
            if type(m).__name__ == cls
        }
        if len(params) > 1 and len(names) != 1:
            raise ValueError(
                "cannot read one activation from the module's layers (found "
                f"{sorted(names)}); pass activation='relu', 'tanh' or 'sigmoid'"
            )
        activation = names.pop() if names else "relu"
    model = _nnx_models().MLP.from_params(params, activation=activation)
    _check_same(module, model, (int(params[0][0].shape[0]),), "MLP")
    return model


def cnn_from_torch(module, *, conv: str = "lax") -> CNN:
    """An NNX ``CNN`` holding the weights of the book's CNN in PyTorch: conv weights
    OIHW → HWIO, ``dense1``'s columns from the NCHW flatten ``(c, h, w)`` to the NHWC
    flatten ``(h, w, c)``, ``dense2`` transposed.

    Args:
        module: a ``torch.nn.Module`` with the layers of :func:`new_torch_cnn` (two
            ``Conv2d``, two ``Linear`` of the same shapes), taking ``(B, 784)`` or
            ``(B, 1, 28, 28)`` images.
        conv: the NNX model's convolution form: ``"lax"`` (the textbook
            ``nnx.Conv``, the default) or an opt-in CPU form, ``"winograd"`` or
            ``"patches"`` (:class:`companion.nnx_models.CNN`).

    Raises:
        ValueError: other layers or shapes, or the copy's logits differ from the
            module's on a random batch (e.g. max pooling where the book averages).
    """
    import torch

    layers = _layers(module)
    kinds = [type(m) for m in layers]
    expected = [torch.nn.Conv2d, torch.nn.Conv2d, torch.nn.Linear, torch.nn.Linear]
    shapes = [tuple(getattr(m, "weight", np.empty(0)).shape) for m in layers]
    want = [
        (32, 1, 3, 3),
        (64, 32, 3, 3),
        (256, 7 * 7 * 64),
        (10, 256),
    ]  # PyTorch's layouts of CNN_KERNELS
    if kinds != expected or shapes != want or any(m.bias is None for m in layers):
        raise ValueError(
            "cnn_from_torch copies the book's CNN: Conv2d, Conv2d, Linear, Linear "
            f"with weights {want} and biases; got {[k.__name__ for k in kinds]} "
            f"with {shapes}"
        )
    from flax import nnx

    model = _nnx_models().CNN(rngs=nnx.Rngs(0), conv=conv)
    conv1, conv2, dense1, dense2 = layers
    for dst, src in ((model.conv1, conv1), (model.conv2, conv2)):
        dst.kernel[...] = jnp.asarray(conv_kernel_from_torch(_numpy(src.weight)))
        dst.bias[...] = jnp.asarray(_numpy(src.bias))
    model.dense1.kernel[...] = jnp.asarray(
        flat_rows_from_torch(_numpy(dense1.weight), FEATURES)
    )
    model.dense1.bias[...] = jnp.asarray(_numpy(dense1.bias))
    model.dense2.kernel[...] = jnp.asarray(_numpy(dense2.weight).T)
    model.dense2.bias[...] = jnp.asarray(_numpy(dense2.bias))
    _check_same(module, model, (784,), "CNN")
    return model
