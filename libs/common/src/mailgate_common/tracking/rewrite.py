"""The open pixel and the click links, put into a message's html at send time.

Pure: bytes in, bytes out.  Only the text/html parts change: every other part,
every header and every byte between parts stays as it was (the MIME tree is
walked on the raw bytes; the ``email`` package only reads each part's headers
and decodes its body).  A changed html part keeps its charset and transfer
encoding, except a 7bit/8bit part whose rewritten lines would pass SMTP's 998
octets: it becomes quoted-printable (its Content-Transfer-Encoding header is
the one header changed).  A message with no html part (plain text) comes back
unchanged: plain-text mail is not tracked, and neither is a message that
arrives DKIM-signed (its signature covers the body).

What is rewritten: ``<a href="http(s)://…">`` in every html part that is not
an attachment (and not inside an attached message/rfc822), to the signed click
URL; the pixel goes before ``</body>`` of the first such part (appended when
there is none), as EmailEngine does, so one view is one open.

What is not: mailgate's own links (pixel, redirect, unsubscribe), other schemes
(``mailto:``, ``tel:``, ``#anchor``...), the List-Unsubscribe URLs, and links
marked ``data-notrack`` (the marker is removed from the sent html).
"""

from __future__ import annotations

import base64
import binascii
import html
import quopri
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.quoprimime import body_encode as qp_encode

from mailgate_common.tracking.tokens import Signer, is_own_link

OPT_OUT = "data-notrack"
PIXEL_STYLE = "border:0;width:1px;height:1px;"
MAX_LINE = 998  # octets of an SMTP line, CRLF excluded (RFC 5322 2.1.1)

