import pytest

from companion.bench import tables
from companion.timing import Timing


def test_row_is_the_median_of_its_runs_and_needs_one():
    row = tables.Row("scan", (0.3, 0.1, 0.2, 0.9), 1.5)
    assert row.seconds == pytest.approx(0.25) and row.epochs == 4
    with pytest.raises(ValueError, match="scan: a row needs at least one timed run"):
        tables.Row("scan", (), 1.5)


def test_race_pairs_the_rounds():
    rows = [
        tables.Row("scan", (1.0, 2.0, 1.0, 1.0), 0.0),
        tables.Row("numpy", (1.5, 1.0, 1.2, 3.0), 0.0),
        tables.Row("torch", (2.0, 3.0, 1.1, 1.5), 0.0),
        tables.Row("slow", (0.5, 1.0, 0.9, 0.2), 0.0),
    ]
    mixed = tables.race(rows, "scan", "numpy")
    # numpy's time over scan's, round by round: one round lost (the second)
    assert mixed.ratios == pytest.approx((1.5, 0.5, 1.2, 3.0))
    assert mixed.wins == 3 and mixed.median == pytest.approx(1.35)
    assert mixed.verdict() == "ahead in 3 of 4 rounds"
    assert str(mixed) == (
        "scan vs numpy: 1.35× (0.50–3.00), ahead in 3 of 4 rounds; best runs 1.00×"
    )
    # the fastest run of each (1.0 and 1.0): the pair a slow spell disturbed least
    assert mixed.best == pytest.approx(1.0)
    assert tables.race(rows, "scan", "torch").best == pytest.approx(1.1)
    assert tables.race(rows, "scan", "slow").best == pytest.approx(0.2)
    assert tables.race(rows, "slow", "scan").best == pytest.approx(5.0)
    assert tables.race(rows, "scan", "torch").verdict() == "ahead in all 4 rounds"
    assert tables.race(rows, "scan", "slow").verdict() == "behind in all 4 rounds"
    two = [tables.Row(r.variant, r.times[:2], r.loss) for r in rows]
    assert tables.race(two, "scan", "torch").verdict() == "ahead in both rounds"
    # medians alone would call scan ahead of numpy (1.0 vs 1.35): the rounds say how
    # often it was
    one = [tables.Row("a", (1.0,), 0.0), tables.Row("b", (2.0,), 0.0)]
    assert tables.race(one, "a", "b").verdict() == "ahead in the one round"
    assert tables.race(one, "b", "a").verdict() == "behind in the one round"
    lines = tables.format_races(rows, "scan", ["numpy", "torch.compile", "torch"])
    assert lines.splitlines() == [
        str(tables.race(rows, "scan", "numpy")),
        str(tables.race(rows, "scan", "torch")),
    ]  # a variant without a row (torch.compile not run) is left out


def test_race_takes_times_by_name_as_interleave_returns_them():
    # the same rounds as rows, as plain sequences and as interleave's Timings
    times = {"scan": [1.0, 2.0, 1.0, 1.0], "numpy": (1.5, 1.0, 1.2, 3.0)}
    as_rows = [tables.Row(n, tuple(t), 0.0) for n, t in times.items()]
    expected = tables.race(as_rows, "scan", "numpy")
    assert tables.race(times, "scan", "numpy") == expected
    timed = {
        n: Timing(min(t), sorted(t)[1], max(t), tuple(t)) for n, t in times.items()
    }
    assert tables.race(timed, "scan", "numpy") == expected
    assert tables.race(timed, "numpy", "scan").ratios == pytest.approx(
        (1 / 1.5, 2.0, 1 / 1.2, 1 / 3.0)
    )
    refused = r"no row for 'jit'; rows: \['scan', 'numpy'\]"
    with pytest.raises(ValueError, match=refused):
        tables.race(times, "scan", "jit")
    with pytest.raises(ValueError, match="not timed in the same rounds"):
        tables.race({"scan": [1.0], "numpy": [1.0, 2.0]}, "scan", "numpy")
    for bad in (1.0, "1.0", [[1.0, 2.0]], ["fast", "slow"]):
        with pytest.raises(TypeError, match="'numpy': expected its seconds per round"):
            tables.race({"scan": [1.0], "numpy": bad}, "scan", "numpy")


def test_race_refuses_rows_that_are_not_pairs():
    rows = [tables.Row("eager", (9.0,), 0.0), tables.Row("scan", (1.0, 1.1), 0.0)]
    with pytest.raises(
        ValueError, match=r"no row for 'jit'; rows: \['eager', 'scan'\]"
    ):
        tables.race(rows, "scan", "jit")
    with pytest.raises(ValueError, match="not timed in the same rounds"):
        tables.race(rows, "scan", "eager")
    with pytest.raises(ValueError, match="scan vs jit: a race needs a round"):
        tables.Race("scan", "jit", (), 1.0)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="best runs' ratio must be a positive"):
            tables.Race("scan", "jit", (1.0,), bad)


def test_table_shows_each_variants_spread():
    rows = [tables.Row("eager", (4.0,), 2.3), tables.Row("scan", (0.3, 0.1, 0.2), 0.5)]
    lines = tables.format_table(rows, floor_seconds=0.05).splitlines()
    assert "spread (min–max)" in lines[0]
    assert lines[2].split()[:5] == ["scan", "0.200", "0.100–0.300", "20.0×", "4.00×"]


def test_scaling_table_one_line_per_batch_size():
    results = {
        32: [tables.Row("scan", (0.5, 0.4), 1.0), tables.Row("numpy", (2.0,), 1.0)],
        256: [tables.Row("scan", (0.1,), 1.2), tables.Row("numpy", (0.3,), 1.2)],
    }
    lines = tables.format_scaling(results, {32: 0.05, 256: 0.025}).splitlines()
    assert lines[0].split() == ["batch", "scan", "numpy", "floor"]
    assert lines[1].split() == ["32", "0.450", "2.000", "0.050"]  # the medians
    assert lines[2].split() == ["256", "0.100", "0.300", "0.025"]


def test_matmul_throughput_is_flops_over_the_fastest_run(monkeypatch):
    # a clock that advances 0.5 s per reading pair: 2·n³ FLOPs in 0.5 s
    ticks = iter(range(1000))
    monkeypatch.setattr(tables.time, "perf_counter", lambda: 0.5 * next(ticks))
    assert tables.matmul_throughput(size=8, repeat=3) == pytest.approx(2 * 8**3 / 0.5)
