"""From an SMTP transaction to an outbox row: the envelope routes, the headers get fixed.

Pure logic (no I/O) so the rules are easy to read and to test:
recipients are the RCPT TO addresses, ``Bcc`` is removed, ``Message-ID``,
``Date`` and ``MIME-Version`` are added when missing (the shared
``prepare_raw``), ``X-EE-Send-At`` schedules and ``X-EE-Account`` picks the
account in no-auth mode; both are removed before queuing.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from mailgate_common.mime import InvalidMessage, prepare_raw
from mailgate_common.outbox import NewMessage

SEND_AT_HEADER = "X-EE-Send-At"
ACCOUNT_HEADER = "X-EE-Account"

log = logging.getLogger("mailgate.smtp_ingress")


class Rejected(Exception):
    """The message cannot be accepted; ``reply`` is the SMTP answer."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


def db_text(value: str) -> str:
    """A header value PostgreSQL text can hold: no NUL, no undecodable bytes.

    Only the copies kept in outbox columns; the message bytes are not touched.
    """
    return value.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def parse_send_at(value: str, now: datetime) -> datetime:
    """ISO 8601 (EmailEngine's form) or an RFC 5322 date; the past means now."""
    value = value.strip()
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError) as exc:
            raise Rejected(f"554 5.6.0 {SEND_AT_HEADER} is not a valid date: {value[:64]!r}") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(now, when)


def compose(
    data: bytes,
    *,
    mail_from: str,
    rcpt_tos: list[str],
    account: str | None,
    max_attempts: int,
    now: datetime,
    default_account: str | None = None,
    traceparent: str | None = None,
) -> NewMessage:
    """The outbox row for this message.  ``account`` None: take it from X-EE-Account."""
    try:
        prepared = prepare_raw(data, drop=(SEND_AT_HEADER, ACCOUNT_HEADER), now=now)
    except InvalidMessage as exc:
        raise Rejected(f"554 5.6.0 Message rejected: {exc.message}") from exc
    except Exception as exc:
        # The email package can trip over a mangled header block; that is the
        # client's message, not our failure, so no 4xx that would invite retries.
        log.warning("unparseable header block: %r", exc)
        raise Rejected("554 5.6.0 Message rejected: malformed header block") from exc
    removed = prepared.removed_headers
    if account is None:
        account = removed.get(ACCOUNT_HEADER.lower(), "").strip() or default_account
        if account is None:
            raise Rejected(f"550 5.7.1 No account: authenticate or set the {ACCOUNT_HEADER} header")
        if not account.isprintable() or len(account) > 256:
            raise Rejected("550 5.7.1 Unknown account")
    send_at_value = removed.get(SEND_AT_HEADER.lower())
    send_at = parse_send_at(send_at_value, now) if send_at_value else now
    return NewMessage(
        account_id=account,
        message_id=db_text(prepared.message_id),
        envelope_from=mail_from,
        envelope_to=list(rcpt_tos),
        subject=db_text(prepared.subject) if prepared.subject is not None else None,
        raw=prepared.raw,
        send_at=send_at,
        max_attempts=max_attempts,
        source="smtp",
        traceparent=traceparent,
    )
