"""convprop serve's guards: the Host header (DNS rebinding), a body that never arrives, a client that
hangs up, a model whose output is not finite, a model without a convolution, and connections that
survive a refused request on a real uvicorn server (127.0.0.1, a free port, a bounded request loop)."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import socket
import threading

import numpy as np
import pytest
from starlette.testclient import TestClient
from test_serve import LOCAL, check_answer, png_b64, post_json
from test_serve import ckpt as ckpt  # a fixture, used by name below

from convprop import checkpoint, nn
from convprop.inference import Predictor
from convprop.serve import create_app, host_allowed


@pytest.fixture(scope="module")
def app(ckpt):
    return create_app(Predictor(ckpt), hosts=("digits.lan",))


def strict(text: str):
    def refuse(token):
        raise AssertionError(f"the answer holds the non-JSON token {token}")

    return json.loads(text, parse_constant=refuse)


# --- the Host header ---------------------------------------------------------------------------------

HOSTS = [  # (Host header, any_ip, allowed)
    (None, False, True),  # no header: not a browser, nothing to rebind
    ("127.0.0.1", False, True),
    ("127.0.0.1:8000", False, True),
    ("localhost:8000", False, True),
    ("LOCALHOST", False, True),
    ("[::1]:8000", False, True),
    ("[::1]", False, True),
    ("digits.lan:8000", False, True),  # the --host name the server was started with
    ("evil.example", False, False),
    ("evil.example:8000", False, False),
    ("localhost.evil.example", False, False),
    ("127.0.0.1.nip.io:8000", False, False),
    ("192.168.1.5:8000", False, False),
    ("192.168.1.5:8000", True, True),  # bound to every interface: an IP literal cannot be rebound
    ("[fe80::1]:8000", True, True),
    ("evil.example", True, False),
    ("127.0.0.1:abc", False, False),
    ("[::1]x", False, False),
    ("", False, False),
]


@pytest.mark.parametrize(("host", "any_ip", "allowed"), HOSTS)
def test_host_allowed(host, any_ip, allowed):
    assert host_allowed(host, ("127.0.0.1", "localhost", "::1", "digits.lan"), any_ip=any_ip) is allowed


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "192.168.1.5"])
@pytest.mark.parametrize("path", ["/", "/api/model", "/api/predict", "/no/such/page"])
def test_a_foreign_host_header_is_a_400_on_every_route(app, host, path):
    with TestClient(app, base_url=LOCAL) as c:
        r = c.request("POST" if path == "/api/predict" else "GET", path, headers={"host": host})
    assert r.status_code == 400 and r.headers["content-type"] == "application/json"
    assert f"Host {host!r} is not this server" in r.json()["error"]


@pytest.mark.parametrize(
    "base", ["http://localhost:8000", "http://127.0.0.1", "http://[::1]:8000", "http://digits.lan"]
)
def test_the_servers_own_names_are_served(app, base):
    with TestClient(app, base_url=base) as c:
        assert c.get("/api/model").status_code == 200


def run_asgi(app, receive, *, headers=()):
    """One POST /api/predict straight through the ASGI interface; returns the messages sent."""
    sent = []

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/predict",
        "raw_path": b"/api/predict",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"), *headers],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "root_path": "",
    }
    asyncio.run(app(scope, receive, send))
    return sent


def test_two_host_headers_are_refused(app):
    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    sent = run_asgi(app, receive, headers=[(b"host", b"evil.example")])
    assert sent[0]["status"] == 400 and "several Host headers" in json.loads(sent[1]["body"])["error"]


# --- a body that does not arrive, a client that hangs up -----------------------------------------------


def test_a_body_that_never_arrives_is_a_408(ckpt):
    slow = create_app(Predictor(ckpt), body_timeout=0.2)
    messages = [{"type": "http.request", "body": b'{"pixels": [', "more_body": True}]

    async def receive():
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)  # the rest never comes (cancelled by the deadline)
        raise AssertionError("unreachable")

    sent = run_asgi(slow, receive)
    assert sent[0]["status"] == 408
    assert json.loads(sent[1]["body"]) == {
        "error": "request body did not arrive within 0.2 seconds (12 bytes received)"
    }


def test_a_client_that_hangs_up_is_not_an_error(app, caplog):
    messages = [
        {"type": "http.request", "body": b'{"pixels": [', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive():
        return messages.pop(0)

    with caplog.at_level(logging.DEBUG):
        sent = run_asgi(app, receive)  # no exception escapes
    assert sent[0]["status"] != 500
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


# --- what the model answers ------------------------------------------------------------------------------


def test_a_non_finite_model_output_is_a_clear_422_not_nan(ckpt, monkeypatch):
    app = create_app(Predictor(ckpt))
    predictor = app.state.service.predictor
    real = predictor.analyse

    def nan_output(x):
        probs, maps = real(x)
        return np.full_like(probs, np.nan), maps

    monkeypatch.setattr(predictor, "analyse", nan_output)
    with TestClient(app, base_url=LOCAL) as c:
        r = post_json(c, {"png": png_b64(3)})
    assert r.status_code == 422
    assert "the model's output for this input is not finite (10 NaN of 10 probabilities)" in strict(r.text)["error"]


def test_non_finite_feature_maps_are_sent_as_null(ckpt, monkeypatch):
    app = create_app(Predictor(ckpt))
    predictor = app.state.service.predictor
    real = predictor.analyse

    def inf_maps(x):
        probs, maps = real(x)
        label, first = maps[0]
        first = first.copy()
        first[0, 0, 0], first[0, 0, 1] = np.inf, np.nan
        return probs, [(label, first), *maps[1:]]

    monkeypatch.setattr(predictor, "analyse", inf_maps)
    with TestClient(app, base_url=LOCAL) as c:
        r = post_json(c, {"png": png_b64(3)})
    assert r.status_code == 200
    answer = strict(r.text)
    check_answer(answer)
    assert answer["feature_maps"][0]["maps"][0][0][:2] == [None, None]


def test_a_model_without_a_convolution_serves_with_no_feature_maps(tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10, rng=0))
    meta = {"classes": json.dumps([str(d) for d in range(10)]), "image_size": "[28, 28]"}
    path = checkpoint.save(model, tmp_path / "model.safetensors", metadata=meta)
    with TestClient(create_app(Predictor(path)), base_url=LOCAL) as c:
        info = c.get("/api/model").json()
        r = post_json(c, {"pixels": [[0.0] * 28] * 28})
    assert info["filters"] is None  # the page draws no filters
    assert [layer["type"] for layer in info["layers"]] == ["Flatten", "Linear"]
    assert r.status_code == 200 and r.json()["feature_maps"] == []
    probs = np.array(r.json()["probabilities"])
    assert probs.shape == (10,) and np.isfinite(probs).all() and abs(probs.sum() - 1) < 1e-5


# --- a real server: the connection survives a refused request ---------------------------------------------


@pytest.fixture(scope="module")
def server(ckpt):
    """uvicorn in a thread on 127.0.0.1 and a free port; yields (host, port), then stops."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(Predictor(ckpt), body_timeout=1.0), log_level="warning", access_log=False, lifespan="off"
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):  # bounded wait for startup
        if srv.started:
            break
        threading.Event().wait(0.05)
    assert srv.started
    yield "127.0.0.1", port
    srv.should_exit = True
    thread.join(timeout=10)
    sock.close()


