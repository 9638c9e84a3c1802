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

Bounded reading: the header is read and checked first, and the payload size it declares decides
everything after. A declared payload above ``max_bytes`` (``MAX_IDX_BYTES``, 2 GiB, by default), above
the file's own size (raw files), or above what DEFLATE can expand the file to (``DEFLATE_MAX_RATIO``
times the compressed size) is refused before any of it is read. A gzip stream is decompressed only up to
the header plus the declared payload, and one byte more to tell that the file ends there: a stream that
expands without bound is refused, not expanded.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import zlib
from pathlib import Path
from typing import NamedTuple

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
MAX_IDX_BYTES = 1 << 31  # largest payload read_idx accepts by default; MNIST's largest file holds 47 MB
DEFLATE_MAX_RATIO = 1032  # DEFLATE cannot expand a byte to more than ~1032 (a 258-byte match per ~2 bits)
READ_CHUNK = 1 << 20  # payload bytes read (and decompressed) per call
_GZIP_MAGIC = b"\x1f\x8b"


class DataFileNotFoundError(DataError, FileNotFoundError):
    """A data file or folder the caller named does not exist (a ``DataError`` and a ``FileNotFoundError``)."""


class IdxHeader(NamedTuple):
    """What an IDX header declares: the payload's dtype and shape, and the sizes in bytes."""

    dtype: np.dtype  # big-endian, as stored
    shape: tuple[int, ...]
    header_bytes: int  # 4 + 4 * D
    payload_bytes: int  # prod(shape) * itemsize


