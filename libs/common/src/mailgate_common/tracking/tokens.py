"""Signed tracking and unsubscribe URLs.

A URL carries ``data`` (base64url JSON) and ``sig`` (``<key id>.<base64url
HMAC-SHA256 of data>``).  The key is derived from ``MAILGATE_SECRET``; links
signed with ``MAILGATE_SECRET_PREVIOUS`` or a secret in
``MAILGATE_TRACKING_RETIRED_SECRETS`` still verify, so a rotation never breaks
mail already delivered.  A click URL's destination is only ever read from signed
data: nothing can redirect to a URL mailgate did not put there.

The data keys (short: they are in every link of every message):
``act`` ("open" | "click" | "unsub"), ``acc`` (account), ``q`` (queue id),
``msg`` (Message-ID), ``rcpt`` (the one recipient, when there is one),
``url`` (click destination), ``list`` (list id).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
from collections.abc import Iterable
from typing import Any, Literal
from urllib.parse import quote, urlencode, urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mailgate_common.settings import Settings

Action = Literal["open", "click", "unsub"]
_INFO = b"mailgate tracking v1"
OPEN_PATH = "/open.gif"
CLICK_PATH = "/redirect"
UNSUBSCRIBE_PATH = "/unsubscribe"
OWN_PATHS = (OPEN_PATH, CLICK_PATH, UNSUBSCRIBE_PATH)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _derive(secret: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret.encode())


class Signer:
    """Signs with the current secret's key; verifies with any configured one."""

    def __init__(self, secret: str, older: Iterable[str] = ()) -> None:
        self._key = _derive(secret)
        self._kid = hashlib.sha256(self._key).hexdigest()[:8]
        self._keys = {hashlib.sha256(k).hexdigest()[:8]: k for k in (*map(_derive, older), self._key)}

    @classmethod
    def from_settings(cls, secret: str, previous: str | None, retired: str | None = None) -> Signer:
        """MAILGATE_SECRET, MAILGATE_SECRET_PREVIOUS and MAILGATE_TRACKING_RETIRED_SECRETS (comma-separated)."""
        older = [s for s in [previous, *(retired or "").split(",")] if s and s.strip()]
        return cls(secret, [s.strip() for s in older])

    def sign(self, data: dict[str, Any]) -> tuple[str, str]:
        """(data, sig) query values for ``data``; None values are left out."""
        payload = _b64(json.dumps({k: v for k, v in data.items() if v is not None},
                                  separators=(",", ":"), ensure_ascii=False).encode())
        mac = hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest()
        return payload, f"{self._kid}.{_b64(mac)}"

    def verify(self, payload: str, sig: str) -> dict[str, Any] | None:
        """The signed data, or None for anything tampered, truncated or signed by an unknown key."""
        kid, _, mac_text = sig.partition(".")
        key = self._keys.get(kid)
        if key is None or not payload or len(payload) > 16384:
            return None
        try:
            mac = _unb64(mac_text)
            expected = hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest()
            if not hmac.compare_digest(mac, expected):
                return None
            data = json.loads(_unb64(payload))
        except (binascii.Error, ValueError, UnicodeError):
            return None
        return data if isinstance(data, dict) else None

    def url(self, base: str, path: str, data: dict[str, Any]) -> str:
        payload, sig = self.sign(data)
        return f"{base.rstrip('/')}{path}?{urlencode({'data': payload, 'sig': sig})}"

    def open_url(self, base: str, *, account: str, queue_id: str | None, message_id: str | None,
                 recipient: str | None) -> str:
        return self.url(base, OPEN_PATH, {"act": "open", "acc": account, "q": queue_id,
                                          "msg": message_id, "rcpt": recipient})

    def click_url(self, base: str, target: str, *, account: str, queue_id: str | None,
                  message_id: str | None, recipient: str | None) -> str:
        return self.url(base, CLICK_PATH, {"act": "click", "url": target, "acc": account, "q": queue_id,
                                           "msg": message_id, "rcpt": recipient})

    def unsubscribe_url(self, base: str, *, account: str, list_id: str, recipient: str,
                        message_id: str | None) -> str:
        return self.url(base, UNSUBSCRIBE_PATH, {"act": "unsub", "acc": account, "list": list_id,
                                                 "rcpt": recipient, "msg": message_id})

    def unsubscribe_mailto(self, mailbox: str, *, account: str, list_id: str, recipient: str,
                           message_id: str | None) -> str:
        """The ``mailto:`` List-Unsubscribe entry: a mail to the account's own mailbox whose
        subject carries the signed data (imap-sync acts on it, see :func:`unsubscribe_subject`)."""
        payload, sig = self.sign({"act": "unsub", "acc": account, "list": list_id, "rcpt": recipient,
                                  "msg": message_id})
        return f"mailto:{mailbox}?subject={quote(f'{SUBJECT_PREFIX}{payload}.{sig}', safe='')}"


@functools.cache
def _signer(secret: str, previous: str | None, retired: str | None) -> Signer:
    return Signer.from_settings(secret, previous, retired)


def signer_for(settings: Settings) -> Signer:
    """The process's signer: its keys are derived once, not per link or request."""
    return _signer(settings.secret, settings.secret_previous, settings.tracking_retired_secrets)


# The subject of a mailto unsubscribe: "unsubscribe <data>.<key id>.<mac>".
SUBJECT_PREFIX = "unsubscribe "


def unsubscribe_subject(subject: str) -> tuple[str, str] | None:
    """(data, sig) from a mailto unsubscribe's subject (a reply may prefix "Re: "), else None."""
    _, found, token = subject.strip().partition(SUBJECT_PREFIX)
    payload, _, sig = token.strip().partition(".")
    return (payload, sig) if found and payload and sig else None


def base_url(*candidates: str | None, fallback: str) -> str:
    """The first configured base URL, without a trailing slash.

    Callers pass, in order: the message's ``baseUrl``, MAILGATE_TRACKING_BASE_URL,
    the ``serviceUrl`` setting, MAILGATE_SERVICE_URL; ``fallback`` is the API's own address.
    """
    for candidate in candidates:
        if candidate:
            return candidate.rstrip("/")
    return fallback.rstrip("/")


def is_own_link(url: str, base: str) -> bool:
    """A link mailgate itself made (pixel, click, unsubscribe): never rewritten again."""
    try:
        link, own = urlsplit(url), urlsplit(base)
    except ValueError:
        return False
    if link.netloc.lower() != own.netloc.lower():
        return False
    path = link.path[len(own.path.rstrip("/")):] if link.path.startswith(own.path.rstrip("/")) else link.path
    return path in OWN_PATHS
