"""One transaction per received message, committed before the door answers 250.

The ``inbound_messages`` row, the delivery log of the synchronous calls already
answered (delivered, with their attempt) and the ``InboundMessage`` events for the
webhooks service (``pending_events``, published by the relay once committed) go in
together: a crash or an outage leaves all of them or none, and the client, told
``451``, sends again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from email.message import Message
from typing import Any

from mailgate_common import events
from mailgate_common.db import Database
from mailgate_common.db.models import InboundMessage, WebhookAttempt, WebhookDelivery
from mailgate_common.event_relay import stage
from mailgate_common.inbound import payload
from mailgate_common.text import clean_text
from mailgate_smtp_ingress import mx_message


def inbound_row(received: payload.Received, headers: Message, *, deliveries: list[dict[str, Any]],
                held: bool, recipients: list[str]) -> InboundMessage:
    """``recipients``: the envelope recipients the message was taken for (refused ones left out)."""
    message_id = mx_message.message_id_of(headers)
    subject = mx_message.subject_of(headers)
    return InboundMessage(
        id=received.id, received_at=received.received_at, remote_ip=received.remote_ip,
        helo=clean_text(received.helo, 255) if received.helo else None,
        mail_from=received.mail_from, rcpt_to=recipients, tls=received.tls, size=len(received.raw),
        message_id=clean_text(message_id) if message_id else None,
        subject=clean_text(subject) if subject is not None else None,
        raw=received.raw, auth=received.auth, spam=received.spam, automated=received.automated,
        deliveries=deliveries, held=held,
    )


# The message and its events in one statement (atomic on its own, one round trip): the
# common case, when no synchronous call left delivery-log rows to write.
_INSERT = """
WITH message AS (
    INSERT INTO inbound_messages (id, received_at, remote_ip, helo, mail_from, rcpt_to, tls, size, message_id,
                                  subject, raw, auth, spam, automated, deliveries, held)
    VALUES ($1::text, $2::timestamptz, $3::text, $4::text, $5::text, $6::text[], $7::text, $8::int, $9::text,
            $10::text, $11::bytea, $12::jsonb, $13::jsonb, $14::text, $15::jsonb, $16::boolean)
)
INSERT INTO pending_events (id, routing_key, body)
SELECT * FROM unnest($17::text[], $18::text[], $19::bytea[])
"""


async def commit(db: Database, row: InboundMessage, staged: Sequence[events.Event],
                 delivered: Sequence[dict[str, Any]]) -> None:
    if not delivered:
        async with db.statement_connection() as conn:
            await conn.execute(
                _INSERT, row.id, row.received_at, row.remote_ip, row.helo, row.mail_from, row.rcpt_to, row.tls,
                row.size, row.message_id, row.subject, row.raw, json.dumps(row.auth), json.dumps(row.spam),
                row.automated, json.dumps(row.deliveries), row.held,
                [e.id for e in staged], [e.routing_key for e in staged], [events.encode(e) for e in staged])
        return
    async with db.transaction() as session:
        session.add(row)
        for d in delivered:
            delivery = WebhookDelivery(
                event_id=d["event_id"], event=d["event"], account_id=d["account_id"], url=d["url"],
                endpoint_id=d["endpoint_id"], payload=d["payload"], state="delivered", attempts_made=1,
                last_status=d["status"], delivered_at=events.utcnow(),
            )
            session.add(delivery)
            await session.flush()
            session.add(WebhookAttempt(
                delivery_id=delivery.id, attempt=1, status_code=d["status"], response_excerpt=d["excerpt"],
                duration_ms=d["duration_ms"], started_at=d["started_at"],
            ))
        stage(session, *staged)
