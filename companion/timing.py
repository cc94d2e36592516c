"""Timing JAX honestly: warm-up calls, ``block_until_ready``, compile time kept apart.

JAX dispatches work asynchronously: a call returns as soon as the work is *queued*. A
timer around a call without ``block_until_ready`` measures dispatch, not computation.
And the first call of a jitted function includes tracing and compilation, which later
calls skip. And a machine's speed drifts (other work, heat, memory): to compare
several functions, :func:`interleave` times them in turns, one call each per round, so
a slow spell slows every one of them, not just the one timed during it. And Python's
cyclic garbage collector runs when allocations pile up, at a moment no timer chooses:
in a long-running notebook, a collection can take longer than the call it lands in.
Both timers collect first and keep it off while they time (:func:`gc_paused`), as
``timeit`` does.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import jax

__all__ = ["Timing", "benchmark", "compile_time", "gc_paused", "interleave"]


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


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Collect garbage now, then keep Python's cyclic garbage collector off until the
    block ends (back on if it was on): the timed calls inside pay for no collection
    that earlier work made due.

    Examples:
        >>> with gc_paused():
        ...     gc.isenabled()
        False
    """
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def benchmark(
    fn: Callable, *args, warmup: int = 1, repeat: int = 5, **kwargs
) -> Timing:
    """Time ``repeat`` calls of ``fn(*args, **kwargs)`` after ``warmup`` untimed ones.

    Each call waits for its result with ``jax.block_until_ready`` on whatever pytree
    ``fn`` returns, so the time is the computation's, not its dispatch; the garbage
    collector is off while the timed calls run (:func:`gc_paused`). For a jitted
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
    with gc_paused():
        for _ in range(repeat):
            start = time.perf_counter()
            jax.block_until_ready(fn(*args, **kwargs))
            times.append(time.perf_counter() - start)
    return Timing(
        min(times), statistics.median(times), max(times), tuple(times), compiled
    )


def interleave(
    calls: Mapping[str, Callable[[], object]],
    *,
    warmup: int = 1,
    repeat: int = 5,
    pause: float = 0.0,
) -> dict[str, Timing]:
    """Time several functions in turns: after ``warmup`` untimed calls of each,
    ``repeat`` rounds of one timed call of each, in the order given.

    Every call waits for its result (``jax.block_until_ready``); the garbage collector
    is off while the rounds run (:func:`gc_paused`). Round ``i`` of every
    function ran at about the same time, so ``times[i]`` of two of them are a *pair*:
    their ratio compares the two under the same conditions, where two separate runs of
    :func:`benchmark` can land in a fast and a slow spell of the machine.

    Args:
        calls: name → a function of no arguments (one unit of work: an epoch, a step).
        warmup: untimed calls of each first (``>= 0``), all in turn before any timing.
        repeat: timed rounds (``>= 1``).
        pause: seconds to sleep, untimed, before each timed call (``>= 0``): thread
            pools (OpenBLAS's, PyTorch's, XLA's) can keep the cores busy for a while
            after their work ends, which would slow the next function's call.

    Returns:
        name → :class:`Timing` of its ``repeat`` calls, ``times`` in round order.

    Examples:
        >>> t = interleave({"a": lambda: 1, "b": lambda: 2}, repeat=3)
        >>> list(t), len(t["a"].times), len(t["b"].times)
        (['a', 'b'], 3, 3)
    """
    if not calls:
        raise ValueError("interleave needs at least one function to time")
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1; got {repeat}")
    if warmup < 0:
        raise ValueError(f"warmup must be non-negative; got {warmup}")
    if pause < 0:
        raise ValueError(f"pause must be non-negative; got {pause}")
    for _ in range(warmup):
        for fn in calls.values():
            jax.block_until_ready(fn())
    times: dict[str, list[float]] = {name: [] for name in calls}
    with gc_paused():
        for _ in range(repeat):
            for name, fn in calls.items():
                time.sleep(pause)
                start = time.perf_counter()
                jax.block_until_ready(fn())
                times[name].append(time.perf_counter() - start)
    return {
        name: Timing(min(t), statistics.median(t), max(t), tuple(t))
        for name, t in times.items()
    }
