"""``python -m companion.bench``: the command line, in process and as a module."""

import importlib.util
import subprocess
import sys

import pytest

from companion.bench.__main__ import main

HAS_TORCH = importlib.util.find_spec("torch") is not None


def test_cli_prints_the_table_and_the_races(capsys):
    argv = ["--synthetic", "64", "--epochs", "2", "--variants", "eager,jit,numpy"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("MLP: 64 synthetic images, batch 64")
    lines = captured.out.splitlines()
    assert "× vs eager" in lines[1] and lines[-4].startswith("floor")
    # eager timed once on its own, the others in 2 rounds; eager is 1.0× itself
    assert [line.split()[0] for line in lines[2:5]] == ["eager", "jit", "numpy"]
    assert lines[2].split()[3] == "1.0×" and lines[2].split()[5] == "1"
    assert lines[3].split()[5] == lines[4].split()[5] == "2"
    # the fastest JAX variant against the others, round by round (not eager: it ran
    # on its own, not in the rounds)
    races = captured.out.split("round by round")[1].splitlines()[1:]
    assert races == [line for line in races if " vs " in line and "eager" not in line]
    assert races and races[0].startswith("jit vs numpy")


def test_cli_with_torch_or_a_note_that_it_is_skipped(capsys):
    argv = ["--synthetic", "64", "--epochs", "1", "--variants", "jit,torch"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    if HAS_TORCH:
        assert "jit vs torch" in captured.out
    else:  # skipped, and said so (the lowest-versions run)
        assert "torch" not in captured.out and "torch is not installed" in captured.err


def test_cli_help_and_errors(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0 and "--batch-size" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["--synthetic", "64", "--variants", "jit,cuda"])
    assert (
        info.value.code == 2 and "unknown variants ['cuda']" in capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        main(["--epochs", "0"])
    with pytest.raises(SystemExit):
        main(["--model", "cnn", "--synthetic", "64", "--steps", "9"])


def test_cli_batch_size_table(capsys):
    argv = ["--synthetic", "128", "--epochs", "1", "--variants", "numpy"]
    assert main([*argv, "--batch-sizes", "32,64"]) == 0
    out = capsys.readouterr().out
    table = out.split("against the batch size:")[1].splitlines()
    torch = ["torch"] if HAS_TORCH else []  # the default variants: scan, numpy, torch
    assert table[1].split() == ["batch", "scan", "numpy", *torch, "floor"]
    assert [r.split()[0] for r in table[2:]] == ["32", "64"]


def test_cli_cnn_table(capsys):
    argv = ["--model", "cnn", "--synthetic", "64", "--batch-size", "32"]
    assert main([*argv, "--steps", "1", "--repeat", "1", "--variants", "nnx.jit"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("CNN: 64 synthetic images, batch 32")
    row = out.splitlines()[2].split()  # one run of one step, no eager to compare with
    assert row[0] == "nnx.jit" and row[3] == "—" and row[5] == "1"


def test_runs_as_a_module_without_warnings():
    argv = ["-W", "error", "-m", "companion.bench", "--synthetic", "128"]
    argv += ["--epochs", "1", "--variants", "jit,numpy"]
    out = subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert "jit vs numpy" in out.stdout and out.stderr == ""
