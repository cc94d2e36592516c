"""Timing JAX honestly: warm-up calls, ``block_until_ready``, compile time kept apart.

JAX dispatches work asynchronously: a call returns as soon as the work is *queued*. A
timer around a call without ``block_until_ready`` measures dispatch, not computation.
And the first call of a jitted function includes tracing and compilation, which later
calls skip.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import jax

__all__ = ["Timing", "benchmark", "compile_time"]


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of repeated calls, after warm-up."""

    min: float  # the best run: the least disturbed by the rest of the machine
    median: float  # the typical run
    max: float  # the worst run
    times: tuple[float, ...]  # every run, in order
    # seconds to lower and compile, for a jitted function; else None
    compile: float | None = None

    def __str__(self) -> str:
        comp = (
            f", compile {self.compile * 1e3:.1f} ms" if self.compile is not None else ""
        )
        return (
            f"median {self.median * 1e3:.3f} ms "
            f"(min {self.min * 1e3:.3f}, max {self.max * 1e3:.3f}, "
            f"{len(self.times)} runs{comp})"
        )


def compile_time(fn: Callable, *args, **kwargs) -> float | None:
    """Seconds to lower and compile ``fn`` for these arguments; ``None`` unless jitted.

    Uses ``fn.lower(*args).compile()``, which traces and compiles without running and
    without touching ``fn``'s cache, so it can be measured separately from the run time.
    """
    if not hasattr(fn, "lower"):
        return None
    start = time.perf_counter()
    fn.lower(*args, **kwargs).compile()
    return time.perf_counter() - start


def benchmark(
    fn: Callable, *args, warmup: int = 1, repeat: int = 5, **kwargs
) -> Timing:
    """Time ``repeat`` calls of ``fn(*args, **kwargs)`` after ``warmup`` untimed ones.

    Each call waits for its result with ``jax.block_until_ready`` on whatever pytree
    ``fn`` returns, so the time is the computation's, not its dispatch. For a jitted
    ``fn`` the compile time is measured separately (see :func:`compile_time`) and
    reported in ``Timing.compile``.

    Args:
        fn: the function to time.
        *args: its positional arguments.
        warmup: untimed calls first (``>= 0``); one is enough to compile a jitted
            function.
        repeat: timed calls (``>= 1``).
        **kwargs: its keyword arguments.

    Returns:
        A :class:`Timing` with the min, median and max of the timed runs.

    Examples:
        >>> t = benchmark(jax.jit(lambda x: x @ x), jax.numpy.ones((64, 64)), repeat=3)
        >>> len(t.times), t.min <= t.median <= t.max, t.compile is not None
        (3, True, True)
    """
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1; got {repeat}")
    if warmup < 0:
        raise ValueError(f"warmup must be non-negative; got {warmup}")
    compiled = compile_time(fn, *args, **kwargs)
    for _ in range(warmup):
        jax.block_until_ready(fn(*args, **kwargs))
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args, **kwargs))
        times.append(time.perf_counter() - start)
    return Timing(
        min(times), statistics.median(times), max(times), tuple(times), compiled
    )
