import importlib.util

import numpy as np
import pytest

from companion import bench


def test_epoch_flops_counts_every_matrix_product():
    B, steps = 32, 5
    forward = 2 * B * (784 * 128 + 128 * 64 + 64 * 10)
    backward_dW = forward
    backward_dx = 2 * B * (128 * 64 + 64 * 10)  # none for the input layer's input
    assert bench.epoch_flops(
        [784, 128, 64, 10], n=steps * B + 7, batch_size=B
    ) == steps * (forward + backward_dW + backward_dx)


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


def test_run_refuses_bad_data_once_before_timing():
    rng = np.random.default_rng(0)
    x = rng.random((128, 784), dtype=np.float32)
    y = np.where(np.arange(128) == 5, 10, rng.integers(0, 10, 128)).astype(np.int32)
    with pytest.raises(
        ValueError, match=r"y must lie in \[0, 10\); found 10 at index 5"
    ):
        bench.run(x, y, epochs=1, variants=("scan",))