def read_idx(path: str | os.PathLike[str], *, ndim: int | None = None, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a native-endian array.

    Memory is bounded by what the header declares: one buffer of the declared payload (refused above
    ``max_bytes``) and, for multi-byte dtypes, its native-endian copy; decompression works in chunks
    of ``READ_CHUNK`` bytes.

    Args:
        path: the file, e.g. ``train-images-idx3-ubyte.gz`` or ``train-images-idx3-ubyte``.
        ndim: if given, the number of dimensions the file must have (3 for images, 1 for labels).
        max_bytes: the largest payload accepted, in bytes.

    Returns:
        An array of the file's shape, e.g. ``(N, H, W)`` uint8 for images, ``(N,)`` uint8 for labels.

    Raises:
        DataFileNotFoundError: no such file (also a ``FileNotFoundError``).
        DataError: a corrupt gzip stream, a truncated file, a bad magic number, an unsupported dtype
            code, a wrong dimension count, a payload whose size disagrees with the header or exceeds
            ``max_bytes``. The message names the file.
    """
    _check_options(ndim, max_bytes)
    if not isinstance(path, (str, os.PathLike)):
        raise ArgumentTypeError(f"path must be a file path, got {type(path).__name__}")
    path = Path(path)
    if not path.exists():
        raise DataFileNotFoundError(f"no such IDX file: {path}")
    if not path.is_file():
        raise DataError(f"{path} is not a regular file: expected an IDX file")
    source = str(path)
    try:
        with open(path, "rb") as raw:
            size = os.fstat(raw.fileno()).st_size
            if raw.read(2) == _GZIP_MAGIC:
                raw.seek(0)
                with gzip.GzipFile(fileobj=raw) as stream:
                    return _read_stream(stream, ndim, max_bytes, source, compressed_size=size)
            raw.seek(0)
            return _read_stream(raw, ndim, max_bytes, source, file_size=size)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{source}: corrupt or truncated gzip stream ({exc})") from None
    except OSError as exc:  # permissions, I/O errors
        raise DataError(f"cannot read IDX file {source}: {exc.strerror or exc}") from None


def parse_idx(
    data: bytes, *, ndim: int | None = None, source: str = "<bytes>", max_bytes: int = MAX_IDX_BYTES
) -> np.ndarray:
    """Decode the bytes of an uncompressed IDX file; see :func:`read_idx`. ``source`` names it in errors."""
    _check_options(ndim, max_bytes)
    data = bytes(data)
    prefix = data[:4]
    dims = prefix[3] if len(prefix) == 4 else 0
    header = parse_idx_header(data[: 4 + 4 * dims], ndim=ndim, source=source, max_bytes=max_bytes)
    got = len(data) - header.header_bytes
    if got != header.payload_bytes:
        raise DataError(_size_message(source, header, f"file has {got}"))
    flat = np.frombuffer(data, dtype=header.dtype, offset=header.header_bytes)  # (prod(shape),) big-endian
    return flat.reshape(header.shape).astype(header.dtype.newbyteorder("="))  # shape, native-endian copy


def parse_idx_header(
    data: bytes, *, ndim: int | None = None, source: str = "<bytes>", max_bytes: int = MAX_IDX_BYTES
) -> IdxHeader:
    """Check and decode an IDX header (``data`` holds at least its first 4 + 4 D bytes)."""
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
    header_bytes = 4 + 4 * dims
    if len(data) < header_bytes:
        raise DataError(
            f"{source}: truncated IDX file: {len(data)} bytes, the header of a {dims}-D file needs {header_bytes}"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    dtype = IDX_DTYPES[code]
    payload = math.prod(shape) * dtype.itemsize  # Python ints: no overflow, whatever the header says
    result = IdxHeader(dtype, shape, header_bytes, payload)
    if payload > max_bytes:
        raise DataError(_size_message(source, result, f"more than the {max_bytes}-byte limit (max_bytes)"))
    return result


def _check_options(ndim: int | None, max_bytes: int) -> None:
    if ndim is not None and (isinstance(ndim, bool) or not isinstance(ndim, int) or not 1 <= ndim <= 255):
        raise ArgumentError(f"ndim must be an int in 1..255 or None, got {ndim!r}")
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
        raise ArgumentError(f"max_bytes must be an int >= 0, got {max_bytes!r}")


def _size_message(source: str, header: IdxHeader, actual: str) -> str:
    got = actual.removeprefix("file has ")
    kind = "IDX size mismatch"
    if actual.startswith("file has ") and got.isdigit() and int(got) < header.payload_bytes:
        kind = "truncated IDX file"
    return (
        f"{source}: {kind}: header says shape {header.shape} of {header.dtype.name} = "
        f"{header.payload_bytes} payload bytes, {actual}"
    )


def _read_exact(stream: io.BufferedIOBase, n: int) -> bytes:
    """Up to ``n`` bytes (fewer only at the end of the stream)."""
    parts, left = [], n
    while left > 0:
        chunk = stream.read(min(left, READ_CHUNK))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _read_stream(
    stream: io.BufferedIOBase,
    ndim: int | None,
    max_bytes: int,
    source: str,
    *,
    file_size: int | None = None,
    compressed_size: int | None = None,
) -> np.ndarray:
    """Header first, checks, then exactly the declared payload into one preallocated buffer."""
    prefix = _read_exact(stream, 4)
    dims = prefix[3] if len(prefix) == 4 else 0
    head = prefix + _read_exact(stream, 4 * dims)
    header = parse_idx_header(head, ndim=ndim, source=source, max_bytes=max_bytes)
    if file_size is not None and file_size - header.header_bytes != header.payload_bytes:
        raise DataError(_size_message(source, header, f"file has {file_size - header.header_bytes}"))
    if compressed_size is not None and header.payload_bytes > DEFLATE_MAX_RATIO * compressed_size:
        raise DataError(
            _size_message(
                source, header, f"more than a {compressed_size}-byte gzip file can hold (at most {DEFLATE_MAX_RATIO}:1)"
            )
        )
    buffer = np.empty(header.payload_bytes, dtype=np.uint8)  # (payload_bytes,), the only large allocation
    view = buffer.data  # a writable memoryview of the buffer
    got = 0
    while got < header.payload_bytes:
        chunk = stream.read(min(READ_CHUNK, header.payload_bytes - got))
        if not chunk:
            raise DataError(_size_message(source, header, f"file has {got}"))
        view[got : got + len(chunk)] = chunk
        got += len(chunk)
    if stream.read(1):  # decompresses at most one byte past the payload (and checks the gzip CRC at the end)
        raise DataError(_size_message(source, header, "the file holds more (the rest was not read)"))
    flat = buffer.view(header.dtype)  # (prod(shape),) big-endian, no copy
    return flat.reshape(header.shape).astype(header.dtype.newbyteorder("="), copy=not header.dtype.isnative)


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> Path:
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
    if any(s >= 1 << 32 for s in array.shape):
        raise ArgumentError(f"IDX sizes are uint32: shape {array.shape} has a dimension of 2**32 or more")
    header = bytes([0, 0, codes[native], array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = np.ascontiguousarray(array, dtype=native.newbyteorder(">")).tobytes()
    path = Path(path)
    data = header + payload
    return write_atomic(path, gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
