"""What the benchmark's tables are made of: the table row, the measured matmul
throughput, round-by-round races and the table formats.

One table per model: for each variant, the median seconds per epoch and the spread of
its runs, the speedup over JAX eager, and the ratio to the *compute floor* — the FLOPs
an epoch needs (from the model's shapes) divided by the matrix-multiply throughput
measured on this machine in the same run (:func:`matmul_throughput`). A ratio of 1
would mean the epoch runs at the speed of one large matmul; everything above it is
overhead. The variants are timed in turns (:func:`companion.timing.interleave`), so run
``i`` of each is one round; below the table, the companion's fastest variant against
each other one, round by round (:func:`race`): a lead that holds in every round
survives the machine's noise.
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from companion.timing import Timing, gc_paused

__all__ = [
    "PAUSE",
    "Race",
    "Row",
    "format_races",
    "format_scaling",
    "format_table",
    "import_torch",
    "matmul_throughput",
    "race",
]


# Seconds of rest before each timed run: the previous variant's thread pools (OpenBLAS,
# PyTorch's OpenMP, XLA's) can keep the cores busy for a while after their work ends
# (measured: a JAX epoch right after a numpy epoch ran slower than alone).
PAUSE = 0.1


def matmul_throughput(size: int = 1024, repeat: int = 5) -> float:
    """FLOP/s of a jitted float32 ``(size, size) @ (size, size)`` on the default device
    (best of runs).
    """
    a = jnp.ones((size, size), jnp.float32)
    f = jax.jit(lambda m: m @ m)
    jax.block_until_ready(f(a))
    best = float("inf")
    with gc_paused():
        for _ in range(repeat):
            start = time.perf_counter()
            jax.block_until_ready(f(a))
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


@dataclass(frozen=True)
class Row:
    """One line of the benchmark table: a variant's timed runs."""

    variant: str
    # seconds per epoch of each timed run, in round order (variants timed in turns by
    # companion.timing.interleave: run i of every variant is one round, a pair)
    times: tuple[float, ...]
    loss: float  # mean training loss of one run, the same run of every variant

    def __post_init__(self):
        if not self.times:
            raise ValueError(f"{self.variant}: a row needs at least one timed run")

    @property
    def seconds(self) -> float:
        """The median seconds per epoch."""
        return statistics.median(self.times)

    @property
    def epochs(self) -> int:
        """Timed runs behind the median (epochs; for the CNN, runs of steps)."""
        return len(self.times)


@dataclass(frozen=True)
class Race:
    """One variant against another, round by round (see :func:`race`)."""

    variant: str
    other: str
    ratios: tuple[float, ...]  # other's seconds / variant's, per round: > 1 is ahead
    # other's fastest run / variant's fastest run: a slow spell of the machine can
    # only add time, so the fastest runs are the least disturbed pair (> 1 is ahead)
    best: float

    def __post_init__(self):
        if not self.ratios:
            raise ValueError(f"{self.variant} vs {self.other}: a race needs a round")
        if not self.best > 0:
            raise ValueError(
                f"{self.variant} vs {self.other}: the best runs' ratio must be a "
                f"positive number; got {self.best}"
            )

    @property
    def median(self) -> float:
        """The median of the rounds' ratios."""
        return statistics.median(self.ratios)

    @property
    def wins(self) -> int:
        """Rounds in which ``variant`` was faster."""
        return sum(r > 1 for r in self.ratios)

    def verdict(self) -> str:
        """``"ahead in all N rounds"``, ``"behind in all N rounds"`` (``"both
        rounds"`` for two) or ``"ahead in k of N rounds"`` (a lead the machine's noise
        can undo)."""
        n = len(self.ratios)
        every = {1: "the one round", 2: "both rounds"}.get(n, f"all {n} rounds")
        if self.wins == n:
            return f"ahead in {every}"
        if self.wins == 0:
            return f"behind in {every}"
        return f"ahead in {self.wins} of {n} rounds"

    def __str__(self) -> str:
        return (
            f"{self.variant} vs {self.other}: {self.median:.2f}× "
            f"({min(self.ratios):.2f}–{max(self.ratios):.2f}), {self.verdict()}; "
            f"best runs {self.best:.2f}×"
        )


