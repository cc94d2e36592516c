"""Reading a model's layers while it runs (chapter 8's :mod:`companion.diagnose`).

:func:`layers_recorded` intercepts every ``nnx.Linear`` and ``nnx.Conv`` (subclasses
too) of a model during a call and records each one's output by the layer's path in the
model: nothing is added to the model, and its classes are restored afterwards.
:func:`layer_names` and :func:`layer_summaries` read, with it, each layer's outputs and
its *dead* units (no gradient for any example): compiled once per model structure and
batch shape, as eager calls would compile each of their small operations on its own.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["LAYERS", "layer_names", "layer_summaries", "layers_recorded"]

LAYERS = (nnx.Linear, nnx.Conv, nnx.ConvTranspose)  # the layers read, subclasses too


@contextlib.contextmanager
def layers_recorded(model: nnx.Module, outputs: dict, shift=None) -> Iterator:
    """While inside, each layer of ``model`` in ``LAYERS`` records its output in
    ``outputs[path]``, plus ``shift[path]`` when given (to differentiate the loss with
    respect to the output).

    Examples:
        >>> model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.relu)
        >>> outputs = {}
        >>> with layers_recorded(model, outputs):
        ...     _ = model(jnp.ones((2, 3)))
        >>> {name: z.shape for name, z in outputs.items()}
        {'layers/0': (2, 4)}
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(
            f"layers_recorded reads an nnx.Module's layers; got {type(model).__name__}"
        )
    names = {
        id(node): "/".join(map(str, path))
        for path, node in nnx.iter_graph(model)
        if isinstance(node, LAYERS)
    }
    classes = {type(n) for _, n in nnx.iter_graph(model) if isinstance(n, LAYERS)}
    own = {cls: cls.__dict__.get("__call__") for cls in classes}
    active: set[int] = set()  # a layer calling its parent class's __call__

    def wrap(call):
        def recorded(self, *args, **kwargs):
            if id(self) in active or id(self) not in names:
                return call(self, *args, **kwargs)
            active.add(id(self))
            try:
                out = call(self, *args, **kwargs)
            finally:
                active.discard(id(self))
            name = names[id(self)]
            outputs[name] = out = out if shift is None else out + shift[name]
            return out

        return recorded

    try:
        for cls in classes:
            cls.__call__ = wrap(cls.__call__)
        yield
    finally:
        for cls, call in own.items():
            if call is None:
                del cls.__call__  # it was inherited
            else:
                cls.__call__ = call


def layer_names(model: nnx.Module, x: jax.Array) -> list[str]:
    """The paths of the layers a call records, in call order (traced, not run)."""
    outputs: dict[str, jax.Array] = {}
    with layers_recorded(model, outputs):
        jax.eval_shape(model, x)
    if not outputs:
        raise ValueError(
            f"no nnx.Linear or nnx.Conv layer ran in a call of {type(model).__name__}"
        )
    return list(outputs)


@functools.partial(nnx.jit, static_argnames="loss")
def layer_summaries(
    model: nnx.Module, x: jax.Array, y: jax.Array, loss: Callable
) -> list:
    """Per recorded layer, in call order: the mean and std of its output ``z``, and
    the fraction of its units whose ``∂L/∂z`` is 0 for every example and position."""
    outputs: dict[str, jax.Array] = {}
    with layers_recorded(model, outputs):
        model(x)

    def loss_of(shift):
        with layers_recorded(model, {}, shift):
            return loss(model(x), y)

    zeros = {name: jnp.zeros_like(z) for name, z in outputs.items()}
    # mean loss: ∂L/∂z of example i is 1/B of its own loss's; 0 stays 0
    grads = jax.grad(loss_of)(zeros)
    summaries = []
    for name, z in outputs.items():
        silent = (grads[name] == 0).reshape(-1, z.shape[-1]).all(axis=0)  # (units,)
        summaries.append((z.mean(), z.std(), silent.mean()))
    return summaries
