"""The inboundMessage body: EmailEngine's messageNew shape built from a received message."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mailgate_common.content import split_part_id
from mailgate_common.inbound.payload import Received, RouteRef, attachment, build, raw_body, stripped_reply

BASE = "https://mail.example.com"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
PDF = b"%PDF-1.7\n" + b"x" * 3000
RECEIVED_AT = datetime(2026, 12, 7, 20, 0, 0, 123000, tzinfo=UTC)
AUTH = {"spf": {"result": "pass", "domain": "example.org"}, "dkim": [], "dmarc": {"result": "none"}}


def received(raw: bytes, **fields: object) -> Received:
    values: dict[str, object] = {
        "id": "inb_1", "raw": raw, "received_at": RECEIVED_AT, "mail_from": "alice@example.org",
        "rcpt_to": ["support+4711@help.example.com", "other@help.example.com"],
        "remote_ip": "192.0.2.7", "helo": "mx.example.org", "tls": "TLSv1.3", "auth": AUTH,
    }
    values.update(fields)
    return Received(**values)  # type: ignore[arg-type]


ROUTE = RouteRef("rt_1", "Support", ["support+4711@help.example.com"], tag="4711", captures={})


def rich_message() -> bytes:
    """Outlook-like: text+html alternative, html related to an inline logo, a PDF attached."""
    msg = EmailMessage()
    msg["From"] = '"Müller, Jörg" <joerg@example.org>'
    msg["To"] = "Support <support+4711@help.example.com>, =?utf-8?q?Zo=C3=AB?= <zoe@example.com>"
    msg["Cc"] = "team@example.com"
    msg["Reply-To"] = "replies@example.org"
    msg["Subject"] = "Bestellung über 5 Stück"
    msg["Message-ID"] = "<m1@example.org>"
    msg["In-Reply-To"] = "<m0@help.example.com>"
    msg["References"] = "<a@x> <m0@help.example.com>"
    msg["Date"] = format_datetime(datetime(2026, 12, 7, 19, 59, tzinfo=UTC))
    msg["X-Custom"] = "one"
    msg["X-Custom"] = "two"
    msg.set_content("Thanks, that works!\n\nOn Mon, Dec 7, 2026 at 10:00 AM Bob <bob@help.example.com> wrote:\n"
                    "> Try turning it off and on.\n")
    msg.add_alternative('<p>Thanks, that works! <img src="cid:logo@x"></p>', subtype="html")
    html = msg.get_body(("html",))
    assert isinstance(html, EmailMessage)
    html.add_related(PNG, "image", "png", cid="<logo@x>", filename="logo.png", disposition="inline")
    msg.add_attachment(PDF, "application", "pdf", filename="Rechnung März.pdf")
    return msg.as_bytes()


def test_rich_message_in_messagenew_shape() -> None:
    data = build(received(rich_message()), ROUTE, base_url=BASE + "/", inline_max=1 << 20)
    assert data["id"] == "inb_1"
    assert data["receivedAt"] == "2026-12-07T20:00:00.123Z"
    assert data["subject"] == "Bestellung über 5 Stück"
    assert data["from"] == {"name": "Müller, Jörg", "address": "joerg@example.org"}
    assert data["to"] == [{"name": "Support", "address": "support+4711@help.example.com"},
                          {"name": "Zoë", "address": "zoe@example.com"}]
    assert data["cc"] == [{"address": "team@example.com"}]
    assert data["replyTo"] == [{"address": "replies@example.org"}]
    assert data["sender"] is None
    assert data["messageId"] == "<m1@example.org>"
    assert data["inReplyTo"] == "<m0@help.example.com>"
    assert data["references"] == ["<a@x>", "<m0@help.example.com>"]
    assert data["date"] == "2026-12-07T19:59:00.000Z"
    assert data["headers"]["x-custom"] == ["one", "two"]
    assert data["headers"]["message-id"] == ["<m1@example.org>"]
    text = data["text"]
    assert text["plain"].startswith("Thanks, that works!")
    assert text["html"].startswith("<p>Thanks")
    assert text["strippedPlain"] == "Thanks, that works!"
    assert text["hasMore"] is False

    logo, pdf = data["attachments"]
    assert logo["contentType"] == "image/png" and logo["filename"] == "logo.png"
    assert logo["contentId"] == "<logo@x>" and logo["inline"] is True and logo["embedded"] is True
    assert base64.b64decode(logo["content"]) == PNG and logo["size"] == len(PNG)
    assert pdf["filename"] == "Rechnung März.pdf" and pdf["inline"] is False and pdf["contentId"] is None
    assert base64.b64decode(pdf["content"]) == PDF
    assert split_part_id(pdf["id"]) == ("inb_1", "2")

    assert data["envelope"] == {"mailFrom": "alice@example.org", "rcptTo": ["support+4711@help.example.com"],
                                "remoteIp": "192.0.2.7", "helo": "mx.example.org", "tls": "TLSv1.3"}
    assert data["recipient"] == {"address": "support+4711@help.example.com", "local": "support", "tag": "4711",
                                 "domain": "help.example.com", "captures": {}}
    assert data["auth"] == AUTH
    assert data["spam"] == {"checked": False}
    assert data["automated"] is False and data["automatedReason"] is None
    assert data["route"] == {"id": "rt_1", "name": "Support"}
    assert data["raw"] == {"url": f"{BASE}/v1/inbound/messages/inb_1/raw"}
    assert data["size"] == len(rich_message())
    json.dumps(data)  # the body is JSON as it is


def test_big_attachment_is_a_url_whose_index_serves_its_bytes() -> None:
    raw = rich_message()
    data = build(received(raw), ROUTE, base_url=BASE, inline_max=2000)
    logo, pdf = data["attachments"]
    assert "url" not in logo and "content" in logo  # 1032 bytes: still inline
    assert "content" not in pdf
    assert pdf["url"] == f"{BASE}/v1/inbound/messages/inb_1/attachments/1"
    assert pdf["size"] == len(PDF)
    served = attachment(raw, 1)
    assert served is not None and served.data == PDF and served.filename == "Rechnung März.pdf"
    assert served.content_type == "application/pdf"
    assert attachment(raw, 2) is None and attachment(raw, -1) is None


def test_the_local_part_loses_the_tag_whatever_its_case() -> None:
    route = RouteRef("rt_1", "Tickets", ["Tickets+T-99@help.example.com"], tag="t-99")
    assert build(received(b""), route, base_url=BASE, inline_max=0)["recipient"] == {
        "address": "Tickets+T-99@help.example.com", "local": "Tickets", "tag": "t-99",
        "domain": "help.example.com", "captures": {}}


def test_regex_route_captures_and_automated_and_spam() -> None:
    route = RouteRef("rt_2", "Tickets", ["Ticket-42@Help.Example.com"], captures={"id": "42"})
    data = build(received(rich_message(), automated="auto-replied", spam={"checked": True, "score": 1.5}),
                 route, base_url=BASE, inline_max=0)
    assert data["recipient"] == {"address": "Ticket-42@Help.Example.com", "local": "Ticket-42", "tag": None,
                                 "domain": "help.example.com", "captures": {"id": "42"}}
    assert data["automated"] is True and data["automatedReason"] == "auto-replied"
    assert data["spam"] == {"checked": True, "score": 1.5}
    assert all("url" in a for a in data["attachments"])


def test_rfc2047_and_rfc2231_names_decoded() -> None:
    raw = (b"From: =?iso-8859-1?q?J=F6rg_M=FCller?= <j@example.org>\r\n"
           b"To: =?utf-8?b?5bGx55Sw?= <yamada@example.jp>, \"Doe, John\" <john@example.com>\r\n"
           b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= =?utf-8?q?_aus_K=C3=B6ln?=\r\n"
           b"MIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
           b"--b\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
           b"Gr=FC=DFe\r\n"
           b"--b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename*=utf-8''%C3%BCber.txt\r\n\r\n"
           b"file\r\n--b--\r\n")
    data = build(received(raw), ROUTE, base_url=BASE, inline_max=100)
    assert data["from"] == {"name": "Jörg Müller", "address": "j@example.org"}
    assert data["to"] == [{"name": "山田", "address": "yamada@example.jp"},
                          {"name": "Doe, John", "address": "john@example.com"}]
    assert data["subject"] == "Grüße aus Köln"
    assert data["text"]["plain"] == "Grüße"
    assert data["text"]["html"] is None
    (att,) = data["attachments"]
    assert att["filename"] == "über.txt" and base64.b64decode(att["content"]) == b"file"
    # headers are as sent (EmailEngine's): decoding is what the top-level fields are for
    assert data["headers"]["subject"] == ["=?utf-8?q?Gr=C3=BC=C3=9Fe?= =?utf-8?q?_aus_K=C3=B6ln?="]


def test_broken_mime_still_gives_a_body() -> None:
    raw = (b"From: <<<>>>\r\nTo: ,,,@,\r\nSubject: =?utf-8?q?broken\r\nDate: yesterday\r\n"
           b"Content-Type: multipart/mixed; boundary=\"never\"\r\nContent-Transfer-Encoding: base64\r\n"
           b"\r\n\x00\xff\xfe not base64 \r\n--other\r\n")
    data = build(received(raw), ROUTE, base_url=BASE, inline_max=100)
    assert data["date"] is None
    assert data["subject"] == "=?utf-8?q?broken"
    json.dumps(data)
    assert "\x00" not in json.dumps(data, ensure_ascii=False)


def test_parts_nested_too_deep_to_parse_keep_the_headers() -> None:
    nested = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(3000))
    raw = b"Subject: deep\r\n" + nested + b"Content-Type: text/plain\r\n\r\nhi\r\n"
    data = build(received(raw), ROUTE, base_url=BASE, inline_max=100)
    assert data["subject"] == "deep" and data["attachments"] == []
    assert attachment(raw, 0) is None


def test_empty_and_header_only_messages() -> None:
    for raw in (b"", b"Subject: hi\r\n", b"\r\n\r\n", b"no header at all"):
        data = build(received(raw), ROUTE, base_url=BASE, inline_max=100)
        assert data["id"] == "inb_1" and data["attachments"] == []


def test_raw_body_is_the_stored_bytes() -> None:
    raw = rich_message()
    assert raw_body(received(raw)) == raw


def test_stripped_reply() -> None:
    assert stripped_reply(None) is None
    assert stripped_reply("Just text.\n") == "Just text."
    assert stripped_reply("Yes.\n\n> quoted\n> more\n") == "Yes."
    assert stripped_reply("Fine.\n\n-----Original Message-----\nFrom: x\n") == "Fine."
    # A long message without quotes keeps all of it (quotequail's line limit is not a quote).
    long_text = "line\n" * 5000
    assert stripped_reply(long_text) == long_text.strip()


def test_ten_megabyte_attachment_is_fast() -> None:
    msg = EmailMessage()
    msg["From"] = "a@example.org"
    msg["Subject"] = "big"
    msg.set_content("see attached")
    big = bytes(range(256)) * (10 * 4096)
    msg.add_attachment(big, "application", "octet-stream", filename="big.bin")
    raw = msg.as_bytes()
    started = time.perf_counter()
    data = build(received(raw), ROUTE, base_url=BASE, inline_max=256 * 1024)
    elapsed = time.perf_counter() - started
    (att,) = data["attachments"]
    assert att["size"] == len(big) and att["url"].endswith("/attachments/0")
    assert elapsed < 3.0, elapsed


header = st.sampled_from([b"From", b"To", b"Cc", b"Reply-To", b"Sender", b"Subject", b"Date", b"Message-ID",
                          b"Content-Type", b"Content-Transfer-Encoding", b"Content-Disposition", b"References"])
value = st.one_of(
    st.binary(max_size=80),
    st.sampled_from([b"multipart/mixed; boundary=x", b"multipart/related; boundary=x; start=<q>",
                     b"message/rfc822", b"text/plain; charset=bogus", b"text/html; charset=utf-16",
                     b"attachment; filename*=utf-8''%ff%fe", b"base64", b"quoted-printable",
                     b"=?utf-8?b?!!!?=", b"=?x-unknown?q?a?=", b"\"unterminated <a@b", b"<a@b>,,<@>"]),
)
body = st.lists(st.one_of(st.binary(max_size=60), st.sampled_from([b"--x", b"--x--", b"", b"Content-Type: text/html"])),
                max_size=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(headers=st.lists(st.tuples(header, value), max_size=10), lines=body)
@example(headers=[(b"Content-Type", b"multipart/mixed; boundary=x")],
         lines=[b"--x", b"Content-Type: message/rfc822", b"", b"Subject: inner", b"--x--"])
def test_never_raises_on_any_input(headers: list[tuple[bytes, bytes]], lines: list[bytes]) -> None:
    raw = b"".join(name + b": " + val + b"\r\n" for name, val in headers) + b"\r\n" + b"\r\n".join(lines)
    data = build(received(raw), ROUTE, base_url=BASE, inline_max=16)
    json.dumps(data, ensure_ascii=False).encode("utf-8")  # no lone surrogate survives
    for n, att in enumerate(data["attachments"]):
        if "url" in att:
            served = attachment(raw, n)
            assert served is not None and len(served.data) == att["size"]


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=2000))
def test_never_raises_on_random_bytes(raw: bytes) -> None:
    json.dumps(build(received(raw), ROUTE, base_url=BASE, inline_max=16), ensure_ascii=False).encode("utf-8")
