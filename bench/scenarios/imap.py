"""IMAP: many accounts on one Dovecot watched by one imap-sync replica: memory per
account, time until all are connected, and new mail -> messageNew webhook latency;
vs bare aioimaplib IDLE connections (memory) and a bare IDLE client (push latency)."""

from __future__ import annotations

import asyncio
import time
import uuid

import aioimaplib

from bench.context import Bench, Row
from bench.peers import percentile
from bench.scenarios.memory import rss_kb
from tests.support.dovecot import Dovecot
from tests.support.stack import free_port, wait_for
from tests.support.webhook_receiver import WebhookReceiver


async def _bare_connections(port: int, users: list[str], password: str) -> list[aioimaplib.IMAP4]:
    clients = []
    for user in users:
        client = aioimaplib.IMAP4(host="127.0.0.1", port=port, timeout=30)
        await client.wait_hello_from_server()
        await client.login(user, password)
        await client.select("INBOX")
        clients.append(client)
    return clients


async def _bare_push_latency(server: Dovecot, user: str, samples: int) -> list[float]:
    client = aioimaplib.IMAP4(host="127.0.0.1", port=server.port, timeout=30)
    await client.wait_hello_from_server()
    await client.login(user, server.password)
    await client.select("INBOX")
    latencies = []
    for i in range(samples):
        idle = await client.idle_start(timeout=30)
        await asyncio.sleep(0.2)
        started = time.perf_counter()
        await asyncio.to_thread(server.deliver, user, f"Subject: ref {i}\r\n\r\nx\r\n".encode())
        await client.wait_server_push(timeout=10)
        latencies.append((time.perf_counter() - started) * 1000)
        client.idle_done()
        await asyncio.wait_for(idle, 10)
    await client.logout()
    return latencies


def run(bench: Bench, accounts: int = 1000, samples: int = 40) -> None:
    server = Dovecot(free_port(), free_port(), users=accounts + 1)
    server.start()
    receiver = WebhookReceiver(free_port())
    receiver.start()
    imap = bench.stack.services["imap-sync"]
    assert imap.proc is not None
    try:
        with bench.api() as api:
            api.post("/v1/settings", json={"webhooks": receiver.url, "webhookEvents": ["messageNew"]})
        before = rss_kb(imap.proc.pid)
        started = time.perf_counter()
        tag = uuid.uuid4().hex[:4]
        with bench.api() as api:
            for i, user in enumerate(server.users[:accounts]):
                api.post("/v1/account", json={
                    "account": f"imap-{tag}-{i}", "email": f"{user}@bench.test",
                    "imap": {"host": "127.0.0.1", "port": server.port, "secure": False,
                             "tls": {"rejectUnauthorized": False},  # Dovecot's self-signed test cert
                             "auth": {"user": user, "pass": server.password}},
                    "smtp": {"host": "127.0.0.1", "port": 9},
                }).raise_for_status()

            def connected() -> bool:
                total: int = api.get("/v1/accounts", params={"state": "connected", "pageSize": 1}).json()["total"]
                return total >= accounts

            wait_for(connected, timeout=600, interval=1, message=f"{accounts} accounts connected")
        to_connect = time.perf_counter() - started
        time.sleep(5)
        per_account = (rss_kb(imap.proc.pid) - before) / accounts
        bare_users = server.users[:50]
        bare_before = rss_kb_self()
        bare_rss, bare_seconds = asyncio.run(_keep(server.port, bare_users, server.password))
        bare_per = (bare_rss - bare_before) / len(bare_users)
        bench.add(Row("IMAP", f"RSS per watched account ({accounts} accounts, one replica)", per_account, "KB",
                      "bare aioimaplib selected connection (50 held)", bare_per, higher_is_better=False,
                      target="≤ 40 KB"))
        bench.add(Row("IMAP", f"seconds until {accounts} accounts are connected", to_connect, "s",
                      f"bare serial login+select, 50 accounts scaled to {accounts}",
                      bare_seconds * accounts / len(bare_users), higher_is_better=False))
        latencies = []
        for i in range(samples):
            user = server.users[i % accounts]
            subject = f"lat-{tag}-{i}"
            t0 = time.time()
            server.deliver(user, f"Subject: {subject}\r\nFrom: a@example.org\r\n\r\nbody\r\n".encode())
            hook = wait_for(lambda s=subject: [h for h in receiver.received("messageNew")
                                               if h.json["data"].get("subject") == s], timeout=30, interval=0.02)
            latencies.append((hook[0].at - t0) * 1000)
        reference = asyncio.run(_bare_push_latency(server, server.users[accounts], min(samples, 20)))
        for q in (50, 99):
            bench.add(Row("IMAP", f"new mail -> messageNew webhook p{q}", percentile(latencies, q), "ms",
                          "bare IDLE client sees EXISTS", percentile(reference, q), higher_is_better=False,
                          target="p50 < 1 s" if q == 50 else ""))
    finally:
        receiver.stop()
        server.stop()


def rss_kb_self() -> int:
    import os

    return rss_kb(os.getpid())


async def _keep(port: int, users: list[str], password: str) -> tuple[int, float]:
    started = time.perf_counter()
    clients = await _bare_connections(port, users, password)
    seconds = time.perf_counter() - started
    used = rss_kb_self()
    for client in clients:
        await client.logout()
    return used, seconds
