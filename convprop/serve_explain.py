"""The page's backward-pass routes: the "why" panel's maps and the ``/learn`` step-by-step view.

    POST /api/explain  {"png" | "pixels", "target": int | null, "layers": bool}
                       → the prediction, the target class, saliency |dE/dx| and Grad-CAM (28 × 28, each
                         scaled to [0, 1] for display, with the scale), gradient × input, and with
                         ``"layers": true`` every convolution's dE/dy maps
    POST /api/learn    {"png" | "pixels", "target", "channel", "row", "col", "input_row", "input_col"}
                       → ``explain_conv.conv_steps`` for the first convolution, every number unrounded
    GET  /learn        the step-by-step page (``convprop/web/learn.html``)

E is the target class's logit (default: the predicted class); the gradients are with respect to
the 28 × 28 picture in [0, 1] the network receives (the normalisation is differentiated through).
Bodies are read and checked as ``/api/predict``'s (the same size limit, content type and image
rules, ``serve.parse_body``); a bad extra field is a 422 naming the value, a missing or unknown one
a 400.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from . import serve
from .errors import ConvpropError
from .explain import explain
from .explain_conv import conv_steps

EXPLAIN_FIELDS = ("target", "layers")
LEARN_FIELDS = ("target", "channel", "row", "col", "input_row", "input_col", "in_channel")
SIGNIFICANT = 4  # display maps: 4 significant digits of their largest value


def _significant(a: np.ndarray, digits: int = SIGNIFICANT) -> list:
    """Rounded for JSON to ``digits`` significant digits of the largest magnitude (gradients are small)."""
    a = np.asarray(a, dtype=np.float64)
    top = float(np.abs(a).max()) if a.size else 0.0
    decimals = digits - 1 - int(np.floor(np.log10(top))) if top > 0 else 0
    return np.round(a, max(decimals, 0)).tolist()


def _unit(a: np.ndarray) -> tuple[np.ndarray, float]:
    """``a / max(a)`` (zeros stay zeros) and the scale, for a non-negative map."""
    top = float(a.max()) if a.size else 0.0
    return (a / top if top > 0 else np.zeros_like(a)), top


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a valid JSON number (send finite numbers only)")


def parse_request(body: bytes, fields: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The body → (the image part, checked by ``serve.parse_body``; the extra ``fields`` given)."""
    try:
        payload = json.loads(body, parse_constant=_refuse_constant)
    except RecursionError:
        raise serve.RequestError(400, "request body is not valid JSON: nested too deeply") from None
    except ValueError as exc:
        raise serve.RequestError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise serve.RequestError(400, f"request body must be a JSON object, got {type(payload).__name__}")
    extras = {key: payload.pop(key) for key in fields if key in payload}
    image = serve.parse_body(json.dumps(payload).encode())  # one image rule for every endpoint
    return image, extras


