"""What ``convprop serve`` accepts: the checks every request passes before the model sees it.

Each check turns a client's mistake into :class:`RequestError` (a 4xx with ``{"error": message}``
quoting what was sent and what was expected), never into a 500: the Host header (DNS rebinding),
the Content-Type, the body's size and arrival time, its JSON, and the image or pixel values in it.
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import json
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

MAX_BODY_BYTES = 1024 * 1024  # 1 MB: a 280×280 drawing is ~10 kB as PNG, a phone photo must be shrunk first
BODY_TIMEOUT_SECONDS = 15.0  # the whole body must arrive in this time: >= 70 kB/s for the largest one
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")  # Host header names always accepted (any port)
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")  # what Pillow may decode from a request
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


class RequestError(Exception):
    """A problem with the client's request: becomes ``status`` with ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --- decoding the two kinds of input ---------------------------------------------------------------


def decode_image(data: Any) -> np.ndarray:
    """Base64 image bytes (a ``data:image/png;base64,`` prefix allowed) → (H, W, 3) uint8 RGB, or
    (H, W, 4) RGBA when the image has transparency (composited on white by ``to_mnist``).

    Raises:
        RequestError: not a string, not base64, not an image, or larger than 4096 × 4096.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    from .data.images import MAX_SIDE, shrink

    if not isinstance(data, str):
        raise RequestError(400, f'"png" must be a base64 string, got {type(data).__name__}')
    if data.startswith("data:"):
        header, _, data = data.partition(",")
        if not header.endswith(";base64"):
            raise RequestError(400, f'"png" data URL must be base64-encoded (";base64,"), got header {header[:60]!r}')
    try:
        raw = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(400, f'"png" is not valid base64 ({exc})') from None
    if not raw:
        raise RequestError(400, '"png" is empty')
    try:
        with Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS) as img:
            if img.width > MAX_SIDE or img.height > MAX_SIDE:  # from the header, before decoding
                raise RequestError(
                    413, f"image is {img.width} × {img.height} pixels; at most {MAX_SIDE} × {MAX_SIDE} is accepted"
                )
            img.load()
            ImageOps.exif_transpose(img, in_place=True)  # (no copy when there is no rotation to apply)
            img = shrink(img)  # <= 512 px
            mode = "RGBA" if "A" in img.getbands() or "transparency" in img.info else "RGB"
            return np.asarray(img if img.mode == mode else img.convert(mode))  # (H, W, 3 | 4) uint8
    except RequestError:
        raise
    except UnidentifiedImageError:  # its message names a BytesIO object: say it plainly instead
        raise RequestError(400, f'"png" is not an image (expected one of {", ".join(IMAGE_FORMATS)})') from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:  # truncated, corrupt, ...
        raise RequestError(400, f'"png" is not a readable image: {exc}') from None


def parse_pixels(rows: Any, size: tuple[int, int]) -> np.ndarray:
    """An H × W list of lists of numbers in [0, 1] (already MNIST-style) → (1, H, W) float32.

    Each value is checked as the Python number JSON gave: ``true`` is not 1, ``10**400`` (an int too
    large for a float) and ``1e400`` (parsed as inf) are out of range, not an overflow.

    Raises:
        RequestError: the wrong shape, a non-number (booleans and strings included), or a value outside [0, 1].
    """
    H, W = size
    if not isinstance(rows, list) or len(rows) != H:
        got = f"a list of {len(rows)}" if isinstance(rows, list) else type(rows).__name__
        raise RequestError(422, f'"pixels" must be {H} rows of {W} numbers (the model\'s image size), got {got}')
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != W:
            got = f"a list of {len(row)}" if isinstance(row, list) else type(row).__name__
            raise RequestError(422, f'"pixels" row {i} must be a list of {W} numbers, got {got}')
        for j, v in enumerate(row):
            if type(v) not in (int, float):  # bool is an int subclass: refused on purpose
                raise RequestError(422, f'"pixels"[{i}][{j}] must be a number in [0, 1], got {_quote(v)}')
            if not 0 <= v <= 1:  # exact for huge ints (no float conversion); inf fails too (NaN never parses)
                shown = f"{v:g}" if isinstance(v, float) else _quote(v)
                infinite = " (an infinite value)" if isinstance(v, float) and math.isinf(v) else ""
                raise RequestError(422, f'"pixels" values must lie in [0, 1]; [{i}][{j}] is {shown}{infinite}')
    return np.array(rows, dtype=np.float64)[None].astype(np.float32)  # (1, H, W)


def _quote(value: Any, limit: int = 40) -> str:
    """A short JSON rendering of a value the client sent (an int of 400 digits is cut, not expanded)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**limit:
        return f"an integer of {len(str(abs(value)))} digits"
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a valid JSON number (send finite numbers only)")


