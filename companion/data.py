"""MNIST as the book needs it: loading through torchvision, validation, and minibatches.

Data flow: IDX files on disk (torchvision's raw layout, ``<root>/MNIST/raw``) →
:func:`load_mnist` (numpy, validated once) → :func:`batches` (JAX arrays) → a training step.

torchvision (and with it torch) is imported lazily, inside :func:`load_mnist`, so that
``import companion`` stays light.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from companion.checks import check_finite, check_labels

__all__ = [
    "DATA_DIR_ENV",
    "MNIST_FULL_SIZES",
    "NUM_CLASSES",
    "DataUnavailableError",
    "MNISTData",
    "Split",
    "batches",
    "check_dataset",
    "data_root",
    "is_full_mnist",
    "load_mnist",
    "num_batches",
    "shuffle",
]

DATA_DIR_ENV = "COMPANION_DATA_DIR"
NUM_CLASSES = 10
IMAGE_SIZE = 28 * 28
MNIST_FULL_SIZES = (60_000, 10_000)  # (train, test) of the official release, for reference only


class DataUnavailableError(FileNotFoundError):
    """The MNIST files are not on disk and could not be downloaded."""


class Split(NamedTuple):
    """One split of a dataset: images ``x`` of shape ``(N, 784)`` and labels ``y`` of shape ``(N,)``."""

    x: np.ndarray  # (N, 784) float32 in [0, 1]
    y: np.ndarray  # (N,) int32 in [0, 10)


class MNISTData(NamedTuple):
    """MNIST as loaded by :func:`load_mnist`; unpacks as ``(x_train, y_train), (x_test, y_test)``."""

    train: Split
    test: Split


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Where MNIST lives: ``root`` if given, else ``$COMPANION_DATA_DIR``, else ``./data``."""
    if root is not None:
        return Path(root)
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else Path("data")


def _raw_files_present(root: Path) -> bool:
    raw = root / "MNIST" / "raw"
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    return all((raw / n).is_file() for n in names)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0]


def _unavailable(root: Path, download: bool, cause: BaseException | None = None) -> DataUnavailableError:
    tried = (
        "downloading it through torchvision failed"
        + (f" ({type(cause).__name__}: {_first_line(cause)})" if cause else "")
        if download
        else "download=False, so no download was attempted"
    )
    return DataUnavailableError(
        f"MNIST is not available: no files under {(root / 'MNIST' / 'raw').resolve()} and {tried}. "
        f"Put the four IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        f"t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, uncompressed) in <root>/MNIST/raw/, "
        f"or point the environment variable {DATA_DIR_ENV} at a folder that holds MNIST/raw/, "
        f"or run once with internet access so torchvision can download it."
    )


def _to_split(images: np.ndarray, labels: np.ndarray, name: str) -> Split:
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{name} images must have shape (N, 28, 28); got {images.shape}")
    if labels.shape != (images.shape[0],):
        raise ValueError(
            f"{name} needs one label per image: {images.shape[0]} images but labels of shape "
            f"{labels.shape}"
        )
    if images.shape[0] == 0:
        raise ValueError(f"{name} split is empty")
    x = images.reshape(images.shape[0], IMAGE_SIZE).astype(np.float32) / np.float32(255.0)
    y = labels.astype(np.int32)
    check_labels(y, NUM_CLASSES, name=f"{name} labels")
    return Split(x, y)


def load_mnist(root: str | os.PathLike[str] | None = None, download: bool = True) -> MNISTData:
    """Load MNIST through ``torchvision.datasets.MNIST`` as flat float32 images and int32 labels.

    Sizes are whatever the files hold (60,000/10,000 for the official release; the offline
    sample used in CI has 8,000/2,000): never assume them, read ``len(data.train.y)``.

    Args:
        root: folder holding ``MNIST/raw/``; default ``$COMPANION_DATA_DIR``, else ``./data``.
        download: let torchvision download the files when they are missing.

    Returns:
        ``MNISTData(train=Split(x, y), test=Split(x, y))`` with ``x`` of shape ``(N, 784)``,
        float32 in [0, 1], and ``y`` of shape ``(N,)``, int32 in [0, 10).

    Raises:
        DataUnavailableError: the files are missing and could not be downloaded (offline, or
            ``download=False``); the message says where the files must go.
        ImportError: torchvision is not installed.
    """
    path = data_root(root)
    if not _raw_files_present(path) and not download:
        raise _unavailable(path, download=False)
    try:
        from torchvision.datasets import MNIST
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "companion.data.load_mnist reads MNIST through torchvision: "
            "pip install 'companion[data]' (or torchvision)"
        ) from e

    splits = []
    for train in (True, False):
        try:
            # torchvision prints one line per failed mirror; the error below says it all.
            with contextlib.redirect_stdout(io.StringIO()):
                ds = MNIST(root=str(path), train=train, download=download)
        except (RuntimeError, OSError) as e:
            raise _unavailable(path, download, cause=e) from e
        splits.append(_to_split(ds.data.numpy(), ds.targets.numpy(), "train" if train else "test"))
    return MNISTData(*splits)


