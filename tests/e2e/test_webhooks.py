"""Webhook endpoints end to end: real mail produces events, real HTTP receivers get them."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from mailgate_common import events
from mailgate_common.bus import Bus
from mailgate_common.db import Database
from mailgate_common.settings import load_settings
from mailgate_webhooks import maintenance
from tests.support.smtp_sink import SmtpSink
from tests.support.stack import Stack, free_port, wait_for
from tests.support.webhook_receiver import Hook, WebhookReceiver

DOCS = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"


def doc_snippet(marker: str) -> str:
    """The code block right after ``<!-- marker -->`` in docs/webhooks.md."""
    found = re.search(rf"<!-- {marker} -->\n```\w+\n(.*?)```", DOCS.read_text(), re.S)
    assert found, f"no {marker} snippet in {DOCS}"
    return found.group(1)


def documented_python_verify() -> Callable[[str, dict[str, str], bytes], bool]:
    namespace: dict[str, Any] = {}
    exec(doc_snippet("verify-python"), namespace)
    verify: Callable[[str, dict[str, str], bytes], bool] = namespace["verify"]
    return verify


def submit(api: httpx.Client, account: str, subject: str = "hello") -> str:
    response = api.post(f"/v1/account/{account}/submit", json={
        "to": [{"address": f"rcpt-{uuid.uuid4().hex[:8]}@example.org"}],
        "subject": subject, "text": subject,
    })
    assert response.status_code == 200, response.text
    queue_id: str = response.json()["queueId"]
    return queue_id


def sent_hooks(receiver: WebhookReceiver, queue_id: str) -> list[Hook]:
    return receiver.received("messageSent", queueId=queue_id)


def deliveries(api: httpx.Client, endpoint_id: str, **query: Any) -> list[dict[str, Any]]:
    response = api.get(f"/v1/webhooks/{endpoint_id}/deliveries", params={"pageSize": 100, **query})
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()["deliveries"]
    return result


def delivery_for(api: httpx.Client, endpoint_id: str, queue_id: str) -> dict[str, Any] | None:
    found = [d for d in deliveries(api, endpoint_id) if d["queueId"] == queue_id]
    return found[0] if found else None


def test_endpoint_crud_shows_the_secret_only_once(api: httpx.Client, account: str,
                                                   endpoints: Callable[..., dict[str, Any]]) -> None:
    created = endpoints("http://127.0.0.1:9/crud", events=["messageSent"], account=account,
                        headers={"X-Tenant": "t1"}, description="crud")
    assert created["secret"].startswith("whsec_")
    assert created["status"] == "active" and created["account"] == account
    fetched = api.get(f"/v1/webhooks/{created['id']}").json()
    assert "secret" not in fetched and fetched["events"] == ["messageSent"]
    assert fetched["headers"] == {"X-Tenant": "t1"}
    assert created["id"] in [w["id"] for w in api.get("/v1/webhooks", params={"pageSize": 1000}).json()["webhooks"]]

    updated = api.put(f"/v1/webhooks/{created['id']}", json={"events": ["*"], "enabled": False})
    assert updated.status_code == 200, updated.text
    assert updated.json()["events"] == ["*"] and updated.json()["status"] == "disabled"
    assert "secret" not in updated.json()

    bad = api.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/x", "events": ["messageSnet"]})
    assert bad.status_code == 400 and bad.json()["field"] == "events"
    forged = api.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/x",
                                             "headers": {"webhook-signature": "v1,forged"}})
    assert forged.status_code == 400 and forged.json()["field"] == "headers"
    not_url = api.post("/v1/webhooks", json={"url": "ftp://example.com/x"})
    assert not_url.status_code == 400 and not_url.json()["field"] == "url"

    assert api.delete(f"/v1/webhooks/{created['id']}").json() == {"deleted": True}
    gone = api.get(f"/v1/webhooks/{created['id']}")
    assert gone.status_code == 404 and gone.json()["field"] == "id"


def test_signatures_verify_with_the_documented_snippets_and_across_a_rotation(
    api: httpx.Client, account: str, receivers: Callable[..., WebhookReceiver],
    endpoints: Callable[..., dict[str, Any]],
) -> None:
    receiver = receivers()
    endpoint = endpoints(receiver.url, events=["messageSent"], accounts=[account],
                         headers={"X-Tenant": "tenant-7"})
    secret = endpoint["secret"]
    queue_id = submit(api, account, "signed")
    [hook] = wait_for(lambda: sent_hooks(receiver, queue_id), message="signed messageSent")

    verify = documented_python_verify()
    assert verify(secret, hook.headers, hook.body)
    assert not verify(secret, hook.headers, hook.body + b" ")
    Webhook(secret).verify(hook.body, hook.headers)
    ee = base64.urlsafe_b64encode(hmac.new(secret.encode(), hook.body, hashlib.sha256).digest())
    assert hook.headers["x-ee-wh-signature"] == ee.rstrip(b"=").decode()
    assert hook.headers["x-tenant"] == "tenant-7"
    assert hook.headers["webhook-id"] == hook.json["eventId"]

    rotated = api.post(f"/v1/webhooks/{endpoint['id']}/rotate-secret", json={"overlapSeconds": 600})
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret != secret and rotated.json()["previousSecretExpires"]
    queue_id = submit(api, account, "during the overlap")
    [hook] = wait_for(lambda: sent_hooks(receiver, queue_id), message="messageSent after rotation")
    assert len(hook.headers["webhook-signature"].split(" ")) == 2
    for key in (new_secret, secret):
        Webhook(key).verify(hook.body, hook.headers)
        assert verify(key, hook.headers, hook.body)

    api.post(f"/v1/webhooks/{endpoint['id']}/rotate-secret", json={"overlapSeconds": 0})
    queue_id = submit(api, account, "after the overlap")
    [hook] = wait_for(lambda: sent_hooks(receiver, queue_id), message="messageSent after overlap")
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret).verify(hook.body, hook.headers)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_documented_node_snippet_verifies(
    api: httpx.Client, account: str, receivers: Callable[..., WebhookReceiver],
    endpoints: Callable[..., dict[str, Any]], tmp_path: Path,
) -> None:
    receiver = receivers()
    endpoint = endpoints(receiver.url, events=["messageSent"], accounts=[account])
    secret = endpoint["secret"]
    queue_id = submit(api, account, "node")
    [hook] = wait_for(lambda: sent_hooks(receiver, queue_id), message="messageSent for node")
    # The Node snippet, run by node itself on the same request.
    script = tmp_path / "verify.js"
    script.write_text(doc_snippet("verify-node") + """