BAD_THEN_GOOD = [  # bodies refused with a 4xx on a connection that then answers a good request
    ('{"pixels": [[' + "1" + "0" * 400 + "]]}", 422),
    ('{"pixels": NaN}', 400),
    ('{"pixels": true}', 422),
    ("[" * 5000, 400),
    ('"just a string"', 400),
]


@pytest.mark.parametrize(("body", "status"), BAD_THEN_GOOD)
def test_the_connection_survives_a_refused_request(server, body, status):
    host, port = server
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        headers = {"content-type": "application/json"}
        conn.request("POST", "/api/predict", body=body, headers=headers)
        first = conn.getresponse()
        assert first.status == status and "error" in json.loads(first.read())
        local = conn.sock.getsockname()
        conn.request("POST", "/api/predict", body=json.dumps({"png": png_b64(5)}), headers=headers)
        second = conn.getresponse()
        assert second.status == 200 and conn.sock.getsockname() == local  # the same connection
        check_answer(strict(second.read().decode()))
    finally:
        conn.close()


def test_a_client_that_hangs_up_mid_body_leaves_no_traceback(server, caplog):
    host, port = server
    with caplog.at_level(logging.INFO), socket.create_connection((host, port), timeout=10) as s:
        s.sendall(
            b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 5000\r\n\r\n{"pixels": ['
        )
    conn = http.client.HTTPConnection(host, port, timeout=30)  # the server still answers
    conn.request("GET", "/api/model")
    assert conn.getresponse().status == 200
    conn.close()
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]


def test_a_slow_body_on_the_real_server_is_a_408(server):
    host, port = server
    with socket.create_connection((host, port), timeout=30) as s:
        s.sendall(
            b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 5000\r\n\r\n{"pixels": ['
        )
        received = b""
        for _ in range(50):  # bounded: headers and body may come in separate segments
            chunk = s.recv(65536)
            received += chunk
            if not chunk or received.endswith(b"}"):
                break
        answer = received.decode()
    assert answer.startswith("HTTP/1.1 408 ") and "did not arrive within 1 seconds" in answer
