"""/api/explain, /api/learn and /learn through Starlette's TestClient: the numbers are the library's
(convprop.explain and functional.conv2d_backward on the same picture), and every bad field is a 4xx
that names it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from reference import assert_close
from starlette.testclient import TestClient
from test_serve import png_b64, save_untrained

from convprop import explain, functional
from convprop.inference import Predictor
from convprop.serve import MAX_BODY_BYTES, create_app

PIXELS = np.zeros((28, 28))
PIXELS[6:22, 12:16] = 1.0  # a "1"
PIXELS[6:9, 9:13] = 0.7


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    return Predictor(save_untrained(tmp_path_factory.mktemp("run")))


@pytest.fixture(scope="module")
def client(predictor):
    with TestClient(create_app(predictor), base_url="http://127.0.0.1") as c:  # a Host the guard accepts
        yield c


def post(client, path, body):
    text = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(path, content=text, headers={"content-type": "application/json"})


def test_explain_gives_the_library_s_maps_for_the_picture(client, predictor):
    r = post(client, "/api/explain", {"pixels": PIXELS.tolist(), "target": 3, "layers": True})
    assert r.status_code == 200, r.text
    answer = r.json()
    x = PIXELS[None].astype(np.float32)
    ref = explain.explain(predictor.model, x, 3, normalization=predictor.normalization)
    assert answer["target"] == 3 and answer["target_class"] == "3"
    saliency = np.abs(ref.saliency[0])
    assert answer["saliency_scale"] == pytest.approx(float(saliency.max()), rel=1e-6)
    assert_close(np.array(answer["saliency"]) * answer["saliency_scale"], saliency, "saliency", rtol=1e-3)
    assert_close(np.array(answer["grad_cam"]) * answer["grad_cam_scale"], ref.grad_cam, "grad-cam", rtol=1e-3)
    assert_close(answer["gradient_x_input"], ref.gradient_x_input[0], "gradient x input", rtol=1e-3)
    assert answer["grad_cam_layer"] == "3" == explain.conv_paths(predictor.model)[-1]
    assert [layer["label"] for layer in answer["layer_gradients"]] == ["0", "3"]
    assert answer["layer_gradients"][1]["shape"] == [32, 14, 14]
    assert sum(answer["probabilities"]) == pytest.approx(1.0)


def test_explain_defaults_to_the_predicted_class_and_takes_a_png(client):
    answer = post(client, "/api/explain", {"png": png_b64(7)}).json()
    assert answer["target"] == answer["index"]
    assert "layer_gradients" not in answer  # only when asked for
    assert np.array(answer["saliency"]).shape == (28, 28) and max(map(max, answer["saliency"])) == 1.0
    assert np.array(answer["grad_cam"]).shape == (28, 28)


def test_another_target_changes_the_maps(client):
    one = post(client, "/api/explain", {"pixels": PIXELS.tolist(), "target": 1}).json()
    two = post(client, "/api/explain", {"pixels": PIXELS.tolist(), "target": 8}).json()
    assert one["saliency"] != two["saliency"]


@pytest.mark.parametrize("pick", [dict(channel=5, row=10, col=13), dict(channel=0, row=0, col=27, target=2)])
def test_learn_numbers_are_conv2d_backward_s(client, predictor, pick):
    r = post(client, "/api/learn", {"pixels": PIXELS.tolist(), **pick})
    assert r.status_code == 200, r.text
    steps = r.json()
    conv = predictor.model[0]
    x = predictor.normalization(PIXELS[None, None].astype(np.float32))  # what the first convolution sees
    target = pick.get("target", steps["target"])
    dy = explain.explain(predictor.model, x, target).layer_gradients["0"]
    dx, dw, _ = functional.conv2d_backward(dy, x, conv.weight.data, padding=1)
    o, i, j = pick["channel"], pick["row"], pick["col"]
    y = functional.conv2d(x, conv.weight.data, conv.bias.data, padding=1)
    assert steps["path"] == "0" and (steps["channel"], steps["row"], steps["col"]) == (o, i, j)
    assert steps["value"] == pytest.approx(float(y[0, o, i, j]), rel=1e-5)
    assert steps["window_sum"] == pytest.approx(steps["value"], rel=1e-5)
    assert_close(steps["grad_output"], dy[0, o], "dE/dy", rtol=1e-6)
    assert_close(steps["grad_input"], dx[0, 0], "dE/dx", rtol=1e-6)
    assert steps["grad_input_value"] == pytest.approx(float(dx[0, 0, i, j]), rel=1e-6)
    assert sum(steps["contributions"]) == pytest.approx(steps["grad_input_value"], rel=1e-4, abs=1e-9)
    assert_close(steps["grad_kernel"], dw[o, 0], "dE/dK", rtol=1e-6)
    assert_close(steps["grad_kernel_rule"], dw[o, 0], "dE/dK by the rule", rtol=1e-4)
    assert_close(steps["rotated"], conv.weight.data[o, 0, ::-1, ::-1], "the kernel rotated by 180°")
    assert np.array(steps["x_padded"]).shape == (30, 30) and steps["pads"] == [1, 1]


def test_learn_page_is_served_with_its_script(client):
    page = client.get("/learn")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/learn.js"' in page.text and "http" not in page.text.replace("http-equiv", "")
    script = client.get("/static/learn.js")
    assert script.status_code == 200 and "/api/learn" in script.text
    assert "/static/why.js" in client.get("/").text


BAD = [  # (id, path, body, status, words the message must contain)
    ("target-range", "/api/explain", {"target": 10}, 422, ["target 10 is out of range", "10 classes"]),
    ("target-negative", "/api/explain", {"target": -1}, 422, ["target -1"]),
    ("target-bool", "/api/explain", {"target": True}, 422, ["target must be a class index", "True"]),
    ("target-string", "/api/explain", {"target": "3"}, 422, ["target must be a class index", "'3'"]),
    ("target-list", "/api/explain", {"target": [1, 2]}, 422, ["2 class indices for one image"]),
    ("layers-not-bool", "/api/explain", {"layers": 1}, 422, ['"layers" must be true or false', "1"]),
    ("unknown-key", "/api/explain", {"channel": 1}, 400, ["unknown key", "'channel'"]),
    ("channel-range", "/api/learn", {"channel": 16}, 422, ["channel 16 is out of range 0..15"]),
    ("row-range", "/api/learn", {"row": 28}, 422, ["row 28 is out of range 0..27"]),
    ("col-float", "/api/learn", {"col": 1.5}, 422, ["col must be an int", "1.5"]),
    ("input-row", "/api/learn", {"input_row": -2}, 422, ["input_row -2"]),
    ("learn-target", "/api/learn", {"target": 11}, 422, ["target 11 is out of range"]),
    ("learn-unknown", "/api/learn", {"layers": True}, 400, ["unknown key", "'layers'"]),
]


@pytest.mark.parametrize(("path", "extra", "status", "words"), [pytest.param(*b[1:], id=b[0]) for b in BAD])
def test_bad_fields_are_4xx_naming_the_value(client, path, extra, status, words):
    r = post(client, path, {"pixels": PIXELS.tolist(), **extra})
    assert r.status_code == status, r.text
    for word in words:
        assert word in r.json()["error"]


@pytest.mark.parametrize("path", ["/api/explain", "/api/learn"])
def test_the_image_rules_and_limits_of_api_predict_hold(client, path):
    assert post(client, path, "not json").status_code == 400
    assert post(client, path, "[1]").status_code == 400
    assert post(client, path, {"target": 1}).status_code == 400  # no picture
    assert post(client, path, {"pixels": [[0.5] * 28] * 27}).status_code == 422
    assert post(client, path, {"pixels": [[2.0] * 28] * 28}).status_code == 422
    assert post(client, path, b"{" + b" " * (MAX_BODY_BYTES + 1) + b"}").status_code == 413
    body = json.dumps({"pixels": PIXELS.tolist()})
    wrong_type = client.post(path, content=body, headers={"content-type": "text/plain"})
    assert wrong_type.status_code == 415
    assert client.get(path).status_code == 405


def test_a_non_finite_model_is_a_422_not_nan(tmp_path):
    predictor = Predictor(save_untrained(tmp_path))
    predictor.model[0].bias.data[...] = np.nan  # a diverged checkpoint
    with TestClient(create_app(predictor), base_url="http://127.0.0.1") as c:
        for path in ("/api/explain", "/api/learn"):
            r = post(c, path, {"pixels": PIXELS.tolist()})
            assert r.status_code == 422, r.text
            assert "not finite" in r.json()["error"]
