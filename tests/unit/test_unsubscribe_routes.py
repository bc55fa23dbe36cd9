"""The one-click route's answers when the database is unreachable: a provider must retry
(5xx), never be told "done" (2xx) for an unsubscribe that was not stored.  A real outage
of the shared test database would break every other test, so the database here is one
whose connections are refused, and the route runs in the real litestar app code."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

from litestar import Litestar
from litestar.di import Provide
from litestar.testing import TestClient

from mailgate_api.deps import Resources
from mailgate_api.errors import EXCEPTION_HANDLERS
from mailgate_api.unsubscribe.routes import UnsubscribeController
from mailgate_common.settings import Settings
from mailgate_common.tracking.tokens import Signer

SECRET = "unit-route-secret"


class RefusingDatabase:
    """Every connection attempt is refused, as when PostgreSQL is down."""

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        raise ConnectionRefusedError(111, "Connection refused")
        yield  # pragma: no cover

    sessions = transaction


def client() -> TestClient[Litestar]:
    # Nothing but the database is reached before the outage shows.
    resources = Resources(settings=Settings(secret=SECRET), db=cast(Any, RefusingDatabase()), bus=cast(Any, None),
                          relay=cast(Any, None), outbox=cast(Any, None), sealer=cast(Any, None))
    app = Litestar(route_handlers=[UnsubscribeController], exception_handlers=EXCEPTION_HANDLERS,
                   dependencies={"res": Provide(lambda: resources, sync_to_thread=False)})
    return TestClient(app)


def link() -> str:
    url = Signer(SECRET).unsubscribe_url("http://testserver", account="acct", list_id="news.example.com",
                                         recipient="ann@example.org", message_id=None)
    return f"/unsubscribe?{urlsplit(url).query}"


def test_a_database_outage_asks_the_provider_to_retry() -> None:
    with client() as http:
        answer = http.post(link(), content=b"List-Unsubscribe=One-Click",
                           headers={"content-type": "application/x-www-form-urlencoded"})
        assert answer.status_code == 503, answer.text


def test_a_forged_link_is_final_even_while_the_database_is_down() -> None:
    with client() as http:
        forged = link()[:-4] + "AAAA"
        answer = http.post(forged, data={"List-Unsubscribe": "One-Click"})
        assert answer.status_code == 200 and answer.text == "data validation failed"


def test_the_page_says_try_again_while_the_database_is_down() -> None:
    with client() as http:
        page = http.get(link())
        assert page.status_code == 503 and "try again" in page.text
        signed = dict(parse_qsl(urlsplit(link()).query))
        form = http.post("/unsubscribe/address", data={"action": "unsubscribe", **signed})
        assert form.status_code == 503 and "Nothing was changed" in form.text
