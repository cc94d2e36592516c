import gc
import time

import jax
import jax.numpy as jnp
import pytest

from companion.timing import Timing, benchmark, compile_time, gc_paused, interleave


def test_benchmark_is_well_formed_for_a_jitted_function():
    f = jax.jit(lambda x: (x @ x, {"sum": x.sum()}))  # any pytree comes back
    t = benchmark(f, jnp.ones((32, 32)), warmup=2, repeat=4)
    assert isinstance(t, Timing) and len(t.times) == 4
    assert t.min == min(t.times) <= t.median <= t.max == max(t.times)
    assert t.compile is not None and t.compile > 0
    assert "median" in str(t) and "compile" in str(t)


def test_calls_warmup_plus_repeat_times_and_waits_for_the_work():
    calls = []

    def slow(x):
        calls.append(x)
        time.sleep(0.01)
        return x

    t = benchmark(slow, 1, warmup=2, repeat=3)
    assert len(calls) == 5
    assert t.min >= 0.01 and t.compile is None


def test_compile_time_does_not_run_the_function():
    runs = []

    @jax.jit
    def f(x):
        runs.append(1)  # runs at trace time only
        return x * 2

    assert compile_time(f, jnp.ones(3)) > 0
    assert len(runs) == 1  # traced once by lower(), nothing executed
    assert compile_time(lambda x: x, 1) is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"repeat": 0}, "repeat must be at least 1"),
        ({"warmup": -1}, "warmup must be non-negative"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        benchmark(lambda: None, **kwargs)


@pytest.fixture
def waited(monkeypatch):
    """Every tree passed to ``jax.block_until_ready``, in order (it still waits)."""
    trees = []
    real_wait = jax.block_until_ready

    def recording_wait(tree):
        trees.append(tree)
        return real_wait(tree)

    monkeypatch.setattr(jax, "block_until_ready", recording_wait)
    return trees


def test_every_timed_call_waits_for_its_own_result(waited):
    results = []

    def fn(x):
        out = {"y": x + len(results)}  # a new pytree each call
        results.append(out)
        return out

    benchmark(fn, jnp.ones(3), warmup=1, repeat=4)
    assert len(results) == 5 and len(waited) == 5
    assert all(w is r for w, r in zip(waited, results, strict=True))


def test_interleave_takes_turns_after_warming_up_each():
    order = []
    calls = {name: (lambda name=name: order.append(name)) for name in ("a", "b", "c")}
    t = interleave(calls, warmup=2, repeat=3)
    # warm-up: every function twice, in turn; then three rounds of one call each
    assert order == ["a", "b", "c"] * 5
    assert list(t) == ["a", "b", "c"]
    for timing in t.values():
        assert len(timing.times) == 3 and timing.compile is None
        assert timing.min == min(timing.times) <= timing.median <= timing.max


def test_interleave_pairs_rounds_and_leaves_the_pause_out_of_the_times():
    rounds = {"fast": [], "slow": []}

    def call(name, seconds):
        rounds[name].append(len(rounds["fast"]) + len(rounds["slow"]))
        time.sleep(seconds)

    start = time.perf_counter()
    t = interleave(
        {"fast": lambda: call("fast", 0.0), "slow": lambda: call("slow", 0.02)},
        warmup=0,
        repeat=4,
        pause=0.05,
    )
    elapsed = time.perf_counter() - start
    # call k of "fast" came just before call k of "slow": the same round
    assert rounds == {"fast": [0, 2, 4, 6], "slow": [1, 3, 5, 7]}
    assert elapsed >= 8 * 0.05  # it paused before each timed call...
    assert max(t["fast"].times) < 0.05  # ...outside the timer
    assert min(t["slow"].times) >= 0.02


def test_interleave_waits_for_every_result(waited):
    results = []

    def fn():
        out = jnp.ones(2) * len(results)
        results.append(out)
        return out

    interleave({"f": fn}, warmup=1, repeat=2)
    assert len(results) == 3 and all(
        w is r for w, r in zip(waited, results, strict=True)
    )


@pytest.mark.parametrize(
    ("calls", "kwargs", "match"),
    [
        ({}, {}, "at least one function"),
        ({"f": int}, {"repeat": 0}, "repeat must be at least 1"),
        ({"f": int}, {"warmup": -1}, "warmup must be non-negative"),
        ({"f": int}, {"pause": -0.1}, "pause must be non-negative"),
    ],
)
def test_interleave_bad_arguments(calls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        interleave(calls, **kwargs)


@pytest.mark.parametrize("enabled_before", [True, False])
def test_the_garbage_collector_is_off_while_timing_and_restored_after(enabled_before):
    # A collection inside a timed call would time Python's housekeeping, not the call:
    # every timed call runs with the collector off; warm-up may run with it on; after
    # the timers (and after a call that raises) it is as it was.
    (gc.enable if enabled_before else gc.disable)()
    try:
        seen = []

        def record():
            seen.append(gc.isenabled())

        benchmark(record, warmup=0, repeat=3)
        assert seen == [False, False, False]
        assert gc.isenabled() is enabled_before
        seen.clear()
        interleave({"a": record, "b": record}, warmup=0, repeat=2)
        assert seen == [False] * 4
        assert gc.isenabled() is enabled_before

        def fail():
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            interleave({"fail": fail}, warmup=0, repeat=1)
        assert gc.isenabled() is enabled_before
        with gc_paused():
            assert not gc.isenabled()
        assert gc.isenabled() is enabled_before
    finally:
        gc.enable()


def test_gc_paused_collects_what_is_already_garbage_first():
    import weakref

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: only the cyclic collector frees it
    ref = weakref.ref(a)
    was = gc.isenabled()
    gc.disable()
    try:
        del a, b
        assert ref() is not None
        with gc_paused():
            assert ref() is None
    finally:
        if was:
            gc.enable()
