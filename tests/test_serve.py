"""convprop serve: the JSON API through Starlette's TestClient, every kind of bad input, concurrency, and the CLI.

The model is untrained (built and saved in a temporary directory): answers only have to be
well-formed and identical between sequential and concurrent requests, not correct.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from digit_images import render_digit
from starlette.testclient import TestClient

from convprop import checkpoint
from convprop.inference import Predictor
from convprop.models import build_model
from convprop.serve import MAX_BODY_BYTES, create_app

CLASSES = [str(d) for d in range(10)]
LOCAL = "http://127.0.0.1:8000"  # the Host header the server accepts (TestClient's default "testserver" is refused)


def save_untrained(directory, image_size=(28, 28)):
    """A lenet checkpoint with the metadata ``Predictor`` reads, as ``convprop train`` writes it."""
    model = build_model("lenet", 1, image_size, 10, rng=0)
    meta = {
        "dataset": "mnist-5k",
        "classes": json.dumps(CLASSES),
        "image_size": json.dumps(list(image_size)),
        "normalization": json.dumps({"mean": [0.1307], "std": [0.3081]}),
        "epoch": "1",
    }
    return checkpoint.save(model, directory / "model.safetensors", metadata=meta)


def png_b64(digit: int, *, data_url: bool = False, fmt: str = "PNG", **kwargs) -> str:
    buf = io.BytesIO()
    render_digit(digit, **kwargs).save(buf, format=fmt)
    encoded = base64.b64encode(buf.getvalue()).decode()
    return f"data:image/{fmt.lower()};base64,{encoded}" if data_url else encoded


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_untrained(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def app(ckpt):
    return create_app(Predictor(ckpt))


@pytest.fixture(scope="module")
def client(app):
    # raise_server_exceptions=True (the default): a user mistake that reached the 500 handler fails the test
    with TestClient(app, base_url=LOCAL) as c:
        yield c


def post_json(client, body, **headers):
    return client.post(
        "/api/predict",
        content=body if isinstance(body, (str, bytes)) else json.dumps(body),
        headers={"content-type": "application/json", **headers},
    )


# --- good requests -----------------------------------------------------------------------------


def check_answer(answer: dict) -> None:
    assert answer["classes"] == CLASSES
    probs = np.array(answer["probabilities"])
    assert probs.shape == (10,) and np.all(probs >= 0) and abs(probs.sum() - 1) < 1e-5
    assert answer["prediction"] == CLASSES[int(np.argmax(probs))] == CLASSES[answer["index"]]
    x = np.array(answer["input"])
    assert x.shape == (28, 28) and x.min() >= 0 and x.max() <= 1
    shapes = [tuple(np.array(layer["maps"]).shape) for layer in answer["feature_maps"]]
    assert shapes == [(16, 28, 28), (32, 14, 14)]
    assert [tuple(layer["shape"]) for layer in answer["feature_maps"]] == shapes
    assert all(layer["label"].startswith(f"conv{i + 1}") for i, layer in enumerate(answer["feature_maps"]))
    assert answer["milliseconds"] > 0


@pytest.mark.parametrize("data_url", [False, True], ids=["plain-base64", "data-url"])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_predict_image(client, data_url, fmt):
    r = post_json(client, {"png": png_b64(7, data_url=data_url, fmt=fmt)})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    answer = r.json()
    check_answer(answer)
    x = np.array(answer["input"])
    assert x[0].max() == 0 and x[:, 0].max() == 0  # MNIST-style: ink centred, the border dark
    assert x.max() == pytest.approx(1.0, abs=1e-3)


def test_predict_image_matches_predictor(client, ckpt):
    """The server's answer is Predictor's, with the canvas's white-on-black drawing inverted as needed."""
    predictor = Predictor(ckpt)
    image = render_digit(3, size=(280, 280), background="black", ink="white")
    expected = predictor.probabilities(predictor.preprocess(np.asarray(image)))[0]
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    answer = post_json(client, {"png": base64.b64encode(buf.getvalue()).decode()}).json()
    np.testing.assert_allclose(answer["probabilities"], expected, rtol=1e-6, atol=1e-7)


