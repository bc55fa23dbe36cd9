"""SMTP reply codes (550) and enhanced status codes (5.1.1): finding and reconciling them."""

from __future__ import annotations

import re

# Lookarounds stop us reading "0.2.20" out of an IP address such as 192.0.2.20.
STATUS_RE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
_REPLY_STATUS_RE = re.compile(r"(?<![\d.])([245]\d\d)[ -]+#?([245]\.\d{1,3}\.\d{1,3})(?![\d.]*\d)")
_REPLY_RE = re.compile(r"(?:^|(?<=[\s:(\[\"'>]))([245][0-5]\d)(?=[\s\-:.,)]|$)")


def find_status(text: str | None) -> str | None:
    """The enhanced status code of the decisive answer quoted in a diagnostic.

    Transcripts and relayed errors quote several codes ("554 4.4.7 expired <421 4.4.2
    timed out>", "250 2.1.5 Ok ... 451 4.3.0 error"); the last failure code is the one
    that explains the failure, so it wins over earlier ones and over 2.x.x codes.
    """
    if not text:
        return None
    found = [m.group(0) for m in STATUS_RE.finditer(text) if valid_status(m.group(0))]
    failures = [c for c in found if c[0] != "2"]
    if failures:
        return failures[-1]
    return found[-1] if found else None


def find_reply_code(text: str | None) -> int | None:
    if not text:
        return None
    paired = _REPLY_STATUS_RE.search(text)
    if paired:
        return int(paired.group(1))
    m = _REPLY_RE.search(text)
    return int(m.group(1)) if m else None


def valid_status(code: str | None) -> bool:
    if not code:
        return False
    m = re.fullmatch(r"([245])\.(\d{1,3})\.(\d{1,3})", code)
    if not m:
        return False
    # x.0.9xx are Sisimai's invented codes; never report them as if an MTA had said them.
    return not (m.group(2) == "0" and len(m.group(3)) == 3 and m.group(3).startswith("9"))


def clean_status(value: str | None) -> str | None:
    """'5.1.1 (Bad destination mailbox)' -> '5.1.1'; junk -> None."""
    if not value:
        return None
    m = STATUS_RE.search(value)
    return m.group(0) if m and valid_status(m.group(0)) else None


def prefer(field_code: str | None, text_code: str | None, reply: int | None) -> str | None:
    """Pick between the Status: field and the code quoted in the diagnostic text.

    The rules follow Sisimai's smtp/status Prefer() (BSD-2, (C) azumakuniyuki): a
    specific code in the remote server's own words beats a generic one (x.0.0) that
    the reporting MTA wrote into the Status: field.
    """
    if not field_code:
        return text_code
    if not text_code:
        return field_code
    if reply:
        first = str(reply)[0]
        if field_code[0] != text_code[0]:
            if field_code[0] == first:
                return field_code
            if text_code[0] == first:
                return text_code
    if field_code == text_code:
        return field_code
    if ".0.0" in field_code:
        return text_code if ".0.0" not in text_code else field_code
    if ".0" in field_code and ".0" not in text_code:
        return text_code
    if ".0.0" in text_code:
        return field_code
    if field_code in ("4.4.7", "4.7.0") or field_code.startswith("5.3."):
        return text_code
    if field_code[1:4] in (".5.1", ".5.2", ".5.4", ".5.5"):
        return text_code
    if field_code == "5.1.1":
        return field_code if (".0" in text_code or text_code.startswith("5.5.")) else text_code
    if field_code == "5.1.3" and text_code.startswith("5.7."):
        return text_code
    return field_code


_CONTINUATION = re.compile(r"(?<=\S)\s+[245]\d\d[- ](?:[245]\.\d{1,3}\.\d{1,3}\s+)?(?=\S)")


def join_multiline_reply(text: str) -> str:
    """'550-5.2.1 foo 550-5.2.1 bar' -> '550-5.2.1 foo bar': keeps phrases in one piece."""
    head = re.match(r"\s*[245]\d\d[- ](?:[245]\.\d{1,3}\.\d{1,3}\s+)?", text)
    if not head:
        return text
    return text[: head.end()] + _CONTINUATION.sub(" ", text[head.end() :])
