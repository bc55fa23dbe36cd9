"""Webhooks against hostile answers, lost keys and a database that goes away:
every event is POSTed once, recorded, and never held up by another destination.

This module runs its own webhooks replica in place of the default one: its
database connection goes through a gate the tests can shut, and its 1 s POST
timeout makes a claim last ``HOLD`` seconds, so a duplicate POST (which would
come once a claim lapses) shows within seconds.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from mailgate_common import events
from mailgate_common.bus import Bus
from mailgate_common.crypto import Sealer
from mailgate_common.db import Database
from mailgate_common.failures import is_transient
from mailgate_common.settings import load_settings
from tests.support.stack import BIN, Service, Stack, wait_for
from tests.support.tcp_gate import TcpGate
from tests.support.webhook_receiver import Reply, WebhookReceiver, gzip_reply

# The claim hold of this module's replica: 4 s to start the POST, its 1 s timeout, 1 s to record.
HOLD = 6.0


@pytest.fixture(scope="module")
def gate(stack: Stack) -> Iterator[TcpGate]:
    database = urlsplit(stack.database_url)
    gate = TcpGate(database.hostname or "127.0.0.1", database.port or 5432)
    gate.start()
    yield gate
    gate.stop()


@pytest.fixture(scope="module")
def webhooks(stack: Stack, gate: TcpGate) -> Iterator[Service]:
    default = stack.services["webhooks"]
    default.kill()
    database = urlsplit(stack.database_url)
    through_gate = stack.database_url.replace(database.netloc, f"{database.username}@127.0.0.1:{gate.port}")
    replica = stack.add_worker("webhooks-gated", "mailgate-webhooks", {
        "MAILGATE_DATABASE_URL": through_gate, "MAILGATE_WEBHOOK_TIMEOUT": "1"})
    replica.start()
    try:
        yield replica
    finally:
        replica.kill()  # stays in stack.services so its log is kept
        default.start()


@pytest.fixture
def sent_hooks(endpoints: Callable[..., dict[str, Any]]) -> Callable[[str, str], dict[str, Any]]:
    """Creates an endpoint for one account's messageSent events."""

    def make(url: str, account: str) -> dict[str, Any]:
        return endpoints(url, events=["messageSent"], accounts=[account])

    return make


def new_account() -> str:
    # Events are published straight to the bus: the account needs no row.
    return f"acct-{uuid.uuid4().hex[:10]}"


def publish_sent(stack: Stack, account: str) -> str:
    """A messageSent event on the bus, as the sender publishes it; returns its queue id."""
    queue_id = uuid.uuid4().hex[:16]

    async def publish() -> None:
        bus = Bus(stack.amqp_url)
        await bus.connect()
        try:
            await bus.publish(events.MessageSent(
                account=account, queue_id=queue_id, message_id=f"<{queue_id}@test>", response="250 ok",
                envelope=events.Envelope(from_="a@example.org", to=["b@example.org"])))
        finally:
            await bus.close()

    asyncio.run(publish())
    return queue_id


def delivery(api: httpx.Client, endpoint: dict[str, Any], queue_id: str) -> dict[str, Any]:
    response = api.get(f"/v1/webhooks/{endpoint['id']}/deliveries", params={"pageSize": 100})
    assert response.status_code == 200, response.text
    found = [d for d in response.json()["deliveries"] if d["queueId"] == queue_id]
    return found[0] if found else {}


def delivered(api: httpx.Client, endpoint: dict[str, Any], queue_id: str) -> bool:
    return delivery(api, endpoint, queue_id).get("status") == "delivered"


def _psql(stack: Stack, sql: str) -> str:
    url = stack.database_url.replace("postgresql+asyncpg://", "postgresql://")
    return subprocess.run(["psql", url, "-At", "-c", sql], check=True, capture_output=True, text=True).stdout


# -- hostile answers ------------------------------------------------------------------------