def test_predict_pixels_skips_preprocessing(client, ckpt):
    pixels = np.zeros((28, 28))
    pixels[4:24, 13:16] = 1.0  # a "1"
    answer = post_json(client, {"pixels": pixels.tolist()}).json()
    check_answer(answer)
    np.testing.assert_array_equal(answer["input"], pixels)  # unchanged: no preprocessing
    predictor = Predictor(ckpt)
    np.testing.assert_allclose(answer["probabilities"], predictor.probabilities(pixels[None])[0], rtol=1e-6, atol=1e-7)


def test_pixels_accept_integers_and_edge_values(client):
    pixels = [[0] * 28 for _ in range(28)]
    pixels[10][10] = 1
    pixels[11][11] = 0.5
    assert post_json(client, {"pixels": pixels}).status_code == 200


def test_model_description(client):
    r = client.get("/api/model")
    assert r.status_code == 200
    model = r.json()
    assert model["classes"] == CLASSES and model["image_size"] == [28, 28]
    assert [layer["type"] for layer in model["layers"]][:3] == ["Conv2d", "ReLU", "MaxPool2d"]
    assert model["layers"][0]["output_shape"] == [16, 28, 28] and model["layers"][-1]["output_shape"] == [10]
    assert model["parameters"] == sum(layer["parameters"] for layer in model["layers"]) > 0
    assert model["filters"]["shape"] == [16, 1, 3, 3]
    assert np.array(model["filters"]["values"]).shape == (16, 1, 3, 3)


@pytest.mark.parametrize(
    "path, content_type, needle",
    [
        ("/", "text/html", 'id="draw"'),
        ("/static/app.js", "text/javascript", "/api/predict"),
        ("/static/style.css", "text/css", "#prediction"),
    ],
)
def test_static_files(client, path, content_type, needle):
    r = client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(content_type)
    assert needle in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]


def test_page_loads_nothing_from_other_hosts(client):
    page = client.get("/").text + client.get("/static/app.js").text + client.get("/static/style.css").text
    assert "http://" not in page and "https://" not in page and "//cdn" not in page


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("GET", "/static/../serve.py", 404),
        ("GET", "/static/nothing.js", 404),
        ("GET", "/nothing", 404),
        ("GET", "/api/predict", 405),
        ("POST", "/api/model", 405),
    ],
)
def test_unknown_routes_answer_json(client, method, path, status):
    r = client.request(method, path)
    assert r.status_code == status
    assert "error" in r.json()


# --- bad requests: 4xx with a clear message, never a 500 ---------------------------------------


def pixels_with(value, row: int = 3, col: int = 5) -> str:
    rows = [["0"] * 28 for _ in range(28)]
    rows[row][col] = value
    return '{"pixels": [' + ",".join("[" + ",".join(r) + "]" for r in rows) + "]}"


