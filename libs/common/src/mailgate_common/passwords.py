"""Shared passwords stored as salted, slow hashes (scrypt), checked with a small cache.

Used for EmailEngine's ``smtpServerPassword`` (one password for the SMTP door).
A leaked settings table must not reveal it: an unsalted SHA-256 of a
human-chosen password falls to a dictionary in seconds.  scrypt costs tens of
milliseconds per check, so a correct password is remembered (as its SHA-256,
never in clear) and a busy SMTP door pays that once, not per connection.
"""

from __future__ import annotations

import hashlib
import hmac
import os

# RFC 7914's interactive parameters: 16 MiB of memory per check.
_N, _R, _P = 2**14, 8, 1


def _scrypt(password: bytes, salt: bytes) -> bytes:
    return hashlib.scrypt(password, salt=salt, n=_N, r=_R, p=_P, maxmem=64 * 1024 * 1024, dklen=32)


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    return f"scrypt:{salt.hex()}:{_scrypt(password.encode(), salt).hex()}"


def verify_password(stored: str, given: str) -> bool:
    """``stored`` as :func:`hash_password` made it (or a legacy ``sha256:<hex>``, or a
    value set by hand in clear).  May take tens of milliseconds: call it off the event loop."""
    digest = hashlib.sha256(given.encode()).digest()
    if stored.startswith("scrypt:"):
        return _scrypt_matches(stored, digest, given)
    if stored.startswith("sha256:"):
        return hmac.compare_digest(stored, "sha256:" + digest.hex())
    return hmac.compare_digest(stored.encode(), given.encode())


# (stored hash, SHA-256 of the given password) -> result: never the password in clear.
_verified: dict[tuple[str, bytes], bool] = {}
MAX_REMEMBERED = 64


def _scrypt_matches(stored: str, given_digest: bytes, given: str) -> bool:
    key = (stored, given_digest)
    known = _verified.get(key)
    if known is not None:
        return known
    try:
        _, salt, expected = stored.split(":")
        result = hmac.compare_digest(_scrypt(given.encode(), bytes.fromhex(salt)).hex(), expected)
    except ValueError:
        return False
    if len(_verified) >= MAX_REMEMBERED:
        _verified.clear()
    _verified[key] = result
    return result
