"""The pixel and the click links put into a message's html (mailgate_common.tracking.rewrite)."""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from email.message import EmailMessage
from urllib.parse import parse_qs, urlsplit

import pytest

from mailgate_common.tracking.rewrite import Tracking, add_trackers
from mailgate_common.tracking.tokens import Signer

BASE = "https://track.example.com"
SIGNER = Signer("unit-secret")


def tracking(opens: bool = True, clicks: bool = True, recipient: str | None = "ann@example.net") -> Tracking:
    return Tracking(opens=opens, clicks=clicks, base_url=BASE, signer=SIGNER, account="acct",
                    queue_id="q1", message_id="<m1@example.com>", recipient=recipient)


def signed(url: str) -> dict[str, object]:
    """The data a tracking URL carries (its signature checked)."""
    query = parse_qs(urlsplit(url).query)
    data = SIGNER.verify(query["data"][0], query["sig"][0])
    assert data is not None, url
    return data


def hrefs(html: str) -> list[str]:
    from html import unescape
    return [unescape(h) for h in re.findall(r'<a\b[^>]*?href="([^"]*)"', html)]


def pixels(html: str) -> list[str]:
    from html import unescape
    return [unescape(s) for s in re.findall(r'<img src="([^"]*open\.gif[^"]*)"', html)]


def html_of(raw: bytes) -> str:
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    body = message.get_body(("html",))
    assert body is not None
    content: str = body.get_content()
    return content


def alternative(html: str, *, charset: str = "utf-8", cte: str | None = None, text: str = "plain") -> bytes:
    message = EmailMessage()
    message["From"] = "a@example.com"
    message["To"] = "ann@example.net"
    message["Subject"] = "Hi"
    message["Message-ID"] = "<m1@example.com>"
    message.set_content(text)
    message.add_alternative(html, subtype="html", charset=charset, cte=cte)
    return message.as_bytes(policy=policy.SMTP)


PAGE = ('<html><body><p>Hi</p><a href="https://shop.example/a?x=1&amp;y=2">buy</a> '
        '<a class="c" href=\'http://example.org/\'>org</a></body></html>')


def test_links_are_signed_click_urls_and_the_pixel_goes_before_body_end() -> None:
    out = html_of(add_trackers(alternative(PAGE), tracking()))
    links = hrefs(out) + re.findall(r"href='([^']*)'", out)
    assert len(links) == 2
    first = signed(links[0])
    assert first == {"act": "click", "url": "https://shop.example/a?x=1&y=2", "acc": "acct", "q": "q1",
                     "msg": "<m1@example.com>", "rcpt": "ann@example.net"}
    assert links[0].startswith(f"{BASE}/redirect?")
    assert signed(links[1].replace("&amp;", "&"))["url"] == "http://example.org/"
    [pixel] = pixels(out)
    assert signed(pixel) == {"act": "open", "acc": "acct", "q": "q1", "msg": "<m1@example.com>",
                             "rcpt": "ann@example.net"}
    assert out.index("open.gif") < out.index("</body>")
    assert 'width="1" height="1" alt=""' in out
    # The raw html keeps its entities escaped: the & of the signed query is &amp;.
    assert "&amp;sig=" in out


def test_only_what_is_asked_for() -> None:
    only_opens = html_of(add_trackers(alternative(PAGE), tracking(clicks=False)))
    assert "https://shop.example/a?x=1&amp;y=2" in only_opens and len(pixels(only_opens)) == 1
    only_clicks = html_of(add_trackers(alternative(PAGE), tracking(opens=False)))
    assert not pixels(only_clicks) and "/redirect?" in only_clicks
    raw = alternative(PAGE)
    assert add_trackers(raw, tracking(opens=False, clicks=False)) is raw


