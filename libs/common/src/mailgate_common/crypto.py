"""Credentials at rest: AES-256-GCM under a key derived from MAILGATE_SECRET.

A sealed value is ``b"v1:" + key_id + b":" + nonce + ciphertext``.  The key id
(first 8 hex chars of the key's SHA-256) lets a rotation decrypt with the
previous secret and re-seal with the new one.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_INFO = b"mailgate credentials v1"


class CredentialError(ValueError):
    """A sealed value cannot be opened with any configured secret."""


def derive_key(secret: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(
        secret.encode()
    )


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).hexdigest()[:8].encode()


class Sealer:
    def __init__(self, secret: str, previous: tuple[str, ...] = ()) -> None:
        self._key = derive_key(secret)
        self._keys = {_key_id(k): k for k in (self._key, *map(derive_key, previous))}

    @classmethod
    def from_settings(cls, secret: str, previous: str | None) -> Sealer:
        """The sealer every service uses: the current secret, plus the previous one during a rotation."""
        return cls(secret, (previous,) if previous else ())

    def seal(self, value: dict[str, Any]) -> bytes:
        nonce = os.urandom(12)
        data = AESGCM(self._key).encrypt(nonce, json.dumps(value).encode(), None)
        return b"v1:" + _key_id(self._key) + b":" + nonce + data

    def open(self, sealed: bytes) -> dict[str, Any]:
        try:
            version, key_id, rest = bytes(sealed).split(b":", 2)
        except ValueError as exc:
            raise CredentialError("not a sealed value") from exc
        key = self._keys.get(key_id)
        if version != b"v1" or key is None:
            raise CredentialError("sealed with an unknown secret")
        try:
            plain = AESGCM(key).decrypt(rest[:12], rest[12:], None)
        except Exception as exc:
            raise CredentialError("credentials do not decrypt") from exc
        result: dict[str, Any] = json.loads(plain)
        return result

    def needs_reseal(self, sealed: bytes) -> bool:
        return bytes(sealed).split(b":", 2)[1] != _key_id(self._key)


def split_secret(connection: dict[str, Any] | None) -> tuple[dict[str, Any] | None, str | None]:
    """Take ``auth.pass`` (or ``auth.accessToken``) out of an IMAP/SMTP settings dict."""
    if connection is None:
        return None, None
    public: dict[str, Any] = json.loads(json.dumps(connection))
    auth = public.get("auth") or {}
    secret = auth.pop("pass", None) or auth.pop("accessToken", None)
    return public, secret


def with_secret(connection: dict[str, Any], secret: str | None) -> dict[str, Any]:
    merged: dict[str, Any] = json.loads(json.dumps(connection))
    if secret is not None:
        merged.setdefault("auth", {})["pass"] = secret
    return merged
