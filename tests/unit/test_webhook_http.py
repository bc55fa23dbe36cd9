"""The webhook POST against real local HTTP servers: what is kept of hostile
answers, that a 2xx decides, and that the address checked is the one connected to."""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from mailgate_common import urls
from mailgate_common.settings import Settings
from mailgate_webhooks.http import MAX_BODY_EXCERPT, VettingResolver, WebhookClient, excerpt_of
from mailgate_webhooks.jobs import Target

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Serve = Callable[[Handler], Awaitable[tuple[int, list[web.Request]]]]


class StubResolver(AbstractResolver):
    """Answers every name with fixed addresses and counts the lookups."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses
        self.lookups: list[str] = []

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        self.lookups.append(host)
        return [ResolveResult(hostname=host, host=a, port=port, family=socket.AF_INET, proto=0, flags=0)
                for a in self.addresses]

    async def close(self) -> None:
        pass


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """A real HTTP server on 127.0.0.1 answering with ``handler``; returns (port, requests seen)."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> tuple[int, list[web.Request]]:
        seen: list[web.Request] = []

        async def recording(request: web.Request) -> web.StreamResponse:
            seen.append(request)
            await request.read()
            return await handler(request)

        app = web.Application()
        app.router.add_post("/hooks", recording)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port: int = runner.addresses[0][1]
        return port, seen

    yield start
    for runner in runners:
        await runner.cleanup()


def client(resolver: AbstractResolver | None = None, allow_private: bool = True,
           timeout: float = 2.0) -> WebhookClient:
    settings = Settings(webhooks_allow_private=allow_private, webhook_timeout=timeout)
    return WebhookClient(settings, resolver=resolver)


def target(url: str) -> Target:
    return Target(url, "whsec_" + "A" * 43 + "=", None, {})


# -- what the delivery log keeps of an answer ---------------------------------------------


def test_a_gzip_answer_is_described_not_stored() -> None:
    raw = gzip.compress(b'{"ok":true}' * 50)
    assert b"\x00" in raw  # every gzip stream has NUL bytes, which PostgreSQL text refuses
    assert excerpt_of(raw, content_type="application/json", content_encoding="gzip",
                      content_length=len(raw), complete=True) == f"<{len(raw)} bytes, gzip>"


def test_binary_answers_are_described_by_their_type() -> None:
    assert excerpt_of(b"\x00\x01\x02", content_type="application/octet-stream", content_encoding=None,
                      content_length=1234, complete=False) == "<1234 bytes, application/octet-stream>"
    assert excerpt_of(b"\x00" * MAX_BODY_EXCERPT, content_type=None, content_encoding=None,
                      content_length=None, complete=False) == f"<more than {MAX_BODY_EXCERPT} bytes, no content type>"


def test_text_answers_are_kept_clean() -> None:
    assert excerpt_of(b"nul\x00inside", content_type="text/plain", content_encoding="identity",
                      content_length=None, complete=True) == "nul\ufffdinside"
    assert excerpt_of(b"Empf\xe4nger unbekannt", content_type="text/html; charset=iso-8859-1",
                      content_encoding=None, content_length=None, complete=True) == "Empfänger unbekannt"
    assert excerpt_of(b"ok", content_type=None, content_encoding=None, content_length=2, complete=True) == "ok"
    problem = excerpt_of(b'{"title":"x"}', content_type="application/problem+json", content_encoding=None,
                         content_length=None, complete=True)
    assert problem == '{"title":"x"}'


def test_a_character_cut_by_the_excerpt_limit_is_not_read_as_latin1() -> None:
    raw = ("é" * MAX_BODY_EXCERPT).encode()[:MAX_BODY_EXCERPT - 1]  # ends inside a character
    text = excerpt_of(raw, content_type="text/plain", content_encoding=None, content_length=None,
                      complete=False)
    assert set(text) == {"é"}


# -- the POST ---------------------------------------------------------------------------------


