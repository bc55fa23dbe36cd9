"""What the sender puts on the wire beyond the message: DSN parameters (RFC 3461)
where the server offers DSN, another server when the submit names a ``gateway``,
the local address and EHLO name of ``MAILGATE_LOCAL_ADDRESSES``, and nothing at
all while the operator has paused the submit queue.

Real servers: the shared stack, aiosmtpd sinks (one offering DSN, one as a gateway).
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.support.outbox import final, submit
from tests.support.smtp_sink import PASSWORD, SmtpSink
from tests.support.stack import Service, Stack, free_port, wait_for

DSN = {"id": "order 4815", "return": "headers", "notify": ["failure", "delay"], "recipient": "bounces@example.com"}


@pytest.fixture(scope="module")
def dsn_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink(free_port(), dsn=True)
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture(scope="module")
def gateway_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink(free_port())
    sink.start()
    yield sink
    sink.stop()


def _rcpt(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@example.org"


def _account(api: httpx.Client, port: int) -> str:
    account_id = f"acct-{uuid.uuid4().hex[:10]}"
    response = api.post("/v1/account", json={
        "account": account_id, "name": "Wire", "email": f"{account_id}@sender.test", "imap": False,
        "smtp": {"host": "127.0.0.1", "port": port, "secure": False,
                 "auth": {"user": account_id, "pass": PASSWORD.decode()}},
    })
    assert response.status_code == 200, response.text
    return account_id


def test_dsn_parameters_go_to_a_server_that_offers_dsn(api: httpx.Client, dsn_sink: SmtpSink) -> None:
    account = _account(api, dsn_sink.port)
    to = _rcpt("dsn")
    assert final(api, submit(api, account, to, dsn=DSN))["state"] == "sent"
    [received] = dsn_sink.to(to)
    assert "RET=HDRS" in received.mail_options
    assert "ENVID=order+204815" in received.mail_options  # xtext: the space as +20
    assert received.rcpt_options[to] == ["NOTIFY=FAILURE,DELAY", "ORCPT=rfc822;bounces@example.com"]

    # Without ``dsn`` the envelope carries none of it.
    plain = _rcpt("nodsn")
    assert final(api, submit(api, account, plain))["state"] == "sent"
    [received] = dsn_sink.to(plain)
    assert not [o for o in received.mail_options if o.startswith(("RET=", "ENVID="))]
    assert received.rcpt_options[plain] == []


def test_dsn_is_left_out_where_the_server_does_not_offer_it(
    api: httpx.Client, account: str, smtp_sink: SmtpSink,
) -> None:
    to = _rcpt("nodsnserver")
    # The sink refuses parameters it does not know (555): sent means none went.
    assert final(api, submit(api, account, to, dsn=DSN))["state"] == "sent"
    [received] = smtp_sink.to(to)
    assert not [o for o in received.mail_options if o.startswith(("RET=", "ENVID="))]


def test_a_submit_naming_a_gateway_is_sent_through_it(
    api: httpx.Client, account: str, smtp_sink: SmtpSink, gateway_sink: SmtpSink,
) -> None:
    gateway = f"gw-{uuid.uuid4().hex[:8]}"
    response = api.post("/v1/gateway", json={"gateway": gateway, "name": "Second relay", "host": "127.0.0.1",
                                             "port": gateway_sink.port, "user": "relay-user",
                                             "pass": PASSWORD.decode()})
    assert response.status_code == 200, response.text
    to = _rcpt("gateway")
    assert final(api, submit(api, account, to, gateway=gateway))["state"] == "sent"
    [received] = gateway_sink.to(to)
    assert received.mail_from == f"{account}@sender.test"
    assert smtp_sink.to(to) == []
    assert gateway_sink.sessions_of("relay-user")  # logged in with the gateway's own credentials
    info = wait_for(lambda: (g := api.get(f"/v1/gateway/{gateway}").json())["deliveries"] == 1 and g,
                    message="gateway deliveries counted")
    assert info["lastUse"]

    # The account's own server again for a submit without ``gateway``.
    direct = _rcpt("direct")
    assert final(api, submit(api, account, direct))["state"] == "sent"
    assert len(smtp_sink.to(direct)) == 1 and gateway_sink.to(direct) == []


@contextmanager
def _replaced_sender(stack: Stack, name: str, **env: str) -> Iterator[Service]:
    """The shared sender stopped and one with ``env`` in its place; the shared one is back afterwards."""
    shared = stack.services["sender"]
    shared.kill(signal.SIGTERM)
    own = stack.add_worker(name, "mailgate-sender", env)
    try:
        own.start()
        yield own
    finally:
        own.kill(signal.SIGTERM)
        shared.start()


def test_new_connections_take_the_local_addresses_in_turn_with_their_ehlo_names(
    stack: Stack, api: httpx.Client, gateway_sink: SmtpSink,
) -> None:
    account = _account(api, gateway_sink.port)
    spec = "127.0.0.2|relay-a.test,127.0.0.3|relay-b.test"
    with _replaced_sender(stack, "sender-local", MAILGATE_LOCAL_ADDRESSES=spec):
        # Two at once need two connections: one from each address.
        to = [_rcpt("slow-local"), _rcpt("slow-local")]
        queue_ids = [submit(api, account, rcpt) for rcpt in to]
        assert [final(api, q)["state"] for q in queue_ids] == ["sent", "sent"]
    seen = {(r.peer, r.ehlo) for rcpt in to for r in gateway_sink.to(rcpt)}
    assert seen == {("127.0.0.2", "relay-a.test"), ("127.0.0.3", "relay-b.test")}


def _sender_paused(stack: Stack) -> bool:
    metrics = httpx.get(stack.services["sender"].health_url.replace("/health/ready", "/metrics")).text
    return "mailgate_sender_queue_paused 1.0" in metrics


def test_a_paused_submit_queue_sends_nothing_until_resumed(
    stack: Stack, api: httpx.Client, account: str, smtp_sink: SmtpSink,
) -> None:
    response = api.put("/v1/settings/queue/submit", json={"paused": True})
    assert response.status_code == 200, response.text
    try:
        wait_for(lambda: _sender_paused(stack), timeout=5, message="the sender sees the pause")
        to = _rcpt("paused")
        queue_id = submit(api, account, to)
        time.sleep(1.0)
        assert api.get(f"/v1/outbox/{queue_id}").json()["state"] == "queued"
        assert smtp_sink.to(to) == []
    finally:
        assert api.put("/v1/settings/queue/submit", json={"paused": False}).status_code == 200
    assert final(api, queue_id)["state"] == "sent"
    assert len(smtp_sink.to(to)) == 1