def is_full_mnist(data: MNISTData) -> bool:
    """True when ``data`` has the official 60,000/10,000 sizes (not a sample)."""
    return (len(data.train.y), len(data.test.y)) == MNIST_FULL_SIZES


def num_batches(n: int, batch_size: int, *, drop_last: bool = False) -> int:
    """How many batches :func:`batches` yields for ``n`` examples.

    Examples:
        >>> num_batches(100, 32), num_batches(100, 32, drop_last=True)
        (4, 3)
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive; got {batch_size}")
    return n // batch_size if drop_last else -(-n // batch_size)


def check_dataset(
    x: ArrayLike, y: ArrayLike, *, name: str = "", num_classes: int = NUM_CLASSES, flat: bool = False
) -> None:
    """Raise unless ``(x, y)`` is a usable dataset: matching lengths, labels in range, finite inputs.

    The one check every entry point runs once, before any training (inside ``jit`` it cannot).

    Args:
        x: inputs ``(N, ...)`` (``(N, D)`` with ``flat=True``).
        y: integer labels ``(N,)`` in ``[0, num_classes)``.
        name: a prefix for the messages, e.g. ``"val_"``.
        num_classes: the number of classes.
        flat: require 2-D inputs.

    Raises:
        ValueError: shapes that do not match (both are named), a label out of range (its value and
            index are named), or a NaN/inf in ``x``.
        TypeError: labels that are not integers.

    Examples:
        >>> check_dataset(np.zeros((3, 784), np.float32), np.array([0, 9, 2]))
        >>> check_dataset(np.zeros((3, 784), np.float32), np.array([0, 9]))
        Traceback (most recent call last):
        ...
        ValueError: x must be (N, ...) and y (N,), the same N; got x (3, 784) and y (2,)
    """
    xs, ys = tuple(jnp.shape(x)), tuple(jnp.shape(y))
    ok_x = len(xs) == 2 if flat else len(xs) >= 1
    if not ok_x or len(ys) != 1 or ys[0] != xs[0]:
        wanted = "(N, D)" if flat else "(N, ...)"
        raise ValueError(
            f"{name}x must be {wanted} and {name}y (N,), the same N; got {name}x {xs} and {name}y {ys}")
    check_labels(y if isinstance(y, jax.Array) else np.asarray(y), num_classes, name=f"{name}y")
    check_finite(x, name=f"{name}x")


@jax.jit
def shuffle(x: jax.Array, y: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(x, y)`` in the order of ``jax.random.permutation(key, N)``, on the device (one compiled gather)."""
    perm = jax.random.permutation(key, y.shape[0])
    return x[perm], y[perm]


def batches(
    x: ArrayLike,
    y: ArrayLike,
    batch_size: int,
    *,
    key: jax.Array | None = None,
    drop_last: bool = False,
    num_classes: int = NUM_CLASSES,
) -> Iterator[tuple[jax.Array, jax.Array]]:
    """Iterate over ``(x, y)`` minibatches, optionally shuffled by a JAX PRNG key.

    Inputs are validated once, before the first batch: matching lengths, integer labels in
    ``[0, num_classes)``, finite images.

    Args:
        x: inputs of shape ``(N, ...)``, e.g. ``(N, 784)``.
        y: integer labels of shape ``(N,)``.
        batch_size: examples per batch, ``> 0``.
        key: a PRNG key to shuffle with (the same key gives the same order); ``None`` keeps order.
        drop_last: drop the last batch when it is smaller than ``batch_size``.
        num_classes: labels must lie in ``[0, num_classes)``.

    Yields:
        ``(xb, yb)`` with shapes ``(B, ...)`` and ``(B,)``, ``B <= batch_size``.

    Examples:
        >>> x, y = np.zeros((5, 2), np.float32), np.arange(5, dtype=np.int32)
        >>> [tuple(yb.tolist()) for _, yb in batches(x, y, 2)]
        [(0, 1), (2, 3), (4,)]
        >>> [tuple(yb.tolist()) for _, yb in batches(x, y, 2, drop_last=True)]
        [(0, 1), (2, 3)]
    """
    x_arr = x if isinstance(x, jax.Array) else np.asarray(x)
    y_arr = y if isinstance(y, jax.Array) else np.asarray(y)
    check_dataset(x_arr, y_arr, num_classes=num_classes)
    n = y_arr.shape[0]
    count = num_batches(n, batch_size, drop_last=drop_last)
    order = np.arange(n) if key is None else np.asarray(jax.random.permutation(key, n))
    for i in range(count):
        idx = order[i * batch_size : (i + 1) * batch_size]
        yield jnp.asarray(x_arr[idx]), jnp.asarray(y_arr[idx])
