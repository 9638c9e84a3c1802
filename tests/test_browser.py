"""convprop serve in a real browser: headless Chromium (Debian's) driven by Playwright.

Starts ``python -m convprop serve CKPT --port 0`` as a user would, opens the page, draws a stroke
with the mouse, and checks what the page shows: a prediction, ten probabilities that add up to 1,
feature maps and filters actually drawn. Then uploads an image and clears. A screenshot goes to
``test-artifacts/serve.png``. Skipped only when /usr/bin/chromium is missing (``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from digit_images import render_digit

from convprop import checkpoint
from convprop.models import build_model

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

if not CHROMIUM.exists():
    pytest.skip(f"Chromium not installed: {CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright for Python is not installed (pip install playwright)"
)
expect = sync_api.expect

SEVEN = [(60, 60), (220, 60), (200, 110), (170, 170), (140, 240)]  # a "7": the bar, then the diagonal (canvas px)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The real server on 127.0.0.1 and a free port; yields its URL, stops it with Ctrl-C."""
    run_dir = tmp_path_factory.mktemp("run")
    model = build_model("lenet", 1, (28, 28), 10, rng=0)
    meta = {
        "dataset": "mnist-5k",
        "classes": json.dumps([str(d) for d in range(10)]),
        "image_size": "[28, 28]",
        "normalization": json.dumps({"mean": [0.1307], "std": [0.3081]}),
    }
    ckpt = checkpoint.save(model, run_dir / "model.safetensors", metadata=meta)
    proc = subprocess.Popen(
        [sys.executable, "-m", "convprop", "serve", str(ckpt), "--port", "0"],
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = None
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        if line.startswith("open http://"):
            url = line.split()[1]
            break
        if time.monotonic() > deadline:
            break
    if url is None:
        proc.kill()
        pytest.fail(f"convprop serve printed no address; stderr:\n{proc.stderr.read()}")
    yield url
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def problems() -> list[str]:
    """Console errors, page errors and failed requests seen by ``page``; must be empty at the end."""
    return []


@pytest.fixture
def page(browser, server, problems):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.goto(server)
    page.wait_for_selector('[data-testid="prob-9"]')  # /api/model answered and the bars exist
    yield page
    context.close()
    assert problems == []  # no script errors, no CSP violations, nothing fetched from elsewhere


def draw(page, points) -> None:
    box = page.get_by_test_id("draw-canvas").bounding_box()
    sx, sy = box["width"] / 280, box["height"] / 280
    at = lambda p: (box["x"] + p[0] * sx, box["y"] + p[1] * sy)  # noqa: E731
    page.mouse.move(*at(points[0]))
    page.mouse.down()
    for p in points[1:]:
        page.mouse.move(*at(p), steps=8)
    page.mouse.up()


def shown_probabilities(page) -> list[tuple[float, str]]:
    """(data-value, the percentage text) of every bar."""
    return shown_result(page)[1]


def shown_result(page) -> tuple[str, list[tuple[float, str]]]:
    """(the prediction's text, every bar's (data-value, percentage text)), read in one script call.

    One call, so both come from the same answer: while a stroke ends, a second /api/predict answer can
    arrive between two separate reads (CI once read the bars of one answer and the digit of the next).
    """
    prediction, bars = page.evaluate(
        """() => [document.querySelector('[data-testid="prediction"]').textContent,
                  Array.from(document.querySelectorAll('[data-testid^="prob-"]'),
                             e => [Number(e.dataset.value), e.querySelector('.prob-value').textContent])]"""
    )
    return prediction, [tuple(bar) for bar in bars]


PAINTED = """canvas => {  // true when some pixel was drawn (a canvas never drawn on is transparent black)
  const d = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  for (let i = 3; i < d.length; i += 4) if (d[i] !== 0) return true;
  return false;
}"""


def test_draw_upload_clear(page, tmp_path):
    assert page.get_by_test_id("prediction").text_content() == "–"
    filters = page.get_by_test_id("filter")
    assert filters.count() == 16
    assert all(filters.nth(i).evaluate(PAINTED) for i in range(16))

    with page.expect_response("**/api/predict") as answer:
        draw(page, SEVEN)
    assert answer.value.ok
    expect(page.get_by_test_id("prediction")).to_have_text(re.compile(r"^[0-9]$"))
    prediction, probs = shown_result(page)
    assert len(probs) == 10
    assert sum(v for v, _ in probs) == pytest.approx(1.0, abs=0.01)
    assert sum(float(text.rstrip("%")) for _, text in probs) == pytest.approx(100.0, abs=1.0)
    best = max(range(10), key=lambda i: probs[i][0])
    assert prediction == str(best)

    maps = page.get_by_test_id("feature-map")
    assert maps.count() == 16 + 32  # every channel of both conv layers
    assert all(maps.nth(i).evaluate(PAINTED) for i in range(maps.count()))
    assert page.get_by_test_id("input-canvas").evaluate(PAINTED)

    # upload: the button opens the file chooser; the file goes through the same /api/predict
    image = tmp_path / "three.png"
    render_digit(3, image)
    with page.expect_response("**/api/predict") as answer:
        with page.expect_file_chooser() as chooser:
            page.get_by_test_id("upload").click()
        chooser.value.set_files(str(image))
    assert answer.value.ok
    assert json.loads(answer.value.request.post_data)["png"].startswith("data:image/png;base64,")
    expect(page.get_by_test_id("status")).to_contain_text("three.png")
    assert sum(v for v, _ in shown_probabilities(page)) == pytest.approx(1.0, abs=0.01)

    page.get_by_test_id("clear").click()
    assert page.get_by_test_id("prediction").text_content() == "–"
    assert [v for v, _ in shown_probabilities(page)] == [0.0] * 10

    with page.expect_response("**/api/predict"):  # drawing after clear works again
        draw(page, SEVEN)
    expect(page.get_by_test_id("prediction")).to_have_text(re.compile(r"^[0-9]$"))
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve.png"), full_page=True)


def test_blank_upload_shows_the_servers_message(page, problems, tmp_path):
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.new("L", (50, 50), 255).save(blank)
    with page.expect_response("**/api/predict") as answer:
        page.get_by_test_id("file-input").set_input_files(str(blank))
    assert answer.value.status == 422
    status = page.get_by_test_id("status")
    expect(status).to_have_attribute("role", "alert")
    expect(status).to_contain_text("blank")
    expected = (
        "console error: Failed to load resource: the server responded with a status of 422 (Unprocessable Entity)"
    )
    problems.remove(expected)  # Chromium logs every 4xx; this one was the point of the test


def test_phone_sized_screen(browser, server):
    """Nothing scrolls sideways on a 360 px wide screen, and the canvas still takes a finger's drawing."""
    context = browser.new_context(viewport={"width": 360, "height": 740}, has_touch=True, is_mobile=True)
    page = context.new_page()
    page.goto(server)
    page.wait_for_selector('[data-testid="prob-9"]')
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    box = page.get_by_test_id("draw-canvas").bounding_box()
    assert box["width"] <= 360
    with page.expect_response("**/api/predict") as answer:
        page.touchscreen.tap(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)  # a dot is a drawing too
    assert answer.value.ok
    context.close()
