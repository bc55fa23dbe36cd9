"""Decoding messages to EmailEngine's JSON, and composing replies/forwards (pure logic)."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage

import msgspec

from mailgate_api.submit.reference import Original, apply, subject_for
from mailgate_common import content
from mailgate_common.mime import build_message
from mailgate_common.submission import Reference, SubmitRequest

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


def sample() -> bytes:
    msg = EmailMessage()
    msg["From"] = "=?utf-8?q?J=C3=BCrgen?= <jurgen@example.org>"
    msg["To"] = "Ann <ann@example.com>, bob@example.com"
    msg["Cc"] = "carol@example.com"
    msg["Reply-To"] = "lists@example.org"
    msg["Subject"] = "Grüße aus Köln"
    msg["Message-ID"] = "<orig-1@example.org>"
    msg["References"] = "<root@example.org>"
    msg["Date"] = "Sun, 22 Nov 2026 10:00:00 +0100"
    msg.set_content("Hallo, schöne Grüße!\n")
    msg.add_alternative("<p>Hallo, <b>schöne</b> Grüße!</p>\n", subtype="html")
    msg.get_payload()[1].add_related(PNG, "image", "png", cid="<logo@example.org>")
    msg.add_attachment(b"col1,col2\n1,2\n", maintype="text", subtype="csv", filename="daten.csv")
    msg.add_attachment(PNG, maintype="image", subtype="png", filename="bild.png")
    return msg.as_bytes()


def test_message_json_decodes_text_addresses_headers_and_attachments() -> None:
    data = content.message_json(sample(), "MSGID")
    assert data["subject"] == "Grüße aus Köln"
    assert data["from"] == {"name": "Jürgen", "address": "jurgen@example.org"}
    assert data["to"] == [{"name": "Ann", "address": "ann@example.com"}, {"address": "bob@example.com"}]
    assert data["replyTo"] == [{"address": "lists@example.org"}]
    assert data["messageId"] == "<orig-1@example.org>"
    assert data["date"] == "2026-11-22T09:00:00.000Z"
    assert data["headers"]["subject"] == ["Grüße aus Köln"]
    text = data["text"]
    assert text["plain"] == "Hallo, schöne Grüße!\n"
    assert text["html"] == "<p>Hallo, <b>schöne</b> Grüße!</p>\n"
    assert text["hasMore"] is False and set(text["encodedSize"]) == {"plain", "html"}
    kinds = {a["filename"] or a["contentType"]: a for a in data["attachments"]}
    assert set(kinds) == {"image/png", "daten.csv", "bild.png"}
    logo = kinds["image/png"]
    assert logo["embedded"] is True and logo["contentId"] == "<logo@example.org>"
    assert kinds["daten.csv"]["embedded"] is False and kinds["daten.csv"]["inline"] is False


def test_attachment_ids_round_trip_to_decoded_bytes() -> None:
    raw = sample()
    data = content.message_json(raw, "MSGID")
    for att in data["attachments"]:
        parsed = content.split_part_id(att["id"])
        assert parsed is not None and parsed[0] == "MSGID"
        found = content.attachment(raw, parsed[1])
        assert found is not None and found.content_type == att["contentType"]
        if att["filename"] == "bild.png":
            assert found.data == PNG
        if att["filename"] == "daten.csv":
            assert found.data == b"col1,col2\n1,2\n"
    assert content.split_part_id("not-an-id!") is None
    assert content.attachment(raw, "9") is None


def test_single_part_latin1_message() -> None:
    raw = ("Subject: hi\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
           "Content-Transfer-Encoding: 8bit\r\n\r\ncaf\xe9\r\n").encode("latin-1")
    data = content.message_json(raw, "X")
    assert data["text"]["plain"] == "café\n"
    assert data["attachments"] == [] and "html" not in data["text"]


def original(action: str, inline: bool = True, with_content: bool = True) -> Original:
    raw = sample()
    parsed = content.parse(raw)
    plain, html = content.text_bodies(parsed)
    return Original(
        reference=Reference(message="MSGID", action=action, inline=inline),  # type: ignore[arg-type]
        message_id="<orig-1@example.org>", references="<root@example.org>",
        subject="Grüße aus Köln", from_={"name": "Jürgen", "address": "jurgen@example.org"},
        to=[{"name": "Ann", "address": "ann@example.com"}, {"address": "bob@example.com"}],
        cc=[{"address": "carol@example.com"}],
        reply_to=[{"address": "lists@example.org"}] if with_content else [],
        date="Sun, 22 Nov 2026 10:00:00 +0100",
        raw=raw if with_content else None,
        plain=plain if with_content else None, html=html if with_content else None,
    )


def req(**fields: object) -> SubmitRequest:
    return msgspec.convert({"from": {"address": "ann@example.com"}, **fields}, SubmitRequest)


def test_subject_prefixes_are_not_doubled() -> None:
    assert subject_for("Hello", "reply") == "Re: Hello"
    assert subject_for("RE: Hello", "reply-all") == "RE: Hello"
    assert subject_for("Hello", "forward") == "Fwd: Hello"
    assert subject_for("Fw: Hello", "forward") == "Fw: Hello"
    assert subject_for(None, "reply") == "Re: "


def test_reply_threads_and_answers_reply_to() -> None:
    applied = apply(req(text="Thanks"), original("reply"), "ann@example.com")
    assert applied.headers == {"In-Reply-To": "<orig-1@example.org>",
                               "References": "<root@example.org> <orig-1@example.org>"}
    assert applied.request.subject == "Re: Grüße aus Köln"
    assert [a.address for a in applied.request.to] == ["lists@example.org"]  # type: ignore[union-attr]
    assert applied.request.cc is None


def test_reply_all_adds_original_recipients_except_own_address() -> None:
    applied = apply(req(text="Thanks", to=[{"address": "jurgen@example.org"}]),
                    original("reply-all"), "ANN@example.com")
    assert [a.address for a in applied.request.to] == ["jurgen@example.org"]  # type: ignore[union-attr]
    assert [a.address for a in applied.request.cc] == ["bob@example.com", "carol@example.com"]  # type: ignore[union-attr]


def test_inline_forward_quotes_the_original() -> None:
    applied = apply(req(text="FYI", to=[{"address": "dan@example.net"}]), original("forward"), None)
    body = applied.request
    assert body.subject == "Fwd: Grüße aus Köln"
    assert body.text is not None and body.text.startswith("FYI\n")
    assert "---------- Forwarded message ---------\nFrom: Jürgen <jurgen@example.org>" in body.text
    assert "Hallo, schöne Grüße!" in body.text
    assert body.html is not None and "<b>schöne</b>" in body.html


def test_forward_without_inline_sends_only_the_new_text_threaded() -> None:
    # EmailEngine: without `inline` a forward carries the new text and References, not the original.
    applied = apply(req(text="see below", to=[{"address": "dan@example.net"}]),
                    original("forward", inline=False), None)
    built = build_message(applied.request, extra_headers=applied.headers)
    msg = message_from_bytes(built.raw, policy=policy.default)
    assert msg["Subject"] == "Fwd: Grüße aus Köln"
    assert "<orig-1@example.org>" in msg["References"]
    assert list(msg.iter_attachments()) == []
    body = msg.get_body(("plain",))
    assert body is not None and body.get_content().strip() == "see below"
