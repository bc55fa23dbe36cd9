"""The REST door is locked: API tokens, scopes, account restrictions, the token CLI,
credentials sealed at rest and a secret rotation that keeps accounts sendable."""

from __future__ import annotations

import re
import signal
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mailgate_api.app import create_app
from mailgate_common.crypto import Sealer
from mailgate_common.settings import Settings
from tests.support.smtp_sink import PASSWORD, SmtpSink
from tests.support.stack import BIN, Stack, wait_for

PATH_PARAM = re.compile(r"\{(\w+)(?::(\w+))?\}")


APP = create_app(Settings())


def _v1_routes() -> list[tuple[str, str]]:
    """Every /v1 (method, path) the app serves - new routes are covered automatically."""
    app = APP
    found = set()
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            for method in handler.http_methods:
                if route.path.startswith("/v1") and method not in ("OPTIONS", "HEAD"):
                    found.add((method, route.path))
    return sorted(found)


V1_ROUTES = _v1_routes()


PLACEHOLDERS = {"int": "1", "uuid": str(uuid.UUID(int=1)), "float": "1.0", "decimal": "1"}


def _url(path: str, values: dict[str, str]) -> str:
    def fill(match: re.Match[str]) -> str:
        name, kind = match.group(1), match.group(2) or "str"
        return values.get(name) or PLACEHOLDERS.get(kind, f"some-{name}")

    return PATH_PARAM.sub(fill, path)


def _call(stack: Stack, method: str, url: str, **kw: Any) -> httpx.Response:
    body = {} if method in ("POST", "PUT", "PATCH") else None
    return httpx.request(method, stack.api_url + url, json=body, timeout=15, **kw)


def _assert_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, (response.request.url, response.text)
    body = response.json()
    assert body["statusCode"] == status
    assert body["error"] == {401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}[status]
    assert body["message"]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _create_token(api: httpx.Client, **body: Any) -> str:
    response = api.post("/v1/token", json=body)
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


