import os

import pytest

from companion import startup


def test_a_probe_reports_its_time_and_the_files_it_touched():
    seconds, files = startup._run(startup.Probe("json", "import json"))
    assert 0 <= seconds < 60
    assert any(f.endswith(os.path.join("json", "__init__.py")) for f in files)
    assert any(f.endswith(".pyc") for f in files)


def test_measure_times_cold_and_warm_runs():
    rows = startup.measure(
        [startup.Probe("sleep", "time.sleep(0.05)", setup="import time")],
        cold=1,
        warm=2,
    )
    (row,) = rows
    assert row.name == "sleep" and len(row.cold_runs) == 1 and len(row.warm_runs) == 2
    # the probe times only its statement: at least the 50 ms it sleeps, never the
    # interpreter start
    assert all(0.05 <= t < 5 for t in (*row.cold_runs, *row.warm_runs))
    table = startup.format_table(rows)
    assert table.splitlines()[1].startswith("sleep") and f"{row.warm:.3f}" in table


def test_each_cold_run_evicts_the_files_of_every_probe(monkeypatch):
    touched = {"import json": ["json.py"], "csv.reader": ["csv.py", "_csv.so"]}

    def fake_run(probe):  # the files each statement touches, and 0.1 s
        lines = [*probe.setup.splitlines(), *probe.statement.splitlines()]
        return 0.1, sorted(f for s, fs in touched.items() if s in lines for f in fs)

    evicted = []
    monkeypatch.setattr(startup, "_run", fake_run)
    monkeypatch.setattr(startup, "evict", lambda paths: evicted.append(set(paths)))
    probes = [
        startup.Probe("json", "import json"),
        startup.Probe("csv", "csv.reader", setup="import csv"),
    ]
    rows = startup.measure(probes, cold=2, warm=1)
    assert [r.name for r in rows] == ["json", "csv"]
    # before each of the 2 × 2 cold runs, the union of both probes' files
    assert evicted == [{"json.py", "csv.py", "_csv.so"}] * 4


def test_evict_counts_the_files_it_could_open(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"x" * 4096)
    assert startup.evict([str(f), str(tmp_path / "missing")]) == 1


def test_a_failing_probe_says_which_and_why():
    with pytest.raises(
        RuntimeError, match=r"(?s)probe 'broken' failed:.*ZeroDivisionError"
    ):
        startup._run(startup.Probe("broken", "1 / 0"))


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="cold and warm must be at least 1"):
        startup.measure(cold=0)
    with pytest.raises(SystemExit):
        startup.main(["--warm", "0"])


def test_the_command_prints_a_row_per_probe(capsys, monkeypatch):
    # two light probes in place of the three real ones, each a fresh process timed
    # cold and warm (the real ones: the status page of the book)
    probes = (startup.Probe("json", "import json"), startup.Probe("csv", "import csv"))
    monkeypatch.setattr(startup, "PROBES", probes)
    assert startup.main(["--cold", "1", "--warm", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[0] for line in out[1:]] == ["json", "csv"]
