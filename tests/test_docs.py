"""The docs are part of the code: every Python example in docs/ and the README runs, and the API
reference names every public function and layer."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import convprop
from convprop import functional, nn

ROOT = Path(__file__).resolve().parent.parent


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.S)


PAGES = [p for p in [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"] if python_blocks(p)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_examples_run(page, tmp_path, monkeypatch):
    """Run a page's ```python blocks in order, in one namespace (as a reader would, top to bottom)."""
    blocks = python_blocks(page)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{page.name}, example {i + 1}", "exec"), namespace)


def test_api_reference_names_every_public_name():
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    names = [*convprop.__all__, *functional.__all__, *nn.__all__]
    missing = [n for n in names if not n.startswith("_") and not re.search(rf"\b{re.escape(n)}\b", text)]
    assert not missing, f"docs/api.md does not mention {missing}"


def test_seed_errata_section_exists():
    text = (ROOT / "docs" / "convolution.md").read_text(encoding="utf-8")
    assert "## Errata in the seed notes" in text


def test_api_reference_signatures_match_the_code():
    """Every function of convprop.functional is listed in docs/api.md with its parameters, in order."""
    import inspect

    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    stale = []
    for name in functional.__all__:
        obj = getattr(functional, name)
        if not callable(obj):
            continue
        found = re.search(rf"`{name}\((.*?)\)`", text)
        documented = re.findall(r"(?:^|,\s*)\*?\s*(\w+)", found.group(1)) if found else None
        actual = [p for p in inspect.signature(obj).parameters]
        if documented != actual:
            stale.append(f"{name}: code {actual}, docs {documented}")
    assert not stale, "docs/api.md is out of date:\n" + "\n".join(stale)
