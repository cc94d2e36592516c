"""``python -m companion.bench``: seconds per epoch for every way the book trains its
MLP (chapter 5, :mod:`companion.bench.mlp`) or, with ``--model cnn``, its CNN (chapter
6, :mod:`companion.bench.cnn`), against its peers and the compute floor.

Prints the table (:func:`companion.bench.tables.format_table`), then the companion's
fastest variant against each other one, round by round
(:func:`companion.bench.tables.format_races`). ``--batch-sizes`` adds a table of the
MLP's seconds per epoch against the batch size (:func:`companion.bench.mlp.scaling`).
``--help`` lists the options.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import jax
import numpy as np

from companion.bench.mlp import VARIANTS, epoch_flops, run, scaling
from companion.bench.tables import (
    format_races,
    format_scaling,
    format_table,
    matmul_throughput,
)

__all__ = ["main"]

MLP_SIZES = (784, 128, 10)  # the MLP the benchmark times


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
    """Run the command line ``argv`` (``None``: ``sys.argv[1:]``); 0 on success, 2 when
    MNIST cannot be found (argument errors exit through ``argparse``)."""
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
    scaled = None
    try:
        sizes = [int(v) for v in (args.batch_sizes or "").split(",") if v.strip()]
        throughput = matmul_throughput()
        if args.model == "cnn":
            # flax and optax are loaded only for the CNN
            from companion.bench.cnn import CNN_VARIANTS, cnn_step_flops, run_cnn

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
            floor = epoch_flops(MLP_SIZES, len(y), b) / throughput
            scaled = scaling(x, y, sizes, lr=lr) if sizes else None
    except ValueError as e:
        parser.error(str(e))
    print(
        f"{args.model.upper()}: {source}, batch {b}, "
        f"{jax.device_count()} {jax.default_backend()} device(s), jax {jax.__version__}"
    )
    print(format_table(rows, floor))
    ours = [r for r in rows if r.variant in ("fit", "jit", "scan", "scan+groups")]
    others = [r.variant for r in rows if r.variant != "eager"]  # eager: not in rounds
    if ours and len(others) > 1:
        best = min(ours, key=lambda r: r.seconds).variant
        print(f"\n{best} against each, round by round (its time / {best}'s):")
        print(format_races(rows, best, [o for o in others if o != best]))
    if scaled:
        floors = {s: epoch_flops(MLP_SIZES, len(y), s) / throughput for s in sizes}
        print("\nseconds per epoch against the batch size:")
        print(format_scaling(scaled, floors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
