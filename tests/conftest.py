"""Shared fixtures: tiny MNIST files in torchvision's raw layout."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as MNIST's IDX (big-endian magic, dims, then raw bytes)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = 0x0800 | array.ndim  # 0x08: unsigned byte; low byte: number of dimensions
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


def make_mnist(
    root: Path,
    n_train: int = 12,
    n_test: int = 5,
    seed: int = 0,
    labels: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Write a small random MNIST in ``root/MNIST/raw``; return the arrays written."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_x": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "test_x": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "train_y": rng.integers(0, 10, n_train, dtype=np.uint8)
        if labels is None
        else labels[0],
        "test_y": rng.integers(0, 10, n_test, dtype=np.uint8)
        if labels is None
        else labels[1],
    }
    write_idx(raw / "train-images-idx3-ubyte", arrays["train_x"])
    write_idx(raw / "train-labels-idx1-ubyte", arrays["train_y"])
    write_idx(raw / "t10k-images-idx3-ubyte", arrays["test_x"])
    write_idx(raw / "t10k-labels-idx1-ubyte", arrays["test_y"])
    return arrays


def blobs(n=512, d=20, classes=4, seed=0):
    """A small learnable problem: Gaussian clusters, random centres, int32 labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (classes, d)).astype(np.float32)
    y = rng.integers(0, classes, n).astype(np.int32)
    return centres[y] + rng.normal(0, 1, (n, d)).astype(np.float32), y


@pytest.fixture
def tiny_mnist(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    return tmp_path, make_mnist(tmp_path)
