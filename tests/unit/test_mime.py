"""MIME building and header safety (pure logic, the standard email package underneath)."""

from __future__ import annotations

import base64
from email import message_from_bytes, policy

import msgspec
import pytest

from mailgate_common.mime import InvalidMessage, build_message, normalize_address, prepare_raw
from mailgate_common.submission import SubmitRequest


def req(**fields: object) -> SubmitRequest:
    return msgspec.convert({"from": {"address": "me@example.com"}, **fields}, SubmitRequest)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("a@b.com", "a@b.com"),
        (" first.last+tag@example.org ", "first.last+tag@example.org"),
        ("jü@exämple.de", "jü@xn--exmple-cua.de"),
        ("o'neil@x.ie", "o'neil@x.ie"),
        ("a@[192.0.2.1]", "a@[192.0.2.1]"),
    ],
)
def test_valid_addresses(given: str, expected: str) -> None:
    assert normalize_address("to", given) == expected


@pytest.mark.parametrize(
    "bad", ["bad", "a..b@x.com", "a b@x.com", "<a>@x.com", "a@-x.com", "a@x", "a@b.com\r\nBcc: c@d.e", ""]
)
def test_invalid_addresses_name_the_field(bad: str) -> None:
    with pytest.raises(InvalidMessage) as error:
        normalize_address("cc[2].address", bad)
    assert error.value.field == "cc[2].address"


def test_utf8_headers_are_rfc2047_encoded_and_bodies_7bit_safe() -> None:
    built = build_message(req(to=[{"address": "z@example.org", "name": "Zoë Ünal"}], subject="Grüße ✓",
                              text="héllo", html="<p>héllo</p>"))
    assert built.raw.isascii()
    msg = message_from_bytes(built.raw, policy=policy.default)
    assert msg["Subject"] == "Grüße ✓"
    assert msg["To"].addresses[0].display_name == "Zoë Ünal"
    assert msg.get_content_type() == "multipart/alternative"
    assert msg.get_body(("plain",)).get_content().strip() == "héllo"


def test_inline_images_sit_in_a_related_part_with_the_html() -> None:
    png = b"\x89PNG fake"
    built = build_message(req(to=[{"address": "z@example.org"}], html='<img src="cid:logo">', attachments=[
        {"content": base64.b64encode(png).decode(), "contentType": "image/png", "cid": "logo", "filename": "l.png"},
        {"content": base64.b64encode(b"report").decode(), "filename": "r.txt", "contentType": "text/plain"},
    ]))
    msg = message_from_bytes(built.raw, policy=policy.default)
    types = [p.get_content_type() for p in msg.walk()]
    assert types[:3] == ["multipart/mixed", "multipart/related", "text/html"]
    related = next(p for p in msg.walk() if p.get_content_type() == "multipart/related")
    image = next(p for p in related.walk() if p.get_content_type() == "image/png")
    assert image["Content-ID"] == "<logo>" and image.get_content() == png
    assert sum(1 for p in msg.walk() if p["MIME-Version"]) == 1


def test_bcc_is_envelope_only() -> None:
    built = build_message(req(to={"address": "a@example.org"}, bcc=[{"address": "hidden@example.org"}], text="x"))
    assert built.envelope_to == ["a@example.org", "hidden@example.org"]
    assert b"hidden@example.org" not in built.raw


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"subject": "hi\r\nBcc: x@y.z"}, "subject"),
        ({"headers": {"X-Ok": "v\nInjected: 1"}}, "headers.X-Ok"),
        ({"headers": {"Bad:Name": "v"}}, "headers.Bad:Name"),
        ({"headers": {"From": "evil@x.y"}}, "headers.From"),
        ({"from": {"address": "me@example.com", "name": "Me\r\nBcc: x@y.z"}}, "from.name"),
        ({"messageId": "no-at-sign"}, "messageId"),
        ({"attachments": [{"content": "eA==", "filename": "a\r\n.txt"}]}, "attachments[0].filename"),
    ],
)
def test_header_injection_is_refused(fields: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidMessage) as error:
        build_message(req(to=[{"address": "a@example.org"}], text="x", **fields))
    assert error.value.field == field


def test_prepare_raw_keeps_the_body_bytes_and_fixes_only_headers() -> None:
    body = b"\r\n--boundary\r\nexact  body\r\n bytes\r\n"
    raw = (b"From: a@example.com\r\nTo: b@example.org\r\nBcc: c@example.org,\r\n d@example.org\r\n"
           b"X-EE-Send-At: x\r\n" + body)
    prepared = prepare_raw(raw, drop=("X-EE-Send-At",))
    assert prepared.raw.endswith(body)
    headers = prepared.raw[: -len(body)]
    assert b"Bcc" not in headers and b"X-EE-Send-At" not in headers
    assert b"Message-ID: <" in headers and b"Date: " in headers and b"MIME-Version: 1.0" in headers
    assert prepared.header_recipients == ["b@example.org", "c@example.org", "d@example.org"]
    assert prepared.removed_headers == {"bcc": "c@example.org, d@example.org", "x-ee-send-at": "x"}


def test_prepare_raw_refuses_a_message_without_headers() -> None:
    with pytest.raises(InvalidMessage):
        prepare_raw(b"just some text\r\n")
