"""Webhook signatures, verifiable by EmailEngine clients and Standard Webhooks libraries (shared:
the webhooks service signs every delivery, the MX door signs its synchronous route calls).

* ``X-EE-Wh-Signature``: base64url (no padding) HMAC-SHA256 of the raw body,
  keyed with the secret string as EmailEngine does (the endpoint's secret,
  or the service secret for the settings/account URL).
* ``webhook-id`` / ``webhook-timestamp`` / ``webhook-signature``: the
  Standard Webhooks scheme, ``v1,`` + base64 HMAC-SHA256 of
  ``"{id}.{timestamp}.{body}"`` keyed with the base64 part of ``whsec_…``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def ee_signature(secret: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def standard_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def standard_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(standard_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(
    secret: str, msg_id: str, timestamp: int, body: bytes, previous: str | None = None
) -> dict[str, str]:
    """``previous``: during a secret rotation's overlap the old secret signs too;
    Standard Webhooks verifiers accept any one of space-separated signatures."""
    signatures = [standard_signature(secret, msg_id, timestamp, body)]
    if previous:
        signatures.append(standard_signature(previous, msg_id, timestamp, body))
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signatures),
        "x-ee-wh-signature": ee_signature(secret, body),
        "x-mailgate-event-id": msg_id,
    }
