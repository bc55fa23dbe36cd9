"""Submitting over REST and waiting for the outbox verdict, as a client would."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.stack import wait_for

FINAL_STATES = {"sent", "failed", "unknown", "cancelled"}


def submit(api: httpx.Client, account: str, to: str, subject: str = "test", **fields: Any) -> str:
    """Queue a small message from ``account@sender.test`` to ``to``; its queue id."""
    response = api.post(f"/v1/account/{account}/submit", json={
        "from": {"address": f"{account}@sender.test"}, "to": [{"address": to}],
        "subject": subject, "text": "hello", **fields,
    })
    assert response.status_code == 200, response.text
    queue_id: str = response.json()["queueId"]
    return queue_id


def final(api: httpx.Client, queue_id: str, timeout: float = 20) -> dict[str, Any]:
    """The outbox entry once the message reached a final state."""
    def done() -> dict[str, Any] | None:
        entry: dict[str, Any] = api.get(f"/v1/outbox/{queue_id}").json()
        return entry if entry.get("state") in FINAL_STATES else None
    found: dict[str, Any] = wait_for(done, timeout=timeout, message=f"{queue_id} final")
    return found
