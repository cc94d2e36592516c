"""MNIST as the book needs it: finding and reading the IDX files, validated once.

Data flow: IDX files on disk (torchvision's raw layout, ``<root>/MNIST/raw``) →
:func:`load_mnist` (numpy, validated once) → :func:`companion.batching.batches` (JAX
arrays) → a training step.

Reading four IDX files needs only numpy (:func:`companion.idx.read_idx`); torchvision
(and with it torch) is imported only to *download* MNIST when the files are missing, so
loading takes a fraction of a second and ``import companion`` stays light.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from companion.checks import check_labels
from companion.idx import read_idx

__all__ = [
    "DATA_DIR_ENV",
    "MNIST_FULL_SIZES",
    "NUM_CLASSES",
    "DataUnavailableError",
    "MNISTData",
    "Split",
    "data_root",
    "describe",
    "fingerprint",
    "is_full_mnist",
    "load_mnist",
    "raw_files",
]

DATA_DIR_ENV = "COMPANION_DATA_DIR"
NUM_CLASSES = 10
IMAGE_SIZE = 28 * 28
# (train, test) of the official release, for reference only
MNIST_FULL_SIZES = (60_000, 10_000)


class DataUnavailableError(FileNotFoundError):
    """The MNIST files are not on disk and could not be downloaded."""


class Split(NamedTuple):
    """One split of a dataset: images ``x`` ``(N, 784)`` and labels ``y`` ``(N,)``."""

    x: np.ndarray  # (N, 784) float32 in [0, 1]
    y: np.ndarray  # (N,) int32 in [0, 10)


class MNISTData(NamedTuple):
    """MNIST as loaded by :func:`load_mnist`: the ``train`` and ``test`` splits.

    Unpacks as ``(x_train, y_train), (x_test, y_test)``.
    """

    train: Split
    test: Split


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Where MNIST lives: ``root``, else ``$COMPANION_DATA_DIR``, else ``./data``."""
    if root is not None:
        return Path(root)
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else Path("data")


# split → (images, labels), as torchvision lays them out in <root>/MNIST/raw/
RAW_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _raw_path(root: Path, name: str) -> Path | None:
    """``root/MNIST/raw/name``, uncompressed or as ``name.gz``; None if absent."""
    for candidate in (
        root / "MNIST" / "raw" / name,
        root / "MNIST" / "raw" / f"{name}.gz",
    ):
        if candidate.is_file():
            return candidate
    return None


def _raw_files_present(root: Path) -> bool:
    return all(
        _raw_path(root, n) is not None for pair in RAW_FILES.values() for n in pair
    )


