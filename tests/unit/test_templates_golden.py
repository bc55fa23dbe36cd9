"""Every case of tests/data/templates/cases.json rendered by our engine equals what handlebars.js
with EmailEngine's helpers rendered into golden.json (regenerate with render.js, see its header)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mailgate_common.templates import Content, RenderError, render

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "templates" / "golden.json"
CASES: list[dict[str, Any]] = json.loads(GOLDEN.read_text("utf-8"))

# Documented differences. Markdown (mailgate_common.templates._markdown): marked writes a link target
# as the escaped Handlebars text (entities kept); markdown-it decodes and re-encodes it, the same URL in
# a browser. A bare number as a mustache ({{10}}) is a path lookup in handlebars.js (prints nothing);
# dotpromptz-handlebars prints the literal.
KNOWN_DIFFERENCES: dict[str, tuple[str, str]] = {
    "more numbers [html]": (" 2  ", " 2 -1.5 10"),
    "more numbers [plain]": (" 2  ", " 2 -1.5 10"),
    "markdown basic [markdown]": (
        'href="https://x.example/u?a&#x3D;1&amp;b&#x3D;&quot;2&quot;"',
        'href="https://x.example/u?a=1&amp;b=%222%22"',
    ),
}


def _render(case: dict[str, Any]) -> str | None:
    mode = case["mode"]
    if mode == "plain":
        return render(Content(subject=None, text=case["template"], html=None), "html", case["context"]).text
    fmt = "markdown" if mode == "markdown" else "html"
    return render(Content(subject=None, text=None, html=case["template"]), fmt, case["context"]).html


def test_golden_file_matches_the_cases() -> None:
    cases = json.loads((GOLDEN.parent / "cases.json").read_text("utf-8"))
    assert [(c["name"], c["template"]) for c in cases] == [(c["name"], c["template"]) for c in CASES]
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_golden(case: dict[str, Any]) -> None:
    if case.get("error"):
        with pytest.raises(RenderError) as info:
            _render(case)
        assert info.value.part == ("text" if case["mode"] == "plain" else "html")
        return
    expected = case["output"]
    if case["name"] in KNOWN_DIFFERENCES:
        marked, ours = KNOWN_DIFFERENCES[case["name"]]
        assert marked in expected
        expected = expected.replace(marked, ours)
    assert _render(case) == expected
