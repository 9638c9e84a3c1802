"""The "why" panel and /learn in a real browser (Debian's headless Chromium, driven by Playwright).

Draw a digit → the why panel shows heat maps that are not empty; click another class's bar → the panel
explains that class instead; /learn shows the first convolution's numbers and they equal a direct
computation with ``functional.conv2d`` / ``conv2d_backward`` on the same picture. Screenshots go to
``test-artifacts/`` (copied into docs/images/ for the README). Skipped like tests/test_browser.py when
/usr/bin/chromium is missing.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from test_browser import ARTIFACTS, PAINTED, SEVEN, browser, draw, problems, sync_api  # noqa: F401  (fixtures)
from test_serve import save_untrained

from convprop import explain, functional
from convprop.inference import Predictor
from convprop.serve import decode_image

expect = sync_api.expect


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``convprop serve`` on 127.0.0.1 and a free port: (URL, checkpoint path)."""
    ckpt = save_untrained(tmp_path_factory.mktemp("run"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "convprop", "serve", str(ckpt), "--port", "0"],
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url, deadline = None, time.monotonic() + 60
    for line in proc.stdout:
        if line.startswith("open http://"):
            url = line.split()[1]
            break
        if time.monotonic() > deadline:
            break
    if url is None:
        proc.kill()
        pytest.fail(f"convprop serve printed no address; stderr:\n{proc.stderr.read()}")
    yield url, ckpt
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)


@pytest.fixture
def page(browser, served, problems):  # noqa: F811  (browser and problems are fixtures from test_browser)
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.goto(served[0])
    page.wait_for_selector('[data-testid="prob-9"]')
    yield page
    context.close()
    assert problems == []


PIXELS = "canvas => canvas.toDataURL()"


def settle(page, pending: list[int]) -> None:
    """Wait (at most 20 s) until no request of the page is in flight for three polls in a row."""
    quiet = 0
    for _ in range(200):
        page.wait_for_timeout(100)
        quiet = quiet + 1 if pending[0] == 0 else 0
        if quiet == 3:
            return
    pytest.fail(f"{pending[0]} request(s) still in flight after 20 s")


def test_why_panel_follows_the_drawing_and_the_chosen_class(page):
    pending = [0]
    page.on("request", lambda r: pending.__setitem__(0, pending[0] + 1))
    page.on("requestfinished", lambda r: pending.__setitem__(0, pending[0] - 1))
    with page.expect_response("**/api/explain"):
        draw(page, SEVEN)
    settle(page, pending)  # the last stroke's prediction and explanation have arrived
    panel = page.get_by_test_id("why-panel")
    predicted = int(page.get_by_test_id("prediction").text_content())
    expect(panel).to_have_attribute("data-target", str(predicted))  # the predicted class, until a bar is clicked
    for name in ("why-saliency", "why-gradcam", "why-gxi"):
        canvas = page.get_by_test_id(name)
        assert canvas.evaluate(PAINTED)
        assert float(canvas.get_attribute("data-heat")) > 0, f"{name} shows no heat"
    before = page.get_by_test_id("why-saliency").evaluate(PIXELS)

    other = (predicted + 1) % 10
    with page.expect_response("**/api/explain") as answer:
        page.get_by_test_id(f"prob-{other}").click()
    assert json.loads(answer.value.request.post_data)["target"] == other
    expect(panel).to_have_attribute("data-target", str(other))
    expect(page.get_by_test_id("why-note")).to_contain_text("chosen")
    expect(page.get_by_test_id(f"prob-{other}")).to_have_class("prob why-target")
    assert page.get_by_test_id("why-saliency").evaluate(PIXELS) != before  # another class, another map
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve_why.png"), full_page=True)

    with page.expect_response("**/api/explain"):  # clicking it again goes back to the prediction
        page.get_by_test_id(f"prob-{other}").click()
    expect(panel).to_have_attribute("data-target", str(predicted))


def cells(page, testid: str) -> np.ndarray:
    rows = page.eval_on_selector_all(
        f'[data-testid="{testid}"] tr', "trs => trs.map(tr => [...tr.children].map(td => td.textContent))"
    )
    return np.array([[float(v) for v in row] for row in rows])


