import importlib.util

import pytest

from companion import bench
from companion.timing import Timing


def test_cli_prints_the_table(capsys):
    argv = [
        "--synthetic",
        "256",
        "--epochs",
        "1",
        "--variants",
        "eager,jit,scan,numpy,torch",
    ]
    assert bench.main(argv) == 0
    captured = capsys.readouterr()
    for word in [
        "256 synthetic images",
        "eager",
        "jit",
        "scan",
        "numpy",
        "floor",
        "× vs eager",
    ]:
        assert word in captured.out
    if (
        importlib.util.find_spec("torch") is None
    ):  # skipped, and said so (the lowest-versions run)
        assert "torch" not in captured.out and "torch is not installed" in captured.err
    else:
        assert "torch" in captured.out
    # the fastest JAX variant against the others, round by round (not eager: it ran
    # on its own, not in the rounds)
    races = captured.out.split("round by round")[1].splitlines()[1:]
    assert races and all(" vs " in line and "eager" not in line for line in races)


def test_cli_help_and_errors(capsys):
    with pytest.raises(SystemExit) as info:
        bench.main(["--help"])
    assert info.value.code == 0 and "--batch-size" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        bench.main(["--synthetic", "64", "--variants", "jit,cuda"])
    assert (
        info.value.code == 2 and "unknown variants ['cuda']" in capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        bench.main(["--epochs", "0"])


def test_runs_as_a_module_without_warnings():
    import subprocess
    import sys

    argv = [
        "-W",
        "error",
        "-m",
        "companion.bench",
        "--synthetic",
        "128",
        "--epochs",
        "1",
        "--variants",
        "jit,scan",
    ]
    out = subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert "scan" in out.stdout and out.stderr == ""


def test_cli_cnn_table_and_batch_size_table(capsys):
    argv = ["--model", "cnn", "--synthetic", "256", "--steps", "2", "--repeat", "1"]
    assert bench.main([*argv, "--variants", "fit,nnx.jit"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("CNN: 256 synthetic images") and "nnx.jit" in out
    argv = ["--synthetic", "256", "--epochs", "1", "--variants", "scan"]
    assert bench.main([*argv, "--batch-sizes", "32,64"]) == 0
    out = capsys.readouterr().out
    table = out.split("against the batch size:")[1].splitlines()
    assert table[1].split()[0] == "batch" and [r.split()[0] for r in table[2:]] == [
        "32",
        "64",
    ]
    with pytest.raises(SystemExit):
        bench.main(["--model", "cnn", "--synthetic", "64", "--steps", "9"])


def test_row_is_the_median_of_its_runs_and_needs_one():
    row = bench.Row("scan", (0.3, 0.1, 0.2, 0.9), 1.5)
    assert row.seconds == pytest.approx(0.25) and row.epochs == 4
    with pytest.raises(ValueError, match="scan: a row needs at least one timed run"):
        bench.Row("scan", (), 1.5)


def test_race_pairs_the_rounds():
    rows = [
        bench.Row("scan", (1.0, 2.0, 1.0, 1.0), 0.0),
        bench.Row("numpy", (1.5, 1.0, 1.2, 3.0), 0.0),
        bench.Row("torch", (2.0, 3.0, 1.1, 1.5), 0.0),
        bench.Row("slow", (0.5, 1.0, 0.9, 0.2), 0.0),
    ]
    mixed = bench.race(rows, "scan", "numpy")
    # numpy's time over scan's, round by round: one round lost (the second)
    assert mixed.ratios == pytest.approx((1.5, 0.5, 1.2, 3.0))
    assert mixed.wins == 3 and mixed.median == pytest.approx(1.35)
    assert mixed.verdict() == "ahead in 3 of 4 rounds"
    assert str(mixed) == (
        "scan vs numpy: 1.35× (0.50–3.00), ahead in 3 of 4 rounds; best runs 1.00×"
    )
    # the fastest run of each (1.0 and 1.0): the pair a slow spell disturbed least
    assert mixed.best == pytest.approx(1.0)
    assert bench.race(rows, "scan", "torch").best == pytest.approx(1.1)
    assert bench.race(rows, "scan", "slow").best == pytest.approx(0.2)
    assert bench.race(rows, "slow", "scan").best == pytest.approx(5.0)
    assert bench.race(rows, "scan", "torch").verdict() == "ahead in all 4 rounds"
    assert bench.race(rows, "scan", "slow").verdict() == "behind in all 4 rounds"
    # medians alone would call scan ahead of numpy (1.0 vs 1.35): the rounds say how
    # often it was
    one = [bench.Row("a", (1.0,), 0.0), bench.Row("b", (2.0,), 0.0)]
    assert bench.race(one, "a", "b").verdict() == "ahead in the one round"
    assert bench.race(one, "b", "a").verdict() == "behind in the one round"
    lines = bench.format_races(rows, "scan", ["numpy", "torch.compile", "torch"])
    assert lines.splitlines() == [
        str(bench.race(rows, "scan", "numpy")),
        str(bench.race(rows, "scan", "torch")),
    ]  # a variant without a row (torch.compile not run) is left out


def test_race_takes_times_by_name_as_interleave_returns_them():
    # the same rounds as rows, as plain sequences and as interleave's Timings
    times = {"scan": [1.0, 2.0, 1.0, 1.0], "numpy": (1.5, 1.0, 1.2, 3.0)}
    as_rows = [bench.Row(n, tuple(t), 0.0) for n, t in times.items()]
    expected = bench.race(as_rows, "scan", "numpy")
    assert bench.race(times, "scan", "numpy") == expected
    timed = {
        n: Timing(min(t), sorted(t)[1], max(t), tuple(t)) for n, t in times.items()
    }
    assert bench.race(timed, "scan", "numpy") == expected
    assert bench.race(timed, "numpy", "scan").ratios == pytest.approx(
        (1 / 1.5, 2.0, 1 / 1.2, 1 / 3.0)
    )
    refused = r"no row for 'jit'; rows: \['scan', 'numpy'\]"
    with pytest.raises(ValueError, match=refused):
        bench.race(times, "scan", "jit")
    with pytest.raises(ValueError, match="not timed in the same rounds"):
        bench.race({"scan": [1.0], "numpy": [1.0, 2.0]}, "scan", "numpy")
    for bad in (1.0, "1.0", [[1.0, 2.0]], ["fast", "slow"]):
        with pytest.raises(TypeError, match="'numpy': expected its seconds per round"):
            bench.race({"scan": [1.0], "numpy": bad}, "scan", "numpy")


def test_race_refuses_rows_that_are_not_pairs():
    rows = [bench.Row("eager", (9.0,), 0.0), bench.Row("scan", (1.0, 1.1), 0.0)]
    with pytest.raises(
        ValueError, match=r"no row for 'jit'; rows: \['eager', 'scan'\]"
    ):
        bench.race(rows, "scan", "jit")
    with pytest.raises(ValueError, match="not timed in the same rounds"):
        bench.race(rows, "scan", "eager")
    with pytest.raises(ValueError, match="scan vs jit: a race needs a round"):
        bench.Race("scan", "jit", (), 1.0)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="best runs' ratio must be a positive"):
            bench.Race("scan", "jit", (1.0,), bad)


def test_table_shows_each_variants_spread():
    rows = [bench.Row("eager", (4.0,), 2.3), bench.Row("scan", (0.3, 0.1, 0.2), 0.5)]
    lines = bench.format_table(rows, floor_seconds=0.05).splitlines()
    assert "spread (min–max)" in lines[0]
    assert lines[2].split()[:5] == ["scan", "0.200", "0.100–0.300", "20.0×", "4.00×"]
