import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_mnist

from companion import data
from companion.data import DataUnavailableError, load_mnist


def test_load_mnist_reads_idx_files(tiny_mnist):
    root, arrays = tiny_mnist
    (x_train, y_train), (x_test, y_test) = load_mnist(root, download=False)
    assert x_train.shape == (12, 784) and x_test.shape == (5, 784)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int32
    # Independent reference: the bytes we wrote, scaled by 1/255 in float64.
    np.testing.assert_allclose(
        x_train, arrays["train_x"].reshape(12, -1) / 255.0, rtol=1e-7
    )
    np.testing.assert_allclose(
        x_test, arrays["test_x"].reshape(5, -1) / 255.0, rtol=1e-7
    )
    np.testing.assert_array_equal(y_train, arrays["train_y"])
    np.testing.assert_array_equal(y_test, arrays["test_y"])
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0


def test_load_mnist_equals_torchvisions_reading(tiny_mnist):
    # the reference reader, when installed
    MNIST = pytest.importorskip("torchvision.datasets").MNIST

    root, _ = tiny_mnist
    ours = load_mnist(root, download=False)
    for split, train in ((ours.train, True), (ours.test, False)):
        ref = MNIST(root=str(root), train=train, download=False)  # the reference reader
        np.testing.assert_array_equal(
            split.x, ref.data.numpy().reshape(len(ref), -1) / np.float32(255)
        )
        np.testing.assert_array_equal(split.y, ref.targets.numpy())


def test_gzipped_files_read_like_plain_ones(tiny_mnist):
    import gzip

    root, arrays = tiny_mnist
    raw = root / "MNIST" / "raw"
    for f in list(raw.iterdir()):
        (raw / f"{f.name}.gz").write_bytes(gzip.compress(f.read_bytes()))
        f.unlink()
    (x_train, y_train), _ = load_mnist(root, download=False)
    np.testing.assert_array_equal(y_train, arrays["train_y"])
    np.testing.assert_allclose(
        x_train, arrays["train_x"].reshape(12, -1) / 255.0, rtol=1e-7
    )


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:-1], r"promises \(12,\) = 12 values, the file holds 11"),
        (lambda b: b"\x01" + b[1:], "is not an IDX file"),
        (lambda b: b[:2] + b"\x0d" + b[3:], "type 0x0d"),
        (lambda b: b[:6], "is truncated"),
    ],
)
def test_damaged_idx_files_are_refused_with_the_file_named(tiny_mnist, damage, message):
    root, _ = tiny_mnist
    labels = root / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    labels.write_bytes(damage(labels.read_bytes()))
    with pytest.raises(ValueError, match=message) as info:
        load_mnist(root, download=False)
    assert "train-labels-idx1-ubyte" in str(info.value)


def test_raw_files_lists_the_four_files_or_says_where_they_go(tiny_mnist, tmp_path):
    root, _ = tiny_mnist
    assert [f.name for f in data.raw_files(root)] == [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ]
    with pytest.raises(DataUnavailableError, match="Put the four IDX files"):
        data.raw_files(tmp_path / "empty")


def test_fingerprint_names_the_content_not_the_place(tmp_path):
    a = make_mnist(tmp_path / "a", seed=1)
    make_mnist(tmp_path / "b", seed=1)
    make_mnist(tmp_path / "c", seed=2)
    assert data.fingerprint(tmp_path / "a") == data.fingerprint(tmp_path / "b")
    assert data.fingerprint(tmp_path / "a") != data.fingerprint(tmp_path / "c")
    # one label changed: a different fingerprint
    labels = a["test_y"].copy()
    labels[0] = (labels[0] + 1) % 10
    make_mnist(tmp_path / "b", seed=1, labels=(a["train_y"], labels))
    assert data.fingerprint(tmp_path / "a") != data.fingerprint(tmp_path / "b")
    line = data.describe(load_mnist(tmp_path / "a", download=False), tmp_path / "a")
    assert (
        "12 training / 5 test images" in line
        and data.fingerprint(tmp_path / "a") in line
    )
    assert str(tmp_path) not in line


