"""EmailEngine's account routes with its documented example requests: every account
field mailgate honours is kept and shown, the ones it cannot honour are refused by
name; reconnect/sync/flush; verifyAccount against real Dovecot and SMTP; the
/v1/changes stream; /v1/logs."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from mailgate_common import account_log
from mailgate_common.account_log import MASK, AccountLogs, Masker
from mailgate_common.db import Database
from tests.e2e.test_imap_sync import wait_connected
from tests.support.dovecot import Dovecot
from tests.support.smtp_sink import PASSWORD, SmtpSink
from tests.support.stack import Stack, free_port, wait_for


def _imap(dovecot: Dovecot, user: str, password: str | None = None) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": dovecot.port, "secure": False,
            "tls": {"rejectUnauthorized": False},
            "auth": {"user": user, "pass": password or dovecot.password}}


def _smtp(sink: SmtpSink, password: str = PASSWORD.decode()) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": sink.port, "secure": False,
            "auth": {"user": "sender", "pass": password}}


@pytest.fixture(scope="module")
def imap_account(stack: Stack, dovecot: Dovecot, smtp_sink: SmtpSink) -> Iterator[tuple[str, str]]:
    """One connected IMAP account (and its Dovecot user) shared by this module's tests."""
    user = dovecot.new_user()
    account = f"compat-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=stack.api_url, headers=stack.auth_headers, timeout=15) as api:
        response = api.post("/v1/account", json={
            "account": account, "name": "My Email Account", "email": f"{user}@dovecot.test",
            "imap": _imap(dovecot, user), "smtp": _smtp(smtp_sink), "logs": True})
        assert response.status_code == 200, response.text
        wait_connected(api, account)
        yield account, user
        api.delete(f"/v1/account/{account}")


def test_ee_account_fields_are_kept_and_shown(api: httpx.Client, smtp_sink: SmtpSink) -> None:
    account = f"ee-{uuid.uuid4().hex[:8]}"
    # EmailEngine's POST /v1/account example fields, for a send-only account.
    body = {
        "account": account,
        "name": "My Email Account",
        "email": "user@example.com",
        "logs": False,
        "notifyFrom": (datetime.now(UTC) + timedelta(minutes=1)).isoformat(),
        "syncFrom": None,
        "smtpEhloName": "my.example.com",
        "subconnections": ["[Gmail]/Spam", "\\Sent"],
        "imapIndexer": "full",
        "locale": "fr",
        "tz": "Europe/Tallinn",
        "copy": True,
        "imap": False,
        "smtp": {**_smtp(smtp_sink), "forceAuth": True},
    }
    response = api.post("/v1/account", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"account": account, "state": "new"}
    shown = api.get(f"/v1/account/{account}").json()
    for key in ("name", "email", "notifyFrom", "smtpEhloName", "subconnections", "imapIndexer",
                "locale", "tz", "copy"):
        assert shown[key] == body[key], key
    assert shown["logs"] is False
    assert shown["type"] == "sending"
    assert shown["smtp"]["forceAuth"] is True
    assert "pass" not in json.dumps(shown["smtp"])
    # An update changes what it names and keeps the rest.
    response = api.put(f"/v1/account/{account}", json={"locale": "et", "logs": True})
    assert response.status_code == 200, response.text
    shown = api.get(f"/v1/account/{account}").json()
    assert (shown["locale"], shown["logs"], shown["tz"]) == ("et", True, "Europe/Tallinn")
    api.delete(f"/v1/account/{account}")


@pytest.mark.parametrize(("extra", "field"), [
    ({"oauth2": {"provider": "AAABhaBPHscAAAAH", "auth": {"user": "user@example.com"}}}, "oauth2"),
    ({"proxy": "socks5://proxy.example.com:1080"}, "proxy"),
    ({"webhooksCustomHeaders": [{"key": "Authorization", "value": "Bearer x"}]}, "webhooksCustomHeaders"),
    ({"expectedEmail": "user@example.com"}, "expectedEmail"),
    # EmailEngine's example date: announcing older mail is not something mailgate does.
    ({"notifyFrom": "2021-07-08T07:06:34.336Z"}, "notifyFrom"),
    ({"notAnEmailEngineField": 1}, "notAnEmailEngineField"),
])
def test_fields_mailgate_cannot_honour_are_refused_by_name(
    api: httpx.Client, smtp_sink: SmtpSink, extra: dict[str, Any], field: str
) -> None:
    account = f"refused-{uuid.uuid4().hex[:8]}"
    response = api.post("/v1/account", json={"account": account, "name": "x", "imap": False,
                                             "smtp": _smtp(smtp_sink), **extra})
    assert response.status_code == 400, response.text
    error = response.json()
    assert field in (error.get("field"), *(d.get("field") for d in error.get("details", [])))
    assert api.get(f"/v1/account/{account}").status_code == 404


