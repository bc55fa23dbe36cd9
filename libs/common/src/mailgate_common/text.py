"""Text from the outside world, made safe to store and to send on.

Servers, senders and subscribers put whatever bytes they like into SMTP replies,
mail headers and HTTP answers: Latin-1, lone surrogates left by
``surrogateescape``, NUL.  PostgreSQL ``text`` and ``jsonb`` refuse NUL (and
invalid UTF-8), and msgspec refuses to encode a lone surrogate, so one such
byte used to fail a whole batch of writes.  Every string that comes from a
remote peer passes through :func:`clean_text` once, where it is parsed.
"""

from __future__ import annotations

REPLACEMENT = "\ufffd"


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # Not UTF-8: in mail, nearly always Latin-1/Windows-1252 ("Empfänger
        # unbekannt"), which reads better than a row of replacement characters.
        return raw.decode("cp1252", "replace")


def clean_text(value: str | bytes | bytearray, limit: int | None = None) -> str:
    """Valid Unicode without NUL or lone surrogates, at most ``limit`` characters.

    Bytes that are not UTF-8 are read as Windows-1252; a string holding
    ``surrogateescape`` bytes gets those bytes back first.  Nothing is silently
    dropped: what cannot be decoded becomes U+FFFD, NUL too.  A cut is marked
    with an ellipsis.
    """
    if isinstance(value, (bytes, bytearray)):
        text = _decode(bytes(value))
    elif value.isascii():
        text = value
    else:
        try:
            value.encode("utf-8")
            text = value
        except UnicodeEncodeError:
            try:
                text = _decode(value.encode("utf-8", "surrogateescape"))
            except UnicodeEncodeError:  # surrogates not from surrogateescape
                text = value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    if "\x00" in text:
        text = text.replace("\x00", REPLACEMENT)
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 1)] + "…"
    return text


def clean_optional(value: str | bytes | None, limit: int | None = None) -> str | None:
    return None if value is None else clean_text(value, limit)
