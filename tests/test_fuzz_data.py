"""Fuzzing the data readers: mutated IDX files (raw and gzip) and mutated image bytes.

Only the documented exception comes out (``DataError``; nothing else, no Pillow or NumPy traceback),
and nothing is allocated beyond the stated bound:

- ``read_idx``: the payload buffer and its native-endian copy, each at most what the file can hold
  (its size when raw, ``DEFLATE_MAX_RATIO`` times its size when gzipped), plus ``READ_CHUNK``;
  measured with tracemalloc (NumPy reports its buffers to it).
- ``decode_image``: Pillow never makes an image buffer larger than ``MAX_SIDE`` x ``MAX_SIDE`` pixels
  (checked by watching ``Image.core.new``, where Pillow allocates a decoded image).

Each test has a fixed ``max_examples`` and no deadline; the whole file runs in well under 20 s on the
2-core CI machine (the ci profile in conftest.py derandomises, so CI runs are reproducible).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import tempfile
import tracemalloc
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from convprop.data import read_idx
from convprop.data.idx import DEFLATE_MAX_RATIO, IDX_DTYPES, READ_CHUNK, parse_idx
from convprop.data.images import MAX_SIDE, decode_image
from convprop.errors import DataError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL")  # Pillow notes the damage it skips over

SLACK_BYTES = 1 << 20  # Python objects, the gzip reader's buffers, hypothesis itself


def idx_file(code: int, shape: tuple[int, ...], rng: np.random.Generator) -> bytes:
    dtype = IDX_DTYPES[code]
    payload = rng.integers(0, 256, int(np.prod(shape)) * dtype.itemsize, dtype=np.uint8).tobytes()
    header = bytes([0, 0, code, len(shape)]) + b"".join(s.to_bytes(4, "big") for s in shape)
    return header + payload


@st.composite
def mutated_idx(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A valid small IDX file, then header fields rewritten, bytes flipped, cut or appended; maybe gzipped."""
    code = draw(st.sampled_from(sorted(IDX_DTYPES)))
    shape = tuple(draw(st.lists(st.integers(0, 6), min_size=1, max_size=4)))
    data = bytearray(idx_file(code, shape, np.random.default_rng(draw(st.integers(0, 2**16)))))
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["size", "dims", "code", "flip", "cut", "append"]))
        if kind == "size" and len(data) >= 8:  # a dimension claiming up to 4 G elements
            at = 4 + 4 * draw(st.integers(0, max(0, min(data[3], (len(data) - 8) // 4))))
            data[at : at + 4] = draw(st.integers(0, 2**32 - 1)).to_bytes(4, "big")
        elif kind == "dims" and len(data) >= 4:
            data[3] = draw(st.integers(0, 255))
        elif kind == "code" and len(data) >= 4:
            data[2] = draw(st.integers(0, 255))
        elif kind == "flip" and data:
            at = draw(st.integers(0, len(data) - 1))
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[draw(st.integers(0, len(data))) :]
        elif kind == "append":
            data += draw(st.binary(max_size=16))
    compress = draw(st.booleans())
    raw = bytes(data)
    if compress:
        packed = bytearray(gzip.compress(raw, mtime=0))
        if draw(st.booleans()) and len(packed) > 10:  # damage the compressed stream itself
            at = draw(st.integers(10, len(packed) - 1))
            packed[at] ^= draw(st.integers(1, 255))
        if draw(st.booleans()):
            packed += gzip.compress(bytes(draw(st.integers(0, 1 << 16))))  # a second member: more payload
        raw = bytes(packed)
    return raw, compress


def traced_peak(call) -> tuple[object, int]:
    """(result or the DataError raised, peak traced bytes) of ``call()``."""
    tracemalloc.start()
    try:
        try:
            result: object = call()
        except DataError as exc:
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@settings(max_examples=150, deadline=None)
@given(mutated_idx())
def test_mutated_idx_files_give_an_array_or_a_data_error_within_the_bound(case):
    raw, compress = case
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "fuzz-idx")
        with open(path, "wb") as f:
            f.write(raw)
        result, peak = traced_peak(lambda: read_idx(path))  # anything but a DataError propagates: a failure
    can_hold = len(raw) * (DEFLATE_MAX_RATIO if compress else 1)
    assert peak <= 2 * can_hold + READ_CHUNK + SLACK_BYTES
    if isinstance(result, DataError):
        assert path in str(result)  # the message names the file
    else:
        assert isinstance(result, np.ndarray) and result.dtype.isnative


@settings(max_examples=150, deadline=None)
@given(mutated_idx())
def test_mutated_idx_bytes_in_memory(case):
    raw, compress = case
    if compress:
        raw = raw[:4096]  # parse_idx takes raw IDX bytes: gzip here is just more garbage
    result, peak = traced_peak(lambda: parse_idx(raw, source="fuzz"))
    assert peak <= 2 * len(raw) + SLACK_BYTES
    assert isinstance(result, (np.ndarray, DataError))


def image_seeds() -> list[bytes]:
    """Small valid images of every kind decode_image accepts, as the starting points of mutation."""
    rng = np.random.default_rng(0)
    gray = Image.fromarray(rng.integers(0, 256, (12, 10), dtype=np.uint8))
    seeds = []
    for img, fmt, options in [
        (gray, "PNG", {}),
        (gray.convert("RGBA"), "PNG", {}),
        (Image.fromarray(rng.integers(0, 65536, (9, 7), dtype=np.uint16)), "PNG", {}),
        (gray.convert("P"), "PNG", {"transparency": 0}),
        (gray, "GIF", {"save_all": True, "append_images": [gray.rotate(90)]}),
        (gray.convert("RGB"), "JPEG", {}),
        (gray, "BMP", {}),
        (gray, "TIFF", {}),
        (gray.convert("RGB"), "WEBP", {}),
        (gray, "PPM", {}),
    ]:
        buffer = io.BytesIO()
        img.save(buffer, fmt, **options)
        seeds.append(buffer.getvalue())
    return seeds


SEEDS = image_seeds()


@st.composite
def mutated_image(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "big-int", "insert"]))
        if kind == "flip" and data:
            at = draw(st.integers(0, len(data) - 1))
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[draw(st.integers(0, len(data))) :]
        elif kind == "big-int" and len(data) > 4:  # where headers keep their sizes: huge declared dimensions
            at = draw(st.integers(0, min(len(data), 64) - 4))
            data[at : at + 4] = draw(st.sampled_from([0, 1, 4097, 65535, 2**31 - 1, 2**32 - 1])).to_bytes(4, "big")
        elif kind == "insert":
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(max_size=32))
    return bytes(data)


@contextlib.contextmanager
def pillow_allocations():
    """Yields a list that collects the (width, height) of every image buffer Pillow makes meanwhile."""
    sizes: list[tuple[int, int]] = []
    new = Image.core.new

    def watched(mode, size):
        sizes.append(tuple(size))
        return new(mode, size)

    with mock.patch.object(Image.core, "new", watched):
        yield sizes


@settings(max_examples=200, deadline=None)
@given(data=mutated_image())
def test_mutated_image_bytes_give_a_gray_image_or_a_data_error(data):
    with pillow_allocations() as sizes:
        try:
            gray = decode_image(data, source="the fuzzed upload")
        except DataError as exc:
            assert "the fuzzed upload" in str(exc)
        else:
            assert gray.dtype == np.float32 and gray.ndim == 2 and gray.size > 0
            assert np.all(np.isfinite(gray)) and gray.min() >= 0.0 and gray.max() <= 1.0
    assert all(w * h <= MAX_SIDE * MAX_SIDE for w, h in sizes)