const fs = require("node:fs");
const [secret, headersFile, bodyFile] = process.argv.slice(2);
const ok = verify(secret, JSON.parse(fs.readFileSync(headersFile, "utf8")), fs.readFileSync(bodyFile));
process.stdout.write(ok ? "valid" : "invalid");
""")
    (tmp_path / "headers.json").write_text(json.dumps(hook.headers))
    (tmp_path / "body").write_bytes(hook.body)
    node = subprocess.run(["node", str(script), secret, str(tmp_path / "headers.json"),
                           str(tmp_path / "body")], capture_output=True, text=True, timeout=30)
    assert node.stdout == "valid", node.stderr
    node_forged = subprocess.run(["node", str(script), endpoint["secret"][:-4] + "AAA=",
                                  str(tmp_path / "headers.json"), str(tmp_path / "body")],
                                 capture_output=True, text=True, timeout=30)
    assert node_forged.stdout == "invalid", node_forged.stderr


def test_filters_deliver_only_what_was_asked(
    api: httpx.Client, account: str, receivers: Callable[..., WebhookReceiver],
    endpoints: Callable[..., dict[str, Any]],
) -> None:
    sent_only, failed_only, other_account, scoped = (receivers() for _ in range(4))
    a = endpoints(sent_only.url, events=["messageSent"], accounts=[account])
    b = endpoints(failed_only.url, events=["messageFailed"], accounts=[account])
    c = endpoints(other_account.url, events=["*"], accounts=["acct-someone-else"])
    d = endpoints(scoped.url, account=account)
    queue_id = submit(api, account, "filters")
    wait_for(lambda: sent_hooks(sent_only, queue_id) and sent_hooks(scoped, queue_id),
             message="messageSent to the subscribed endpoints")
    # All deliveries of one event are stored in one transaction: nothing more can come.
    assert [h.json["event"] for h in sent_only.received()] == ["messageSent"]
    assert failed_only.all_attempts() == [] and other_account.all_attempts() == []
    assert deliveries(api, b["id"]) == [] and deliveries(api, c["id"]) == []
    assert [x["queueId"] for x in deliveries(api, a["id"])] == [queue_id]
    assert {h.json["account"] for h in scoped.received()} == {account}
    assert delivery_for(api, d["id"], queue_id) is not None


def test_an_account_webhook_url_gets_that_accounts_events_only(
    api: httpx.Client, account: str, smtp_sink: SmtpSink, webhook_receiver: WebhookReceiver,
    receivers: Callable[..., WebhookReceiver],
) -> None:
    own = receivers()
    response = api.put(f"/v1/account/{account}", json={"webhooks": own.url})
    assert response.status_code == 200, response.text
    other = f"acct-{uuid.uuid4().hex[:10]}"
    response = api.post("/v1/account", json={
        "account": other, "email": f"{other}@sender.test", "imap": False,
        "smtp": {"host": "127.0.0.1", "port": smtp_sink.port, "secure": False,
                 "auth": {"user": other, "pass": "smtp-password"}},
    })
    assert response.status_code == 200, response.text
    mine, theirs = submit(api, account, "own url"), submit(api, other, "global only")
    # The global URL still gets both; the account's URL only its own account's.
    wait_for(lambda: sent_hooks(own, mine) and sent_hooks(webhook_receiver, mine)
             and sent_hooks(webhook_receiver, theirs), message="messageSent to both URLs")
    assert {h.json["account"] for h in own.received()} == {account}
    assert sent_hooks(own, theirs) == []


def test_500_then_200_records_exactly_one_success(
    api: httpx.Client, account: str, receivers: Callable[..., WebhookReceiver],
    endpoints: Callable[..., dict[str, Any]],
) -> None:
    receiver = receivers()
    receiver.fail_next(1, 500)
    endpoint = endpoints(receiver.url, events=["messageSent"], accounts=[account])
    queue_id = submit(api, account, "500 then 200")
    wait_for(lambda: (delivery_for(api, endpoint["id"], queue_id) or {}).get("status") == "delivered",
             timeout=20, message="delivered after one retry")
    attempts = receiver.all_attempts(queueId=queue_id)
    assert [h.status for h in attempts] == [500, 200]
    assert attempts[0].headers["webhook-id"] == attempts[1].headers["webhook-id"]
    log = [x for x in deliveries(api, endpoint["id"], status="delivered") if x["queueId"] == queue_id]
    assert len(log) == 1
    assert log[0]["attempts"] == 2 and log[0]["statusCode"] == 200
    assert log[0]["responseBody"] == '{"ok":true}' and log[0]["lastError"] is None
    everywhere = api.get("/v1/webhook-deliveries",
                         params={"webhook": endpoint["id"], "event": "messageSent", "status": "delivered"})
    assert [x["id"] for x in everywhere.json()["deliveries"]] == [log[0]["id"]]
    bad = api.get("/v1/webhook-deliveries", params={"status": "lost"})
    assert bad.status_code == 400 and bad.json()["field"] == "status"


def test_endpoint_down_for_a_while_gets_every_event_once_it_returns(
    api: httpx.Client, account: str, receivers: Callable[..., WebhookReceiver],
    endpoints: Callable[..., dict[str, Any]],
) -> None:
    port = free_port()
    endpoint = endpoints(f"http://127.0.0.1:{port}/hooks", events=["messageSent"], accounts=[account])
    queue_ids = [submit(api, account, f"while down {i}") for i in range(5)]

    def all_retrying() -> bool:
        log = {x["queueId"]: x for x in deliveries(api, endpoint["id"])}
        return all(q in log and log[q]["status"] == "retrying" and log[q]["attempts"] >= 2
                   for q in queue_ids)

    wait_for(all_retrying, timeout=20, message="every delivery failed at least twice")
    assert "ConnectError" in (deliveries(api, endpoint["id"])[0]["lastError"] or "")

    receiver = receivers(port)  # back on the same address
    wait_for(lambda: all(sent_hooks(receiver, q) for q in queue_ids), timeout=20,
             message="every missed event after the endpoint returned")
    wait_for(lambda: all(x["status"] == "delivered" for x in deliveries(api, endpoint["id"])),
             message="log shows all delivered")
    assert sorted(h.json["data"]["queueId"] for h in receiver.received("messageSent")) == sorted(queue_ids)


def test_replay_redelivers_with_the_same_webhook_id(
    api: httpx.Client, account: str, receivers: Callable[..., WebhookReceiver],
    endpoints: Callable[..., dict[str, Any]],
) -> None:
    receiver = receivers()
    endpoint = endpoints(receiver.url, events=["messageSent"], accounts=[account])
    since = datetime.now(UTC).isoformat()
    queue_ids = [submit(api, account, f"replay {i}") for i in range(2)]
    wait_for(lambda: all(sent_hooks(receiver, q) for q in queue_ids), message="first deliveries")
    wait_for(lambda: len(deliveries(api, endpoint["id"], status="delivered")) == 2, message="logged")
    first = delivery_for(api, endpoint["id"], queue_ids[0])
    assert first is not None

    replayed = api.post(f"/v1/webhook-deliveries/{first['id']}/replay")
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["eventId"] == first["eventId"]
    hooks = wait_for(lambda: len(sent_hooks(receiver, queue_ids[0])) == 2 and sent_hooks(receiver, queue_ids[0]),
                     message="replayed delivery")
    assert hooks[0].headers["webhook-id"] == hooks[1].headers["webhook-id"] == first["eventId"]
    assert hooks[0].body == hooks[1].body
    wait_for(lambda: (delivery_for(api, endpoint["id"], queue_ids[0]) or {}).get("status") == "delivered",
             message="replay logged")
    assert delivery_for(api, endpoint["id"], queue_ids[0])["attempts"] == 2  # type: ignore[index]

    nothing_failed = api.post(f"/v1/webhooks/{endpoint['id']}/replay", json={"since": since, "status": "failed"})
    assert nothing_failed.json() == {"replayed": 0}
    again = api.post(f"/v1/webhooks/{endpoint['id']}/replay", json={"since": since, "status": "delivered"})
    assert again.status_code == 200 and again.json() == {"replayed": 2}
    wait_for(lambda: len(sent_hooks(receiver, queue_ids[0])) == 3 and len(sent_hooks(receiver, queue_ids[1])) == 2,
             message="bulk replay")
    missing = api.post("/v1/webhook-deliveries/999999999/replay")
    assert missing.status_code == 404 and missing.json()["field"] == "deliveryId"


@pytest.fixture(scope="module")
def strict_api(stack: Stack) -> Iterator[httpx.Client]:
    """A second API process with the production default: private webhook URLs refused."""
    port = free_port()
    service = stack.add_service("api-strict", "mailgate-api", f"http://127.0.0.1:{port}/health",
                                {"MAILGATE_API_PORT": str(port), "MAILGATE_WEBHOOKS_ALLOW_PRIVATE": "false"})
    service.start()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=15, headers=stack.auth_headers) as client:
        yield client
    service.kill()


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/hooks", "http://localhost/hooks", "http://[::1]/hooks",
    "http://169.254.169.254/latest/meta-data", "http://10.1.2.3/hooks", "http://192.168.0.10/hooks",
    "http://[::ffff:127.0.0.1]/hooks", "http://100.64.0.1/hooks",
])
def test_private_webhook_urls_are_refused_with_a_clear_400(strict_api: httpx.Client, url: str) -> None:
    response = strict_api.post("/v1/webhooks", json={"url": url})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["field"] == "url"
    assert "MAILGATE_WEBHOOKS_ALLOW_PRIVATE" in body["message"]
    setting = strict_api.post("/v1/settings", json={"webhooks": url})
    assert setting.status_code == 400 and setting.json()["field"] == "webhooks"


class SlowReceiver:
    """Answers 200 after ``delay`` seconds; records each request when it arrives."""

    def __init__(self, delay: float) -> None:
        self.arrived: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                receiver.arrived.append(json.loads(body))
                time.sleep(delay)
                try:
                    self.send_response(200)
                    self.end_headers()
                except OSError:
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_killing_the_webhooks_service_mid_delivery_loses_nothing(
    stack: Stack, api: httpx.Client, account: str, endpoints: Callable[..., dict[str, Any]],
) -> None:
    receiver = SlowReceiver(delay=1.5)
    try:
        endpoint = endpoints(receiver.url, events=["messageSent"], accounts=[account])
        queue_ids = [submit(api, account, f"kill {i}") for i in range(3)]
        wait_for(lambda: receiver.arrived, message="a delivery on the wire")
        webhooks = stack.services["webhooks"]
        webhooks.kill()
        more = [submit(api, account, f"while dead {i}") for i in range(2)]
        webhooks.start()
        wanted = set(queue_ids + more)

        def all_delivered() -> bool:
            log = deliveries(api, endpoint["id"])
            return {x["queueId"] for x in log if x["status"] == "delivered"} == wanted

        # A delivery cut off mid-POST is retried once its claim expires.
        wait_for(all_delivered, timeout=45, interval=0.5, message="every event delivered after the restart")
        assert {h["data"]["queueId"] for h in receiver.arrived} == wanted
        assert len(deliveries(api, endpoint["id"])) == len(wanted)
    finally:
        receiver.stop()


def test_an_endpoint_failing_for_long_is_backed_off_then_probed_and_resumes(
    stack: Stack, api: httpx.Client, account: str, receivers: Callable[..., WebhookReceiver],
    endpoints: Callable[..., dict[str, Any]],
) -> None:
    # A replica that calls an endpoint failing after 3 straight failures (not 5 over
    # 10 minutes) stands in for the default one during this test.
    default = stack.services["webhooks"]
    default.kill()
    quick = stack.add_worker("webhooks-quick-failing", "mailgate-webhooks", {
        "MAILGATE_WEBHOOK_FAILING_THRESHOLD": "3", "MAILGATE_WEBHOOK_FAILING_AFTER": "0"})
    quick.start()
    try:
        port = free_port()
        endpoint = endpoints(f"http://127.0.0.1:{port}/hooks", events=["messageSent"], accounts=[account])
        queue_ids = [submit(api, account, f"backoff {i}") for i in range(4)]
        wait_for(lambda: api.get(f"/v1/webhooks/{endpoint['id']}").json()["status"] == "failing",
                 timeout=20, message="endpoint marked failing")
        marked = api.get(f"/v1/webhooks/{endpoint['id']}").json()
        assert marked["failingSince"] and marked["backoffUntil"] and marked["consecutiveFailures"] >= 3

        def attempts() -> int:
            return sum(x["attempts"] for x in deliveries(api, endpoint["id"]))

        time.sleep(0.5)
        before = attempts()
        time.sleep(3)
        # Backed off as a whole: single probes, not every delivery retrying on its own.
        assert attempts() - before <= 2

        receiver = receivers(port)
        wait_for(lambda: all(sent_hooks(receiver, q) for q in queue_ids), timeout=20,
                 message="every waiting delivery after a successful probe")
        recovered = api.get(f"/v1/webhooks/{endpoint['id']}").json()
        assert recovered["status"] == "active" and recovered["consecutiveFailures"] == 0
        assert [len(sent_hooks(receiver, q)) for q in queue_ids] == [1, 1, 1, 1]
    finally:
        quick.kill()  # stays in stack.services so its log is kept
        default.start()


def test_a_slow_endpoint_never_delays_another(
    api: httpx.Client, account: str, receivers: Callable[..., WebhookReceiver],
    endpoints: Callable[..., dict[str, Any]],
) -> None:
    slow = SlowReceiver(delay=3)
    try:
        fast = receivers()
        slow_endpoint = endpoints(slow.url, events=["messageSent"], accounts=[account])
        endpoints(fast.url, events=["messageSent"], accounts=[account])
        queue_ids = [submit(api, account, f"slow vs fast {i}") for i in range(12)]
        # 12 calls at 3 s each, at most 8 at a time: the slow one needs >= 6 s.
        wait_for(lambda: all(sent_hooks(fast, q) for q in queue_ids), timeout=5,
                 message="the fast endpoint served while the slow one is busy")
        done = [x for x in deliveries(api, slow_endpoint["id"]) if x["status"] == "delivered"]
        assert len(done) < len(queue_ids)
        wait_for(lambda: len(deliveries(api, slow_endpoint["id"], status="delivered")) == len(queue_ids),
                 timeout=30, message="the slow endpoint gets everything too")
    finally:
        slow.stop()


def test_fixing_an_endpoint_url_redirects_its_waiting_retries(
    api: httpx.Client, account: str, receivers: Callable[..., WebhookReceiver],
    endpoints: Callable[..., dict[str, Any]],
) -> None:
    endpoint = endpoints(f"http://127.0.0.1:{free_port()}/typo", events=["messageSent"], accounts=[account])
    queue_id = submit(api, account, "typo")
    wait_for(lambda: (delivery_for(api, endpoint["id"], queue_id) or {}).get("status") == "retrying",
             message="first attempt failed")
    receiver = receivers()
    fixed = api.put(f"/v1/webhooks/{endpoint['id']}", json={"url": receiver.url})
    assert fixed.status_code == 200 and fixed.json()["url"] == receiver.url
    wait_for(lambda: sent_hooks(receiver, queue_id), timeout=10, message="retry at the fixed URL")
    wait_for(lambda: (delivery_for(api, endpoint["id"], queue_id) or {}).get("url") == receiver.url,
             message="log shows the fixed URL")


def _psql(stack: Stack, sql: str) -> str:
    url = stack.database_url.replace("postgresql+asyncpg://", "postgresql://")
    return subprocess.run(["psql", url, "-At", "-c", sql], check=True, capture_output=True,
                          text=True).stdout


def _upkeep(stack: Stack) -> tuple[int, int]:
    """One round of the webhooks service's periodic upkeep (it runs every 10 minutes)."""
    async def once() -> tuple[int, int]:
        db = Database(stack.database_url, pool_size=1)
        try:
            return await maintenance.run_once(load_settings(stack.env), db)
        finally:
            await db.dispose()

    return asyncio.run(once())


