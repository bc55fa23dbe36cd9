"""IMAP: many accounts on one Dovecot watched by one imap-sync replica: memory per
account, time until all are connected, and new mail -> messageNew webhook latency;
vs bare aioimaplib TLS connections in IDLE (memory, login time) and a bare IDLE
client (push latency).

The accounts use STARTTLS, as real ones do.  Memory is the RSS growth of the
imap-sync process per account, measured after a small warm-up batch so that
one-time costs (database pool, caches, the TLS context) are not spread over the
accounts.  The memory reference runs in its own uvloop process (as imap-sync
does), so neither figure includes the other's interpreter.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import aioimaplib
import httpx

from bench.context import Bench, Row
from bench.peers import percentile
from bench.scenarios.memory import rss_kb
from tests.support.dovecot import Dovecot
from tests.support.stack import free_port, wait_for
from tests.support.webhook_receiver import WebhookReceiver

# Connected before the "before" RSS sample: pays the one-time costs.
WARMUP = 50
# Bare reference connections (memory and serial login time).
BARE = 50


# The issue asks for 1,000 accounts on one Dovecot watched by one replica.
def run(bench: Bench, accounts: int = 1000, samples: int = 40) -> None:
    server = Dovecot(free_port(), free_port(), users=WARMUP + accounts + 1)
    server.start()
    receiver = WebhookReceiver(free_port())
    receiver.start()
    imap = bench.stack.services["imap-sync"]
    assert imap.proc is not None
    tag = uuid.uuid4().hex[:4]
    warm_users, users = server.users[:WARMUP], server.users[WARMUP:WARMUP + accounts]
    try:
        with bench.api() as api:
            api.post("/v1/settings", json={"webhooks": receiver.url, "webhookEvents": ["messageNew"]})
            _add_accounts(api, server, warm_users, f"imap-{tag}-w")
            _wait_connected(api, WARMUP, timeout=120)
            time.sleep(3)
            before = rss_kb(imap.proc.pid)
            started = time.perf_counter()
            _add_accounts(api, server, users, f"imap-{tag}")
            _wait_connected(api, WARMUP + accounts, timeout=240)
            to_connect = time.perf_counter() - started
        time.sleep(5)
        per_account = (rss_kb(imap.proc.pid) - before) / accounts
        bare_per, bare_seconds = _bare_reference(server)
        bench.add(Row("IMAP", f"RSS per watched account ({accounts} accounts, STARTTLS, one replica)",
                      per_account, "KB", f"bare aioimaplib TLS connection in IDLE, uvloop ({BARE} held)",
                      bare_per, higher_is_better=False, target="≤ 40 KB"))
        bench.add(Row("IMAP", f"seconds until {accounts} accounts are connected", to_connect, "s",
                      f"bare serial TLS login+select, {BARE} accounts scaled to {accounts}",
                      bare_seconds * accounts / BARE, higher_is_better=False))
        latencies = []
        for i in range(samples):
            user = users[i % accounts]
            subject = f"lat-{tag}-{i}"
            t0 = time.time()
            server.deliver(user, f"Subject: {subject}\r\nFrom: a@example.org\r\n\r\nbody\r\n".encode())
            hook = wait_for(lambda s=subject: [h for h in receiver.received("messageNew")
                                               if h.json["data"].get("subject") == s], timeout=30, interval=0.02)
            latencies.append((hook[0].at - t0) * 1000)
        reference = asyncio.run(_bare_push_latency(server, server.users[-1], min(samples, 20)))
        for q in (50, 99):
            bench.add(Row("IMAP", f"new mail -> messageNew webhook p{q}", percentile(latencies, q), "ms",
                          "bare IDLE client sees EXISTS", percentile(reference, q), higher_is_better=False,
                          target="p50 < 1 s" if q == 50 else ""))
    finally:
        receiver.stop()
        server.stop()


def _add_accounts(api: httpx.Client, server: Dovecot, users: list[str], prefix: str) -> None:
    def add(item: tuple[int, str]) -> None:
        i, user = item
        api.post("/v1/account", json={
            "account": f"{prefix}-{i}", "email": f"{user}@bench.test",
            "imap": {"host": "127.0.0.1", "port": server.port, "secure": False,
                     "tls": {"rejectUnauthorized": False},  # Dovecot's self-signed test cert
                     "auth": {"user": user, "pass": server.password}},
            "smtp": {"host": "127.0.0.1", "port": 9},
        }).raise_for_status()

    # A few at a time, as an operator's script would: the API is not what is measured.
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(add, enumerate(users)))


def _wait_connected(api: httpx.Client, count: int, timeout: float) -> None:
    def connected() -> bool:
        total: int = api.get("/v1/accounts", params={"state": "connected", "pageSize": 1}).json()["total"]
        return total >= count

    wait_for(connected, timeout=timeout, interval=0.5, message=f"{count} accounts connected")


def _bare_reference(server: Dovecot) -> tuple[float, float]:
    """KB per bare connection and seconds for the serial logins, from a child process."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.scenarios.imap", str(server.imaps_port), server.password,
         *server.users[:BARE]],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return float(result["kb_per_connection"]), float(result["seconds"])


async def _bare_connections(port: int, users: list[str], password: str) -> tuple[int, float, list[aioimaplib.IMAP4]]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    # The first connection pays for the context and imports, like imap-sync's warm-up.
    first = aioimaplib.IMAP4(host="127.0.0.1", port=port, timeout=30, ssl_context=context)
    await first.wait_hello_from_server()
    await first.login(users[0], password)
    await first.select("INBOX")
    clients = [first]
    before = rss_kb(os.getpid())
    started = time.perf_counter()
    for user in users[1:]:
        client = aioimaplib.IMAP4(host="127.0.0.1", port=port, timeout=30, ssl_context=context)
        await client.wait_hello_from_server()
        await client.login(user, password)
        await client.select("INBOX")
        clients.append(client)
    seconds = (time.perf_counter() - started) * len(users) / (len(users) - 1)
    for client in clients:
        await client.idle_start(timeout=600)
    await asyncio.sleep(1)
    used = rss_kb(os.getpid()) - before
    return used, seconds, clients


async def _bare_main(port: int, password: str, users: list[str]) -> None:
    used, seconds, clients = await _bare_connections(port, users, password)
    print(json.dumps({"kb_per_connection": used / (len(users) - 1), "seconds": seconds}))
    for client in clients:
        client.idle_done()
        client.protocol.transport.close()


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


if __name__ == "__main__":
    # The memory reference's own process: python -m bench.scenarios.imap PORT PASSWORD USER...
    import uvloop

    uvloop.run(_bare_main(int(sys.argv[1]), sys.argv[2], sys.argv[3:]))
