"""The POST: signed headers, a deadline, what is kept of the answer, and where
connections may go.

* The status line decides: any 2xx is delivered, whatever follows (a body
  that never ends, a broken connection after the headers).
* The answer is kept for the delivery log only as text: at most
  ``MAX_BODY_EXCERPT`` bytes, passed through :func:`clean_text`, and only when
  it is textual (no content coding, a text-like type).  Anything else is
  described, e.g. ``<1234 bytes, gzip>``.  We ask for ``identity`` so a
  compressing server has no reason to compress.
* Addresses are checked where they are used: the connector resolves through
  :class:`VettingResolver`, which refuses an answer holding an address
  webhooks may not reach, so a name cannot pass one lookup and connect with
  another (DNS rebinding).  IP literals and ``localhost`` never reach a
  resolver and are checked from the URL itself.  Through an HTTP proxy the
  proxy connects: the name is checked once before the request, and the
  proxy's own egress rules are the final guard.
* Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import codecs
import ipaddress
import socket
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from mailgate_common import urls
from mailgate_common.settings import Settings
from mailgate_common.telemetry import current_traceparent
from mailgate_common.text import clean_text
from mailgate_common.webhook_signing import signed_headers
from mailgate_webhooks.jobs import Target
from mailgate_webhooks.payload import unframe

MAX_BODY_EXCERPT = 2048
USER_AGENT = "mailgate-webhooks/0.1"
# Header values from the subscriber, quoted in a description, are cut at this length.
MAX_QUOTED_HEADER = 100

# Media types read as text besides text/*; "+json" and "+xml" suffixes too.
_TEXT_TYPES = frozenset({
    "application/json", "application/xml", "application/javascript", "application/x-www-form-urlencoded",
})


@dataclass(frozen=True, slots=True)
class Answer:
    status: int | None  # None: no HTTP answer (refused, timeout, connection error)
    error: str | None  # why there was no answer
    excerpt: str | None  # the answer's start as text, or a description of it


class VettingResolver(AbstractResolver):
    """Resolves with aiohttp's default resolver, then refuses the whole answer
    when any address in it may not be reached; the addresses checked are the
    ones the connector connects to.  ``trusted`` host names (the operator's
    proxies) are exempt."""

    def __init__(self, allow_private: bool, trusted: frozenset[str] = frozenset(),
                 inner: AbstractResolver | None = None) -> None:
        self._allow_private = allow_private
        self._trusted = trusted
        self._inner = inner if inner is not None else aiohttp.DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        if not self._allow_private and host.lower().rstrip(".") not in self._trusted:
            addresses = [ipaddress.ip_address(a["host"].split("%")[0]) for a in answers]
            urls.check_addresses(host, addresses, allow_private=False)
        return answers

    async def close(self) -> None:
        await self._inner.close()


# NO_PROXY matching as urllib (and requests) do it; undocumented, so not in typeshed.
_proxy_bypass: Callable[[str, dict[str, str]], bool] = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]


class Proxies:
    """HTTP(S)_PROXY / NO_PROXY, honoured as operators expect; read once at start.

    Not aiohttp's ``trust_env``: it re-reads the environment and ~/.netrc on
    every request, and netrc credentials have no business in a webhook.
    """

    def __init__(self, proxies: dict[str, str] | None = None) -> None:
        self._proxies = urllib.request.getproxies_environment() if proxies is None else proxies

    def for_url(self, url: str) -> str | None:
        parts = urlsplit(url)
        proxy = self._proxies.get(parts.scheme)
        if proxy is None or _proxy_bypass(parts.hostname or "", self._proxies):
            return None
        return proxy

    def hosts(self) -> frozenset[str]:
        """The proxies' own host names (the webhooks service may always reach them)."""
        return frozenset(
            (urlsplit(p).hostname or "").lower() for key, p in self._proxies.items() if key != "no"
        ) - {""}


@lru_cache(maxsize=4096)
def _static_refusal(url: str, allow_private: bool) -> str | None:
    """What is wrong with ``url`` without resolving it (literal addresses, localhost)."""
    try:
        urls.check_url_static(url, allow_private)
    except urls.UnsafeUrl as exc:
        return str(exc)
    return None


def _media_type(content_type: str | None) -> str | None:
    return content_type.split(";", 1)[0].strip().lower() if content_type else None


def _is_textual(media_type: str | None, raw: bytes) -> bool:
    if media_type is None:
        # Untyped (common for a bare "ok"): text only if it reads as UTF-8 text.
        return b"\x00" not in raw and _utf8_prefix(raw) is not None
    return (media_type.startswith("text/") or media_type in _TEXT_TYPES
            or media_type.endswith(("+json", "+xml")))


def _utf8_prefix(raw: bytes) -> str | None:
    """``raw`` as UTF-8, ignoring a character cut by the excerpt limit; None if not UTF-8."""
    try:
        return codecs.getincrementaldecoder("utf-8")().decode(raw, final=False)
    except UnicodeDecodeError:
        return None


