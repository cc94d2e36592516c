"""The peers the benchmark measures the companion against (chapter 5): the same SGD
epoch of the same MLP, on the same batches, in numpy and in PyTorch eager.

:func:`numpy_epoch` runs the chapter-4 forward and backward kernels of
:mod:`companion.backprop` on numpy arrays (operators only, so they run there unchanged).
:func:`torch_epoch` trains a PyTorch model (the twins of the book's MLP and CNN come
from :mod:`companion.torch_bridge`); torch is imported only when it is called.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from companion import backprop, mlp
from companion.batching import check_dataset, full_batches

__all__ = [
    "NUMPY_ACTIVATIONS",
    "numpy_epoch",
    "torch_epoch",
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
