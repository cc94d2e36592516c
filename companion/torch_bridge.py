"""Weights between the book's JAX models and their PyTorch twins (appendix, "JAX for
PyTorch users").

``mlp_to_torch``/``mlp_from_torch`` and ``cnn_to_torch``/``cnn_from_torch`` copy the
book's MLP (chapter-2 parameters or the NNX ``MLP``) and the NNX ``CNN`` across, each
array converted by :mod:`companion.torch_layouts` (dense ``(n_in, n_out)`` ↔
``(n_out, n_in)``, conv HWIO ↔ OIHW, the first dense layer's rows reordered between the
NHWC and NCHW flattens). ``*_from_torch`` run both models on one batch and refuse a
module that does not compute what the book's model computes. torch is imported when a
function is called, never on import.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import jax.numpy as jnp
import numpy as np

from companion import mlp, torch_layouts
from companion.torch_layouts import CNN_KERNELS

if TYPE_CHECKING:
    from companion.nnx_models import CNN, MLP

__all__ = [
    "cnn_from_torch",
    "cnn_to_torch",
    "mlp_from_torch",
    "mlp_params_from_torch",
    "mlp_to_torch",
    "new_torch_cnn",
    "new_torch_mlp",
]

_TORCH_ACTIVATIONS = {"relu": "ReLU", "tanh": "Tanh", "sigmoid": "Sigmoid"}


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
    with torch.no_grad():
        for name, layer in zip(CNN_KERNELS, _layers(twin), strict=True):
            src = getattr(model, name)
            layer.weight.copy_(
                _tensor(torch_layouts.cnn_kernel_to_torch(name, _param(src.kernel)))
            )
            layer.bias.copy_(_tensor(_param(src.bias)))
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


def cnn_from_torch(module) -> CNN:
    """An NNX ``CNN`` holding the weights of the book's CNN in PyTorch: conv weights
    OIHW → HWIO, ``dense1``'s columns from the NCHW flatten ``(c, h, w)`` to the NHWC
    flatten ``(h, w, c)``, ``dense2`` transposed.

    Args:
        module: a ``torch.nn.Module`` with the layers of :func:`new_torch_cnn` (two
            ``Conv2d``, two ``Linear`` of the same shapes), taking ``(B, 784)`` or
            ``(B, 1, 28, 28)`` images.

    Raises:
        ValueError: other layers or shapes, or the copy's logits differ from the
            module's on a random batch (e.g. max pooling where the book averages).
    """
    import torch

    layers = _layers(module)
    kinds = [type(m) for m in layers]
    expected = [torch.nn.Conv2d, torch.nn.Conv2d, torch.nn.Linear, torch.nn.Linear]
    shapes = [tuple(getattr(m, "weight", np.empty(0)).shape) for m in layers]
    want = [torch_layouts.torch_shape(k) for k in CNN_KERNELS.values()]
    if kinds != expected or shapes != want or any(m.bias is None for m in layers):
        raise ValueError(
            "cnn_from_torch copies the book's CNN: Conv2d, Conv2d, Linear, Linear "
            f"with weights {want} and biases; got {[k.__name__ for k in kinds]} "
            f"with {shapes}"
        )
    from flax import nnx

    model = _nnx_models().CNN(rngs=nnx.Rngs(0))
    for name, src in zip(CNN_KERNELS, layers, strict=True):
        dst = getattr(model, name)
        dst.kernel[...] = jnp.asarray(
            torch_layouts.cnn_kernel_from_torch(name, _numpy(src.weight))
        )
        dst.bias[...] = jnp.asarray(_numpy(src.bias))
    _check_same(module, model, (784,), "CNN")
    return model
