import importlib.util

import pytest

from companion import bench


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