def test_links_that_stay_as_they_are() -> None:
    own = SIGNER.unsubscribe_url(BASE, account="acct", list_id="news", recipient="ann@example.net",
                                 message_id=None)
    page = ("<html><body>"
            '<a href="mailto:help@example.com">mail</a>'
            '<a href="tel:+3725550000">call</a>'
            '<a href="#top">top</a>'
            '<a href="/relative">rel</a>'
            '<a name="anchor">no href</a>'
            f'<a href="{own.replace("&", "&amp;")}">unsubscribe</a>'
            '<a href="https://example.com/keep" data-notrack>kept</a>'
            '<a data-notrack="true" href="https://example.com/keep2">kept2</a>'
            '<a href="https://example.com/unsub-list">list unsub</a>'
            '<a href="https://example.com/track">tracked</a>'
            "</body></html>")
    message = EmailMessage()
    message["From"] = "a@example.com"
    message["List-Unsubscribe"] = "<https://example.com/unsub-list>, <mailto:u@example.com>"
    message.set_content(page, subtype="html")
    out = html_of(add_trackers(message.as_bytes(policy=policy.SMTP), tracking()))
    links = hrefs(out)
    assert links[:3] == ["mailto:help@example.com", "tel:+3725550000", "#top"]
    assert links[3] == "/relative"
    assert links[4] == own
    assert links[5:8] == ["https://example.com/keep", "https://example.com/keep2", "https://example.com/unsub-list"]
    assert signed(links[8])["url"] == "https://example.com/track"
    assert "data-notrack" not in out  # the opt-out marker does not reach the recipient
    assert '<a href="https://example.com/keep">kept</a>' in out
    assert '<a href="https://example.com/keep2">kept2</a>' in out


def test_other_parts_and_headers_are_byte_identical() -> None:
    message = EmailMessage()
    message["From"] = "Ann <a@example.com>"
    message["To"] = "ann@example.net"
    message["Subject"] = "A very long subject " * 6
    message["X-Custom"] = "keep   these   spaces"
    message.set_content("plain body https://example.com/plain")
    message.add_alternative(PAGE, subtype="html")
    message.add_attachment(b"%PDF-1.4 binary \x00\x01" * 100, maintype="application", subtype="pdf",
                           filename="a.pdf")
    message.add_attachment("<html><body><a href='https://x.example/'>x</a></body></html>", subtype="html",
                           filename="page.html")
    raw = message.as_bytes(policy=policy.SMTP)
    out = add_trackers(raw, tracking())
    assert out != raw
    head_end = raw.index(b"\r\n\r\n")
    assert out[:head_end] == raw[:head_end]
    parsed = message_from_bytes(out, policy=policy.default)
    original = message_from_bytes(raw, policy=policy.default)
    out_parts, in_parts = list(parsed.walk()), list(original.walk())
    assert [p.get_content_type() for p in out_parts] == [p.get_content_type() for p in in_parts]
    for got, was in zip(out_parts, in_parts, strict=True):
        if got.get_content_type() == "text/html" and got.get_content_disposition() != "attachment":
            continue
        if not got.is_multipart():
            assert got.get_payload(decode=True) == was.get_payload(decode=True)
    # Everything after the html part (the attachments, their boundaries, the epilogue) is as it was.
    rest = raw[raw.index(b"Content-Type: application/pdf"):]
    assert out.endswith(rest)
    plain = raw[head_end:raw.index(b"Content-Type: text/html")]
    assert out[head_end:].startswith(plain)
    assert b"https://x.example/" in out  # an attached html file is not the message's html
    assert b"plain body https://example.com/plain" in out


def test_a_message_without_html_comes_back_unchanged() -> None:
    message = EmailMessage()
    message["From"] = "a@example.com"
    message.set_content("see https://example.com")
    raw = message.as_bytes()
    assert add_trackers(raw, tracking()) == raw


def test_html_without_a_body_tag_gets_the_pixel_appended() -> None:
    out = html_of(add_trackers(alternative("<p><a href='https://e.example/'>x</a></p>"), tracking()))
    assert out.rstrip().endswith('alt="" style="border:0;width:1px;height:1px;">')
    assert len(pixels(out)) == 1


@pytest.mark.parametrize("cte", ["quoted-printable", "base64", "8bit"])
@pytest.mark.parametrize("charset", ["utf-8", "iso-8859-1", "windows-1252"])
def test_encodings_and_charsets_round_trip(cte: str, charset: str) -> None:
    page = "<html><body><p>Grüße, café – ünïcödé</p><a href=\"https://e.example/ä\">ä</a></body></html>"
    if charset == "iso-8859-1":
        page = page.replace("–", "-")
    raw = alternative(page, charset=charset, cte=cte)
    out = add_trackers(raw, tracking())
    message = message_from_bytes(out, policy=policy.default)
    assert isinstance(message, EmailMessage)
    html_part = message.get_body(("html",))
    assert html_part is not None
    assert html_part["Content-Transfer-Encoding"] == cte
    assert html_part.get_content_charset() == charset
    html = html_part.get_content()
    assert "Grüße, café" in html
    [link] = hrefs(html)
    assert signed(link)["url"] == "https://e.example/ä"
    assert len(pixels(html)) == 1
    assert all(len(line) <= 998 for line in out.split(b"\r\n"))