async def test_gzip_is_never_asked_for_and_a_gzip_answer_is_described(serve: Serve) -> None:
    body = gzip.compress(b'{"ok":true}')

    async def gzipped(request: web.Request) -> web.Response:
        return web.Response(status=502, body=body, headers={"content-type": "application/json",
                                                            "content-encoding": "gzip"})

    port, seen = await serve(gzipped)
    http = client()
    try:
        answer = await http.post(target(f"http://127.0.0.1:{port}/hooks"), "evt-1", b"{}")
    finally:
        await http.close()
    assert seen[0].headers["accept-encoding"] == "identity"
    assert answer.status == 502 and answer.error is None
    assert answer.excerpt == f"<{len(body)} bytes, gzip>"


async def test_a_2xx_whose_body_never_ends_is_delivered(serve: Serve) -> None:
    done = asyncio.Event()

    async def stalls(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"content-type": "text/plain",
                                                           "content-length": "100"})
        await response.prepare(request)
        await response.write(b"partial")
        await done.wait()  # the rest never comes while the client waits
        return response

    port, _ = await serve(stalls)
    http = client(timeout=0.5)
    try:
        answer = await http.post(target(f"http://127.0.0.1:{port}/hooks"), "evt-1", b"{}")
    finally:
        done.set()
        await http.close()
    # The subscriber said 200: posting again would deliver the event twice.
    assert answer.status == 200 and answer.error is None
    assert answer.excerpt == "<answer body not received in time>"


async def test_the_address_checked_is_the_address_connected_to(serve: Serve) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    port, seen = await serve(ok)
    # A name that resolves to loopback at connect time (DNS rebinding: it may have
    # answered a public address to any earlier check).
    rebinding = StubResolver("127.0.0.1")
    strict = client(VettingResolver(allow_private=False, inner=rebinding), allow_private=False)
    try:
        answer = await strict.post(target(f"http://rebind.example:{port}/hooks"), "evt-1", b"{}")
    finally:
        await strict.close()
    assert answer.status is None and answer.error is not None
    assert answer.error.startswith("refused: rebind.example resolves to 127.0.0.1")
    assert rebinding.lookups == ["rebind.example"]  # one lookup, checked and used
    assert seen == []

    allowed = StubResolver("127.0.0.1")
    lenient = client(VettingResolver(allow_private=True, inner=allowed), allow_private=True)
    try:
        answer = await lenient.post(target(f"http://rebind.example:{port}/hooks"), "evt-2", b"{}")
    finally:
        await lenient.close()
    assert answer.status == 200 and answer.excerpt == "ok" and len(seen) == 1


async def test_the_resolver_refuses_any_private_address_in_an_answer() -> None:
    mixed = VettingResolver(allow_private=False, inner=StubResolver("93.184.215.14", "10.0.0.7"))
    with pytest.raises(urls.UnsafeUrl, match=r"10\.0\.0\.7"):
        await mixed.resolve("mixed.example", 443)
    public = VettingResolver(allow_private=False, inner=StubResolver("93.184.215.14"))
    assert [a["host"] for a in await public.resolve("public.example", 443)] == ["93.184.215.14"]
    proxy = VettingResolver(allow_private=False, trusted=frozenset({"proxy.internal"}),
                            inner=StubResolver("10.0.0.3"))
    assert [a["host"] for a in await proxy.resolve("proxy.internal", 3128)] == ["10.0.0.3"]


async def test_literal_private_addresses_are_refused_without_a_lookup() -> None:
    lookups = StubResolver("93.184.215.14")
    strict = client(VettingResolver(allow_private=False, inner=lookups), allow_private=False)
    try:
        for url in ("http://127.0.0.1:9/hooks", "http://[64:ff9b::a00:1]/hooks", "http://localhost/hooks"):
            answer = await strict.post(target(url), "evt-1", b"{}")
            assert answer.status is None and (answer.error or "").startswith("refused: "), url
    finally:
        await strict.close()
    assert lookups.lookups == []


async def test_a_connection_refused_is_a_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    http = client()
    try:
        answer = await http.post(target(f"http://127.0.0.1:{port}/hooks"), "evt-1", b"{}")
    finally:
        await http.close()
    assert answer.status is None and (answer.error or "").startswith("ConnectError: ")