def test_gzip_answers_are_logged_as_described_and_each_event_is_posted_once(
    stack: Stack, api: httpx.Client, webhooks: Service, receivers: Callable[[], WebhookReceiver],
    sent_hooks: Callable[[str, str], dict[str, Any]],
) -> None:
    # Compressed whatever the request asked for, as a misconfigured nginx does.
    ok, flaky = receivers(), receivers()
    ok.answer_always(gzip_reply(200, '{"ok":true}'))
    flaky.answer_next(1, gzip_reply(502, "<html><body>502 Bad Gateway</body></html>"))
    flaky.answer_always(gzip_reply(200, '{"ok":true}'))
    account = new_account()
    to_ok, to_flaky = sent_hooks(ok.url, account), sent_hooks(flaky.url, account)
    queue_id = publish_sent(stack, account)

    wait_for(lambda: delivered(api, to_ok, queue_id) and delivered(api, to_flaky, queue_id), timeout=30,
             message="both deliveries recorded as delivered")
    time.sleep(HOLD + 1)  # a duplicate would come once a claim lapsed: none may
    assert [h.status for h in ok.all_attempts(queueId=queue_id)] == [200]
    assert [h.status for h in flaky.all_attempts(queueId=queue_id)] == [502, 200]
    assert {h.headers.get("accept-encoding") for h in ok.hooks + flaky.hooks} == {"identity"}

    size = len(gzip_reply(200, '{"ok":true}').body)
    logged = delivery(api, to_ok, queue_id)
    assert logged["attempts"] == 1 and logged["statusCode"] == 200 and logged["lastError"] is None
    assert logged["responseBody"] == f"<{size} bytes, gzip>"
    retried = delivery(api, to_flaky, queue_id)
    assert retried["attempts"] == 2 and retried["responseBody"] == f"<{size} bytes, gzip>"


def test_nul_and_binary_answers_are_logged_and_each_event_is_posted_once(
    stack: Stack, api: httpx.Client, webhooks: Service, receivers: Callable[[], WebhookReceiver],
    sent_hooks: Callable[[str, str], dict[str, Any]],
) -> None:
    nul, binary, untyped = receivers(), receivers(), receivers()
    nul.answer_always(Reply(200, b'{"ok":true}\x00', {"content-type": "application/json"}))
    blob = bytes(range(256))
    binary.answer_next(1, Reply(500, blob, {"content-type": "application/octet-stream"}))
    binary.answer_always(Reply(200, blob, {"content-type": "application/octet-stream"}))
    untyped.answer_always(Reply(200, b"\x00\x01\x02binary", {}))
    account = new_account()
    targets = [sent_hooks(r.url, account) for r in (nul, binary, untyped)]
    queue_id = publish_sent(stack, account)

    wait_for(lambda: all(delivered(api, t, queue_id) for t in targets), timeout=30,
             message="every delivery recorded as delivered")
    time.sleep(HOLD + 1)  # a duplicate would come once a claim lapsed: none may
    assert [len(r.all_attempts(queueId=queue_id)) for r in (nul, binary, untyped)] == [1, 2, 1]
    logged = [delivery(api, t, queue_id) for t in targets]
    assert [x["responseBody"] for x in logged] == [
        '{"ok":true}\ufffd', "<256 bytes, application/octet-stream>", "<9 bytes, no content type>"]
    assert [x["attempts"] for x in logged] == [1, 2, 1]


# -- the database goes away ---------------------------------------------------------------------