def _submit(client: httpx.Client, account: str, to: str, subject: str) -> dict[str, Any]:
    response = client.post(f"/v1/account/{account}/submit", json={
        "from": {"address": f"{account}@sender.test"}, "to": [{"address": to}],
        "subject": subject, "text": "hello",
    })
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _psql(stack: Stack, sql: str) -> str:
    url = stack.database_url.replace("postgresql+asyncpg://", "postgresql://")
    return subprocess.run(["psql", url, "-At", "-c", sql], check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture(scope="module")
def other_account(stack: Stack, smtp_sink: SmtpSink) -> Iterator[tuple[str, str]]:
    """Account B with one scheduled (so still cancellable) message: (account, queueId)."""
    account = f"other-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=stack.api_url, headers=stack.auth_headers, timeout=15) as api:
        response = api.post("/v1/account", json={
            "account": account, "email": f"{account}@sender.test", "imap": False,
            "smtp": {"host": "127.0.0.1", "port": smtp_sink.port, "secure": False,
                     "auth": {"user": account, "pass": PASSWORD.decode()}},
        })
        assert response.status_code == 200, response.text
        response = api.post(f"/v1/account/{account}/submit", json={
            "from": {"address": f"{account}@sender.test"}, "to": [{"address": "b@example.org"}],
            "subject": "not for others", "text": "x", "sendAt": "2099-01-01T00:00:00Z",
        })
        assert response.status_code == 200, response.text
        yield account, response.json()["queueId"]


# --- 401 ----------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), V1_ROUTES)
def test_every_v1_route_rejects_missing_and_wrong_tokens(
    stack: Stack, method: str, path: str, other_account: tuple[str, str]
) -> None:
    url = _url(path, {"account": other_account[0], "queue_id": other_account[1]})
    missing = _call(stack, method, url)
    _assert_error(missing, 401)
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    _assert_error(_call(stack, method, url, headers=_bearer("wrong-" + uuid.uuid4().hex)), 401)
    _assert_error(_call(stack, method, url, params={"access_token": "wrong"}), 401)
    _assert_error(_call(stack, method, url, headers={"Authorization": f"Basic {stack.admin_token}"}), 401)


def test_health_metrics_and_docs_stay_open(stack: Stack) -> None:
    for path in ("/health", "/health/live", "/health/ready", "/metrics", "/docs/openapi.json"):
        assert httpx.get(stack.api_url + path, timeout=5).status_code == 200, path


def test_openapi_declares_bearer_scheme_on_v1_routes_only(stack: Stack) -> None:
    doc = httpx.get(f"{stack.api_url}/docs/openapi.json", timeout=5).json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {"type": "http", "scheme": "bearer",
                                     "description": schemes["bearerAuth"]["description"]}
    assert schemes["accessToken"]["in"] == "query"
    assert {"bearerAuth": []} in doc["paths"]["/v1/account/{account}/submit"]["post"]["security"]
    assert "security" not in doc["paths"]["/health"]["get"]


def test_admin_token_works_in_header_and_query(stack: Stack) -> None:
    assert httpx.get(f"{stack.api_url}/v1/accounts", headers=stack.auth_headers).status_code == 200
    response = httpx.get(f"{stack.api_url}/v1/accounts", params={"access_token": stack.admin_token})
    assert response.status_code == 200, response.text


# --- token lifecycle over REST --------------------------------------------------


def test_token_is_shown_once_listed_without_secret_and_revocable(
    stack: Stack, api: httpx.Client, account: str
) -> None:
    token = _create_token(api, account=account, description="billing app", scopes=["api"])
    assert re.fullmatch(r"[0-9a-f]{64}", token)
    own = httpx.get(f"{stack.api_url}/v1/account/{account}", headers=_bearer(token))
    assert own.status_code == 200, own.text

    listed = api.get("/v1/tokens")
    assert listed.status_code == 200
    assert token not in listed.text
    mine = [t for t in listed.json()["tokens"] if t["description"] == "billing app"]
    assert len(mine) == 1
    assert mine[0]["account"] == account and mine[0]["scopes"] == ["api"]
    assert mine[0]["created"] and mine[0]["lastUsed"]

    # Revoke by id (as listed) works too; here the token itself.
    assert api.delete(f"/v1/token/{token}").json() == {"deleted": True}
    _assert_error(httpx.get(f"{stack.api_url}/v1/account/{account}", headers=_bearer(token)), 401)
    _assert_error(api.delete(f"/v1/token/{token}"), 404)


def test_revoke_by_listed_id(stack: Stack, api: httpx.Client) -> None:
    token = _create_token(api, description="revoke-by-id", scopes=["*"])
    assert httpx.get(f"{stack.api_url}/v1/accounts", headers=_bearer(token)).status_code == 200
    token_id = next(t["id"] for t in api.get("/v1/tokens").json()["tokens"]
                    if t["description"] == "revoke-by-id")
    assert api.delete(f"/v1/token/{token_id}").status_code == 200
    _assert_error(httpx.get(f"{stack.api_url}/v1/accounts", headers=_bearer(token)), 401)


@pytest.mark.parametrize(("body", "field"), [
    ({"scopes": ["root"]}, "scopes"),
    ({"scopes": []}, "scopes"),
    ({"account": "no-such-account"}, "account"),
])
def test_token_create_rejects_bad_input_naming_the_field(
    api: httpx.Client, body: dict[str, Any], field: str
) -> None:
    response = api.post("/v1/token", json=body)
    assert response.status_code in (404, 400), response.text
    assert response.json()["field"] == field


# --- scopes and account restriction on every route -----------------------------


@pytest.fixture(scope="module")
def smtp_only_token(stack: Stack) -> str:
    with httpx.Client(base_url=stack.api_url, headers=stack.auth_headers, timeout=15) as api:
        return _create_token(api, scopes=["smtp"], description="smtp only")


@pytest.mark.parametrize(("method", "path"), V1_ROUTES)
def test_smtp_only_token_gets_403_on_every_v1_route(
    stack: Stack, smtp_only_token: str, method: str, path: str, other_account: tuple[str, str]
) -> None:
    token = smtp_only_token
    url = _url(path, {"account": other_account[0], "queue_id": other_account[1]})
    _assert_error(_call(stack, method, url, headers=_bearer(token)), 403)


@pytest.fixture(scope="module")
def account_token(stack: Stack, smtp_sink: SmtpSink) -> tuple[str, str]:
    """Account A and a token restricted to it."""
    account = f"scoped-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=stack.api_url, headers=stack.auth_headers, timeout=15) as api:
        response = api.post("/v1/account", json={
            "account": account, "email": f"{account}@sender.test", "imap": False,
            "smtp": {"host": "127.0.0.1", "port": smtp_sink.port, "secure": False,
                     "auth": {"user": account, "pass": PASSWORD.decode()}},
        })
        assert response.status_code == 200, response.text
        return account, _create_token(api, account=account, scopes=["api", "smtp"])


def _account_filtered() -> set[tuple[str, str]]:
    """Routes whose published doc offers an ``account`` query filter: an account token
    sees only its own account there.  Every other /v1 route without an account in its
    path is admin-only (403)."""
    found = set()
    for path, item in APP.openapi_schema.to_schema()["paths"].items():
        for method, operation in item.items():
            params = operation.get("parameters", []) if isinstance(operation, dict) else []
            if any(p.get("in") == "query" and p.get("name") == "account" for p in params):
                found.add((method.upper(), path))
    return found


def _declared_admin() -> set[tuple[str, str]]:
    """Routes whose handler says ``opt={"auth": "admin"}`` even though they filter by account."""
    return {
        (method, PATH_PARAM.sub(r"{\1}", route.path))
        for route in APP.routes
        for handler in getattr(route, "route_handlers", ())
        if (handler.opt or {}).get("auth") == "admin"
        for method in handler.http_methods
    }


def _declared(rule: str) -> set[tuple[str, str]]:
    return {
        (method, PATH_PARAM.sub(r"{\1}", route.path))
        for route in APP.routes
        for handler in getattr(route, "route_handlers", ())
        if (handler.opt or {}).get("auth") == rule
        for method in handler.http_methods
    }


ACCOUNT_FILTERED = _account_filtered() - _declared_admin()
# Routes whose handler scopes each object itself (templates: own and public ones).
HANDLER_SCOPED = _declared("account")


@pytest.mark.parametrize(("method", "path"), V1_ROUTES)
def test_account_token_cannot_reach_other_accounts_or_admin_routes(
    stack: Stack, method: str, path: str, other_account: tuple[str, str],
    account_token: tuple[str, str],
) -> None:
    _, token = account_token
    url = _url(path, {"account": other_account[0], "queue_id": other_account[1]})
    response = _call(stack, method, url, headers=_bearer(token))
    if (method, PATH_PARAM.sub(r"{\1}", path)) in ACCOUNT_FILTERED:
        assert response.status_code == 200, response.text
        assert other_account[1] not in response.text
    elif "{queue_id" in path:
        _assert_error(response, 404)  # another account's message looks like a missing one
    elif (method, PATH_PARAM.sub(r"{\1}", path)) in HANDLER_SCOPED:
        # Let in; the handler answers for the (missing or empty) object, never another account's.
        assert response.status_code in (400, 404), response.text
        assert other_account[0] not in response.text
    else:
        _assert_error(response, 403)


def test_outbox_listing_is_account_filtered() -> None:
    assert ("GET", "/v1/outbox") in ACCOUNT_FILTERED


def test_account_token_works_on_its_own_account(
    stack: Stack, account_token: tuple[str, str], other_account: tuple[str, str],
    smtp_sink: SmtpSink,
) -> None:
    account, token = account_token
    with httpx.Client(base_url=stack.api_url, headers=_bearer(token), timeout=15) as client:
        assert client.get(f"/v1/account/{account}").status_code == 200
        to = f"own-{uuid.uuid4().hex[:8]}@example.org"
        queued = _submit(client, account, to, "own account")
        assert client.get(f"/v1/outbox/{queued['queueId']}").status_code == 200
        listed = client.get("/v1/outbox", params={"state": "all"}).json()["messages"]
        assert listed and {m["account"] for m in listed} == {account}
        assert client.get("/v1/outbox", params={"account": account, "state": "all"}).status_code == 200
        _assert_error(client.get("/v1/outbox", params={"account": other_account[0]}), 403)
    wait_for(lambda: smtp_sink.to(to), message="message sent with an account token")


# --- CLI ---------------------------------------------------------------------------


def _mailgate(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "mailgate"), *args], env=stack.env, capture_output=True,
                          text=True, timeout=60)