def test_spent_retries_fail_replay_since_a_time_and_old_rows_are_pruned(
    stack: Stack, api: httpx.Client, account: str, receivers: Callable[..., WebhookReceiver],
    endpoints: Callable[..., dict[str, Any]],
) -> None:
    port = free_port()
    endpoint = endpoints(f"http://127.0.0.1:{port}/hooks", events=["messageSent"], accounts=[account])
    since = datetime.now(UTC).isoformat()
    queue_ids = [submit(api, account, f"window {i}") for i in range(2)]
    wait_for(lambda: len(deliveries(api, endpoint["id"], status="retrying")) == 2, message="retrying")
    # Hold the endpoint while its deliveries are aged: nothing may be mid-attempt.
    api.put(f"/v1/webhooks/{endpoint['id']}", json={"enabled": False})
    time.sleep(0.5)
    _psql(stack, "UPDATE webhook_deliveries SET retry_from = now() - interval '73 hours' "
                 f"WHERE endpoint_id = '{endpoint['id']}'")
    expired, _ = _upkeep(stack)
    assert expired >= 2
    failed = deliveries(api, endpoint["id"], status="failed")
    assert {x["queueId"] for x in failed} == set(queue_ids)
    assert all("retry window spent" in x["lastError"] for x in failed)

    receiver = receivers(port)
    api.put(f"/v1/webhooks/{endpoint['id']}", json={"enabled": True})
    replayed = api.post(f"/v1/webhooks/{endpoint['id']}/replay", json={"since": since, "status": "failed"})
    assert replayed.status_code == 200 and replayed.json() == {"replayed": 2}
    wait_for(lambda: all(sent_hooks(receiver, q) for q in queue_ids), timeout=10, message="replayed")
    wait_for(lambda: len(deliveries(api, endpoint["id"], status="delivered")) == 2, message="logged")

    _psql(stack, "UPDATE webhook_deliveries SET created_at = now() - interval '31 days' "
                 f"WHERE endpoint_id = '{endpoint['id']}'")
    _, pruned = _upkeep(stack)
    assert pruned >= 2 and deliveries(api, endpoint["id"]) == []


