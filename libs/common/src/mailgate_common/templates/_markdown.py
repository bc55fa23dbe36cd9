"""Markdown to HTML the way EmailEngine's ``marked`` (GFM, raw HTML allowed) renders it.

EmailEngine renders the escaped Handlebars output with ``marked.parse``: raw HTML written in the
template passes through (values were escaped by Handlebars first, so only the template author's own
markup does), and HTML entities from the escaping stay as written (``&#x3D;`` is not decoded). This
uses markdown-it-py (CommonMark + GFM tables and strikethrough, ``html`` on) and keeps entities
verbatim. Known differences from marked: bare URLs are not auto-linked, and ``&`` in link targets
is written ``&amp;`` (the same URL to a browser).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict


def _text_special(self: Any, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
    token = tokens[idx]
    if token.info == "entity":
        return token.markup
    from markdown_it.common.utils import escapeHtml

    return escapeHtml(token.content)


def _build() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    md.disable("text_join")
    md.add_render_rule("text_special", _text_special)
    # marked writes <tbody><tr> and </tbody></table> without a line break.
    md.add_render_rule("tbody_open", lambda *args: "<tbody>")
    md.add_render_rule("tbody_close", lambda *args: "</tbody>")
    md.add_render_rule("s_open", lambda *args: "<del>")
    md.add_render_rule("s_close", lambda *args: "</del>")
    return md


_MD = _build()


def markdown_to_html(source: str) -> str:
    result: Any = _MD.render(source)
    return str(result)