BAD_BODIES = [  # (id, body, status, words the message must contain)
    ("not-json", "this is not JSON", 400, "not valid JSON"),
    ("empty", "", 400, "not valid JSON"),
    ("not-utf8", b"\xff\xfe{", 400, "not valid JSON"),
    ("deep", "[" * 100_000, 400, "nested too deeply"),
    ("array", "[1, 2]", 400, "must be a JSON object"),
    ("neither", "{}", 400, "neither"),
    ("both", '{"png": "", "pixels": []}', 400, "both"),
    ("unknown-key", '{"image": "abc"}', 400, "unknown key(s) 'image'"),
    ("png-number", '{"png": 7}', 400, "must be a base64 string"),
    ("png-not-base64", '{"png": "not base64!"}', 400, "not valid base64"),
    ("png-bad-padding", '{"png": "abc"}', 400, "not valid base64"),
    ("png-empty", '{"png": ""}', 400, "empty"),
    ("png-data-url-not-base64", '{"png": "data:image/png,abcd"}', 400, "must be base64-encoded"),
    ("png-not-an-image", json.dumps({"png": base64.b64encode(b"hello, world").decode()}), 400, "is not an image"),
    ("png-truncated", json.dumps({"png": png_b64(4)[:800]}), 400, "not a readable image"),
    ("png-blank", json.dumps({"png": png_b64(0, ink="white")}), 422, "blank"),
    ("pixels-not-list", '{"pixels": "zeros"}', 422, "must be 28 rows of 28 numbers"),
    ("pixels-too-few-rows", '{"pixels": [[0.5]]}', 422, "got a list of 1"),
    ("pixels-flat", json.dumps({"pixels": [0.0] * 784}), 422, "got a list of 784"),
    ("pixels-row-not-list", json.dumps({"pixels": [0.0] * 28}), 422, "row 0 must be a list of 28 numbers, got float"),
    ("pixels-short-row", json.dumps({"pixels": [[0.0] * 28] * 27 + [[0.0] * 27]}), 422, "row 27 must be a list of 28"),
    ("pixels-3d", json.dumps({"pixels": [[[0.0]] * 28] * 28}), 422, "[0][0] must be a number"),
    ("pixels-string", pixels_with('"0.5"'), 422, '[3][5] must be a number in [0, 1], got "0.5"'),
    ("pixels-null", pixels_with("null"), 422, "got null"),
    ("pixels-bool", pixels_with("true"), 422, "got true"),
    ("pixels-nan", pixels_with("NaN"), 400, "NaN is not a valid JSON number"),
    ("pixels-infinity", pixels_with("-Infinity"), 400, "-Infinity is not a valid JSON number"),
    ("pixels-overflow", pixels_with("1e400"), 422, "[3][5] is inf (an infinite value)"),
    ("pixels-huge-int", pixels_with("1" + "0" * 400), 422, "[3][5] is an integer of 401 digits"),
    ("pixels-int-2", pixels_with("2"), 422, "[3][5] is 2"),
    ("pixels-too-many-digits", pixels_with("1" * 5000), 400, "not valid JSON"),
    ("pixels-object", pixels_with('{"v": 1}'), 422, '[3][5] must be a number in [0, 1], got {"v": 1}'),
    ("pixels-nested", pixels_with("[0.5]"), 422, "[3][5] must be a number in [0, 1], got [0.5]"),
    ("pixels-above-1", pixels_with("1.5"), 422, "[3][5] is 1.5"),
    ("pixels-negative", pixels_with("-0.25", 0, 27), 422, "[0][27] is -0.25"),
]