def number(page, testid: str) -> float:
    return float(page.get_by_test_id(testid).text_content())


def test_learn_shows_the_numbers_of_a_direct_computation(page, served):
    pending = [0]
    page.on("request", lambda r: pending.__setitem__(0, pending[0] + 1))
    page.on("requestfinished", lambda r: pending.__setitem__(0, pending[0] - 1))
    with page.expect_response("**/api/explain"):
        draw(page, SEVEN)  # the picture travels to /learn in sessionStorage
    settle(page, pending)  # leaving the page would abort a debounced prediction still on its way
    with page.expect_response("**/api/learn") as answer:
        page.get_by_test_id("learn-link").click()
    assert answer.value.ok
    box = page.get_by_test_id("learn-pick").bounding_box()
    i, j = 9, 17  # click the middle of pixel (9, 17) of the 28 x 28 picture
    with page.expect_response("**/api/learn") as answer:
        page.mouse.click(box["x"] + (j + 0.5) * box["width"] / 28, box["y"] + (i + 0.5) * box["height"] / 28)
    request = json.loads(answer.value.request.post_data)
    steps = answer.value.json()
    assert (request["row"], request["col"]) == (i, j)
    page.wait_for_function("document.body.dataset.ready >= '2'")

    predictor = Predictor(served[1])
    x01 = predictor.preprocess(decode_image(request["png"]))  # (1, 28, 28): the server's own preprocessing
    x = predictor.normalization(x01[None])  # (1, 1, 28, 28): what the first convolution sees
    conv, target, o = predictor.model[0], steps["target"], request["channel"]
    weight, bias = conv.weight.data, conv.bias.data
    y = functional.conv2d(x, weight, bias, padding=1)
    dy = explain.explain(predictor.model, x, target).layer_gradients["0"]  # (1, 16, 28, 28) = dE/dy
    dx, dw, _ = functional.conv2d_backward(dy, x, weight, padding=1)
    x_padded = np.pad(x[0, 0], 1)  # (30, 30)
    dy_full = np.pad(dy[0, o], 2)  # (32, 32): dE/dy with K - 1 = 2 zeros around it

    def shown(testid, expected):  # four significant digits on the page
        np.testing.assert_allclose(cells(page, testid), expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())

    shown("fwd-window", x_padded[i : i + 3, j : j + 3])
    shown("fwd-kernel", weight[o, 0])
    assert number(page, "fwd-value") == pytest.approx(float(y[0, o, i, j]), rel=1e-3)
    assert number(page, "fwd-sum") == pytest.approx(float(y[0, o, i, j]), rel=1e-3)
    shown("bwd-rotated", weight[o, 0, ::-1, ::-1])
    shown("bwd-window", dy_full[i + 1 : i + 4, j + 1 : j + 4])
    assert number(page, "bwd-value") == pytest.approx(float(dx[0, 0, i, j]), rel=1e-3)
    assert number(page, "bwd-sum") == pytest.approx(float(dx[0, 0, i, j]), rel=1e-3)
    shown("dk-library", dw[o, 0])
    shown("dk-rule", dw[o, 0])
    assert page.get_by_test_id("bwd-dx").evaluate(PAINTED) and page.get_by_test_id("bwd-dy").evaluate(PAINTED)
    page.screenshot(path=str(ARTIFACTS / "learn.png"), full_page=True)


def test_learn_works_with_its_own_drawing(browser, served, problems):  # noqa: F811
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.goto(served[0] + "learn")
    expect(page.get_by_test_id("learn-status")).to_contain_text("Draw a digit")
    box = page.get_by_test_id("learn-draw").bounding_box()
    with page.expect_response("**/api/learn") as answer:
        page.mouse.move(box["x"] + 100, box["y"] + 60)
        page.mouse.down()
        page.mouse.move(box["x"] + 110, box["y"] + 220, steps=8)
        page.mouse.up()
    assert answer.value.ok
    assert base64.b64decode(json.loads(answer.value.request.post_data)["png"].split(",")[1])[:4] == b"\x89PNG"
    expect(page.get_by_test_id("fwd-value")).not_to_be_empty()
    context.close()
    assert problems == []
