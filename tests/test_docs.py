"""The documents point at things that exist: no dangling link, no missing design section."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CODE = [*sorted((ROOT / "spikingjelly_psn").rglob("*.py")), *sorted(ROOT.glob("*/*.py"))]
SOURCES = [*DOCS, *(p for p in CODE if p != Path(__file__).resolve())]


def _design_sections() -> set[str]:
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    return set(re.findall(r"^## (\d+)\.", text, flags=re.M))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_design_references_exist(path):
    text = path.read_text(encoding="utf-8")
    assert "DESIGN.md" not in text and "DESIGN " not in text
    for section in re.findall(r"design\.md §(\d+)", text):
        assert section in _design_sections(), f"{path.name} cites design.md §{section}"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_relative_links_exist(path):
    text = path.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (path.parent / target).exists(), f"{path.name} links to missing {target}"
