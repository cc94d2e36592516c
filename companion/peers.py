"""The peers the benchmark measures the companion against (chapter 5): the same SGD
epoch of the same MLP, on the same batches, in numpy and in PyTorch eager.

:func:`numpy_epoch` runs the chapter-4 forward and backward kernels of
:mod:`companion.backprop` on numpy arrays (operators only, so they run there unchanged).
:func:`torch_mlp` builds the PyTorch twin of an MLP's parameters, :func:`torch_cnn` that
of the NNX ``CNN``, and :func:`torch_epoch` trains either; torch is imported only when
they are called.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from companion import backprop, mlp
from companion.batching import check_dataset, full_batches

__all__ = [
    "NUMPY_ACTIVATIONS",
    "numpy_epoch",
    "torch_cnn",
    "torch_epoch",
    "torch_mlp",
]


NumpyParams = list[tuple[np.ndarray, np.ndarray]]


# numpy's σ for the numpy variant; σ′ is backprop.DERIVATIVES itself (operators only).
NUMPY_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda z: np.maximum(z, 0),
    "tanh": np.tanh,
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
}


def numpy_epoch(
    params: NumpyParams,
    x: np.ndarray,
    y: np.ndarray,
    lr: float,
    batch_size: int,
    activation: str = "relu",
    validate: bool = True,
) -> tuple[NumpyParams, float]:
    """One SGD epoch in numpy with the chapter-4 backward pass
    (:func:`companion.backprop.propagate`).

    Same batches, same update as ``sgd.train_epoch``: ``x`` ``(N, n_in)``, ``y``
    ``(N,)`` labels below the last layer's width, ``N // batch_size`` full batches.
    Returns ``(params, mean_loss)``. With ``validate`` (as in ``sgd.train_epoch``) the
    data is checked before the first step; the benchmark checks it once, not per epoch.
    """
    mlp.get_activation(activation)  # the error for an unknown name
    if validate:
        check_dataset(x, y, flat=True, num_classes=mlp.num_classes(params))
    steps = full_batches(len(y), batch_size)
    sigma, sigma_prime = NUMPY_ACTIVATIONS[activation], backprop.DERIVATIVES[activation]
    params = [(W.copy(), b.copy()) for W, b in params]
    losses = []
    for i in range(steps):
        xb, yb = (
            x[i * batch_size : (i + 1) * batch_size],
            y[i * batch_size : (i + 1) * batch_size],
        )
        cache = backprop.forward_layers(params, xb, sigma)
        shifted = cache.logits - cache.logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(
            np.exp(shifted).sum(axis=1, keepdims=True)
        )  # (B, C)
        losses.append(-log_probs[np.arange(len(yb)), yb].mean())
        # δ^(L) = (softmax − onehot) / B, as in backprop.backward
        delta = np.exp(log_probs)
        delta[np.arange(len(yb)), yb] -= 1
        delta /= len(yb)
        grads = backprop.propagate(params, cache, delta, sigma_prime)
        params = [
            (W - lr * gW, b - lr * gb)
            for (W, b), (gW, gb) in zip(params, grads, strict=True)
        ]
    return params, float(np.mean(losses))


def torch_epoch(
    model, x, y, lr: float, batch_size: int, optimizer=None, steps: int | None = None
) -> float:
    """One epoch of a ``torch.nn.Module`` on ``torch`` tensors, PyTorch eager, over
    ``len(y) // batch_size`` full batches (or the first ``steps``); returns the mean
    loss.

    ``x`` ``(N, ...)`` float32 and ``y`` ``(N,)`` int64 (what ``cross_entropy`` takes).
    The update is plain SGD with ``lr``, or ``optimizer.step()`` when one is given (a
    ``torch.optim`` optimizer of ``model``'s parameters; ``lr`` is then unused).
    """
    import torch

    if len(x) != len(y):
        raise ValueError(
            f"x and y must have the same length; got {len(x)} and {len(y)}"
        )
    count = full_batches(len(y), batch_size)
    if steps is not None:
        if not 1 <= steps <= count:
            raise ValueError(f"steps must be in [1, {count}]; got {steps}")
        count = steps
    losses = []
    for i in range(count):
        xb, yb = (
            x[i * batch_size : (i + 1) * batch_size],
            y[i * batch_size : (i + 1) * batch_size],
        )
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        model.zero_grad(set_to_none=True)
        loss.backward()
        if optimizer is not None:
            optimizer.step()
        else:
            with torch.no_grad():
                for p in model.parameters():
                    p -= lr * p.grad
        losses.append(loss.detach())
    return float(torch.stack(losses).mean())


def torch_mlp(params: mlp.Params):
    """A ``torch.nn.Sequential`` ReLU MLP holding the same weights as ``params`` (W
    transposed).
    """
    import torch

    layers = []
    for i, (W, b) in enumerate(params):
        linear = torch.nn.Linear(W.shape[0], W.shape[1])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.asarray(W).T.copy()))
            linear.bias.copy_(torch.from_numpy(np.asarray(b).copy()))
        layers.append(linear)
        if i < len(params) - 1:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def torch_cnn(model):
    """The PyTorch twin of an NNX ``companion.nnx_models.CNN``, holding the same
    weights.

    Takes flat images ``(B, 784)``, as the NNX model does. The layouts differ: NNX
    stores conv kernels ``(kh, kw, C_in, C_out)`` (HWIO) and works on ``(B, H, W, C)``
    images, PyTorch ``(C_out, C_in, kh, kw)`` (OIHW) on ``(B, C, H, W)``; so the kernels
    are transposed, and the first dense layer's rows are reordered from NNX's flattening
    order ``(h, w, c)`` to PyTorch's ``(c, h, w)``.
    """
    import torch
    from torch import nn

    expected = {"conv1": (3, 3, 1, 32), "conv2": (3, 3, 32, 64)}
    expected |= {"dense1": (7 * 7 * 64, 256), "dense2": (256, 10)}
    found = {
        k: np.shape(getattr(getattr(model, k, None), "kernel", None)) for k in expected
    }
    if found != expected:
        raise ValueError(
            "torch_cnn copies the book's CNN (companion.nnx_models.CNN): kernels "
            f"{expected}; got {found}"
        )

    def tensor(a):
        return torch.from_numpy(np.array(a, np.float32, order="C", copy=True))

    twin = nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(7 * 7 * 64, 256),
        nn.ReLU(),
        nn.Linear(256, 10),
    )
    conv1, conv2, dense1, dense2 = twin[1], twin[4], twin[8], twin[10]
    # (h, w, c, out) rows of NNX's dense1 → PyTorch's (out, c, h, w)
    w1 = np.asarray(model.dense1.kernel[...]).reshape(7, 7, 64, 256)
    with torch.no_grad():
        for conv, src in ((conv1, model.conv1), (conv2, model.conv2)):
            conv.weight.copy_(tensor(np.transpose(src.kernel[...], (3, 2, 0, 1))))
            conv.bias.copy_(tensor(src.bias[...]))
        dense1.weight.copy_(tensor(w1.transpose(3, 2, 0, 1).reshape(256, -1)))
        dense1.bias.copy_(tensor(model.dense1.bias[...]))
        dense2.weight.copy_(tensor(np.asarray(model.dense2.kernel[...]).T))
        dense2.bias.copy_(tensor(model.dense2.bias[...]))
    return twin