def test_a_7bit_part_whose_lines_grow_too_long_becomes_quoted_printable() -> None:
    links = "".join(f'<a href="https://e.example/{i}">{i}</a>' for i in range(20))
    raw = alternative(f"<html><body>{links}</body></html>", charset="us-ascii", cte="7bit")
    out = add_trackers(raw, tracking())
    assert all(len(line) <= 998 for line in out.split(b"\r\n"))
    message = message_from_bytes(out, policy=policy.default)
    assert isinstance(message, EmailMessage)
    html_part = message.get_body(("html",))
    assert html_part is not None and html_part["Content-Transfer-Encoding"] == "quoted-printable"
    assert [signed(h)["url"] for h in hrefs(html_part.get_content())] == [f"https://e.example/{i}" for i in range(20)]


def test_one_pixel_for_several_html_parts_and_links_in_each() -> None:
    message = EmailMessage()
    message["From"] = "a@example.com"
    message.set_content("<html><body><a href='https://one.example/'>1</a></body></html>", subtype="html")
    message.add_attachment(b"\x89PNG...", maintype="image", subtype="png", filename="i.png",
                           disposition="inline")
    message.add_attachment("<html><body><a href='https://two.example/'>2</a></body></html>", subtype="html",
                           disposition="inline")
    out = add_trackers(message.as_bytes(policy=policy.SMTP), tracking()).decode()
    assert out.count("open.gif") == 1
    assert "https://one.example/" not in out and "https://two.example/" not in out


def test_lf_only_messages_keep_lf_and_a_bare_single_part_html() -> None:
    raw = (b"From: a@example.com\nContent-Type: text/html; charset=utf-8\n\n"
           b"<html><body><a href=\"https://e.example/\">x</a></body></html>\n")
    out = add_trackers(raw, tracking())
    assert b"\r\n" not in out
    assert out.startswith(b"From: a@example.com\nContent-Type: text/html; charset=utf-8\n\n<html><body><a href=")
    assert out.endswith(b"</body></html>\n")


def test_an_unreadable_html_part_goes_out_as_it_was() -> None:
    raw = (b"From: a@example.com\r\nContent-Type: text/html; charset=x-unknown-charset\r\n\r\n"
           b"<a href=\"https://e.example/\">x</a>\r\n")
    assert add_trackers(raw, tracking()) == raw
    bad = (b"From: a@example.com\r\nContent-Type: text/html; charset=utf-8\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!\r\n")
    assert add_trackers(bad, tracking()) == bad


def test_mailgate_own_redirect_links_are_not_wrapped_twice() -> None:
    once = add_trackers(alternative(PAGE), tracking(opens=False))
    twice = add_trackers(once, tracking(opens=False))
    assert html_of(twice) == html_of(once)


def test_several_recipients_carry_no_recipient() -> None:
    out = html_of(add_trackers(alternative(PAGE), tracking(recipient=None)))
    assert "rcpt" not in signed(hrefs(out)[0])


def test_handmade_multipart_keeps_preamble_epilogue_and_lookalike_lines() -> None:
    raw = (b"From: a@example.com\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n"
           b"This is a preamble.\r\n"
           b"--b1\r\nContent-Type: text/plain\r\n\r\n--b1x is not a delimiter\r\n"
           b"--b1   \r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
           b"<html><body><a href=\"https://e.example/\">x</a></body></html>\r\n"
           b"--b1--\r\nAn epilogue.\r\n")
    out = add_trackers(raw, tracking())
    before = raw.split(b"<html>", 1)[0]
    assert out.startswith(before)
    assert out.endswith(b"</body></html>\r\n--b1--\r\nAn epilogue.\r\n")
    html = out[len(before):].decode()
    assert len(pixels(html)) == 1 and signed(hrefs(html)[0])["url"] == "https://e.example/"


def test_an_attached_message_is_not_tracked() -> None:
    inner = EmailMessage()
    inner["From"] = "b@example.com"
    inner.set_content("<html><body><a href='https://inner.example/'>i</a></body></html>", subtype="html")
    message = EmailMessage()
    message["From"] = "a@example.com"
    message.set_content("see the forwarded message")
    message.add_attachment(inner)
    raw = message.as_bytes(policy=policy.SMTP)
    assert add_trackers(raw, tracking()) == raw


def test_a_message_signed_before_it_arrived_is_not_changed() -> None:
    raw = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; bh=abc; b=def\r\n" + alternative(PAGE)
    assert add_trackers(raw, tracking()) == raw