def race(
    rows: Sequence[Row] | Mapping[str, Sequence[float] | Timing],
    variant: str,
    other: str,
) -> Race:
    """``variant`` against ``other`` in every round both were timed in: ``other``'s
    seconds over ``variant``'s, round by round (``> 1``: ``variant`` was faster).

    A ratio of medians can hide that the lead changed hands from round to round; the
    paired ratios show whether it survives the machine's noise.

    Args:
        rows: the table's rows, or each variant's seconds by name: a sequence of runs
            in round order, or the :class:`companion.timing.Timing` that
            :func:`companion.timing.interleave` returns.
        variant, other: the two names.

    Examples:
        >>> rows = [Row("a", (1.0, 2.0, 1.0), 0.0), Row("b", (1.5, 1.8, 1.2), 0.0)]
        >>> str(race(rows, "a", "b"))
        'a vs b: 1.20× (0.90–1.50), ahead in 2 of 3 rounds; best runs 1.20×'
        >>> race({"a": [2.0, 2.0], "b": [1.0, 3.0]}, "a", "b").ratios
        (0.5, 1.5)
    """
    if isinstance(rows, Mapping):
        by_name = {k: _seconds(k, t) for k, t in rows.items()}
    else:
        by_name = {r.variant: r.times for r in rows}
    for name in (variant, other):
        if name not in by_name:
            raise ValueError(f"no row for {name!r}; rows: {list(by_name)}")
    a, b = by_name[variant], by_name[other]
    if len(a) != len(b):
        raise ValueError(
            f"{variant} and {other} were not timed in the same rounds "
            f"({len(a)} and {len(b)} runs)"
        )
    ratios = tuple(tb / ta for ta, tb in zip(a, b, strict=True))
    return Race(variant, other, ratios, min(b) / min(a))


def _seconds(name: str, times) -> tuple[float, ...]:
    """A variant's seconds per round from a ``Timing`` or a 1-D sequence of numbers
    (``TypeError`` naming the variant otherwise)."""
    if isinstance(times, Timing):
        return times.times
    try:
        seconds = np.asarray(times, dtype=float)
    except (TypeError, ValueError):
        seconds = None
    if isinstance(times, str) or seconds is None or seconds.ndim != 1:
        raise TypeError(
            f"{name!r}: expected its seconds per round (a sequence of numbers or a "
            f"Timing); got {times!r}"
        )
    return tuple(seconds.tolist())


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
    """The benchmark table as text: seconds (median, and the fastest and slowest run),
    speedup over eager (if measured), ratio to the floor.
    """
    eager = next((r.seconds for r in rows if r.variant == "eager"), None)
    header = (
        f"{'variant':13s} {'s/epoch':>9s} {'spread (min–max)':>17s} "
        f"{'× vs eager':>11s} {'× floor':>8s} {'runs':>5s} {'loss':>8s}"
    )
    lines = [header]
    for r in rows:
        speedup = f"{eager / r.seconds:10.1f}×" if eager else f"{'—':>11s}"
        spread = f"{min(r.times):.3f}–{max(r.times):.3f}"
        lines.append(
            f"{r.variant:13s} {r.seconds:9.3f} {spread:>17s} {speedup} "
            f"{r.seconds / floor_seconds:7.2f}× {r.epochs:5d} {r.loss:8.4f}"
        )
    lines.append(
        f"{'floor':13s} {floor_seconds:9.3f}   "
        "(epoch FLOPs / measured matmul throughput)"
    )
    return "\n".join(lines)


def format_races(rows: Sequence[Row], variant: str, others: Sequence[str]) -> str:
    """``variant`` against each of ``others`` that has a row, one :class:`Race` a line:
    the median of the paired ratios, their range, and in how many rounds it was ahead.
    """
    names = {r.variant for r in rows}
    return "\n".join(str(race(rows, variant, o)) for o in others if o in names)