@pytest.mark.parametrize("body, status, words", [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES])
def test_bad_input_is_a_clear_4xx(client, body, status, words):
    r = post_json(client, body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert words in error
    assert "Traceback" not in error and "BytesIO" not in error


def test_image_too_large_in_pixels(client):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (5000, 10)).save(buf, format="PNG")  # tiny file, too wide: refused before decoding
    r = post_json(client, {"png": base64.b64encode(buf.getvalue()).decode()})
    assert r.status_code == 413 and "5000 × 10 pixels" in r.json()["error"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type(client, content_type):
    headers = {"content-type": content_type} if content_type else {}
    r = client.post("/api/predict", content=json.dumps({"png": png_b64(1)}), headers=headers)
    assert r.status_code == 415
    assert "Content-Type must be application/json" in r.json()["error"]


def test_content_type_with_charset_is_fine(client):
    assert (
        post_json(client, {"png": png_b64(1)}, **{"content-type": "application/json; charset=utf-8"}).status_code == 200
    )


def test_body_over_1_mb_is_413(client):
    body = json.dumps({"png": "A" * MAX_BODY_BYTES})
    r = post_json(client, body)
    assert r.status_code == 413
    assert f"limit is {MAX_BODY_BYTES:,} bytes" in r.json()["error"]


def test_body_over_1_mb_without_content_length_is_413(client):
    """A chunked upload declares no length: the server counts what actually arrives."""

    def chunks():
        yield b'{"png": "'
        for _ in range(20):
            yield b"A" * 65536

    r = client.post("/api/predict", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert r.status_code == 413
    assert "over the limit" in r.json()["error"]


def test_lying_content_length_is_caught(app):
    """A small declared length with a big body: the actual body is counted too (raw ASGI, no client to fix it)."""
    import asyncio

    body = json.dumps({"png": "A" * (MAX_BODY_BYTES + 10)}).encode()
    messages = [
        {"type": "http.request", "body": body[i : i + 65536], "more_body": i + 65536 < len(body)}
        for i in range(0, len(body), 65536)
    ]
    sent = []

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/predict",
        "raw_path": b"/api/predict",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("test", 80),
        "client": ("test", 1),
        "root_path": "",
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert "over the limit" in json.loads(sent[1]["body"])["error"]


@pytest.mark.parametrize("length", ["abc", "-5"])
def test_invalid_content_length(app, length):
    with TestClient(app, base_url=LOCAL) as c:
        r = c.post(
            "/api/predict", content=b"{}", headers={"content-type": "application/json", "content-length": length}
        )
    assert r.status_code == 400 and "Content-Length" in r.json()["error"]


def test_unexpected_errors_are_a_json_500_without_traceback(ckpt, monkeypatch):
    app = create_app(Predictor(ckpt))
    service = app.state.service

    def broken(images):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(service.predictor, "analyse", broken)
    with TestClient(app, base_url=LOCAL, raise_server_exceptions=False) as c:
        r = post_json(c, {"png": png_b64(2)})
    assert r.status_code == 500
    assert r.json() == {"error": "internal server error (details are in the server's log)"}
    assert "secret" not in r.text and "Traceback" not in r.text


# --- concurrency ---------------------------------------------------------------------------------


def test_concurrent_requests_match_sequential_ones(ckpt):
    """24 requests from 8 threads, 10 different digits: the same answers as one at a time, with inferences
    really running at once (no lock: the first two concurrent ones wait for each other at a barrier)."""
    app = create_app(Predictor(ckpt))
    predictor = app.state.service.predictor
    active, peak, guard = [0], [0], threading.Lock()
    meet, concurrent_phase = threading.Barrier(2, timeout=20), threading.Event()
    original = predictor.analyse

    def analyse_counting_overlap(images):
        with guard:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            if concurrent_phase.is_set() and not meet.broken and meet.n_waiting < 2:
                with contextlib.suppress(threading.BrokenBarrierError):
                    meet.wait()  # returns only if a second inference runs meanwhile
            return original(images)
        finally:
            with guard:
                active[0] -= 1

    predictor.analyse = analyse_counting_overlap
    bodies = [{"png": png_b64(d, size=(100 + 7 * d, 140), offset=(d - 5, 0))} for d in range(10)]
    jobs = [bodies[i % 10] for i in range(24)]
    with TestClient(app, base_url=LOCAL) as c:
        sequential = [post_json(c, b).json() for b in bodies]
        concurrent_phase.set()
        with ThreadPoolExecutor(max_workers=8) as pool:
            concurrent = list(pool.map(lambda b: post_json(c, b), jobs))
    assert len({tuple(a["probabilities"]) for a in sequential}) == 10  # different digits, different answers
    assert peak[0] >= 2 and not meet.broken, "two inferences ran at once"
    for i, r in enumerate(concurrent):
        assert r.status_code == 200, r.text
        got, want = r.json(), sequential[i % 10]
        assert got["prediction"] == want["prediction"]
        assert got["probabilities"] == want["probabilities"]
        assert got["input"] == want["input"]
        assert got["feature_maps"] == want["feature_maps"]