@pytest.mark.parametrize(("smtp", "field"), [
    ({"useAuthServer": True}, "smtp.useAuthServer"),
    ({"auth": {"user": "user@example.com", "accessToken": "ya29.token"}}, "smtp.auth.accessToken"),
    ({"pool": True}, "pool"),
])
def test_server_fields_mailgate_cannot_honour_are_refused(api: httpx.Client, smtp_sink: SmtpSink,
                                                          smtp: dict[str, Any], field: str) -> None:
    response = api.post("/v1/account", json={"account": f"x-{uuid.uuid4().hex[:6]}", "imap": False,
                                             "smtp": {**_smtp(smtp_sink), **smtp}})
    assert response.status_code == 400, response.text
    assert field in response.text


def test_reconnect_sync_flush_answer_like_ee(api: httpx.Client, dovecot: Dovecot,
                                            imap_account: tuple[str, str]) -> None:
    account, user = imap_account
    logins = dovecot.logins(user)
    for command in ("sync", "flush", "reconnect"):
        response = api.put(f"/v1/account/{account}/{command}", json={command: True})
        assert response.status_code == 200, response.text
        assert response.json() == {command: True}
    # The watcher logs in again after the reconnect (and the flush).
    wait_for(lambda: dovecot.logins(user) > logins, timeout=15, message="a new IMAP login")
    wait_connected(api, account)
    response = api.put(f"/v1/account/{account}/reconnect", json={"reconnect": False})
    assert response.json() == {"reconnect": False}
    # flush takes EmailEngine's index settings (and only flush does).
    response = api.put(f"/v1/account/{account}/flush", json={"flush": True, "imapIndexer": "full"})
    assert response.json() == {"flush": True}
    assert api.get(f"/v1/account/{account}").json()["imapIndexer"] == "full"
    response = api.put(f"/v1/account/{account}/sync", json={"sync": True, "imapIndexer": "full"})
    assert response.status_code == 400 and response.json()["field"] == "imapIndexer"
    wait_connected(api, account)


def test_account_commands_refuse_send_only_and_unknown_accounts(api: httpx.Client, account: str) -> None:
    response = api.put(f"/v1/account/{account}/reconnect", json={"reconnect": True})
    assert response.status_code == 400, response.text
    response = api.put("/v1/account/no-such-account/sync", json={"sync": True})
    assert response.status_code == 404, response.text
    response = api.put(f"/v1/account/{account}/sync", json={"sync": True, "force": 1})
    assert response.status_code == 400, response.text


