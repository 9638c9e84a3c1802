"""``convprop serve``: a web page to draw a digit on, and a small JSON API that shows what the network sees.

Routes (Starlette, served by uvicorn):

    GET  /              the page (``convprop/web/index.html``, read with importlib.resources)
    GET  /static/NAME   the page's script and style sheet
    GET  /api/model     classes, image size, normalisation, layers with output shapes, first-layer filters
    POST /api/predict   {"png": base64} or {"pixels": H×W floats in [0, 1]} → prediction, probabilities,
                        the network's input, the feature maps of every conv layer, server milliseconds

The checkpoint is loaded once, in eval mode: an eval-mode forward writes nothing to the layers (the
per-call context design, docs/graphs.md), so requests run the one shared model concurrently, without
a lock. All CPU work runs in Starlette's thread pool so the event loop keeps accepting requests.
Every user mistake is a 4xx with ``{"error": message}``; anything unexpected is a 500 with a generic
message and no traceback.
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import json
import os
import socket
import sys
import threading
import time
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import CheckpointError, ConfigError
from .inference import Predictor, latest_run
from .nn.summary import layer_rows

if TYPE_CHECKING:  # Starlette is imported when the app is created
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

MAX_BODY_BYTES = 1024 * 1024  # 1 MB: a 280×280 drawing is ~10 kB as PNG, a phone photo must be shrunk first
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")  # what Pillow may decode from a request
DECIMALS = 3  # feature maps and the input image are rounded for JSON: ~6 characters per value
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


class RequestError(Exception):
    """A problem with the client's request: becomes ``status`` with ``{"error": message}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _rounded(a: np.ndarray, decimals: int = DECIMALS) -> list:
    # float64 first: a rounded float32 turns into a long Python float (0.123 → 0.12300000339746475)
    return np.round(np.asarray(a, dtype=np.float64), decimals).tolist()


# --- decoding the two kinds of input ---------------------------------------------------------------


def decode_image(data: Any) -> np.ndarray:
    """Base64 image bytes (a ``data:image/png;base64,`` prefix allowed) → (H, W, 4) uint8 RGBA.

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
            return np.asarray(shrink(ImageOps.exif_transpose(img)).convert("RGBA"))  # (H, W, 4) uint8, <= 512 px
    except RequestError:
        raise
    except UnidentifiedImageError:  # its message names a BytesIO object: say it plainly instead
        raise RequestError(400, f'"png" is not an image (expected one of {", ".join(IMAGE_FORMATS)})') from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:  # truncated, corrupt, ...
        raise RequestError(400, f'"png" is not a readable image: {exc}') from None


def parse_pixels(rows: Any, size: tuple[int, int]) -> np.ndarray:
    """An H × W list of lists of numbers in [0, 1] (already MNIST-style) → (1, H, W) float32.

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
                raise RequestError(422, f'"pixels"[{i}][{j}] must be a number in [0, 1], got {json.dumps(v)[:40]}')
    arr = np.array(rows, dtype=np.float64)  # (H, W)
    if not np.all(np.isfinite(arr)):
        raise RequestError(422, '"pixels" contains an infinite value')
    if arr.min() < 0.0 or arr.max() > 1.0:
        i, j = (int(k) for k in np.unravel_index(np.argmax((arr < 0) | (arr > 1)), arr.shape))
        raise RequestError(422, f'"pixels" values must lie in [0, 1]; [{i}][{j}] is {arr[i, j]:g}')
    return arr[None].astype(np.float32)  # (1, H, W)


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


# --- the shared model ------------------------------------------------------------------------------


