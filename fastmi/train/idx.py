"""A reader for the IDX files MNIST ships in (raw, or gzip-compressed).

An IDX file is a 4-byte magic number ``00 00 TT DD`` (TT: the element type, DD: the
number of dimensions), DD big-endian uint32 sizes, then the elements, big-endian,
in C order. http://yann.lecun.com/exdb/mnist/ describes it.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

# element type code -> big-endian numpy dtype
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"


class DataError(ValueError):
    """A data file is missing, truncated or malformed; the message names the file."""


def _read_bytes(path: str) -> bytes:
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == GZIP_MAGIC:  # by content, not by name: a renamed .gz still reads
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as e:
            raise DataError(f"{path}: the gzip stream is truncated or corrupt ({e})") from None
    return data


def read_idx(path: str) -> np.ndarray:
    """The array an IDX file holds, in native byte order.

    Raises :class:`DataError`, naming the file, when it is missing, when its gzip
    stream is broken, when the header is not IDX, or when it holds fewer or more
    bytes than its header announces.
    """
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path}: truncated IDX file: {len(data)} bytes, shorter than the 4-byte magic number")
    zero, type_code, ndim = data[:2], data[2], data[3]
    if zero != b"\x00\x00" or type_code not in IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file: magic number {data[:4].hex()} (expected 0000TTDD "
                        f"with TT one of {', '.join(f'{k:02x}' for k in IDX_DTYPES)})")
    if ndim == 0:
        raise DataError(f"{path}: malformed IDX header: 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX file: {len(data)} bytes, shorter than its "
                        f"{header}-byte header for {ndim} dimensions")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[type_code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) < expected:
        raise DataError(f"{path}: truncated IDX file: the header announces shape {shape} "
                        f"({expected} bytes) but the file holds {len(data)} bytes")
    if len(data) > expected:
        raise DataError(f"{path}: malformed IDX file: {len(data) - expected} bytes after the "
                        f"{expected} that its header (shape {shape}) announces")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def write_idx(path: str, array: np.ndarray, compress: bool = False) -> None:
    """Writes ``array`` as an IDX file (gzip-compressed when ``compress``): the
    inverse of :func:`read_idx`, for tests and for exporting data."""
    array = np.asarray(array)
    codes = {dtype.newbyteorder("="): code for code, dtype in IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(f"write_idx: dtype {array.dtype} has no IDX type code")
    header = bytes([0, 0, codes[native], array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + array.astype(IDX_DTYPES[codes[native]]).tobytes()
    with open(path, "wb") as f:
        f.write(gzip.compress(payload) if compress else payload)