class ExplainService:
    """The backward-pass answers for the shared Predictor (safe from many threads: explain writes nothing)."""

    def __init__(self, inference: serve.InferenceService):
        self.inference = inference
        self.predictor = inference.predictor

    def _image(self, payload: dict[str, Any]) -> np.ndarray:
        p = self.predictor
        if "png" in payload:
            try:
                with self.inference.decoding:
                    return p.preprocess(serve.decode_image(payload["png"]))  # (1, H, W)
            except ValueError as exc:  # blank image
                raise serve.RequestError(422, str(exc)) from None
        return serve.parse_pixels(payload["pixels"], p.image_size)  # (1, H, W)

    def explain(self, payload: dict[str, Any], extras: dict[str, Any]) -> bytes:
        start = time.perf_counter()
        p = self.predictor
        x = self._image(payload)
        layers = extras.get("layers", False)
        if not isinstance(layers, bool):
            raise serve.RequestError(422, f'"layers" must be true or false, got {json.dumps(layers)[:40]}')
        try:
            result = explain(p.model, x, extras.get("target"), normalization=p.normalization)
        except ConvpropError as exc:
            raise serve.RequestError(422, str(exc)) from None
        logits = result.logits[0].astype(np.float64)
        if not np.isfinite(logits).all():
            raise serve.RequestError(
                422,
                f"the model's output for this input is not finite ({int(np.isnan(logits).sum())} NaN of "
                f"{logits.size} logits): the checkpoint {p.path.name} is probably corrupt or diverged",
            )
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        index, target = int(np.argmax(probs)), int(result.target[0])
        saliency, saliency_scale = _unit(np.abs(result.saliency).max(axis=0))  # (H, W): max over channels
        answer: dict[str, Any] = {
            "prediction": p.classes[index],
            "index": index,
            "target": target,
            "target_class": p.classes[target],
            "logit": float(logits[target]),
            "probabilities": probs.tolist(),
            "classes": list(p.classes),
            "input": serve._rounded(x[0]),
            "saliency": _significant(saliency),
            "saliency_scale": saliency_scale,
            "gradient_x_input": _significant(result.gradient_x_input.sum(axis=0)),  # (H, W)
            "grad_cam": None,
            "grad_cam_scale": 0.0,
            "grad_cam_layer": result.grad_cam_layer,
        }
        if result.grad_cam is not None:
            cam, answer["grad_cam_scale"] = _unit(result.grad_cam)
            answer["grad_cam"] = _significant(cam)
        if layers:
            answer["layer_gradients"] = [
                {"label": path, "shape": list(g.shape), "maps": _significant(g)}
                for path, g in result.layer_gradients.items()
            ]
        answer["milliseconds"] = round(1000 * (time.perf_counter() - start), 3)
        return serve.dumps(answer)

    def learn(self, payload: dict[str, Any], extras: dict[str, Any]) -> bytes:
        p = self.predictor
        x = self._image(payload)
        try:
            steps = conv_steps(p.model, x, normalization=p.normalization, **extras)
        except ConvpropError as exc:
            raise serve.RequestError(422, str(exc)) from None
        if not all(np.isfinite(v).all() for v in vars(steps).values() if isinstance(v, (np.ndarray, float))):
            raise serve.RequestError(
                422, f"the first convolution's numbers for this input are not finite: is {p.path.name} corrupt?"
            )
        answer = {
            key: (value.tolist() if isinstance(value, np.ndarray) else value) for key, value in vars(steps).items()
        }
        answer["pads"] = list(steps.pads)
        answer["target_class"] = p.classes[steps.target]
        answer["classes"] = list(p.classes)
        answer["input"] = serve._rounded(x[0])
        return serve.dumps(answer)


def routes(
    inference: serve.InferenceService,
    static: dict[str, tuple[bytes, str]],
    error: Any,
    read_body: Callable[[Any], Awaitable[bytes]],
) -> list:
    """The Starlette routes of this module, for ``serve.create_app``: ``error(status, message)`` makes
    its error response and ``read_body(request)`` reads a body under its limits, as for /api/predict."""
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import Response
    from starlette.routing import Route

    service = ExplainService(inference)

    def handler(method: Any, fields: tuple[str, ...]) -> Any:
        async def endpoint(request: Any) -> Any:
            try:
                image, extras = parse_request(await read_body(request), fields)
                body = await run_in_threadpool(method, image, extras)
            except serve.RequestError as exc:
                return error(exc.status, exc.message)
            except serve.ClientGone:  # nobody to answer, as for /api/predict
                return Response(status_code=400)
            return Response(body, media_type="application/json", headers=serve.SECURITY_HEADERS)

        return endpoint

    async def learn_page(request: Any) -> Any:
        body, ctype = static["learn.html"]
        return Response(body, media_type=ctype, headers=serve.SECURITY_HEADERS)

    return [
        Route("/api/explain", handler(service.explain, EXPLAIN_FIELDS), methods=["POST"]),
        Route("/api/learn", handler(service.learn, LEARN_FIELDS), methods=["POST"]),
        Route("/learn", learn_page),
    ]