class InferenceService:
    """One Predictor shared by all requests, called concurrently (eval-mode forwards write nothing)."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor
        self.decoding = threading.BoundedSemaphore(4)  # at most 4 images decoded at once: bounds memory
        self.model_info = self._describe()

    def _describe(self) -> dict[str, Any]:
        p = self.predictor
        layers = layer_rows(p.model, [(1, *p.image_size)], p.dtype)  # every leaf layer, by path
        for i, layer in enumerate(layers):
            layer["index"] = i
        filters = p.first_layer_filters()  # (O, C, KH, KW), or None for a model without a convolution
        return {
            "classes": list(p.classes),
            "image_size": list(p.image_size),
            "dataset": p.dataset,
            "run": p.path.parent.name,
            "normalization": {"mean": list(p.normalization.mean), "std": list(p.normalization.std)},
            "parameters": sum(layer["parameters"] for layer in layers),
            "layers": layers,
            "filters": None if filters is None else {"shape": list(filters.shape), "values": _rounded(filters, 4)},
        }

    def predict(self, payload: dict[str, Any]) -> bytes:
        """A parsed request (see :func:`parse_body`) → the JSON response body."""
        start = time.perf_counter()
        p = self.predictor
        if "png" in payload:
            try:
                with self.decoding:
                    x = p.preprocess(decode_image(payload["png"]))  # (1, H, W)
            except ValueError as exc:  # to_mnist: blank image
                raise RequestError(422, str(exc)) from None
        else:
            x = parse_pixels(payload["pixels"], p.image_size)  # (1, H, W)
        probs, maps = p.analyse(x)  # (K,), [(label, (C, h, w))]: one forward pass, no lock needed
        index = int(np.argmax(probs))
        result = {
            "prediction": p.classes[index],
            "index": index,
            "probabilities": probs.astype(np.float64).tolist(),
            "classes": list(p.classes),
            "input": _rounded(x[0]),
            "feature_maps": [{"label": label, "shape": list(m.shape), "maps": _rounded(m)} for label, m in maps],
        }
        result["milliseconds"] = round(1000 * (time.perf_counter() - start), 3)
        return json.dumps(result, separators=(",", ":")).encode()


# --- the web application ---------------------------------------------------------------------------


def _static_files() -> dict[str, tuple[bytes, str]]:
    """Every file of ``convprop/web`` as name → (bytes, content type), read once through importlib.resources."""
    folder = resources.files("convprop").joinpath("web")
    files = {}
    for entry in folder.iterdir():
        suffix = os.path.splitext(entry.name)[1]
        if entry.is_file() and suffix in CONTENT_TYPES:
            files[entry.name] = (entry.read_bytes(), CONTENT_TYPES[suffix])
    if "index.html" not in files:
        raise FileNotFoundError(
            "convprop/web/index.html is missing from the installation (package data not installed?)"
        )
    return files


async def _read_body(request: Request) -> bytes:
    """The body, refused with 415 unless JSON and with 413 past MAX_BODY_BYTES (declared or actual)."""
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
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise RequestError(413, f"request body is over the limit of {MAX_BODY_BYTES:,} bytes")
    return bytes(body)


def create_app(predictor: Predictor) -> Starlette:
    """The Starlette application serving ``predictor`` (load it once; it is shared by every request)."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    service = InferenceService(predictor)
    static = _static_files()
    model_json = json.dumps(service.model_info, separators=(",", ":")).encode()

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=SECURITY_HEADERS)

    async def page(request: Request) -> Response:
        body, ctype = static["index.html"]
        return Response(body, media_type=ctype, headers=SECURITY_HEADERS)

    async def static_file(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in static:
            return error(404, f"no such file: /static/{name}")
        body, ctype = static[name]
        return Response(body, media_type=ctype, headers=SECURITY_HEADERS)

    async def model(request: Request) -> Response:
        return Response(model_json, media_type="application/json", headers=SECURITY_HEADERS)

    async def predict(request: Request) -> Response:
        try:
            payload = parse_body(await _read_body(request))
            body = await run_in_threadpool(service.predict, payload)
        except RequestError as exc:
            return error(exc.status, exc.message)
        return Response(body, media_type="application/json", headers=SECURITY_HEADERS)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)  # registered for HTTPException only
        return error(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}")

    async def internal_error(request: Request, exc: Exception) -> Response:
        # Starlette re-raises after this response, so uvicorn logs the traceback on the server's console.
        return error(500, "internal server error (details are in the server's log)")

    routes = [
        Route("/", page),
        Route("/static/{name}", static_file),
        Route("/api/model", model),
        Route("/api/predict", predict, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: internal_error})
    app.state.service = service
    return app


# --- running it ------------------------------------------------------------------------------------


def _bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port); port 0 lets the OS choose a free one."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve --host {host!r}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror}; choose another --port (0 picks a free one)"
        ) from None
    return sock


def page_url(sock: socket.socket) -> str:
    """The clickable address of a bound socket (a wildcard address is shown as loopback)."""
    host, port = sock.getsockname()[:2]
    ip = ipaddress.ip_address(host)
    if ip.is_unspecified:
        ip = ipaddress.ip_address("::1" if ip.version == 6 else "127.0.0.1")
    return f"http://{ip}:{port}/" if ip.version == 4 else f"http://[{ip}]:{port}/"


def run(checkpoint: str | os.PathLike | None = None, *, host: str = "127.0.0.1", port: int = 8000) -> int:
    """Serve the page for ``checkpoint`` (default: the latest run in ./runs) until interrupted; returns 0."""
    import uvicorn

    if checkpoint is None:
        checkpoint = latest_run("runs")
        if checkpoint is None:
            raise CheckpointError("no trained model found in ./runs; train one first with: convprop train")
    predictor = Predictor(checkpoint)
    app = create_app(predictor)
    sock = _bind(host, port)
    url = page_url(sock)
    if not ipaddress.ip_address(sock.getsockname()[0]).is_loopback:
        print(
            f"convprop: warning: listening on {host}, so the page is reachable from other machines "
            "(there is no authentication); use --host 127.0.0.1 to keep it on this one",
            file=sys.stderr,
        )

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:  # listening now: the address works the moment it is printed
                print(f"convprop: serving {predictor.path} ({len(predictor.classes)} classes)")
                print(f"open {url} in a browser (Ctrl-C stops the server)", flush=True)

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    try:
        Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down gracefully, then re-raises the Ctrl-C it caught
        pass
    finally:
        sock.close()
    print("convprop: server stopped")
    return 0
