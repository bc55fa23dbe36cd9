"""From an SMTP transaction to an outbox row: the envelope routes, the headers get fixed.

Pure logic (no I/O) so the rules are easy to read and to test:
recipients are the RCPT TO addresses, ``Bcc`` is removed, ``Message-ID``,
``Date`` and ``MIME-Version`` are added when missing (the shared
``prepare_raw``), ``X-EE-Send-At`` schedules and ``X-EE-Account`` picks the
account in no-auth mode; both are removed before queuing, like the
``X-Mailgate-Template*`` headers (read by ``templating``).

SMTP has no idempotency key, and a client whose connection dropped after our
commit but before our ``250`` (RFC 1047) sends the message again.  The same
envelope and the same bytes on the same day are taken as that retry: the
message gets a key derived from them, and the retry is answered with the first
queue id instead of being queued twice.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from mailgate_common.mime import InvalidMessage, prepare_raw
from mailgate_common.outbox import NewMessage, fingerprint

SEND_AT_HEADER = "X-EE-Send-At"
ACCOUNT_HEADER = "X-EE-Account"
# templating.TEMPLATE_HEADER and PARAMS_HEADER: never sent, whether or not a template is used.
TEMPLATE_HEADERS = ("X-Mailgate-Template", "X-Mailgate-Template-Params")

log = logging.getLogger("mailgate.smtp_ingress")


class Rejected(Exception):
    """The message cannot be accepted; ``reply`` is the SMTP answer."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


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
        prepared = prepare_raw(data, drop=(SEND_AT_HEADER, ACCOUNT_HEADER, *TEMPLATE_HEADERS), now=now)
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
        message_id=prepared.message_id,
        envelope_from=mail_from,
        envelope_to=list(rcpt_tos),
        subject=prepared.subject,
        raw=prepared.raw,
        send_at=send_at,
        max_attempts=max_attempts,
        source="smtp",
        idempotency_key=retry_key(data, mail_from, rcpt_tos, now),
        lookup_key_first=False,
        traceparent=traceparent,
    )


def retry_key(data: bytes, mail_from: str, rcpt_tos: list[str], now: datetime) -> str:
    """The idempotency key of an SMTP submission: its day, envelope and exact bytes."""
    day = now.astimezone(UTC).date().isoformat()
    return "smtp:" + fingerprint(day.encode(), mail_from.encode(), "\n".join(rcpt_tos).encode(), data)