def test_verify_account_good_settings(api: httpx.Client, dovecot: Dovecot, smtp_sink: SmtpSink) -> None:
    user = dovecot.new_user()
    before = api.get("/v1/accounts", params={"pageSize": 1000}).json()["total"]
    response = api.post("/v1/verifyAccount", json={
        "mailboxes": True, "imap": _imap(dovecot, user), "smtp": _smtp(smtp_sink)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["imap"] == {"success": True}
    assert body["smtp"] == {"success": True}
    assert "INBOX" in [m["path"] for m in body["mailboxes"]]
    # Nothing was saved.
    assert api.get("/v1/accounts", params={"pageSize": 1000}).json()["total"] == before


def test_verify_account_bad_passwords(api: httpx.Client, dovecot: Dovecot, smtp_sink: SmtpSink) -> None:
    user = dovecot.new_user()
    response = api.post("/v1/verifyAccount", json={
        "imap": _imap(dovecot, user, "wrong-password"), "smtp": _smtp(smtp_sink, "wrong-password")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["imap"]["success"] is False and body["imap"]["code"] == "AUTHENTICATIONFAILED"
    assert body["imap"]["error"]
    assert body["smtp"]["success"] is False and body["smtp"]["code"] == "EAUTH"
    assert "535" in body["smtp"]["responseText"]
    assert "mailboxes" not in body


def test_verify_account_refuses_what_it_cannot_do(api: httpx.Client, smtp_sink: SmtpSink) -> None:
    response = api.post("/v1/verifyAccount", json={"smtp": _smtp(smtp_sink),
                                                   "proxy": "socks5://proxy.example.com:1080"})
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "proxy"
    response = api.post("/v1/verifyAccount", json={})
    assert response.status_code == 400, response.text


def test_changes_stream_shows_a_state_change(stack: Stack, api: httpx.Client, smtp_sink: SmtpSink) -> None:
    frames: list[dict[str, Any]] = []
    opened = threading.Event()
    account = f"sse-{uuid.uuid4().hex[:8]}"

    def listen() -> None:
        with httpx.stream("GET", f"{stack.api_url}/v1/changes", headers=stack.auth_headers,
                          timeout=httpx.Timeout(5, read=20)) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            opened.set()
            event = None
            for line in response.iter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event == "message":
                    frame = json.loads(line.split(":", 1)[1])
                    frames.append(frame)
                    if frame["account"] == account and frame["key"] == "connectError":
                        return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert opened.wait(10)
    # An IMAP server that is not there: the account goes connecting -> connectError.
    imap = {"host": "127.0.0.1", "port": free_port(), "secure": False, "auth": {"user": "u", "pass": "p"}}
    response = api.post("/v1/account", json={"account": account, "name": "sse", "imap": imap})
    assert response.status_code == 200, response.text
    listener.join(20)
    mine = [f for f in frames if f["account"] == account]
    assert mine, frames
    last = mine[-1]
    assert (last["type"], last["key"], last["payload"]["state"]) == ("state", "connectError", "connectError")
    assert "refused" in json.dumps(last["payload"]["error"]).lower()
    api.delete(f"/v1/account/{account}")


def test_logs_route_answers_text(api: httpx.Client, account: str) -> None:
    response = api.get(f"/v1/logs/{account}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == f"No logs found for {account}\n"
    assert api.get("/v1/logs/no-such-account").status_code == 404


async def _record(database_url: str, account: str, lines: list[tuple[str, str]], keep: int) -> None:
    db = Database(database_url, pool_size=1)
    logs = AccountLogs(db)
    masker = Masker()
    try:
        if await logs.enabled(account):
            for side, line in lines:
                logs.add(account, "imap", masker.client(line) if side == "C" else masker.server(line))
        await logs.flush()
        await account_log.prune(db, account, keep)
    finally:
        await db.dispose()


def test_logs_of_an_account_with_logs_on_are_masked_and_capped(stack: Stack, api: httpx.Client,
                                                              smtp_sink: SmtpSink) -> None:
    quiet, logged = f"quiet-{uuid.uuid4().hex[:8]}", f"logged-{uuid.uuid4().hex[:8]}"
    for account, on in ((quiet, False), (logged, True)):
        response = api.post("/v1/account", json={"account": account, "name": account, "imap": False,
                                                 "smtp": _smtp(smtp_sink), "logs": on})
        assert response.status_code == 200, response.text
    session = [("S", "* OK Dovecot ready."), ("C", 'A1 LOGIN "user1" "hunter2"'), ("S", "A1 OK Logged in"),
               ("C", "A2 SELECT INBOX"), ("S", "A2 OK [READ-WRITE] Select completed.")]
    for account in (quiet, logged):
        asyncio.run(_record(stack.database_url, account, session, keep=4))
    assert api.get(f"/v1/logs/{quiet}").text == f"No logs found for {quiet}\n"
    response = api.get(f"/v1/logs/{logged}")
    assert response.headers["content-disposition"] == f'attachment; filename="logs.{logged}.txt"'
    entries = [json.loads(line) for line in response.text.splitlines()]
    # The newest 4 lines are kept, oldest first, the password masked.
    assert [e["msg"] for e in entries] == [f'A1 LOGIN "user1" {MASK}', "A1 OK Logged in", "A2 SELECT INBOX",
                                           "A2 OK [READ-WRITE] Select completed."]
    assert all(e["source"] == "imap" and e["time"] for e in entries)
    assert "hunter2" not in response.text
    for account in (quiet, logged):
        api.delete(f"/v1/account/{account}")


def test_imap_protocol_log_of_an_account_with_logs_on(api: httpx.Client, dovecot: Dovecot,
                                                      imap_account: tuple[str, str]) -> None:
    account, user = imap_account

    def logged() -> list[dict[str, Any]]:
        text = api.get(f"/v1/logs/{account}").text
        if text.startswith("No logs found"):
            return []
        entries = [json.loads(line) for line in text.splitlines()]
        return entries if any(" SELECT " in e["msg"] for e in entries) else []

    entries = wait_for(logged, timeout=10, message="the account's IMAP log")
    lines = [e["msg"] for e in entries]
    assert all(e["source"] == "imap" for e in entries)
    assert any(line.startswith("S: * OK") for line in lines)  # the greeting
    login = [line for line in lines if " LOGIN " in line.upper()]
    assert login and all(line.endswith(MASK) and user in line for line in login), login
    assert dovecot.password not in "\n".join(lines)