def test_an_answer_recorded_while_the_database_is_away_is_recorded_once_it_is_back(
    stack: Stack, api: httpx.Client, webhooks: Service, gate: TcpGate,
    receivers: Callable[[], WebhookReceiver], sent_hooks: Callable[[str, str], dict[str, Any]],
) -> None:
    receiver = receivers()

    def database_goes_away() -> None:
        # Between the subscriber's 200 and its record: the worst moment.
        receiver.on_request = None
        gate.shut()

    receiver.on_request = database_goes_away
    account = new_account()
    endpoint = sent_hooks(receiver.url, account)

    def claim_lapsed() -> bool:
        return _psql(stack, "SELECT bool_and(claimed_until < now()) FROM webhook_deliveries "
                            f"WHERE endpoint_id = '{endpoint['id']}'").strip() == "t"

    try:
        queue_id = publish_sent(stack, account)
        wait_for(lambda: receiver.all_attempts(queueId=queue_id), message="the POST")
        # Away for longer than the claim lasts: a poller may claim the delivery again.
        wait_for(claim_lapsed, timeout=HOLD + 10, interval=0.5, message="the claim to lapse")
    finally:
        gate.reopen()
    wait_for(lambda: delivered(api, endpoint, queue_id), timeout=20, message="recorded once the database is back")
    # Recorded as delivered, it can no longer be claimed: a second POST would have come before.
    assert [h.status for h in receiver.all_attempts(queueId=queue_id)] == [200]
    assert delivery(api, endpoint, queue_id)["attempts"] == 1


def test_storing_deliveries_with_the_database_away_is_an_outage_waited_out_in_one_try(stack: Stack) -> None:
    from mailgate_webhooks.main import WebhooksService

    database = urlsplit(stack.database_url)
    gate = TcpGate(database.hostname or "127.0.0.1", database.port or 5432)  # this test's alone
    gate.start()
    through_gate = stack.database_url.replace(database.netloc, f"{database.username}@127.0.0.1:{gate.port}")
    service = WebhooksService(load_settings({**stack.env, "MAILGATE_DATABASE_URL": through_gate}))
    batch = [events.MessageSent(account=new_account(), queue_id=f"q{i}", message_id=f"<{i}@test>",
                                response="250 ok", envelope=events.Envelope(from_="a@x.test", to=["b@y.test"]))
             for i in range(5)]

    async def store_all() -> list[BaseException | list[Any]]:
        try:
            return await asyncio.gather(*(service.storer.submit((e, None)) for e in batch),
                                        return_exceptions=True)
        finally:
            await service.db.dispose()

    gate.shut()
    try:
        outcomes = asyncio.run(store_all())
    finally:
        gate.stop()
    # The bus retries a transient failure for as long as it lasts (never a dead letter).
    assert all(isinstance(o, Exception) and is_transient(o) for o in outcomes), outcomes
    # One connection attempt for the whole batch, not one more per event.
    assert gate.refused == 1


def test_an_attempt_whose_details_the_database_refuses_is_recorded_without_them(stack: Stack) -> None:
    from mailgate_common import lifecycle
    from mailgate_webhooks.jobs import AttemptResult, Job, Target
    from mailgate_webhooks.recorder import AttemptRecorder

    token = uuid.uuid4().hex[:16]
    ids = [int(_psql(stack, "INSERT INTO webhook_deliveries (event_id, event, url, payload, claim_token, "
                            "claimed_until) VALUES "
                            f"('{uuid.uuid4()}', 'messageSent', 'http://127.0.0.1:9/x', '\\x7b7d', '{token}', "
                            "now() + interval '1 minute') RETURNING id").split()[0]) for _ in range(2)]

    def result(delivery_id: int, excerpt: str) -> AttemptResult:
        job = Job(delivery_id=delivery_id, claim_token=token, endpoint_id=None, event_id="e", event="messageSent",
                  payload=b"{}", attempts_made=0, retry_from=events.utcnow(),
                  target=Target("http://127.0.0.1:9/x", "whsec_x", None, {}), claimed_at=0.0, context=None)
        return AttemptResult(job=job, state=lifecycle.WEBHOOK_DELIVERED, attempt=1, status=200, error=None,
                             excerpt=excerpt, next_attempt_at=None, delivered_at=events.utcnow(), duration_ms=3,
                             started_at=events.utcnow())

    async def record() -> None:
        db = Database(stack.database_url, pool_size=2)
        recorder = AttemptRecorder(load_settings(stack.env), db)
        try:
            # One batch: PostgreSQL text refuses NUL, which fails the whole statement.
            await asyncio.gather(recorder.record(result(ids[0], "bad\x00answer")),
                                 recorder.record(result(ids[1], "fine")))
        finally:
            await db.dispose()

    asyncio.run(record())
    rows = _psql(stack, "SELECT d.id, d.state, d.attempts_made, d.last_status, d.claim_token IS NULL, "
                        "coalesce(a.response_excerpt, '(none)') FROM webhook_deliveries d "
                        "JOIN webhook_attempts a ON a.delivery_id = d.id "
                        f"WHERE d.id IN ({ids[0]}, {ids[1]}) ORDER BY d.id")
    assert rows.split() == [f"{ids[0]}|delivered|1|200|t|(none)", f"{ids[1]}|delivered|1|200|t|fine"]
    _psql(stack, f"DELETE FROM webhook_deliveries WHERE id IN ({ids[0]}, {ids[1]})")