def parse_body(body: bytes) -> dict[str, Any]:
    """The request body → a JSON object with exactly one of "png" and "pixels"."""
    try:
        payload = json.loads(body, parse_constant=_refuse_constant)
    except RecursionError:
        raise RequestError(400, "request body is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError and NaN/Infinity are ValueErrors
        raise RequestError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise RequestError(
            400, f'request body must be a JSON object {{"png": ...}} or {{"pixels": ...}}, got {type(payload).__name__}'
        )
    keys = set(payload)
    if unknown := sorted(keys - {"png", "pixels"}):
        raise RequestError(
            400, f'unknown key(s) {", ".join(map(repr, unknown))}; send exactly one of "png" or "pixels"'
        )
    if len(keys) != 1:
        raise RequestError(
            400, f'send exactly one of "png" (base64 image) or "pixels" ({"both" if keys else "neither"} given)'
        )
    return payload


class ClientGone(Exception):
    """The client disconnected before its request was read: there is no one to answer."""


async def read_body(request: Any, timeout: float = BODY_TIMEOUT_SECONDS) -> bytes:
    """The body, refused with 415 unless JSON, with 413 past MAX_BODY_BYTES (declared or actual), and
    with 408 unless all of it arrives within ``timeout`` seconds (a slow client cannot hold a request open)."""
    import anyio
    from starlette.requests import ClientDisconnect

    ctype = request.headers.get("content-type", "")
    if ctype.split(";")[0].strip().lower() != "application/json":
        raise RequestError(415, f"Content-Type must be application/json, got {ctype or 'none'!r}")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestError(400, f"invalid Content-Length {declared[:40]!r}")
        if int(declared) > MAX_BODY_BYTES:
            raise RequestError(413, f"request body is {int(declared):,} bytes; the limit is {MAX_BODY_BYTES:,} bytes")
    body = bytearray()
    try:
        with anyio.fail_after(timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise RequestError(413, f"request body is over the limit of {MAX_BODY_BYTES:,} bytes")
    except TimeoutError:
        raise RequestError(
            408, f"request body did not arrive within {timeout:g} seconds ({len(body):,} bytes received)"
        ) from None
    except ClientDisconnect:
        raise ClientGone from None
    return bytes(body)


def host_allowed(host_header: str | None, names: Iterable[str], *, any_ip: bool = False) -> bool:
    """Whether a request's ``Host`` header names this server (DNS-rebinding guard).

    Allowed: no header (not a browser), or a host in ``names`` (case-insensitive; IPv6 with or
    without brackets), with or without a port; with ``any_ip`` (bound to every interface) also any
    IP literal, since a rebinding attack needs a domain name and an IP literal cannot be rebound.
    """
    if host_header is None:
        return True
    host = host_header.strip().lower()
    if host.startswith("["):  # [v6]:port
        name, _, rest = host[1:].partition("]")
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return False
    else:
        name, colon, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
        if colon and not port.isdigit():
            return False
    allowed = {n.strip("[]").lower() for n in names}
    if name in allowed:
        return True
    if any_ip:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True
    return False


class HostGuard:
    """ASGI middleware: the Host-header check (:func:`host_allowed`) before routing, for every route.

    ``state`` is the wrapped application's (``app.state.service`` is the :class:`InferenceService`).
    """

    def __init__(self, app: Any, names: Iterable[str], *, any_ip: bool = False) -> None:
        self.app, self.names, self.any_ip = app, tuple(names), any_ip
        self.state = app.state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        from starlette.responses import JSONResponse

        if scope["type"] == "http":
            raw = [v for k, v in scope.get("headers", []) if k == b"host"]
            host = raw[0].decode("latin-1") if raw else None
            if len(raw) > 1 or not host_allowed(host, self.names, any_ip=self.any_ip):
                shown = "several Host headers" if len(raw) > 1 else f"Host {(host or '')[:60]!r}"
                message = f"{shown} is not this server; open it as http://127.0.0.1:<port>/ or http://localhost:<port>/"
                response = JSONResponse({"error": message}, status_code=400, headers=SECURITY_HEADERS)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