def raw_files(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The four MNIST IDX files in ``root`` (default: :func:`data_root`), train first.

    Raises:
        DataUnavailableError: a file is missing; the message says where they must go.
    """
    path = data_root(root)
    found = [
        _raw_path(path, name)
        for split in ("train", "test")
        for name in RAW_FILES[split]
    ]
    if None in found:
        raise _unavailable(path, download=False)
    return found


def fingerprint(root: str | os.PathLike[str] | None = None) -> str:
    """A short content hash of the four MNIST files (12 hex digits of SHA-256).

    Two folders holding the same MNIST give the same fingerprint, wherever they are; any
    change of an image or a label changes it. The book build uses it to re-execute the
    chapters when the data changes, and the status page names the data by it (not by a
    path).
    """
    digest = hashlib.sha256()
    for file in raw_files(root):
        # the values, not the bytes: .gz or not, same data
        digest.update(read_idx(file).tobytes())
    return digest.hexdigest()[:12]


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0]


def _unavailable(
    root: Path, download: bool, cause: BaseException | None = None
) -> DataUnavailableError:
    tried = (
        "downloading it through torchvision failed"
        + (f" ({type(cause).__name__}: {_first_line(cause)})" if cause else "")
        if download
        else "download=False, so no download was attempted"
    )
    return DataUnavailableError(
        f"MNIST is not available: no files under "
        f"{(root / 'MNIST' / 'raw').resolve()} and {tried}. "
        f"Put the four IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        f"t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, uncompressed or .gz) "
        f"in <root>/MNIST/raw/, "
        f"or point the environment variable {DATA_DIR_ENV} at a folder that holds "
        f"MNIST/raw/, "
        f"or run once with internet access so torchvision can download it."
    )


def _to_split(images: np.ndarray, labels: np.ndarray, name: str) -> Split:
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(
            f"{name} images must have shape (N, 28, 28); got {images.shape}"
        )
    if labels.shape != (images.shape[0],):
        raise ValueError(
            f"{name} needs one label per image: {images.shape[0]} images but labels "
            f"of shape {labels.shape}"
        )
    if images.shape[0] == 0:
        raise ValueError(f"{name} split is empty")
    x = images.reshape(images.shape[0], IMAGE_SIZE).astype(np.float32)
    x /= np.float32(255.0)  # in place: one float32 copy of the images, not two
    y = labels.astype(np.int32)
    check_labels(y, NUM_CLASSES, name=f"{name} labels")
    return Split(x, y)


def _download(root: Path) -> None:
    """Fetch MNIST into ``root/MNIST/raw`` with torchvision: the one use of torch."""
    try:
        from torchvision.datasets import MNIST
    except ImportError as e:
        raise DataUnavailableError(
            f"MNIST is not under {(root / 'MNIST' / 'raw').resolve()}, "
            f"and downloading it needs torchvision: "
            f"pip install 'companion[data]' (or torchvision), "
            f"or put the four IDX files there yourself, "
            f"or point {DATA_DIR_ENV} at a folder that holds MNIST/raw/."
        ) from e
    for train in (True, False):
        try:
            # torchvision prints a line per failed mirror; the error below says it all
            with contextlib.redirect_stdout(io.StringIO()):
                MNIST(root=str(root), train=train, download=True)
        except (RuntimeError, OSError) as e:
            raise _unavailable(root, True, cause=e) from e


def load_mnist(
    root: str | os.PathLike[str] | None = None, download: bool = True
) -> MNISTData:
    """Load MNIST from its IDX files as flat float32 images and int32 labels.

    The files are read with numpy (:func:`companion.idx.read_idx`); torchvision is used
    only to download them when they are missing. Sizes are whatever the files hold
    (60,000/10,000 for the official release; a sample has fewer): never assume them,
    read ``len(data.train.y)``.

    Args:
        root: folder holding ``MNIST/raw/``; default ``$COMPANION_DATA_DIR``, else
            ``./data``.
        download: let torchvision download the files when they are missing.

    Returns:
        ``MNISTData(train=Split(x, y), test=Split(x, y))`` with ``x`` of shape
        ``(N, 784)``, float32 in [0, 1], and ``y`` of shape ``(N,)``, int32 in [0, 10).

    Raises:
        DataUnavailableError: the files are missing and could not be downloaded
            (offline, ``download=False``, or no torchvision); the message says where the
            files must go.
        ValueError: a file that is not a valid IDX file, or images and labels that do
            not match.
    """
    path = data_root(root)
    if not _raw_files_present(path):
        if not download:
            raise _unavailable(path, download=False)
        _download(path)
        # still missing after the download: torchvision changed its layout
        if not _raw_files_present(path):  # pragma: no cover
            raise _unavailable(path, download=True)
    splits = []
    for split, (images, labels) in RAW_FILES.items():
        splits.append(
            _to_split(
                read_idx(_raw_path(path, images)),
                read_idx(_raw_path(path, labels)),
                split,
            )
        )
    return MNISTData(*splits)


def describe(data: MNISTData, root: str | os.PathLike[str] | None = None) -> str:
    """One line naming a loaded MNIST by its sizes and fingerprint, never by its path.

    Examples:
        ``"the full MNIST (60,000 training / 10,000 test images, fingerprint
        1a2b3c4d5e6f)"``
    """
    which = "the full MNIST" if is_full_mnist(data) else "an MNIST sample"
    return (
        f"{which} ({len(data.train.y):,} training / {len(data.test.y):,} test images, "
        f"fingerprint {fingerprint(root)})"
    )


def is_full_mnist(data: MNISTData) -> bool:
    """True when ``data`` has the official 60,000/10,000 sizes (not a sample)."""
    return (len(data.train.y), len(data.test.y)) == MNIST_FULL_SIZES


def main() -> int:
    """``python -m companion.data``: load MNIST, downloading it if it can; say which.

    Without the files and without internet it prints the :class:`DataUnavailableError`
    message alone, on stderr, and exits with status 2: ``make book`` runs it before
    building.
    """
    try:
        data = load_mnist()
    except DataUnavailableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"MNIST: {describe(data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
