"""Inbound: messages/s the MX door accepts (committed, with SPF/DKIM/DMARC checked against a
local DNS server) from 20 Postfix smtp-source sessions vs the same load into a bare aiosmtpd
sink, and received → webhook latency (250 answered → the route's endpoint has the POST) vs a
bare HTTP POST to the same receiver."""

from __future__ import annotations

import smtplib
import statistics
import subprocess
import sys
import threading
import time
import uuid
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import msgspec

from bench.context import Bench, Row
from bench.peers import smtp_source
from tests.support.dns_server import DnsServer
from tests.support.stack import free_port, wait_for

LATENCY_MESSAGES = 200
LATENCY_INTERVAL = 0.05  # seconds between messages: latency at a modest rate, not under saturation


class _Receiver:
    """Records when each inboundMessage (by inbound message id) arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                now = time.perf_counter()
                try:
                    message_id = msgspec.json.decode(body).get("data", {}).get("id")
                except msgspec.DecodeError:
                    message_id = None
                if message_id:
                    with receiver.lock:
                        receiver.arrived.setdefault(message_id, now)
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.request_queue_size = 128
        self.url = f"http://127.0.0.1:{self.port}/inbound"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _Receiver:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _stored(bench: Bench) -> int:
    rows = bench.stack.rows("SELECT count(*) AS n FROM inbound_messages")
    return int(rows[0]["n"])


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _latencies(mx_port: int, receiver: _Receiver) -> list[float]:
    sent: dict[str, float] = {}
    with smtplib.SMTP("127.0.0.1", mx_port, timeout=30) as client:
        client.ehlo("bench.example.net")
        for n in range(LATENCY_MESSAGES):
            msg = EmailMessage()
            msg["From"] = "bench@example.net"
            msg["To"] = f"latency+{n}@latency.example.test"
            msg["Subject"] = f"latency {n}"
            msg["Message-ID"] = f"<{uuid.uuid4()}@example.net>"
            msg.set_content("Latency probe.\n")
            client.mail("bench@example.net")
            client.rcpt(f"latency+{n}@latency.example.test")
            code, reply = client.data(msg.as_bytes())
            accepted_at = time.perf_counter()
            assert code == 250, reply
            sent[reply.decode().rsplit(" ", 1)[1]] = accepted_at
            time.sleep(LATENCY_INTERVAL)
    wait_for(lambda: all(m in receiver.arrived for m in sent), timeout=60, message="every latency probe's webhook")
    return [(receiver.arrived[m] - at) * 1000 for m, at in sent.items()]


def _bare_post_latencies(receiver: _Receiver) -> list[float]:
    body = msgspec.json.encode({"event": "inboundMessage", "data": {"id": "reference"}})
    out = []
    with httpx.Client() as client:
        for _ in range(LATENCY_MESSAGES):
            started = time.perf_counter()
            client.post(receiver.url, content=body, headers={"content-type": "application/json"})
            out.append((time.perf_counter() - started) * 1000)
    return out


def run(bench: Bench, messages: int = 3000) -> None:
    dns = DnsServer()
    dns.start()
    mx_port = free_port()
    # Limits off: 20 sessions from one address are the load, not an abuser.
    door = bench.stack.add_smtp_ingress("mx-bench", {
        "MAILGATE_MX_HOST": "127.0.0.1", "MAILGATE_MX_PORT": str(mx_port), "MAILGATE_MX_HOSTNAME": "mx.bench.test",
        "MAILGATE_MX_RATE_PER_IP": "0", "MAILGATE_MX_RATE_PER_SENDER": "0", "MAILGATE_DNS_SERVERS": dns.address,
    })
    door.start()
    bare_port = free_port()
    bare = subprocess.Popen([sys.executable, "-m", "bench.bare_sink", str(bare_port)])
    created: list[tuple[str, str]] = []
    try:
        with _Receiver() as receiver, bench.api() as api:
            endpoint = api.post("/v1/webhooks", json={"url": receiver.url, "events": ["inboundMessage"]})
            endpoint.raise_for_status()
            created.append(("/v1/webhooks", endpoint.json()["id"]))
            # smtp-source writes to sink@example.test: held, so intake is measured without webhooks.
            for body in ({"name": "bench intake", "match": {"domain": "example.test"}, "actions": [{"type": "hold"}]},
                         {"name": "bench latency", "match": {"domain": "latency.example.test"},
                          "actions": [{"type": "webhook", "endpoints": [endpoint.json()["id"]]}]}):
                route = api.post("/v1/inbound/routes", json=body)
                route.raise_for_status()
                created.append(("/v1/inbound/routes", route.json()["id"]))
            wait_for(lambda: _port_open(bare_port), message="bare aiosmtpd sink")
            reference = smtp_source(bare_port, messages, sessions=20, reuse=True)
            before = _stored(bench)
            started = time.perf_counter()
            smtp_source(mx_port, messages, sessions=20, reuse=True)
            elapsed = time.perf_counter() - started
            ours = (_stored(bench) - before) / elapsed
            bench.commands.append(f"smtp-source -d -s 20 -m {messages} -l 1024 -f bench@example.test "
                                  "-t sink@example.test 127.0.0.1:MX_PORT (route: hold)")
            bench.add(Row("Inbound", "MX door: committed msg/s, 20 sessions", ours, "msg/s",
                          "bare aiosmtpd sink (accept and drop)", reference))
            latencies = _latencies(mx_port, receiver)
            bare_latencies = _bare_post_latencies(receiver)
            bench.commands.append(f"smtplib, {LATENCY_MESSAGES} messages {LATENCY_INTERVAL * 1000:.0f} ms apart "
                                  "to a webhook route; 250 → POST received")
            for label, q in (("p50", 0.5), ("p99", 0.99)):
                bench.add(Row("Inbound", f"received → webhook latency {label}", _percentile(latencies, q), "ms",
                              "a bare HTTP POST to the same receiver", _percentile(bare_latencies, q),
                              higher_is_better=False))
            print(f"  inbound latency mean {statistics.mean(latencies):.1f} ms", flush=True)
    finally:
        bare.terminate()
        bare.wait(10)
        with bench.api() as api:
            for path, item in created:
                api.delete(f"{path}/{item}")
        bench.stack.services.pop("mx-bench").kill()
        dns.stop()


__all__ = ["run"]
