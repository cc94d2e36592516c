"""``python -m companion.bench``: seconds per epoch for every way the book trains its
MLP.

Prints one table: for each variant, the median seconds per epoch, the speedup over JAX
eager, and the ratio to the *compute floor* — the FLOPs an epoch needs (from the model's
shapes) divided by the matrix-multiply throughput measured on this machine in the same
run. A ratio of 1 would mean the epoch runs at the speed of one large matmul; everything
above it is overhead.

Variants: ``eager``, ``jit`` and ``scan`` (``companion.sgd.train_epoch``),
``torch`` (PyTorch eager, same model, same batches, if torch is installed) and ``numpy``
(the chapter-4 forward and backward kernels run on numpy arrays): the peers live in
:mod:`companion.peers`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from companion import mlp, sgd
from companion.peers import numpy_epoch, torch_epoch, torch_mlp
from companion.timing import benchmark

__all__ = [
    "Row",
    "epoch_flops",
    "format_table",
    "main",
    "matmul_throughput",
    "run",
]

VARIANTS = ("eager", "jit", "scan", "torch", "numpy")


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


def matmul_throughput(size: int = 1024, repeat: int = 5) -> float:
    """FLOP/s of a jitted float32 ``(size, size) @ (size, size)`` on the default device
    (best of runs).
    """
    a = jnp.ones((size, size), jnp.float32)
    f = jax.jit(lambda m: m @ m)
    jax.block_until_ready(f(a))
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        jax.block_until_ready(f(a))
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


@dataclass(frozen=True)
class Row:
    """One line of the benchmark table."""

    variant: str
    seconds: float  # median seconds per epoch
    epochs: int  # timed epochs behind the median
    loss: float  # mean training loss of the last timed epoch


def _median_epoch(
    step: Callable[[], float], epochs: int, warmup: int
) -> tuple[float, float]:
    """Median seconds of ``step()`` (an epoch that waits for its own result), and its
    last loss.
    """
    losses: list[float] = []
    timed = benchmark(lambda: losses.append(step()), warmup=warmup, repeat=epochs)
    return timed.median, losses[-1]


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
    """Time each variant: one untimed warm-up epoch (compilation), then the median of
    ``epochs``.

    ``eager`` is timed over ``eager_epochs`` without warm-up (it compiles nothing and is
    slow). ``torch`` is skipped, with a note on stderr, if torch is not installed. The
    data is checked once, first (``ValueError`` naming the problem).
    """
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(
            f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}"
        )
    init = mlp.init_params(list(sizes), jax.random.PRNGKey(seed))
    sgd.check_inputs(x, y, init, "relu")  # once: the variants below check nothing
    x_dev, y_dev = jnp.asarray(x), jnp.asarray(y)  # on the device once, as a user would
    rows = []
    for variant in variants:
        if variant in ("eager", "jit", "scan"):
            state = {
                "p": jax.tree.map(jnp.array, init)
            }  # a copy: jit and scan donate it

            def step(variant=variant, state=state):
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

            timed = eager_epochs if variant == "eager" else epochs
            seconds, loss = _median_epoch(
                step, timed, warmup=0 if variant == "eager" else 1
            )
        elif variant == "numpy":
            np_state = {"p": [(np.asarray(W), np.asarray(b)) for W, b in init]}
            x_np, y_np = np.asarray(x, np.float32), np.asarray(y)

            def np_step(state=np_state, x_np=x_np, y_np=y_np):
                state["p"], loss = numpy_epoch(
                    state["p"], x_np, y_np, lr, batch_size, validate=False
                )
                return loss

            timed = epochs
            seconds, loss = _median_epoch(np_step, timed, warmup=1)
        else:
            try:
                import torch
            except ImportError:
                print(
                    "torch is not installed: skipping the PyTorch variant",
                    file=sys.stderr,
                )
                continue
            model = torch_mlp(init)
            x_t = torch.from_numpy(np.asarray(x, np.float32))
            y_t = torch.from_numpy(np.asarray(y).astype(np.int64))

            def torch_step(model=model, x_t=x_t, y_t=y_t):
                return torch_epoch(model, x_t, y_t, lr, batch_size)

            timed = epochs
            seconds, loss = _median_epoch(torch_step, timed, warmup=1)
        rows.append(Row(variant, seconds, timed, loss))
    return rows


def format_table(rows: Sequence[Row], floor_seconds: float) -> str:
    """The benchmark table as text: seconds, speedup over eager (if measured), ratio to
    the floor.
    """
    eager = next((r.seconds for r in rows if r.variant == "eager"), None)
    header = (
        f"{'variant':8s} {'s/epoch':>9s} {'× vs eager':>11s} {'× floor':>8s} "
        f"{'epochs':>7s} {'loss':>8s}"
    )
    lines = [header]
    for r in rows:
        speedup = f"{eager / r.seconds:10.1f}×" if eager else f"{'—':>11s}"
        lines.append(
            f"{r.variant:8s} {r.seconds:9.3f} {speedup} "
            f"{r.seconds / floor_seconds:7.2f}× {r.epochs:7d} {r.loss:8.4f}"
        )
    lines.append(
        f"{'floor':8s} {floor_seconds:9.3f}   "
        "(epoch FLOPs / measured matmul throughput)"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m companion.bench",
        description="Seconds per epoch of SGD on the book's MLP, for every training "
        "variant, with the speedup over JAX eager and the ratio to the compute floor.",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=3,
        help="timed epochs per variant (median; default 3)",
    )
    parser.add_argument(
        "--eager-epochs",
        type=int,
        default=1,
        help="timed epochs for eager (default 1: it is slow)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, help="examples per step (default 64)"
    )
    parser.add_argument(
        "--lr", type=float, default=0.01, help="learning rate (default 0.01)"
    )
    parser.add_argument(
        "--synthetic",
        type=int,
        metavar="N",
        default=None,
        help="use N random images instead of MNIST (no data needed)",
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated subset of {','.join(VARIANTS)}",
    )
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.eager_epochs < 1 or args.batch_size < 1:
        parser.error("--epochs, --eager-epochs and --batch-size must be positive")
    if args.synthetic is not None:
        rng = np.random.default_rng(0)
        x = rng.random((args.synthetic, 784), dtype=np.float32)
        y = rng.integers(0, 10, args.synthetic).astype(np.int32)
        source = f"{args.synthetic:,} synthetic images"
    else:
        from companion.data import DataUnavailableError, load_mnist

        try:
            (x, y), _ = load_mnist()
        except DataUnavailableError as e:
            print(f"{e}\n(or run with --synthetic 60000)", file=sys.stderr)
            return 2
        source = f"MNIST, {len(y):,} training images"
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    try:
        rows = run(
            x,
            y,
            lr=args.lr,
            batch_size=args.batch_size,
            epochs=args.epochs,
            eager_epochs=args.eager_epochs,
            variants=variants,
        )
    except ValueError as e:
        parser.error(str(e))
    floor = epoch_flops((784, 128, 10), len(y), args.batch_size) / matmul_throughput()
    print(
        f"{source}, batch {args.batch_size}, "
        f"{jax.device_count()} {jax.default_backend()} device(s), jax {jax.__version__}"
    )
    print(format_table(rows, floor))
    return 0


if __name__ == "__main__":
    sys.exit(main())