def test_cli_creates_lists_and_revokes_a_working_token(stack: Stack, account: str) -> None:
    created = _mailgate(stack, "token", "create", "--account", account, "--scope", "api",
                        "--scope", "smtp", "--description", "from the cli")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", token), created.stdout
    url = f"{stack.api_url}/v1/account/{account}"
    assert httpx.get(url, headers=_bearer(token)).status_code == 200

    listed = _mailgate(stack, "token", "list")
    assert listed.returncode == 0, listed.stderr
    assert "from the cli" in listed.stdout and token not in listed.stdout

    assert _mailgate(stack, "token", "revoke", token).returncode == 0
    _assert_error(httpx.get(url, headers=_bearer(token)), 401)
    missing = _mailgate(stack, "token", "revoke", token)
    assert missing.returncode != 0 and "no such token" in missing.stderr


def test_cli_refuses_unknown_account_and_scope(stack: Stack) -> None:
    assert _mailgate(stack, "token", "create", "--account", "nope-" + uuid.uuid4().hex).returncode != 0
    assert _mailgate(stack, "token", "create", "--scope", "root").returncode != 0


# --- credentials at rest -------------------------------------------------------------


def test_password_is_sealed_in_the_database_never_returned_nor_logged(
    stack: Stack, api: httpx.Client, smtp_sink: SmtpSink
) -> None:
    account = f"sealed-{uuid.uuid4().hex[:8]}"
    # The sink only accepts this password; it must never appear in clear anywhere.
    password = PASSWORD.decode()
    response = api.post("/v1/account", json={
        "account": account, "email": f"{account}@sender.test", "imap": False,
        "smtp": {"host": "127.0.0.1", "port": smtp_sink.port, "secure": False,
                 "auth": {"user": account, "pass": password}},
    })
    assert response.status_code == 200, response.text

    row = _psql(stack, f"SELECT row_to_json(a)::text FROM accounts a WHERE id = '{account}'")
    raw = bytes.fromhex(_psql(stack, f"SELECT encode(credentials, 'hex') FROM accounts WHERE id = '{account}'").strip())
    assert account in row and password not in row
    assert raw.startswith(b"v1:") and password.encode() not in raw

    shown = api.get(f"/v1/account/{account}")
    assert shown.status_code == 200
    assert password not in shown.text
    assert "pass" not in shown.json()["smtp"]["auth"]
    assert password not in api.get("/v1/accounts", params={"pageSize": 1000}).text

    to = f"sealed-{uuid.uuid4().hex[:8]}@example.org"
    _submit(api, account, to, "sealed password works")
    wait_for(lambda: smtp_sink.to(to), message="delivery with the sealed password")
    for log in stack.workdir.glob("*.log"):
        assert password not in log.read_text(errors="replace"), log.name


