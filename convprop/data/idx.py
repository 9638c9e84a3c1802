"""The IDX file format of MNIST and Fashion-MNIST: read (and, for tests and exports, write).

An IDX file is a 4-byte magic number, one big-endian uint32 per dimension, then the array itself,
big-endian and row-major::

    bytes 0-1   0x00 0x00
    byte  2     dtype code: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    byte  3     number of dimensions D (>= 1)
    4 .. 4+4D   the D sizes, big-endian uint32
    the rest    prod(sizes) values of the dtype, big-endian

MNIST images are ``(N, H, W)`` uint8 (magic 0x00000803), labels ``(N,)`` uint8 (magic 0x00000801).
Files may be gzip-compressed; that is recognised from the content (bytes 1f 8b), not the name.
Nothing is ever unpickled: the payload is decoded with ``np.frombuffer`` and an explicit dtype.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from ..errors import ArgumentError, ArgumentTypeError, DataError
from ..fileio import write_atomic

# dtype code (byte 2 of the magic number) -> big-endian dtype
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | os.PathLike, *, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a native-endian array.

    Args:
        path: the file, e.g. ``train-images-idx3-ubyte.gz`` or ``train-images-idx3-ubyte``.
        ndim: if given, the number of dimensions the file must have (3 for images, 1 for labels).

    Returns:
        An array of the file's shape, e.g. ``(N, H, W)`` uint8 for images, ``(N,)`` uint8 for labels.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a corrupt gzip stream, a truncated file, a bad magic number, an unsupported dtype
            code, a wrong dimension count, or a payload whose size disagrees with the header. The
            message names the file.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
            raise DataError(f"{path}: corrupt or truncated gzip stream ({exc})") from None
    return parse_idx(raw, ndim=ndim, source=str(path))


def parse_idx(data: bytes, *, ndim: int | None = None, source: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of an uncompressed IDX file; see :func:`read_idx`. ``source`` names it in errors."""
    if len(data) < 4:
        raise DataError(f"{source}: truncated IDX file: {len(data)} bytes, expected at least a 4-byte magic number")
    zero, code, dims = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0:
        raise DataError(
            f"{source}: bad IDX magic number 0x{data[:4].hex()}: expected 0x0000TTDD "
            f"(TT a dtype code, DD the dimension count), e.g. 0x00000803 for MNIST images"
        )
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataError(f"{source}: unsupported IDX dtype code 0x{code:02X}: expected one of {known}")
    if dims == 0:
        raise DataError(f"{source}: IDX header declares 0 dimensions: expected at least 1")
    if ndim is not None and dims != ndim:
        raise DataError(f"{source}: IDX file has {dims} dimensions, expected {ndim}")
    header = 4 + 4 * dims
    if len(data) < header:
        raise DataError(
            f"{source}: truncated IDX file: {len(data)} bytes, the header of a {dims}-D file needs {header}"
        )
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=dims, offset=4))
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(data) - header
    if got != expected:
        kind = "truncated IDX file" if got < expected else "IDX size mismatch"
        raise DataError(
            f"{source}: {kind}: header says shape {shape} of {dtype.name} = {expected} payload bytes, file has {got}"
        )
    flat = np.frombuffer(data, dtype=dtype, offset=header)  # (prod(shape),) big-endian
    return flat.reshape(shape).astype(dtype.newbyteorder("="))  # shape, native-endian copy


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends in ``.gz``. Returns the path.

    The dtype must be one of the IDX dtypes (uint8, int8, int16, int32, float32, float64) and the
    array must have at least one dimension.
    """
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        names = ", ".join(dt.name for dt in codes)
        raise ArgumentTypeError(f"cannot write dtype {array.dtype} as IDX: expected one of {names}")
    if array.ndim == 0 or array.ndim > 255:
        raise ArgumentError(f"IDX arrays need 1 to 255 dimensions, got shape {array.shape}")
    header = bytes([0, 0, codes[native], array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = np.ascontiguousarray(array, dtype=native.newbyteorder(">")).tobytes()
    path = Path(path)
    data = header + payload
    return write_atomic(path, gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
