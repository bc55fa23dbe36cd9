"""DKIM (RFC 6376): every DKIM-Signature of a received message, verified with dkimpy.

The keys are fetched here, with our async resolver, before dkimpy sees them:
dkimpy's own lookup turns "no key", "bad key" and "DNS timed out" all into a
plain False, while RFC 8601 tells them apart (permerror, permerror, temperror).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import dkim  # type: ignore[import-untyped]
import dkim.util  # type: ignore[import-untyped]
import dns.asyncresolver

from mailgate_common.inbound.resolver import DnsTempError, txt

# Signatures verified per message (top first): each costs a key lookup, and a sender gains nothing past a few.
MAX_SIGNATURES = 10


@dataclass(frozen=True)
class SignatureVerdict:
    result: str  # pass | fail | neutral | temperror | permerror
    domain: str | None
    selector: str | None
    reason: str | None = None


@dataclass(frozen=True)
class _Signature:
    index: int
    domain: str | None
    selector: str | None
    problem: str | None  # why the signature cannot be verified at all (permerror)


def _signatures(raw: bytes) -> list[_Signature]:
    try:
        message = dkim.DKIM(raw)
    except dkim.DKIMException as exc:
        return [_Signature(0, None, None, f"message not readable: {exc}")] if b"dkim-signature" in raw.lower() else []
    values = [value for name, value in message.headers if name.lower() == b"dkim-signature"][:MAX_SIGNATURES]
    found: list[_Signature] = []
    for index, value in enumerate(values):
        try:
            sig, _, _ = message.verify_headerprep(index)
            found.append(_Signature(index, sig[b"d"].decode().lower(), sig[b"s"].decode(), None))
        except (dkim.DKIMException, KeyError, UnicodeDecodeError) as exc:
            domain, selector = _named(value)
            found.append(_Signature(index, domain, selector, f"bad signature: {exc}"))
    return found


def _named(value: bytes) -> tuple[str | None, str | None]:
    """d= and s= of a signature dkimpy refused, so its permerror still names the signer."""
    try:
        tags = dkim.util.parse_tag_value(value)
    except (dkim.DKIMException, ValueError, dkim.util.InvalidTagValueList):
        return None, None
    domain, selector = tags.get(b"d"), tags.get(b"s")
    return (domain.decode("ascii", "replace").lower() if domain else None,
            selector.decode("ascii", "replace") if selector else None)


def _verify_blocking(raw: bytes, index: int, key: bytes) -> tuple[str, str | None]:
    def from_fetched_key(name: bytes, timeout: float = 5) -> bytes:
        return key

    try:
        ok = dkim.DKIM(raw).verify(idx=index, dnsfunc=from_fetched_key)
    except dkim.KeyFormatError as exc:
        return "permerror", f"bad key: {exc}"
    except dkim.ValidationError as exc:
        # A changed body is a broken signature (fail); other field problems are the signer's (permerror).
        if "body hash mismatch" in str(exc):
            return "fail", "body hash did not verify"
        return "permerror", str(exc)
    except dkim.DKIMException as exc:
        return "permerror", str(exc)
    return ("pass", None) if ok else ("fail", "signature did not verify")


async def _key(resolver: dns.asyncresolver.Resolver, signature: _Signature) -> tuple[bytes | None, str, str]:
    """(key record, result when there is none, reason)."""
    name = f"{signature.selector}._domainkey.{signature.domain}"
    try:
        records = await txt(resolver, name)
    except DnsTempError as exc:
        return None, "temperror", f"key lookup failed: {exc}"
    if not records:
        return None, "permerror", f"no key at {name}"
    key = records[0].encode()
    try:
        dkim.evaluate_pk(name.encode(), key)
    except (dkim.DKIMException, ValueError) as exc:
        return None, "permerror", f"bad key at {name}: {exc}"
    return key, "", ""


async def _one(resolver: dns.asyncresolver.Resolver, raw: bytes, signature: _Signature) -> SignatureVerdict:
    if signature.problem:
        return SignatureVerdict("permerror", signature.domain, signature.selector, signature.problem)
    key, result, reason = await _key(resolver, signature)
    if key is None:
        return SignatureVerdict(result, signature.domain, signature.selector, reason)
    verdict, why = await asyncio.to_thread(_verify_blocking, raw, signature.index, key)
    return SignatureVerdict(verdict, signature.domain, signature.selector, why)


async def check_dkim(resolver: dns.asyncresolver.Resolver, raw: bytes) -> list[SignatureVerdict]:
    """One verdict per DKIM-Signature, top first; [] when the message is not signed."""
    signatures = await asyncio.to_thread(_signatures, raw)
    return list(await asyncio.gather(*(_one(resolver, raw, signature) for signature in signatures)))
