"""Replies and forwards built like EmailEngine's: quoting, threading, carried attachments."""

from __future__ import annotations

import base64
from email.message import EmailMessage
from typing import Any

import msgspec

from mailgate_api.submit import reference
from mailgate_common import content
from mailgate_common.submission import Reference, SubmitRequest, unsupported


def original(action: str = "reply", **ref: Any) -> reference.Original:
    msg = EmailMessage()
    msg["From"] = "Ann <ann@example.org>"
    msg["Subject"] = "Lunch?"
    msg.set_content("Noon?\n\nOr one?\n")
    msg.add_alternative("<p>Noon?</p>\n", subtype="html")
    msg.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="menu.pdf")
    raw = msg.as_bytes()
    parsed = content.parse(raw)
    plain, html = content.text_bodies(parsed)
    return reference.Original(
        reference=msgspec.convert({"message": "AAAA", "action": action, **ref}, Reference),
        message_id="<lunch@example.org>", references="<root@example.org>", subject="Lunch?",
        from_={"name": "Ann", "address": "ann@example.org"}, to=[], cc=[],
        date="Sun, 22 Nov 2026 10:00:00 +0000", raw=raw, plain=plain, html=html,
    )


def request(**fields: Any) -> SubmitRequest:
    return msgspec.convert(fields, SubmitRequest)


def test_reply_without_inline_sends_only_the_new_text_threaded() -> None:
    applied = reference.apply(request(text="Noon."), original(), "me@example.org")
    assert applied.request.text == "Noon."
    assert applied.request.html is None
    assert applied.request.subject == "Re: Lunch?"
    assert applied.headers == {"In-Reply-To": "<lunch@example.org>",
                               "References": "<root@example.org> <lunch@example.org>"}


def test_inline_reply_quotes_the_original_in_text_and_html() -> None:
    applied = reference.apply(request(text="Noon."), original(inline=True), None)
    assert applied.request.text == (
        "Noon.\n\nOn Sun, 22 Nov 2026 10:00:00 +0000, Ann <ann@example.org> wrote:\n> Noon?\n>\n> Or one?"
    )
    assert applied.request.html is not None
    assert applied.request.html.startswith("Noon.<br><br>")
    assert '<blockquote type="cite"><p>Noon?</p>' in applied.request.html


def test_forward_has_references_but_no_in_reply_to_and_carries_attachments_on_request() -> None:
    plain = reference.apply(request(text="FYI", to=[{"address": "bob@example.org"}]),
                            original("forward"), None)
    assert plain.headers == {"References": "<root@example.org> <lunch@example.org>"}
    assert plain.request.attachments == [] and plain.request.text == "FYI"
    assert plain.request.subject == "Fwd: Lunch?"

    carried = reference.apply(request(text="FYI"), original("forward", forwardAttachments=True), None)
    [pdf] = carried.request.attachments
    assert pdf.filename == "menu.pdf" and pdf.content_type == "application/pdf"
    assert base64.b64decode(pdf.content) == b"%PDF-1.4" and pdf.cid is None


def test_unsupported_fields_are_named_and_harmless_values_pass() -> None:
    assert unsupported(request(proxy="socks5://p:1080")) == ("proxy", "sending through a proxy is not supported")
    assert unsupported(request(trackOpens=False, render=False, locale="")) is None
    threaded = unsupported(request(reference={"message": "AAAA", "threadId": "x"}))
    assert threaded is not None and threaded[0] == "reference.threadId"
