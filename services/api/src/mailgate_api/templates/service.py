"""Stored templates: who sees which, checking them, and rendering a submit with one.

Rendering follows EmailEngine (``base-client.js``): with ``template`` the
template's parts replace the request's, and the message is rendered; without
one, ``render`` renders the request's own subject, text and html.  The context
is ``{params, account{name, email}, service{url}, rcpt{address, name}}``.
Subject and text are rendered unescaped, html escaped (markdown: escaped, then
converted).  ``previewText`` becomes EmailEngine's hidden preheader at the top
of the html body.
"""

from __future__ import annotations

import re
import secrets
from typing import Any, Literal

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from mailgate_api.errors import ApiError, invalid
from mailgate_api.templates.schemas import PartResult, TemplateContent, ValidateResponse
from mailgate_common import templates as engine
from mailgate_common.db.models import Account, Template
from mailgate_common.submission import SubmitRequest, as_list

PARTS = ("subject", "text", "html", "previewText")
_ATTRS = {"subject": "subject", "text": "text", "html": "html", "previewText": "preview_text"}
_WIRE = {"preview_text": "previewText", "previewtext": "previewText"}


def new_id() -> str:
    return secrets.token_urlsafe(15)


def wire_part(part: str) -> str:
    return _WIRE.get(part, part)


def content_dict(content: TemplateContent) -> dict[str, Any]:
    return msgspec.to_builtins(content)  # type: ignore[no-any-return]


def visible(row: Template, caller: str | None) -> bool:
    """An admin (caller None) sees every template; an account its own and the public ones."""
    return caller is None or row.account_id is None or row.account_id == caller


def writable(row: Template, caller: str | None) -> bool:
    return caller is None or row.account_id == caller


def _only(part: str, value: str) -> engine.Content:
    # One part at a time, so an error names its part and the preview is rendered as html.
    if part == "subject":
        return engine.Content(subject=value, text=None, html=None)
    if part == "text":
        return engine.Content(subject=None, text=value, html=None)
    return engine.Content(subject=None, text=None, html=value)


def check(content: dict[str, Any]) -> None:
    """400 naming ``content.<part>`` for a template part that does not compile."""
    for part in PARTS:
        value = content.get(part)
        if not value:
            continue
        try:
            engine.check(_only(part, value))
        except engine.RenderError as exc:
            raise invalid(f"content.{part}", str(exc.message)) from exc


def _render_part(part: str, value: str, fmt: str, context: dict[str, Any]) -> str:
    markup: Literal["html", "markdown"] = "markdown" if part == "html" and fmt == "markdown" else "html"
    rendered = engine.render(_only(part, value), markup, context)
    out = getattr(rendered, _ATTRS[part] if part != "previewText" else "html")
    return str(out or "")


def render_parts(content: dict[str, Any], fmt: str, context: dict[str, Any],
                 field_prefix: str = "") -> dict[str, str]:
    """Every given part rendered; a failure is EmailEngine's 422 ``Failed rendering <part> template``."""
    out: dict[str, str] = {}
    for part in PARTS:
        value = content.get(part)
        if value is None:
            continue
        try:
            out[part] = _render_part(part, value, fmt, context)
        except engine.RenderError as exc:
            raise ApiError(422, f"Failed rendering {part} template: {exc.message}", f"{field_prefix}{part}",
                           code="SubmitFail") from exc
    return out


def context(account: Account, req: SubmitRequest | None, params: dict[str, Any],
            service_url: str | None, unsubscribe_url: str | None = None) -> dict[str, Any]:
    rcpt: dict[str, Any] = {}
    if req is not None:
        to = as_list(req.to)
        if to:
            rcpt = {"address": to[0].address, "name": to[0].name}
    if unsubscribe_url is not None:
        rcpt["unsubscribeUrl"] = unsubscribe_url
    return {"params": params, "account": {"name": account.name, "email": account.email},
            "service": {"url": service_url}, "rcpt": rcpt}


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


def render_options(req: SubmitRequest) -> tuple[bool, str | None, dict[str, Any]]:
    """(asked to render, format, params) from ``render``: an object, true, false or absent."""
    render = req.render
    if render is None or render is False:
        return False, None, {}
    if render is True:
        return True, None, {}
    return True, render.format, dict(render.params)


async def load(session: AsyncSession, template_id: str, account: str) -> Template:
    """The submit's template: the account's own or a public one, else 404 TemplateNotFound."""
    row = await session.get(Template, template_id)
    if row is None or not visible(row, account):
        raise ApiError(404, f"Requested template was not found [{template_id}]", "template",
                       code="TemplateNotFound")
    return row


def apply(req: SubmitRequest, template: Template | None, account: Account,
          service_url: str | None, unsubscribe_url: str | None = None) -> SubmitRequest:
    """The submit with the template's parts filled in and rendered; unchanged if nothing asks for it.

    As in EmailEngine, a template's parts replace the request's and a template
    is always rendered (its format decides the html's); without a template only
    ``render`` (not false) renders the request's own parts.  A list message
    (``unsubscribe_url`` set: a merge with ``listId``) is always rendered, so
    ``{{rcpt.unsubscribeUrl}}`` works in the request's own parts too.
    """
    asked, fmt, params = render_options(req)
    asked = asked or unsubscribe_url is not None
    if template is None and not asked and not req.preview_text:
        return req  # the hot path: nothing to fill in or render
    parts: dict[str, Any] = {p: getattr(req, _ATTRS[p]) for p in PARTS}
    if template is not None:
        for part in PARTS:
            if template.content.get(part) is not None:
                parts[part] = template.content[part]
        fmt = template.format
        asked = True
    if asked:
        parts = {**parts, **render_parts(parts, fmt or "html",
                                         context(account, req, params, service_url, unsubscribe_url))}
    html, preview = parts["html"], parts["previewText"]
    if preview and html:
        html = with_preview(html, preview)
    return msgspec.structs.replace(req, subject=parts["subject"], text=parts["text"], html=html,
                                   preview_text=None, template=None, render=None)


def validate(row: Template, params: dict[str, Any], account: Account | None,
             service_url: str | None) -> ValidateResponse:
    """Postmark's idea: every part rendered (or its error) and the suggested model; nothing sent."""
    ctx = {"params": params, "account": {"name": account.name if account else None,
                                         "email": account.email if account else None},
           "service": {"url": service_url}, "rcpt": {}}
    results: dict[str, PartResult | None] = {}
    for part in PARTS:
        value = row.content.get(part)
        if value is None:
            results[part] = None
            continue
        try:
            results[part] = PartResult(valid=True, rendered=_render_part(part, value, row.format, ctx))
        except engine.RenderError as exc:
            results[part] = PartResult(valid=False, error=str(exc.message))
    content = row.content
    try:
        suggested = engine.variables(engine.Content(
            subject=content.get("subject"), text=content.get("text"), html=content.get("html"),
            preview_text=content.get("previewText")))
    except engine.RenderError:
        suggested = {}
    return ValidateResponse(
        valid=all(r is None or r.valid for r in results.values()),
        subject=results["subject"], text=results["text"], html=results["html"],
        preview_text=results["previewText"], variables=suggested,
    )
