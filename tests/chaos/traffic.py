"""Traffic for fault tests: careful clients submitting over REST and SMTP at once, and
the counts a user checks afterwards (at the SMTP server and the webhook receiver).

The clients behave as production clients should: REST retries with an
Idempotency-Key until answered; SMTP retries the same bytes after any 4xx or a
dropped connection (mailgate recognises such a retry, so neither door may queue
a message twice, whatever is killed or stopped meanwhile).
"""

from __future__ import annotations

import json
import re
import smtplib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.chaos.conftest import ChaosStack
from tests.support.smtp_sink import SmtpSink
from tests.support.stack import wait_for
from tests.support.tokens import create_token
from tests.support.webhook_receiver import WebhookReceiver

REPORT = Path("var/chaos-report.jsonl")
QUEUED = re.compile(rb"queued for delivery as (\w+)")


def api_client(stack: ChaosStack) -> httpx.Client:
    return httpx.Client(base_url=stack.api_url, headers=stack.auth_headers, timeout=10)


def new_account(stack: ChaosStack, smtp_port: int) -> str:
    account = f"chaos-{uuid.uuid4().hex[:8]}"
    with api_client(stack) as api:
        api.post("/v1/account", json={
            "account": account, "email": f"{account}@sender.test", "imap": False,
            "smtp": {"host": "127.0.0.1", "port": smtp_port, "auth": {"user": account, "pass": "smtp-password"}},
        }).raise_for_status()
    return account


def submit_rest(stack: ChaosStack, account: str, recipients: list[str], queue_ids: dict[str, str],
                deadline: float) -> None:
    with api_client(stack) as api:
        for to in recipients:
            key = uuid.uuid4().hex
            while time.monotonic() < deadline:
                try:
                    response = api.post(f"/v1/account/{account}/submit", headers={"Idempotency-Key": key},
                                        json={"to": [{"address": to}], "subject": to, "text": "chaos"})
                    if response.status_code == 200:
                        queue_ids[to] = response.json()["queueId"]
                        break
                    assert response.status_code == 503, response.text
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)


def submit_smtp(stack: ChaosStack, account: str, token: str, recipients: list[str], queue_ids: dict[str, str],
                deadline: float) -> None:
    sender = f"{account}@sender.test"
    for to in recipients:
        # Built once: a retry sends exactly the same bytes.
        data = (f"From: {sender}\r\nTo: {to}\r\nSubject: {to}\r\nMessage-ID: <{uuid.uuid4().hex}@sender.test>\r\n"
                f"\r\nchaos over SMTP\r\n").encode()
        while time.monotonic() < deadline:
            try:
                with smtplib.SMTP("127.0.0.1", stack.smtp_port, timeout=30) as smtp:
                    smtp.login(account, token)
                    code, _ = smtp.mail(sender)
                    if code == 250:
                        code, _ = smtp.rcpt(to)
                    if code == 250:
                        code, reply = smtp.data(data)
                        found = QUEUED.search(reply)
                        if code == 250 and found:
                            queue_ids[to] = found.group(1).decode()
                            break
            except (OSError, smtplib.SMTPException):
                pass
            time.sleep(0.2)


@dataclass
class Traffic:
    """``count`` messages over REST and as many over SMTP, from one account, in the background."""

    stack: ChaosStack
    sink: SmtpSink
    count: int
    timeout: float = 420.0
    account: str = ""
    rest: list[str] = field(default_factory=list)
    smtp: list[str] = field(default_factory=list)
    queue_ids: dict[str, str] = field(default_factory=dict)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Traffic:
        self.account = new_account(self.stack, self.sink.port)
        token = create_token(self.stack.database_url, self.account, ["smtp"])
        tag = uuid.uuid4().hex[:6]
        self.rest = [f"rest-{tag}-{i}@example.org" for i in range(self.count)]
        self.smtp = [f"smtp-{tag}-{i}@example.org" for i in range(self.count)]
        deadline = time.monotonic() + self.timeout
        self.threads = [
            threading.Thread(target=submit_rest, args=(self.stack, self.account, self.rest, self.queue_ids, deadline)),
            threading.Thread(target=submit_smtp,
                             args=(self.stack, self.account, token, self.smtp, self.queue_ids, deadline)),
        ]
        for thread in self.threads:
            thread.start()
        return self

    @property
    def recipients(self) -> list[str]:
        return self.rest + self.smtp

    def flowing(self) -> bool:
        """Some of both kinds delivered already: the fault hits traffic in flight."""
        return bool(self.sink.to(self.rest[self.count // 10]) and self.sink.to(self.smtp[self.count // 10]))

    def finish(self, receiver: WebhookReceiver, name: str) -> dict[str, int]:
        for thread in self.threads:
            thread.join(self.timeout)
        assert len(self.queue_ids) == 2 * self.count, "every submit was eventually answered"
        wait_for(lambda: all(self.sink.to(to) for to in self.recipients), timeout=300, interval=0.5,
                 message="every message at the SMTP server")
        wait_for(lambda: all(receiver.received("messageSent", queueId=q) for q in self.queue_ids.values()),
                 timeout=300, interval=0.5, message="a messageSent webhook for every message")
        time.sleep(2)  # a late duplicate would arrive now
        return record(name, counts(self.sink, receiver, self.recipients, list(self.queue_ids.values())))


def at_server(sink: SmtpSink, recipients: list[str]) -> dict[str, int]:
    """Messages sent, duplicated and lost, as the SMTP server saw them."""
    seen = [len(sink.to(to)) for to in recipients]
    return {
        "messages": len(recipients),
        "sent": sum(1 for c in seen if c),
        "duplicated": sum(c - 1 for c in seen if c > 1),
        "lost": sum(1 for c in seen if c == 0),
    }


def counts(sink: SmtpSink, receiver: WebhookReceiver, recipients: list[str],
           queue_ids: list[str]) -> dict[str, int]:
    hooks = Counter(h.headers["webhook-id"] for q in queue_ids for h in receiver.received("messageSent", queueId=q))
    return {**at_server(sink, recipients), "webhooks_unique": len(hooks),
            "webhooks_repeated": sum(c - 1 for c in hooks.values())}


def record(name: str, result: dict[str, Any]) -> dict[str, Any]:
    REPORT.parent.mkdir(exist_ok=True)
    with REPORT.open("a") as report:
        report.write(json.dumps({"test": name, **result}) + "\n")
    print(name, result)
    return result


def during(traffic: Traffic, fault: Callable[[], None]) -> None:
    """Run ``fault`` once the traffic is flowing."""
    wait_for(traffic.flowing, timeout=120, message="traffic flowing")
    fault()