# --- secret rotation -------------------------------------------------------------


def _restart_running_services(stack: Stack, env: dict[str, str]) -> None:
    running = [s for s in stack.services.values() if s.proc is not None]
    for service in running:
        service.kill(signal.SIGTERM)
        service.env.update(env)
    for service in running:
        service.start(wait=False)
    for service in running:
        service.wait_ready()


def test_secret_rotation_keeps_stored_accounts_sendable(
    stack: Stack, api: httpx.Client, account: str, smtp_sink: SmtpSink
) -> None:
    old, new = stack.env["MAILGATE_SECRET"], "rotated-" + uuid.uuid4().hex
    # The documented procedure: services read with both secrets, write with the new one...
    rotation_env = {"MAILGATE_SECRET": new, "MAILGATE_SECRET_PREVIOUS": old}
    stack.env.update(rotation_env)
    _restart_running_services(stack, rotation_env)
    before = f"before-{uuid.uuid4().hex[:8]}@example.org"
    _submit(api, account, before, "during rotation")
    wait_for(lambda: smtp_sink.to(before), message="delivery with the previous secret")

    # ...then every stored credential is re-sealed under the new secret alone.
    rotated = _mailgate(stack, "secret", "rotate", "--previous", old)
    assert rotated.returncode == 0, rotated.stderr
    assert re.search(r"re-encrypted [1-9]\d* account", rotated.stdout), rotated.stdout
    new_only = Sealer(new)
    for hex_value in _psql(stack, "SELECT encode(credentials, 'hex') FROM accounts "
                                  "WHERE credentials IS NOT NULL").split():
        assert new_only.open(bytes.fromhex(hex_value))  # readable without the old secret
    again = _mailgate(stack, "secret", "rotate", "--previous", old)
    assert "re-encrypted 0 account" in again.stdout

    after = f"after-{uuid.uuid4().hex[:8]}@example.org"
    _submit(api, account, after, "after rotation")
    wait_for(lambda: smtp_sink.to(after), message="delivery after rotation")


def test_secret_rotate_needs_the_old_secret(stack: Stack) -> None:
    env = {k: v for k, v in stack.env.items() if k != "MAILGATE_SECRET_PREVIOUS"}
    result = subprocess.run([str(BIN / "mailgate"), "secret", "rotate"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "--previous" in result.stderr
