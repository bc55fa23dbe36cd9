"""Stored templates at the REST door: who may change which, checking them, rendering a submit.

The rendering rules (EmailEngine's precedence and context, css inlining, the preheader) live in
``mailgate_common.templates.apply``, shared with the SMTP door; this module maps them to the
submit request and to HTTP errors.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from mailgate_api.errors import ApiError, invalid
from mailgate_api.templates.schemas import PartResult, TemplateContent, ValidateResponse
from mailgate_common import templates as engine
from mailgate_common.db.models import Account, Template
from mailgate_common.submission import SubmitRequest, as_list
from mailgate_common.templates import apply as shared
from mailgate_common.templates.css import inline_css

log = logging.getLogger("mailgate.api.templates")

PARTS = shared.PARTS
_ATTRS = {"subject": "subject", "text": "text", "html": "html", "previewText": "preview_text"}
_WIRE = {"preview_text": "previewText", "previewtext": "previewText"}

visible = shared.visible
with_preview = shared.with_preview


def new_id() -> str:
    return secrets.token_urlsafe(15)


def wire_part(part: str) -> str:
    return _WIRE.get(part, part)


def content_dict(content: TemplateContent) -> dict[str, Any]:
    return msgspec.to_builtins(content)  # type: ignore[no-any-return]


def writable(row: Template, caller: str | None) -> bool:
    return caller is None or row.account_id == caller


def check(content: dict[str, Any]) -> None:
    """400 naming ``content.<part>`` for a template part that does not compile."""
    for part in PARTS:
        value = content.get(part)
        if not value:
            continue
        try:
            engine.check(shared.part_content(part, value))
        except engine.RenderError as exc:
            raise invalid(f"content.{part}", str(exc.message)) from exc


def _failed(exc: engine.RenderError, field_prefix: str = "") -> ApiError:
    # EmailEngine's 422 ``Failed rendering <part> template``.
    return ApiError(422, f"Failed rendering {exc.part} template: {exc.message}", f"{field_prefix}{exc.part}",
                    code="SubmitFail")


def render_parts(content: dict[str, Any], fmt: str, context: dict[str, Any],
                 field_prefix: str = "") -> dict[str, str]:
    """Every given part rendered; a failure is EmailEngine's 422 ``Failed rendering <part> template``."""
    try:
        return shared.render_parts(content, fmt, context)
    except engine.RenderError as exc:
        raise _failed(exc, field_prefix) from exc


def context(account: Account, req: SubmitRequest | None, params: dict[str, Any],
            service_url: str | None, unsubscribe_url: str | None = None) -> dict[str, Any]:
    to = as_list(req.to) if req is not None else []
    return shared.context(params=params, account_name=account.name, account_email=account.email,
                          service_url=service_url, rcpt_address=to[0].address if to else None,
                          rcpt_name=to[0].name if to else None, unsubscribe_url=unsubscribe_url)


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
    row = await shared.load(session, template_id, account)
    if row is None:
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
    parts = {p: getattr(req, _ATTRS[p]) for p in PARTS}
    try:
        filled = shared.fill(parts, template, fmt=fmt, render_parts_too=asked,
                             ctx=context(account, req, params, service_url, unsubscribe_url))
    except engine.RenderError as exc:
        raise _failed(exc) from exc
    if filled.css_error is not None:
        log.warning("template %s sent un-inlined: %s", template.id if template else None, filled.css_error)
    return msgspec.structs.replace(req, subject=filled.subject, text=filled.text, html=filled.html,
                                   preview_text=None, template=None, render=None)


def validate(row: Template, params: dict[str, Any], account: Account | None,
             service_url: str | None) -> ValidateResponse:
    """Postmark's idea: every part rendered (or its error) and the suggested model; nothing sent.

    With ``inlineCss`` the html is shown inlined, as it would be sent; a CSS failure is a
    ``warning`` on the html (the send would go out un-inlined), not an invalid template.
    """
    ctx = shared.context(params=params, account_name=account.name if account else None,
                         account_email=account.email if account else None, service_url=service_url)
    results: dict[str, PartResult | None] = {}
    for part in PARTS:
        value = row.content.get(part)
        if value is None:
            results[part] = None
            continue
        try:
            rendered = shared.render_part(part, value, row.format, ctx)
        except engine.RenderError as exc:
            results[part] = PartResult(valid=False, error=str(exc.message))
            continue
        warning = None
        if part == "html" and row.inline_css and rendered:
            inlined = inline_css(rendered)
            rendered, warning = inlined.html, inlined.error
        results[part] = PartResult(valid=True, rendered=rendered, warning=warning)
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
