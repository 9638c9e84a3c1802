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

Guards (see docs/robustness.md): a request whose ``Host`` header names another host is refused
with 400 (DNS rebinding: a page on evil.example whose name resolves to 127.0.0.1 must not reach
this API); the body must arrive within ``BODY_TIMEOUT_SECONDS`` (408 otherwise) and be at most
``MAX_BODY_BYTES``; a client that disconnects mid-request is dropped quietly; the answer is strict
JSON, and a model whose output is not finite is reported as 422, never sent as NaN.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterable
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from .errors import CheckpointError, ConfigError
from .fileio import json_safe
from .inference import Predictor, latest_run
from .nn.summary import layer_rows
from .serve_input import (  # re-exported: the request checks are part of this module's interface
    BODY_TIMEOUT_SECONDS,
    IMAGE_FORMATS,
    LOOPBACK_HOSTS,
    MAX_BODY_BYTES,
    SECURITY_HEADERS,
    ClientGone,
    HostGuard,
    RequestError,
    decode_image,
    host_allowed,
    parse_body,
    parse_pixels,
    read_body,
)

__all__ = [
    "BODY_TIMEOUT_SECONDS",
    "IMAGE_FORMATS",
    "LOOPBACK_HOSTS",
    "MAX_BODY_BYTES",
    "ClientGone",
    "HostGuard",
    "InferenceService",
    "RequestError",
    "create_app",
    "decode_image",
    "host_allowed",
    "page_url",
    "parse_body",
    "parse_pixels",
    "run",
]

if TYPE_CHECKING:  # Starlette is imported when the app is created
    from starlette.requests import Request
    from starlette.responses import Response

DECIMALS = 3  # feature maps and the input image are rounded for JSON: ~6 characters per value
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


def _rounded(a: np.ndarray, decimals: int = DECIMALS) -> Any:
    """A float64 array rounded to ``decimals`` (for :func:`dumps`); with NaN or ±inf, nested lists with
    None in their place (strict JSON)."""
    # float64 first: a rounded float32 prints as a long number (0.123 → 0.12300000339746475)
    a = np.round(np.asarray(a, dtype=np.float64), decimals)
    return a if np.isfinite(a).all() else json_safe(a)


def dumps(answer: Any) -> bytes:
    """An answer as compact JSON bytes, NumPy arrays included, with orjson: the feature maps of one
    prediction are ~20,000 numbers, which ``json.dumps`` took 4.3 ms to print and orjson 0.4 ms (the same
    numbers, parsed back). Any NaN or infinity left would become ``null``: never a token a browser cannot parse."""
    return orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)


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
        if not np.isfinite(probs).all():
            raise RequestError(
                422,
                f"the model's output for this input is not finite ({int(np.isnan(probs).sum())} NaN of "
                f"{probs.size} probabilities): the checkpoint {p.path.name} is probably corrupt or diverged",
            )
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
        return dumps(result)


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


def create_app(
    predictor: Predictor,
    *,
    hosts: Iterable[str] = (),
    any_ip: bool = False,
    body_timeout: float = BODY_TIMEOUT_SECONDS,
) -> HostGuard:
    """The Starlette application serving ``predictor`` (load it once; it is shared by every request).

    Args:
        hosts: names the ``Host`` header may carry besides LOOPBACK_HOSTS (``run`` passes ``--host``).
            A test client must use one of them, e.g. ``TestClient(app, base_url="http://127.0.0.1")``.
        any_ip: also accept any IP literal as ``Host`` (``run`` sets it when bound to every interface).
        body_timeout: seconds a client has to send its whole request body (408 after that).
    """
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    service = InferenceService(predictor)
    static = _static_files()
    model_json = json.dumps(json_safe(service.model_info), separators=(",", ":"), allow_nan=False).encode()
    host_names = (*LOOPBACK_HOSTS, *hosts)

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
            payload = parse_body(await read_body(request, body_timeout))
            body = await run_in_threadpool(service.predict, payload)
        except RequestError as exc:
            return error(exc.status, exc.message)
        except ClientGone:  # nobody to answer: an empty response that uvicorn drops, and nothing logged
            return Response(status_code=400)
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
    from . import serve_explain  # the backward-pass routes: /api/explain, /api/learn, /learn (its docstring)

    routes += serve_explain.routes(service, static, error, lambda request: read_body(request, body_timeout))
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: internal_error})
    app.state.service = service

    return HostGuard(app, host_names, any_ip=any_ip)


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
    sock = _bind(host, port)
    bound = ipaddress.ip_address(sock.getsockname()[0])
    app = create_app(predictor, hosts=(host, str(bound)), any_ip=bound.is_unspecified)
    url = page_url(sock)
    if not bound.is_loopback:
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