def excerpt_of(raw: bytes, *, content_type: str | None, content_encoding: str | None,
               content_length: int | None, complete: bool) -> str:
    """What the delivery log keeps of an answer whose first bytes are ``raw``."""
    coding = (content_encoding or "identity").strip().lower()
    media_type = _media_type(content_type)
    if coding == "identity" and _is_textual(media_type, raw):
        text = _utf8_prefix(raw) if not complete else None
        return clean_text(text if text is not None else raw)
    if content_length is not None:
        size = f"{content_length} bytes"
    else:
        size = f"{len(raw)} bytes" if complete else f"more than {len(raw)} bytes"
    kind = coding if coding != "identity" else (media_type or "no content type")
    return f"<{size}, {clean_text(kind, MAX_QUOTED_HEADER)}>"


async def _read_excerpt(response: aiohttp.ClientResponse) -> tuple[bytes, bool]:
    """The answer's first bytes, and whether that is all of it."""
    raw = bytearray()
    content = response.content
    while len(raw) < MAX_BODY_EXCERPT:
        chunk = await content.read(MAX_BODY_EXCERPT - len(raw))
        if not chunk:
            return bytes(raw), True
        raw += chunk
    return bytes(raw), content.at_eof()


class WebhookClient:
    def __init__(self, settings: Settings, proxies: Proxies | None = None,
                 resolver: AbstractResolver | None = None) -> None:
        self.timeout = settings.webhook_timeout
        self.allow_private = settings.webhooks_allow_private
        self.proxies = proxies or Proxies()
        self._resolver = resolver
        self._per_host = settings.webhook_endpoint_concurrency * 2
        self._limit = settings.webhook_concurrency * 2
        # Created on the running loop at first use (aiohttp binds a session to its loop).
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            resolver = self._resolver or VettingResolver(self.allow_private, self.proxies.hosts())
            self._session = aiohttp.ClientSession(
                # Keep-alive connections, one per slot of a destination, reused between POSTs.
                connector=aiohttp.TCPConnector(limit=self._limit, limit_per_host=self._per_host,
                                               resolver=resolver),
                headers={"user-agent": USER_AGENT, "accept-encoding": "identity"},
                trust_env=False,
                auto_decompress=False,
            )
        return self._session

    async def post(self, target: Target, event_id: str, payload: bytes,
                   extra: dict[str, str] | None = None) -> Answer:
        """POST once; never raises for anything the subscriber or the network does.
        ``payload``: as stored (payload.frame names its media type when it is not JSON);
        ``extra``: headers about this attempt (EmailEngine's ``X-EE-Wh-*``)."""
        refusal = _static_refusal(target.url, self.allow_private)
        if refusal is not None:
            return Answer(None, f"refused: {refusal}", None)
        proxy = self.proxies.for_url(target.url)
        media_type, body = unframe(payload)
        headers = {
            **target.headers,
            **(extra or {}),
            **signed_headers(target.secret, event_id, int(time.time()), body, target.previous_secret),
            "content-type": media_type,
        }
        traceparent = current_traceparent()
        if traceparent:
            # Lets a subscriber continue the message's trace in its own systems.
            headers["traceparent"] = traceparent
        deadline = asyncio.get_running_loop().time() + self.timeout
        try:
            async with asyncio.timeout_at(deadline):
                if proxy is not None:
                    await urls.check_url(target.url, self.allow_private)
                response = await self.session.post(target.url, data=body, headers=headers,
                                                   allow_redirects=False, proxy=proxy)
        except urls.UnsafeUrl as exc:
            return Answer(None, f"refused: {exc}", None)
        except TimeoutError:
            return Answer(None, f"timeout after {self.timeout:g}s", None)
        except aiohttp.ClientConnectorError as exc:
            # "ConnectError" is the wording operators (and the delivery log's readers) know.
            return Answer(None, f"ConnectError: {clean_text(str(exc), 500)}", None)
        except (OSError, aiohttp.ClientError) as exc:
            return Answer(None, clean_text(f"{type(exc).__name__}: {exc}", 500), None)
        try:
            return Answer(response.status, None, await self._excerpt(response, deadline))
        finally:
            # Closes the connection instead of reusing it when the body was not read to its end.
            response.release()

    @staticmethod
    async def _excerpt(response: aiohttp.ClientResponse, deadline: float) -> str:
        try:
            async with asyncio.timeout_at(deadline):
                raw, complete = await _read_excerpt(response)
        except TimeoutError:
            return "<answer body not received in time>"
        except (OSError, aiohttp.ClientError) as exc:
            return clean_text(f"<answer body unreadable: {type(exc).__name__}>")
        headers = response.headers
        length = headers.get("content-length", "")
        return excerpt_of(raw, content_type=headers.get("content-type"),
                          content_encoding=headers.get("content-encoding"),
                          content_length=int(length) if length.isdigit() else None, complete=complete)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
