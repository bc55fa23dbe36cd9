"""Inline a rendered html body's ``<style>`` rules into ``style`` attributes (css-inline).

Many mail clients (Gmail's non-AMP web view, Outlook) ignore or strip ``<style>`` blocks; inlined
rules survive.  Rules that cannot be inlined (``@media``, ``@font-face``, ``@import``) stay in a
``<style>`` block in the head (``keep_at_rules``).  Stylesheets are never fetched: a template must
not make mailgate open URLs or read files (``load_remote_stylesheets=False`` also ignores local
``<link>`` hrefs).  css-inline parses the html as a whole document (html5ever), so a fragment comes
back wrapped in ``<html><head></head><body>``.

Inlining runs on the rendered html, not on the template source: an HTML parser would move
Handlebars blocks that sit between table tags (foster parenting) and break the template.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import css_inline

from mailgate_common.templates._engine import MAX_OUTPUT_BYTES

_INLINER = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)

MAX_NESTING = 1000
"""Deepest element nesting inlined.  css-inline recurses per level and overflows an 8 MB thread
stack (a segfault, not an exception) near 20,000 levels; real mail nests a few dozen deep."""

_TAG = re.compile(r"<(/?)([A-Za-z][^\s/>]*)")
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                   "param", "source", "track", "wbr", "basefont", "bgsound", "frame", "keygen"})
# Elements whose end tag may be left out: a sibling (or the parent's end tag) closes them.
_IMPLIED = frozenset({"p", "li", "td", "th", "tr", "dt", "dd", "option", "tbody", "thead", "tfoot"})
_SIBLINGS = {"td": ("td", "th"), "th": ("td", "th"), "tr": ("td", "th", "tr"), "li": ("li",),
             "p": ("p",), "dt": ("dt", "dd"), "dd": ("dt", "dd"), "option": ("option",)}


def nesting(html: str, limit: int = MAX_NESTING) -> int:
    """How deep ``html`` nests, never less than a browser's parser would build (up to ``limit``).

    Tags in comments or attribute values count too, and an end tag only closes what is open:
    both err on the deep side, which only means a message is sent un-inlined.
    """
    stack: list[str] = []
    open_count: Counter[str] = Counter()
    deepest = 0
    for match in _TAG.finditer(html):
        name = match.group(2).lower()
        if match.group(1):
            if not open_count[name]:
                continue  # a stray end tag: the parser ignores it
            while stack and stack[-1] != name and stack[-1] in _IMPLIED:
                open_count[stack.pop()] -= 1
            if stack and stack[-1] == name:
                open_count[stack.pop()] -= 1
        elif name not in _VOID:
            while stack and stack[-1] in _SIBLINGS.get(name, ()):
                open_count[stack.pop()] -= 1
            stack.append(name)
            open_count[name] += 1
            deepest = max(deepest, len(stack))
            if deepest > limit:
                break
    return deepest


@dataclass(frozen=True)
class Inlined:
    """The html to send; ``error`` says why it is the un-inlined input (None: inlined)."""

    html: str
    error: str | None = None


def inline_css(html: str) -> Inlined:
    """``html`` with its styles inlined; on any failure the input itself and the reason.

    A CSS problem must never fail a send: the message goes out un-inlined instead.
    """
    # Fewer tags than the limit cannot nest deeper than it: most mail skips the scan.
    if html.count("<") > MAX_NESTING and nesting(html) > MAX_NESTING:
        return Inlined(html, f"CSS could not be inlined: elements nest deeper than {MAX_NESTING} levels")
    try:
        out = _INLINER.inline(html)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        # InlineError, or pyo3's PanicException (a BaseException) if the Rust side panics.
        return Inlined(html, f"CSS could not be inlined: {exc}")
    if len(out.encode("utf-8", "surrogatepass")) > MAX_OUTPUT_BYTES:
        return Inlined(html, f"CSS could not be inlined: the result is larger than {MAX_OUTPUT_BYTES} bytes")
    return Inlined(out)
