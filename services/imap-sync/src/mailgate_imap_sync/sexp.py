"""IMAP FETCH responses as nested lists (BODYSTRUCTURE, sections with literals).

aioimaplib hands a FETCH response over as lines where every literal is an item
of its own: ``1 FETCH (UID 5 BODY[HEADER] {42}``, the 42 bytes, ``)``.  This
puts them back together and parses the parenthesised list: atoms and quoted
strings become ``str``, literals ``bytes``, ``NIL`` ``None``.  Bounded like
everything read from a server: nesting depth and item count are capped.
"""

from __future__ import annotations

import re
from typing import Any

_FETCH = re.compile(rb"^\d+ FETCH ", re.IGNORECASE)
_LITERAL_END = re.compile(rb"\{(\d+)\}$")
_TOKEN = re.compile(
    rb'\s*(?:(?P<open>\()|(?P<close>\))|"(?P<quoted>(?:[^"\\]|\\.)*)"'
    rb"|(?P<atom>[^\s()\"\[\]]+(?:\[[^\]]*\](?:<\d+>)?)?))",
    re.S,
)
MAX_DEPTH = 64
MAX_ITEMS = 100_000


class Literal(bytes):
    """A literal's bytes (distinct from a parsed atom)."""


def _tokens(text: bytes) -> list[Any]:
    out: list[Any] = []
    pos = 0
    while pos < len(text):
        found = _TOKEN.match(text, pos)
        if found is None or found.end() == pos:
            break
        pos = found.end()
        if found.group("open"):
            out.append("(")
        elif found.group("close"):
            out.append(")")
        elif found.group("quoted") is not None:
            raw = found.group("quoted").replace(b'\\"', b'"').replace(b"\\\\", b"\\")
            out.append(_Quoted(raw.decode("utf-8", errors="replace")))
        elif found.group("atom") is not None:
            atom = found.group("atom").decode("utf-8", errors="replace")
            out.append(None if atom.upper() == "NIL" else _Atom(atom))
    return out


class _Quoted(str):
    pass


class _Atom(str):
    pass


def responses(lines: list[Any]) -> list[list[Any]]:
    """Every FETCH response in ``lines`` as its item list (``[key, value, key, value, ...]``)."""
    out: list[list[Any]] = []
    i = 0
    while i < len(lines):
        line = bytes(lines[i])
        i += 1
        head = _FETCH.match(line)
        if head is None:
            continue
        tokens: list[Any] = []
        text = line[head.end():]
        while True:
            literal = _LITERAL_END.search(text)
            if literal is None or i >= len(lines):
                tokens += _tokens(text)
                break
            tokens += _tokens(text[:literal.start()])
            tokens.append(Literal(bytes(lines[i])))
            i += 1
            text = bytes(lines[i]) if i < len(lines) else b""
            i += 1
        parsed = _nest(tokens)
        if parsed and isinstance(parsed[0], list):
            out.append(parsed[0])
    return out


def _nest(tokens: list[Any]) -> list[Any]:
    root: list[Any] = []
    stack = [root]
    for count, token in enumerate(tokens):
        if count > MAX_ITEMS:
            break
        if isinstance(token, str) and not isinstance(token, (_Quoted, _Atom)):
            if token == "(":
                if len(stack) > MAX_DEPTH:
                    break
                child: list[Any] = []
                stack[-1].append(child)
                stack.append(child)
            elif len(stack) > 1:
                stack.pop()
            continue
        stack[-1].append(str(token) if isinstance(token, str) else token)
    return root


def items(response: list[Any]) -> dict[str, Any]:
    """A FETCH response's items by upper-cased key (``UID``, ``BODYSTRUCTURE``, ``BODY[1]<0>``)."""
    out: dict[str, Any] = {}
    for key, value in zip(response[::2], response[1::2], strict=False):
        if isinstance(key, str):
            out[key.upper()] = value
    return out
