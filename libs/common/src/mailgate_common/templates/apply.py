"""A stored template applied to one message: the rules every door (REST submit, SMTP) shares.

Rendering follows EmailEngine (``base-client.js``): a template's parts replace the message's and a
template is always rendered, in its own format; the context is
``{params, account{name, email}, service{url}, rcpt{address, name, unsubscribeUrl?}}``.  Subject
and text are rendered unescaped, html escaped (markdown: escaped, then converted).  After
rendering, a template with ``inline_css`` gets its html's styles inlined (a CSS failure keeps the
un-inlined html, never fails the send), and ``previewText`` becomes EmailEngine's hidden preheader
at the top of the html body.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from mailgate_common.db.models import Template
from mailgate_common.templates._engine import Content, RenderError, render
from mailgate_common.templates.css import inline_css

PARTS = ("subject", "text", "html", "previewText")


def visible(row: Template, caller: str | None) -> bool:
    """An admin (caller None) sees every template; an account its own and the public ones."""
    return caller is None or row.account_id is None or row.account_id == caller


async def load(session: AsyncSession, template_id: str, account: str) -> Template | None:
    """The template ``account`` may send with (its own or a public one), else None."""
    row = await session.get(Template, template_id)
    if row is None or not visible(row, account):
        return None
    return row


def context(*, params: Mapping[str, Any], account_name: str | None, account_email: str | None,
            service_url: str | None, rcpt_address: str | None = None, rcpt_name: str | None = None,
            unsubscribe_url: str | None = None) -> dict[str, Any]:
    """EmailEngine's render context; ``rcpt`` stays empty without a recipient (as in validate)."""
    rcpt: dict[str, Any] = {}
    if rcpt_address is not None:
        rcpt = {"address": rcpt_address, "name": rcpt_name}
    if unsubscribe_url is not None:
        rcpt["unsubscribeUrl"] = unsubscribe_url
    return {"params": dict(params), "account": {"name": account_name, "email": account_email},
            "service": {"url": service_url}, "rcpt": rcpt}


def part_content(part: str, value: str) -> Content:
    # One part at a time, so an error names its part and the preview is rendered as html.
    if part == "subject":
        return Content(subject=value, text=None, html=None)
    if part == "text":
        return Content(subject=None, text=value, html=None)
    return Content(subject=None, text=None, html=value)


def render_part(part: str, value: str, fmt: str, ctx: dict[str, Any]) -> str:
    """One part rendered; RenderError names ``part`` (previewText included)."""
    markup: Literal["html", "markdown"] = "markdown" if part == "html" and fmt == "markdown" else "html"
    try:
        rendered = render(part_content(part, value), markup, ctx)
    except RenderError as exc:
        raise RenderError(part, exc.message) from None
    out = rendered.html if part in ("html", "previewText") else getattr(rendered, part)
    return str(out or "")


def render_parts(content: Mapping[str, str | None], fmt: str, ctx: dict[str, Any]) -> dict[str, str]:
    """Every given part rendered; the first failure raises RenderError naming its part."""
    return {part: render_part(part, value, fmt, ctx)
            for part in PARTS if (value := content.get(part)) is not None}


_BODY = re.compile(r"<body\b[^>]*>", re.IGNORECASE)


def with_preview(html: str, preview: str) -> str:
    """EmailEngine's preheader: a hidden block right after ``<body>`` (or first), padded with spacers."""
    block = ('<!--[if !gte mso 9]><!----><div style="display:none !important;max-height:0px;max-width:1px;'
             'font-size:1px;line-height:1px;opacity:0.0;mso-hide:all;overflow:hidden !important;'
             f'visibility:hidden !important;">{preview} {"&#8199;&#65279;&#847; " * 100}</div>'
             "<!--<![endif]-->")
    found = _BODY.search(html)
    if found is None:
        return f"{block}\n{html}"
    return f"{html[:found.end()]}\n{block}{html[found.end():]}"


@dataclass(frozen=True)
class Filled:
    """A message's final parts; ``css_error`` says why the html was sent un-inlined."""

    subject: str | None
    text: str | None
    html: str | None
    css_error: str | None = None


def fill(parts: Mapping[str, str | None], template: Template | None, *, fmt: str | None,
         render_parts_too: bool, ctx: dict[str, Any]) -> Filled:
    """The message's parts with ``template``'s filled in and rendered, css inlined, preheader added.

    ``parts`` are the message's own (``PARTS`` keys); without a template they are rendered only when
    ``render_parts_too`` (EmailEngine's ``render``).  RenderError names the part that failed.
    """
    merged = {part: parts.get(part) for part in PARTS}
    inline = False
    if template is not None:
        for part in PARTS:
            if template.content.get(part) is not None:
                merged[part] = template.content[part]
        fmt, render_parts_too, inline = template.format, True, bool(template.inline_css)
    if render_parts_too:
        merged.update(render_parts(merged, fmt or "html", ctx))
    html, css_error = merged["html"], None
    if inline and html:
        inlined = inline_css(html)
        html, css_error = inlined.html, inlined.error
    preview = merged["previewText"]
    if preview and html:
        html = with_preview(html, preview)
    return Filled(subject=merged["subject"], text=merged["text"], html=html, css_error=css_error)
