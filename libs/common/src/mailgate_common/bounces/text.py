"""Reading human-readable bounce notices (qmail, Exim, Sendmail, Gmail, Exchange, ...).

These formats differ in wording but share a shape: an explanation, the failed
address(es) each followed by the remote server's answer, then a copy of the original
message. We find that shape instead of matching each MTA's exact text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# An address starts a token (the look-behind) and its local part has at most 64
# characters (RFC 5321): a long run of address characters with no "@" is then
# given up at its first character, instead of being rescanned from every one of
# its positions (quadratic: 90 s for a 120 KB line).
ADDR = r"(?<![^\s<>()\[\]\"',;:@])[^\s<>()\[\]\"',;:@]{1,64}@[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)+"
ADDR_RE = re.compile(ADDR)

# How much of a notice is read.  Every step of the parser is then bounded whatever a
# message holds: a forged 120 KB "bounce" must cost milliseconds, not stall imap-sync.
# The Sisimai corpus (836 messages) stays well inside: its longest explanation is
# 18 KB, its longest line 1,046 characters, its largest report names 3 recipients.
MAX_MESSAGE = 256 * 1024
MAX_NOTICE = 32 * 1024
MAX_LINE = 2000
# Each recipient's reason is read from the whole notice, so more of them cost more.
MAX_RECIPIENTS = 20
# What one recipient's reason is read from (the corpus's longest is 1,650 characters).
MAX_EVIDENCE = 2048
# Addresses weighed per notice (the corpus has at most 12).
MAX_CANDIDATES = 200
# Context that decides whether an address is a recipient ("Final-Recipient: rfc822;")
# sits right before it: looking further back on a long line cost O(line) per address.
_CONTEXT = 100


def bounded(text: str) -> str:
    """At most MAX_NOTICE characters of ``text``, each line cut at MAX_LINE."""
    text = text[:MAX_NOTICE]
    lines = text.split("\n")
    if max(map(len, lines)) <= MAX_LINE:
        return text
    return "\n".join(line[:MAX_LINE] for line in lines)


# Where the returned copy of the original message starts inside a text notice: a
# separator line ("----- Original message -----") or a line that only announces it.
_ORIGINAL_MARKERS = re.compile(
    r"(?im)^[ \t]*(?:"
    # Gmail titles its notices "** Message not delivered **": a heading, not a separator.
    r"(?![*]{2} [^\n]*[*]{2}[ \t]*$)"
    r"[-=_*#]{2,}[ \t]*(?:begin[ \t]+)?(?:this is a copy|below this line|original|returned|"
    r"unsent|undelivered|rejected|included|message|copy|the header|headers? of|text of|"
    r"the original|failed message|content of)[^\n]*|"
    r"(?:a )?copy of the (?:original )?message[^\n]{0,40}|original message(?: follows)?:?|"
    r"the original message (?:headers? )?(?:follows?|is attached)[^\n]*:?|"
    r"(?:returned|original) mail follows:?|message headers? follows?\.?|"
    r"your message reads[^\n]*|content-type: (?:message/rfc822|text/rfc822-headers)"
    r")[ \t]*$"
)
_HEADER_START = re.compile(
    r"(?m)^(?:Return-Path|Received|DKIM-Signature|Message-I[Dd]|X-Received|ARC-Seal)[ \t]*:"
)

_NOT_RECIPIENT_LOCAL = re.compile(
    r"(?i)^(?:mailer-daemon|mail-daemon|maildaemon|mdaemon|double-bounce)$"
)
# Addresses quoted in these contexts belong to the sender or a server, not a recipient.
_SENDER_CONTEXT = re.compile(
    r"(?i)(?:mail from|envelope-from|return-path|reply-to|sender(?: address)?|from)\s*[:=]?\s*<?$"
)
_RECIPIENT_PREFIX = re.compile(
    r"(?i)(?:rcpt to|recipient(?:s)?|original-recipient|final-recipient|failed recipient|"
    r"deliver(?:y|ed|ing)? to|sent to|addressed to|to|for|address|user|mailbox)\s*[:=]?\s*"
    r"(?:rfc822;)?\s*[<\"(]?$"
)


@dataclass
class Candidate:
    address: str
    score: int
    line_no: int


def split_notice(text: str) -> tuple[str, str]:
    """(explanation, returned original) of a text notice."""
    cut = len(text)
    m = _ORIGINAL_MARKERS.search(text)
    if m:
        cut = m.start()
    h = _HEADER_START.search(text)
    if h and h.start() < cut and _is_header_block(text[h.start() :]):
        cut = h.start()
    return text[:cut], text[cut:]


def _is_header_block(text: str) -> bool:
    lines = text.split("\n", 6)[:6]
    return sum(bool(re.match(r"[A-Za-z][\w-]*:\s|\s", ln)) for ln in lines) >= 4


def _score(line: str, start: int, end: int) -> int:
    context = line[max(0, start - _CONTEXT) : start]
    before = line[:start].rstrip('<"( \t')
    after = line[end:].lstrip('>") \t')
    if _SENDER_CONTEXT.search(context):
        return -1
    if re.search(r"(?i)(?:mail from|envelope-from)\s*:?\s*<?$", context):
        return -1
    if not before.strip() or re.fullmatch(r"[\s*\-\u2022>:.]*", before):
        return 3  # the address starts the line: the classic list of failed recipients
    if _RECIPIENT_PREFIX.search(context):
        return 3
    if re.fullmatch(r"[245]\d\d(?:[ -][245]\.\d{1,3}\.\d{1,3})?", before.strip()) and (
        after.startswith("...")
    ):
        return 3  # Sendmail's per-recipient result line: "550 <addr>... User unknown"
    if not after or after[:1] in (":", "."):
        return 2
    return 1


_HELPDESK = re.compile(r"(?i)\b(?:contact|write to|reach us at|questions to)\s*:?\s*<?(" + ADDR + ")")


def candidates(notice: str) -> list[Candidate]:
    out: list[Candidate] = []
    # The helpdesk a notice points to ("please contact <support@...>") is never a failed
    # recipient, wherever else (e.g. in a translation) the notice repeats it.
    helpdesk = {m.group(1).lower() for m in _HELPDESK.finditer(notice)}
    for line_no, line in enumerate(notice.split("\n")):
        if len(out) >= MAX_CANDIDATES:
            break
        for m in ADDR_RE.finditer(line):
            address = m.group(0).rstrip(".-")
            local = address.rsplit("@", 1)[0]
            if _NOT_RECIPIENT_LOCAL.match(local) or address.lower() in helpdesk:
                continue
            score = _score(line, m.start(), m.end())
            if score > 0:
                out.append(Candidate(address, score, line_no))
    return out


def pick_recipients(notice: str, exclude: set[str]) -> list[tuple[str, int]]:
    """Failed recipients (address, line number) in the explanation text, best evidence first."""
    every = candidates(notice)
    found = [c for c in every if c.address.lower() not in exclude]
    if not found:
        # Anonymised or self-addressed tests: the sender can be the recipient too, but
        # only believe it when the address sits where failed recipients are listed.
        found = [c for c in every if c.score >= 3]
    if not found:
        return []
    best = max(c.score for c in found)
    seen: dict[str, int] = {}
    for c in found:
        if c.score == best and c.address.lower() not in seen:
            seen[c.address.lower()] = c.line_no
    return [(next(c.address for c in found if c.address.lower() == k), v) for k, v in seen.items()]


# Sendmail's per-recipient result line in a session transcript: "554 <addr>... text".
_RESULT_LINE = re.compile(r"^\s*[245]\d\d[ -](?:[245]\.\d{1,3}\.\d{1,3} )?<?[^\s<>]+@[^\s<>]+?>?\.\.\.\s")
_TALKING_TO = re.compile(r"(?i)^\s*(?:\.\.\. )?while talking to ")


def _transcript_exchange(lines: list[str], line_no: int) -> str:
    """A Sendmail result line with the server replies that led to it.

    In a transcript the result line closes the recipient's exchange: the lines before it
    back to the last command sent (">>> DATA") are the server's answers about it, while
    the lines after it already belong to the next recipient.
    """
    start = line_no
    while start > 0:
        prev = lines[start - 1]
        if not prev.strip() or _RESULT_LINE.match(prev) or _TALKING_TO.match(prev):
            break
        start -= 1
        if prev.lstrip().startswith(">>>"):
            break
    return " ".join(" ".join(lines[start : line_no + 1]).split())


def block_after(notice: str, line_no: int, stops: set[int]) -> str:
    """The answer text that belongs to the recipient named on line_no."""
    lines = notice.split("\n")
    if _RESULT_LINE.match(lines[line_no]):
        return _transcript_exchange(lines, line_no)
    out: list[str] = [lines[line_no]]
    blank_run = 0
    for i in range(line_no + 1, min(len(lines), line_no + 40)):
        if i in stops:
            break
        if not lines[i].strip():
            blank_run += 1
            if blank_run >= 2:
                break
            continue
        blank_run = 0
        out.append(lines[i])
    return " ".join(" ".join(out).split())


def collapse(text: str) -> str:
    return " ".join(text.split())