@pytest.mark.imports
def test_loading_imports_no_torch(tiny_mnist):
    root, _ = tiny_mnist
    code = (
        "import sys; from companion.data import load_mnist; "
        f"load_mnist({str(root)!r}); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def run_data_command(root):
    """``python -m companion.data`` with MNIST looked for under ``root``."""
    env = {**os.environ, data.DATA_DIR_ENV: str(root)}
    return subprocess.run(
        [sys.executable, "-m", "companion.data"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )


def test_command_without_data_fails_in_one_line(tmp_path):
    # Offline, as in CI; a download cannot succeed here whatever happens.
    out = run_data_command(tmp_path / "nowhere")
    assert out.returncode == 2, out.stderr
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    # "not available" (download tried) with torchvision, "not under ..." (download
    # impossible) without
    assert len(lines) == 1 and lines[0].startswith("error: MNIST is not")
    assert str(tmp_path / "nowhere") in lines[0]


def test_command_names_the_data(tiny_mnist):
    root, _ = tiny_mnist
    out = run_data_command(root)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"MNIST: {data.describe(load_mnist(root), root)}"


def test_sizes_come_from_the_files(tmp_path):
    make_mnist(tmp_path, n_train=7, n_test=3)
    ds = load_mnist(tmp_path, download=False)
    assert (len(ds.train.y), len(ds.test.y)) == (7, 3)
    assert not data.is_full_mnist(ds)


def test_root_from_environment_then_default(tmp_path, monkeypatch):
    make_mnist(tmp_path / "env", n_train=4, n_test=2)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "env"))
    assert len(load_mnist(download=False).train.y) == 4
    assert data.data_root() == tmp_path / "env"
    assert data.data_root("elsewhere") == Path("elsewhere")  # the argument wins

    monkeypatch.delenv(data.DATA_DIR_ENV)
    make_mnist(tmp_path / "cwd" / "data", n_train=6, n_test=2)
    monkeypatch.chdir(tmp_path / "cwd")
    assert data.data_root() == Path("data")
    assert len(load_mnist(download=False).train.y) == 6


def test_missing_files_without_download_raise_clear_error(tmp_path):
    with pytest.raises(DataUnavailableError) as info:
        load_mnist(tmp_path / "nowhere", download=False)
    message = str(info.value)
    assert str((tmp_path / "nowhere" / "MNIST" / "raw").resolve()) in message
    assert "COMPANION_DATA_DIR" in message and "download=False" in message
    assert isinstance(info.value, FileNotFoundError)


def test_failed_download_raises_clear_error_not_urllib(tmp_path, monkeypatch):
    # the download path needs torchvision
    MNIST = pytest.importorskip("torchvision.datasets").MNIST

    # An address that refuses at once: the download path runs and fails, as offline.
    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])
    with pytest.raises(
        DataUnavailableError, match="downloading it through torchvision failed"
    ):
        load_mnist(tmp_path, download=True)


def test_labels_out_of_range_in_files_are_refused(tmp_path):
    bad = (np.array([0, 1, 12], dtype=np.uint8), np.array([0], dtype=np.uint8))
    make_mnist(tmp_path, n_train=3, n_test=1, labels=bad)
    with pytest.raises(
        ValueError, match="train labels must lie in \\[0, 10\\); found 12 at index 2"
    ):
        load_mnist(tmp_path, download=False)


def test_mismatched_label_count_is_refused(tmp_path):
    make_mnist(
        tmp_path,
        n_train=3,
        n_test=2,
        labels=(np.zeros(2, np.uint8), np.zeros(2, np.uint8)),
    )
    with pytest.raises(
        ValueError, match=r"one label per image: 3 images but labels of shape \(2,\)"
    ):
        load_mnist(tmp_path, download=False)