# -- secret rotation ----------------------------------------------------------------------------


def _use_secrets(stack: Stack, secret: str, previous: str | None) -> None:
    """Every service (stopped ones too, for when they start again) on these secrets;
    the running ones restarted."""
    for env in (stack.env, *(s.env for s in stack.services.values())):
        env["MAILGATE_SECRET"] = secret
        if previous is None:
            env.pop("MAILGATE_SECRET_PREVIOUS", None)
        else:
            env["MAILGATE_SECRET_PREVIOUS"] = previous
    running = [s for s in stack.services.values() if s.proc is not None]
    for service in running:
        service.kill(signal.SIGTERM)
    for service in running:
        service.start(wait=False)
    for service in running:
        service.wait_ready()


def test_endpoint_secrets_survive_a_rotation_and_a_lost_one_fails_alone(
    stack: Stack, api: httpx.Client, webhooks: Service, receivers: Callable[[], WebhookReceiver],
    sent_hooks: Callable[[str, str], dict[str, Any]],
) -> None:
    kept, lost = receivers(), receivers()
    account = new_account()
    to_kept, to_lost = sent_hooks(kept.url, account), sent_hooks(lost.url, account)

    old, new = stack.env["MAILGATE_SECRET"], "rotated-" + uuid.uuid4().hex
    _use_secrets(stack, new, previous=old)  # the documented procedure: read both, write the new one
    rotated = subprocess.run([str(BIN / "mailgate"), "secret", "rotate"], env=stack.env, capture_output=True,
                             text=True, timeout=60)
    assert rotated.returncode == 0, rotated.stderr
    resealed = re.search(r"re-encrypted (\d+) webhook endpoint secret", rotated.stdout)
    assert resealed and int(resealed.group(1)) >= 2, rotated.stdout
    new_only = Sealer(new)
    for hex_value in _psql(stack, "SELECT encode(secret, 'hex') FROM webhook_endpoints").split():
        assert new_only.open(bytes.fromhex(hex_value))["secret"]  # readable without the old secret

    # One endpoint's secret sealed with a key nobody has (as if the rotation had missed it).
    unknown = Sealer("a-secret-nobody-has-" + uuid.uuid4().hex).seal({"secret": "whsec_lost"}).hex()
    _psql(stack, f"UPDATE webhook_endpoints SET secret = decode('{unknown}', 'hex') WHERE id = '{to_lost['id']}'")
    _use_secrets(stack, new, previous=None)  # ...and the old secret is dropped

    queue_id = publish_sent(stack, account)
    [hook] = wait_for(lambda: kept.received("messageSent", queueId=queue_id), timeout=20,
                      message="the endpoint with a readable secret gets the event")
    Webhook(to_kept["secret"]).verify(hook.body, hook.headers)
    wait_for(lambda: delivery(api, to_lost, queue_id).get("attempts", 0) >= 1, timeout=20,
             message="the lost endpoint's attempt recorded")
    failed = delivery(api, to_lost, queue_id)
    assert failed["status"] == "retrying"
    assert "endpoint secret cannot be opened" in failed["lastError"]
    assert "rotate the endpoint's secret" in failed["lastError"]
    assert lost.all_attempts() == []  # nothing POSTed without a signature
    assert delivered(api, to_kept, queue_id)