def test_a_burst_through_two_replicas_is_delivered_once_each_and_logged(
    stack: Stack, api: httpx.Client, account: str, receivers: Callable[..., WebhookReceiver],
    endpoints: Callable[..., dict[str, Any]],
) -> None:
    # More events than one replica has slots for: most are stored unclaimed and
    # claimed later by either replica; none may be POSTed twice.
    second = stack.add_worker("webhooks-second", "mailgate-webhooks")
    second.start()
    receiver = receivers()
    try:
        endpoint = endpoints(receiver.url, events=["messageSent"], accounts=[account])
        prefix = uuid.uuid4().hex[:8]
        count = 300

        async def publish() -> None:
            bus = Bus(stack.amqp_url)
            await bus.connect()
            envelope = events.Envelope(from_="a@example.org", to=["b@example.org"])
            await asyncio.gather(*(
                bus.publish(events.MessageSent(account=account, queue_id=f"{prefix}-{i}",
                                               message_id=f"<{prefix}-{i}@test>", response="250 ok",
                                               envelope=envelope))
                for i in range(count)))
            await bus.close()

        asyncio.run(publish())

        def ours() -> list[Hook]:
            return [h for h in receiver.received("messageSent")
                    if h.json["data"]["queueId"].startswith(prefix)]

        wait_for(lambda: len(ours()) >= count, timeout=60, message="every event of the burst")
        time.sleep(1)  # a duplicate would arrive now
        ids = [h.headers["webhook-id"] for h in ours()]
        assert len(ids) == len(set(ids)) == count
        wait_for(lambda: _psql(stack, "SELECT count(*), sum(attempts_made), "
                                      "(SELECT count(*) FROM webhook_attempts a JOIN webhook_deliveries d "
                                      f"ON d.id = a.delivery_id WHERE d.endpoint_id = '{endpoint['id']}') "
                                      "FROM webhook_deliveries WHERE state = 'delivered' "
                                      f"AND endpoint_id = '{endpoint['id']}'").strip() == f"{count}|{count}|{count}",
                 timeout=15, message="each delivery logged once, with one attempt row")
    finally:
        second.kill()
        stack.services.pop("webhooks-second", None)
