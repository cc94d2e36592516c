"""MNIST's file format, IDX: a tiny header of sizes, then the raw values.

Reading it needs only numpy, so loading MNIST does not import torch or torchvision.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

__all__ = ["read_idx"]


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read MNIST's IDX format (unsigned bytes), plain or gzipped, as a uint8 array.

    The header is two zero bytes, a type byte (``0x08``: unsigned byte), the number of
    dimensions ``d``, then ``d`` big-endian uint32 sizes; the values follow, row-major.

    Raises:
        ValueError: a header that is not IDX, a type other than unsigned byte, or a file
            whose length does not match its header (a truncated download); the message
            names the file.

    Examples:
        >>> import tempfile
        >>> f = Path(tempfile.mkdtemp()) / "labels-idx1-ubyte"
        >>> _ = f.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1]))
        >>> read_idx(f)
        array([7, 2, 1], dtype=uint8)
    """
    path = Path(path)
    data = (
        gzip.decompress(path.read_bytes())
        if path.suffix == ".gz"
        else path.read_bytes()
    )
    if len(data) < 4 or data[:2] != b"\0\0":
        raise ValueError(
            f"{path} is not an IDX file (it must start with two zero bytes)"
        )
    kind, ndim = data[2], data[3]
    if kind != 0x08:
        raise ValueError(
            f"{path}: only IDX files of unsigned bytes (type 0x08) are read; "
            f"got type 0x{kind:02x}"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(
            f"{path} is truncated: its header needs {header} bytes, "
            f"the file has {len(data)}"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(shape, dtype=np.int64))
    if len(data) - header != expected:
        raise ValueError(
            f"{path}: the header promises {shape} = {expected:,} values, "
            f"the file holds {len(data) - header:,} (truncated or corrupt?)"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)
