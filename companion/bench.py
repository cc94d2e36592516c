"""``python -m companion.bench``: seconds per epoch for every way the book trains its
MLP (chapter 5, :mod:`companion.bench_mlp`) or, with ``--model cnn``, its CNN (chapter
6, :mod:`companion.bench_cnn`), against its peers.

Prints one table: for each variant, the median seconds per epoch, the speedup over JAX
eager, and the ratio to the *compute floor* — the FLOPs an epoch needs (from the model's
shapes) divided by the matrix-multiply throughput measured on this machine in the same
run. A ratio of 1 would mean the epoch runs at the speed of one large matmul; everything
above it is overhead.

This module holds what both share: the table row, the measured matmul throughput, the
table formats and the command line. ``--batch-sizes`` adds a table of the MLP's seconds
per epoch against the batch size (:func:`companion.bench_mlp.scaling`).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Row",
    "format_scaling",
    "format_table",
    "import_torch",
    "main",
    "matmul_throughput",
]


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
    epochs: int  # timed runs behind the median (epochs; for the CNN, runs of steps)
    loss: float  # mean training loss of the last timed epoch


def import_torch(variant: str):
    """``torch`` if installed (quiet: no notice that there is no CUDA), else ``None``
    with a note on stderr that ``variant`` is skipped.
    """
    try:
        import torch
    except ImportError:
        print(f"torch is not installed: skipping {variant}", file=sys.stderr)
        return None
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    return torch


def format_scaling(
    results: dict[int, list[Row]], floor_seconds: dict[int, float]
) -> str:
    """Seconds per epoch, one line per batch size, one column per variant, and the
    floor.
    """
    variants = [r.variant for r in next(iter(results.values()))]
    lines = [f"{'batch':>6s} " + " ".join(f"{v:>13s}" for v in [*variants, "floor"])]
    for b, rows in results.items():
        cells = [f"{r.seconds:13.3f}" for r in rows] + [f"{floor_seconds[b]:13.3f}"]
        lines.append(f"{b:6d} " + " ".join(cells))
    return "\n".join(lines)


def format_table(rows: Sequence[Row], floor_seconds: float) -> str:
    """The benchmark table as text: seconds, speedup over eager (if measured), ratio to
    the floor.
    """
    eager = next((r.seconds for r in rows if r.variant == "eager"), None)
    header = (
        f"{'variant':13s} {'s/epoch':>9s} {'× vs eager':>11s} {'× floor':>8s} "
        f"{'runs':>5s} {'loss':>8s}"
    )
    lines = [header]
    for r in rows:
        speedup = f"{eager / r.seconds:10.1f}×" if eager else f"{'—':>11s}"
        lines.append(
            f"{r.variant:13s} {r.seconds:9.3f} {speedup} "
            f"{r.seconds / floor_seconds:7.2f}× {r.epochs:5d} {r.loss:8.4f}"
        )
    lines.append(
        f"{'floor':13s} {floor_seconds:9.3f}   "
        "(epoch FLOPs / measured matmul throughput)"
    )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m companion.bench",
        description="Seconds per epoch of the book's MLP (SGD) or CNN (Adam), every "
        "training variant and its peers, with the ratio to the compute floor.",
    )
    add = parser.add_argument
    add("--model", choices=("mlp", "cnn"), default="mlp", help="default mlp")
    add("--epochs", type=int, default=3, help="MLP: timed epochs (median; default 3)")
    add("--eager-epochs", type=int, default=1, help="MLP: timed eager epochs (1)")
    add("--steps", type=int, default=50, help="CNN: timed steps per run (default 50)")
    add("--repeat", type=int, default=3, help="CNN: timed runs (median; default 3)")
    add("--batch-size", type=int, default=64, help="examples per step (default 64)")
    add("--lr", type=float, default=None, help="default 0.01 (MLP), 0.001 (CNN)")
    add("--synthetic", type=int, metavar="N", help="N random images, not MNIST")
    add("--variants", help="comma-separated subset (default: all of the model's)")
    add(
        "--batch-sizes",
        metavar="B1,B2,...",
        help="MLP: also time scan, numpy and torch at each batch size",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    positive = (
        args.epochs,
        args.eager_epochs,
        args.steps,
        args.repeat,
        args.batch_size,
    )
    if min(positive) < 1:
        parser.error("--epochs, --eager-epochs, --steps, --repeat, --batch-size: >= 1")
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
    variants = None
    if args.variants:
        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    b = args.batch_size
    try:
        sizes = [int(v) for v in (args.batch_sizes or "").split(",") if v.strip()]
        throughput = matmul_throughput()
        from companion.bench_mlp import VARIANTS, epoch_flops, run, scaling

        if args.model == "cnn":
            from companion.bench_cnn import CNN_VARIANTS, cnn_step_flops, run_cnn

            rows = run_cnn(
                x,
                y,
                batch_size=b,
                steps=args.steps,
                repeat=args.repeat,
                lr=1e-3 if args.lr is None else args.lr,
                variants=variants or CNN_VARIANTS,
            )
            floor = cnn_step_flops(b) * (len(y) // b) / throughput
        else:
            lr = 0.01 if args.lr is None else args.lr
            rows = run(
                x,
                y,
                lr=lr,
                batch_size=b,
                epochs=args.epochs,
                eager_epochs=args.eager_epochs,
                variants=variants or VARIANTS,
            )
            floor = epoch_flops((784, 128, 10), len(y), b) / throughput
            scaled = scaling(x, y, sizes, lr=lr) if sizes else None
    except ValueError as e:
        parser.error(str(e))
    print(
        f"{args.model.upper()}: {source}, batch {b}, "
        f"{jax.device_count()} {jax.default_backend()} device(s), jax {jax.__version__}"
    )
    print(format_table(rows, floor))
    if args.model == "mlp" and scaled:
        floors = {s: epoch_flops((784, 128, 10), len(y), s) / throughput for s in sizes}
        print("\nseconds per epoch against the batch size:")
        print(format_scaling(scaled, floors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
