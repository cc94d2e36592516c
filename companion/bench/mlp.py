"""The MLP half of ``python -m companion.bench`` (chapter 5): seconds per SGD epoch of
the book's MLP, every way the book trains it and its peers'.

Variants: ``eager``, ``jit`` and ``scan`` (``companion.sgd.train_epoch``, chapter 5's
three loops), ``scan+groups`` (the scanned epoch with one group of rows per core,
:func:`companion.fast.rows.grouped_scan_epoch`, an opt-in CPU speed path), ``torch``
and ``torch.compile`` (PyTorch eager and compiled, the same model on the same batches,
if torch is installed) and ``numpy`` (the chapter-4 forward and backward kernels run on
numpy arrays): the peers live in :mod:`companion.bench.peers`. :func:`scaling` times
some of them at several batch sizes.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from companion import mlp, sgd
from companion.bench.peers import numpy_epoch, torch_epoch
from companion.bench.tables import PAUSE, Row, import_torch
from companion.fast.rows import grouped_scan_epoch
from companion.timing import benchmark, interleave
from companion.torch_bridge import mlp_to_torch

__all__ = ["VARIANTS", "epoch_flops", "run", "scaling"]

VARIANTS = ("eager", "jit", "scan", "scan+groups", "torch", "torch.compile", "numpy")


def epoch_flops(sizes: Sequence[int], n: int, batch_size: int) -> int:
    """Floating-point operations of the matrix products in one SGD epoch of ``n //
    batch_size`` steps.

    Per layer with ``n_in`` inputs and ``n_out`` outputs a step does ``2·B·n_in·n_out``
    FLOPs for the forward product, as many for ``∇W = aᵀδ``, and as many for ``δ Wᵀ`` —
    except in the first layer, whose input needs no gradient. Elementwise work is
    ignored (it is small here).

    Examples:
        >>> epoch_flops([784, 128, 10], n=128, batch_size=64)  # 2 steps
        52363264
    """
    steps = n // batch_size
    per_step = 0
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        products = 2 if i == 0 else 3
        per_step += products * 2 * batch_size * n_in * n_out
    return steps * per_step


def run(
    x: np.ndarray,
    y: np.ndarray,
    *,
    sizes: Sequence[int] = (784, 128, 10),
    lr: float = 0.01,
    batch_size: int = 64,
    epochs: int = 3,
    eager_epochs: int = 1,
    variants: Sequence[str] = VARIANTS,
    seed: int = 516,
) -> list[Row]:
    """Time each variant: one untimed warm-up epoch each (compilation), then ``epochs``
    rounds of one timed epoch of each, in turns (:func:`companion.timing.interleave`).

    ``eager`` is timed first, on its own, over ``eager_epochs`` without warm-up (it
    compiles nothing and is slow). ``torch`` and ``torch.compile`` are skipped, with a
    note on stderr, if torch is not installed. The data is checked once, first
    (``ValueError`` naming the problem).
    """
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(
            f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}"
        )
    init = mlp.init_params(list(sizes), jax.random.PRNGKey(seed))
    sgd.check_inputs(x, y, init, "relu")  # once: the variants below check nothing
    x_dev, y_dev = jnp.asarray(x), jnp.asarray(y)  # on the device once, as a user would
    calls = {v: _epoch(v, init, x, y, x_dev, y_dev, lr, batch_size) for v in variants}
    losses: dict[str, list[float]] = {v: [] for v in calls if calls[v] is not None}

    def timed(v):
        return lambda: losses[v].append(calls[v]())

    times = {}
    if "eager" in losses:
        times["eager"] = benchmark(timed("eager"), warmup=0, repeat=eager_epochs)
    compiled = {v: timed(v) for v in losses if v != "eager"}
    if compiled:
        times |= interleave(compiled, warmup=1, repeat=epochs, pause=PAUSE)
    return [Row(v, times[v].times, losses[v][-1]) for v in variants if v in losses]


def _epoch(variant, init, x, y, x_dev, y_dev, lr, batch_size):
    """One epoch of ``variant``: a function of no arguments that trains its own copy
    of ``init`` and returns the epoch's mean loss (a float: it waits for the work);
    ``None`` for a torch variant without torch."""
    if variant in ("eager", "jit", "scan", "scan+groups"):
        state = {"p": init}

        def step():
            if variant == "scan+groups":
                state["p"], loss = grouped_scan_epoch(
                    state["p"], x_dev, y_dev, lr=lr, batch_size=batch_size
                )
            else:
                state["p"], loss = sgd.train_epoch(
                    state["p"],
                    x_dev,
                    y_dev,
                    lr=lr,
                    batch_size=batch_size,
                    mode=variant,
                    validate=False,
                )
            jax.block_until_ready(state["p"])
            return float(loss)

        return step
    if variant == "numpy":
        np_state = {"p": [(np.asarray(W), np.asarray(b)) for W, b in init]}
        x_np, y_np = np.asarray(x, np.float32), np.asarray(y)

        def np_step():
            np_state["p"], loss = numpy_epoch(
                np_state["p"], x_np, y_np, lr, batch_size, validate=False
            )
            return loss

        return np_step
    torch = import_torch(variant)
    if torch is None:
        return None
    model = mlp_to_torch(init)
    if variant == "torch.compile":
        model = torch.compile(model)
    x_t = torch.from_numpy(np.asarray(x, np.float32))
    y_t = torch.from_numpy(np.asarray(y).astype(np.int64))
    return lambda: torch_epoch(model, x_t, y_t, lr, batch_size)


def scaling(
    x: np.ndarray,
    y: np.ndarray,
    batch_sizes: Sequence[int],
    *,
    variants: Sequence[str] = ("scan", "numpy", "torch"),
    lr: float = 0.01,
    epochs: int = 1,
) -> dict[int, list[Row]]:
    """:func:`run` for each batch size (one warm-up epoch, then ``epochs`` timed): the
    rows per batch size.
    """
    return {
        b: run(x, y, lr=lr, batch_size=b, epochs=epochs, variants=variants)
        for b in batch_sizes
    }
