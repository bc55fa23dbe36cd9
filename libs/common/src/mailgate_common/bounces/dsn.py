"""RFC 3464 delivery status notifications (message/delivery-status and look-alikes)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import Message

from .mime import part_text
from .text import MAX_LINE, MAX_RECIPIENTS, bounded

_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)$")
_RECIPIENT_FIELDS = frozenset({"final-recipient", "original-recipient", "x-actual-recipient"})
_DSN_FIELDS = frozenset(
    {
        "reporting-mta",
        "received-from-mta",
        "arrival-date",
        "original-envelope-id",
        "dsn-gateway",
        "x-postfix-queue-id",
        "x-postfix-sender",
        "final-recipient",
        "original-recipient",
        "action",
        "status",
        "remote-mta",
        "diagnostic-code",
        "last-attempt-date",
        "will-retry-until",
        "final-log-id",
        "x-actual-recipient",
        "x-supplementary-info",
        "x-display-name",
        "x-powermta-bouncecategory",
    }
)
# A report is read up to this many fields (a recipient takes about six).
_MAX_FIELDS = 10 * MAX_RECIPIENTS
# Separates the blank-line delimited field groups of RFC 3464 (one per recipient).
BLOCK_END = ("", "")
# A quoted local part ("john..doe"@example.org) is kept with its quotes: it is the address.
# Anchored at a token start and bounded, like text.ADDR, so a long value without an
# address costs one pass.
_ADDR = re.compile(
    r"(?<![^\s<>()\[\]\"',;:])(?:\"[^\"\r\n]{1,256}\"|[^\s<>()\[\]\"',;:]{1,256})@[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*"
)


@dataclass
class DsnRecipient:
    address: str = ""
    original: str = ""
    action: str = ""
    status: str = ""
    diagnostic: str = ""
    diagnostic_type: str = ""
    remote_mta: str = ""
    fields: dict[str, str] = field(default_factory=dict)


@dataclass
class Dsn:
    reporting_mta: str = ""
    recipients: list[DsnRecipient] = field(default_factory=list)


def fields_of_part(part: Message) -> list[tuple[str, str]]:
    """Fields of a delivery-status part in order, whether or not the MIME parser split it."""
    payload = part.get_payload()
    if isinstance(payload, list):
        pairs: list[tuple[str, str]] = []
        for block in payload:
            if isinstance(block, Message):
                pairs.append(BLOCK_END)
                pairs.extend((k, " ".join(str(v)[:MAX_LINE].split())) for k, v in block.items())
                # A block's "body" holds fields after a malformed line; keep reading them.
                body = block.get_payload()
                if isinstance(body, str) and body.strip():
                    pairs.extend(fields_of_text(body))
            if len(pairs) > _MAX_FIELDS:
                break
        return pairs
    return fields_of_text(part_text(part))


def fields_of_text(text: str) -> list[tuple[str, str]]:
    """DSN fields embedded in plain text (unfolds continuation lines)."""
    pairs: list[tuple[str, str]] = []
    for line in bounded(text).split("\n"):
        if not line.strip():
            if pairs and pairs[-1] != BLOCK_END:
                pairs.append(BLOCK_END)
            continue
        if line[:1] in (" ", "\t") and pairs and pairs[-1] != BLOCK_END:
            name, value = pairs[-1]
            if name.lower() in _DSN_FIELDS and line.strip() and len(value) < MAX_LINE:
                pairs[-1] = (name, f"{value} {line.strip()}")
            continue
        m = _FIELD.match(line.strip())
        if m and m.group(1).lower() in _DSN_FIELDS:
            pairs.append((m.group(1), m.group(2).strip()))
    return pairs


def _typed_value(value: str) -> tuple[str, str]:
    """'rfc822; a@b' -> ('rfc822', 'a@b'); values without a type keep an empty type."""
    kind, sep, rest = value.partition(";")
    if sep and re.fullmatch(r"\s*[A-Za-z0-9-]+\s*", kind):
        return kind.strip(), rest.strip()
    return "", value.strip()


def address_in(value: str) -> str:
    m = _ADDR.search(value)
    return m.group(0).strip(".") if m else ""


def build(pairs: list[tuple[str, str]]) -> Dsn:
    dsn = Dsn()
    current: DsnRecipient | None = None
    # Fields that precede the recipient field in the same group (some MTAs write
    # Diagnostic-Code before Final-Recipient) wait here for their recipient.
    pending: list[tuple[str, str]] = []
    for raw_name, value in [*pairs, BLOCK_END]:
        name = raw_name.lower()
        if (raw_name, value) == BLOCK_END:
            for k, v in pending:
                if k == "reporting-mta" and not dsn.reporting_mta:
                    dsn.reporting_mta = _typed_value(v)[1]
            current, pending = None, []
            continue
        if name in _RECIPIENT_FIELDS and len(dsn.recipients) >= MAX_RECIPIENTS:
            break
        if name in _RECIPIENT_FIELDS and (
            current is None
            or name in current.fields
            or (
                name == "original-recipient"
                and "final-recipient" in current.fields
                and "action" in current.fields
            )
        ):
            current = DsnRecipient()
            dsn.recipients.append(current)
            for k, v in pending:
                _set(dsn, current, k, v)
            pending = []
        if current is None:
            pending.append((name, value))
            continue
        _set(dsn, current, name, value)
    for r in dsn.recipients:
        # A source route ("@relay:user@host") in Final-Recipient is the MTA's internal
        # form; the Original-Recipient is the address the sender used.
        routed = re.search(r"@[^\s:@]+:", r.fields.get("final-recipient", "")) is not None
        if not r.address or (routed and r.original):
            r.address = r.original
    dsn.recipients = [r for r in dsn.recipients if r.address]
    return dsn


def _set(dsn: Dsn, current: DsnRecipient, name: str, value: str) -> None:
    if name in current.fields and name not in _RECIPIENT_FIELDS:
        return  # duplicated fields: keep the first, like most readers do
    current.fields[name] = value
    if name == "final-recipient":
        current.address = address_in(_typed_value(value)[1])
    elif name in ("original-recipient", "x-actual-recipient") and not current.original:
        current.original = address_in(_typed_value(value)[1])
    elif name == "action":
        current.action = value.split()[0].lower().rstrip(";,") if value.split() else ""
    elif name == "status":
        current.status = value
    elif name == "diagnostic-code":
        kind, text = _typed_value(value)
        current.diagnostic_type, current.diagnostic = kind.upper(), text
    elif name == "remote-mta":
        current.remote_mta = _typed_value(value)[1]
    elif name == "reporting-mta" and not dsn.reporting_mta:
        dsn.reporting_mta = _typed_value(value)[1]