_A_TAG = re.compile(r"<a\b[^>]*>", re.IGNORECASE)
_HREF = re.compile(r"""(\shref\s*=\s*)("[^"]*"|'[^']*'|[^\s"'>]+)""", re.IGNORECASE)
_OPT_OUT_ATTR = re.compile(r"""\s+data-notrack(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'>]+))?(?=[\s/>])""",
                           re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_ANGLED = re.compile(r"<([^>]+)>")


@dataclass(frozen=True, slots=True)
class Tracking:
    """What to add to one message, and what its links carry."""

    opens: bool
    clicks: bool
    base_url: str
    signer: Signer
    account: str
    queue_id: str | None
    message_id: str | None
    recipient: str | None  # the one recipient, None when there are several

    def open_url(self) -> str:
        return self.signer.open_url(self.base_url, account=self.account, queue_id=self.queue_id,
                                    message_id=self.message_id, recipient=self.recipient)

    def click_url(self, target: str) -> str:
        return self.signer.click_url(self.base_url, target, account=self.account, queue_id=self.queue_id,
                                     message_id=self.message_id, recipient=self.recipient)


def add_trackers(raw: bytes, tracking: Tracking) -> bytes:
    """``raw`` with the pixel and click links ``tracking`` asks for."""
    if not (tracking.opens or tracking.clicks):
        return raw
    head, _ = _split(raw)
    headers = _headers(head)
    if "DKIM-Signature" in headers:
        return raw  # signed before it reached mailgate: a changed body would fail verification
    walk = _Walk(tracking)
    walk.skip_urls = _list_unsubscribe_urls(headers)
    return walk.entity(raw)


def rewrite_html(text: str, tracking: Tracking, *, pixel: bool, skip_urls: frozenset[str] = frozenset()) -> str:
    """One html document's links rewritten (``clicks``), and the pixel added when ``pixel``."""
    if tracking.clicks:
        text = _A_TAG.sub(lambda m: _rewrite_tag(m.group(0), tracking, skip_urls), text)
    if pixel:
        tag = (f'<img src="{html.escape(tracking.open_url())}" width="1" height="1" alt="" '
               f'style="{PIXEL_STYLE}">')
        ends = list(_BODY_END.finditer(text))
        if ends:
            at = ends[-1].start()
            text = text[:at] + tag + text[at:]
        else:
            end = len(text.rstrip())  # before the trailing line break, which ends the part's last line
            text = text[:end] + tag + text[end:]
    return text


def _rewrite_tag(tag: str, tracking: Tracking, skip_urls: frozenset[str]) -> str:
    if _OPT_OUT_ATTR.search(tag):
        return _OPT_OUT_ATTR.sub("", tag)
    found = _HREF.search(tag)
    if found is None:
        return tag
    quoted = found.group(2)
    quote = quoted[0] if quoted[0] in "\"'" else ""
    url = html.unescape(quoted[1:-1] if quote else quoted).strip()
    if not url.lower().startswith(("http://", "https://")):
        return tag
    if url in skip_urls or is_own_link(url, tracking.base_url):
        return tag
    signed = html.escape(tracking.click_url(url), quote=True)
    quote = quote or '"'
    return f"{tag[:found.start(2)]}{quote}{signed}{quote}{tag[found.end(2):]}"


class _Walk:
    def __init__(self, tracking: Tracking) -> None:
        self.tracking = tracking
        self.pixel_due = tracking.opens
        self.skip_urls: frozenset[str] = frozenset()

    def entity(self, data: bytes) -> bytes:
        head, body = _split(data)
        headers = _headers(head)
        kind = headers.get_content_type()
        if kind.startswith("multipart/"):
            boundary = headers.get_param("boundary")
            if isinstance(boundary, str) and boundary:
                return data[:len(data) - len(body)] + self.multipart(body, boundary.encode("latin-1", "replace"))
            return data
        if kind == "text/html" and headers.get_content_disposition() != "attachment":
            changed = self.html_part(head, data[len(head):len(data) - len(body)], body, headers)
            if changed is not None:
                return changed
        return data

    def multipart(self, body: bytes, boundary: bytes) -> bytes:
        out: list[bytes] = []
        previous_end: int | None = None
        for start, end, closing in _delimiters(body, boundary):
            if previous_end is None:
                out.append(body[:start])  # the preamble
            else:
                out.append(self.entity(body[previous_end:start]))
            out.append(body[start:end])
            previous_end = end
            if closing:  # the rest is the epilogue
                out.append(body[end:])
                return b"".join(out)
        if previous_end is None:
            return body
        out.append(self.entity(body[previous_end:]))  # no closing delimiter: the last part runs to the end
        return b"".join(out)

    def html_part(self, head: bytes, separator: bytes, body: bytes, headers: Message) -> bytes | None:
        encoding = str(headers.get("Content-Transfer-Encoding", "7bit")).strip().lower()
        charset = headers.get_content_charset() or "us-ascii"
        eol = b"\r\n" if b"\r\n" in head or b"\r\n" in body or not (head or body) else b"\n"
        try:
            decoded = _decode(body, encoding)
            text = decoded.decode(_codec(charset))
        except (ValueError, LookupError, binascii.Error):
            return None  # a part we cannot read faithfully is sent as it is
        pixel = self.pixel_due
        rewritten = rewrite_html(text, self.tracking, pixel=pixel, skip_urls=self.skip_urls)
        self.pixel_due = False
        if rewritten == text:
            return None
        try:
            new_bytes = rewritten.encode(_codec(charset))
        except (UnicodeError, LookupError):
            return None
        new_body, new_encoding = _encode(new_bytes, encoding, eol)
        if new_encoding != encoding:
            head = _set_transfer_encoding(head, new_encoding, eol)
        # What followed the last line of the original body (its line break, if any) is kept.
        if body.endswith(eol) and not new_body.endswith(eol):
            new_body += eol
        return head + separator + new_body


def _split(data: bytes) -> tuple[bytes, bytes]:
    """(header block without its blank line, body)."""
    if data.startswith(b"\r\n"):
        return b"", data[2:]
    if data.startswith(b"\n"):
        return b"", data[1:]
    crlf = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n", 0, crlf if crlf >= 0 else len(data))  # only an earlier one matters
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return data[:crlf], data[crlf + 4:]
    if lf >= 0:
        cut = lf - 1 if data[lf - 1:lf] == b"\r" else lf  # "\r\n\n": a CRLF line, then a bare LF
        return data[:cut], data[lf + 2:]
    return data, b""


def _delimiters(body: bytes, boundary: bytes) -> Iterator[tuple[int, int, bool]]:
    """(start, end, closing) of each boundary delimiter line, the line break before it included
    (RFC 2046 5.1.1: that break belongs to the delimiter, not to the part)."""
    marker = b"--" + boundary
    position = 0
    while (found := body.find(marker, position)) >= 0:
        position = found + 1
        if found and body[found - 1:found] != b"\n":
            continue
        start = found - 2 if body[found - 2:found] == b"\r\n" else max(found - 1, 0)
        after = found + len(marker)
        closing = body.startswith(b"--", after)
        after += 2 if closing else 0
        while body[after:after + 1] in (b" ", b"\t"):
            after += 1
        if after == len(body):
            end = after
        elif body.startswith(b"\r\n", after):
            end = after + 2
        elif body.startswith(b"\n", after):
            end = after + 1
        else:
            continue  # "--boundary" followed by more text: a longer boundary, or content
        yield start, end, closing
        position = end


def _headers(head: bytes) -> Message:
    return BytesHeaderParser(policy=compat32).parsebytes(head + b"\n\n")


def _list_unsubscribe_urls(headers: Message) -> frozenset[str]:
    values = headers.get_all("List-Unsubscribe") or []
    return frozenset(url.strip() for value in values for url in _ANGLED.findall(str(value)))


def _codec(charset: str) -> str:
    # The ASCII most html claims to be is often not: latin-1 never fails and round-trips.
    return "latin-1" if charset.lower() in ("us-ascii", "ascii") else charset


def _decode(body: bytes, encoding: str) -> bytes:
    if encoding == "base64":
        return base64.b64decode(b"".join(body.split()), validate=True)
    if encoding == "quoted-printable":
        return quopri.decodestring(body.replace(b"\r\n", b"\n"))
    if encoding in ("7bit", "8bit", "binary"):
        return body
    raise ValueError(f"unknown transfer encoding {encoding}")


def _encode(data: bytes, encoding: str, eol: bytes) -> tuple[bytes, str]:
    """The body in ``encoding`` (or quoted-printable when its lines would be too long)."""
    if encoding == "base64":
        text = base64.b64encode(data)
        return eol.join(text[i:i + 76] for i in range(0, len(text), 76)), encoding
    if encoding in ("7bit", "8bit", "binary"):
        lines = data.replace(b"\r\n", b"\n").split(b"\n")
        if encoding == "binary" or max(len(line) for line in lines) <= MAX_LINE:
            return eol.join(lines), encoding
        encoding = "quoted-printable"
    # The decoded text's line breaks are hard breaks: quoprimime keeps them as eol.
    latin = data.replace(b"\r\n", b"\n").decode("latin-1")
    return qp_encode(latin, maxlinelen=76, eol=eol.decode()).encode("latin-1"), "quoted-printable"


def _set_transfer_encoding(head: bytes, encoding: str, eol: bytes) -> bytes:
    line = b"Content-Transfer-Encoding: " + encoding.encode()
    pattern = re.compile(rb"^Content-Transfer-Encoding:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*", re.IGNORECASE | re.MULTILINE)
    if pattern.search(head):
        return pattern.sub(line, head, count=1)
    return head + eol + line if head else line
