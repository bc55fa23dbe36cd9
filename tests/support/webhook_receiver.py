"""A real HTTP endpoint that records every webhook it receives.

Answers can be scripted: ``fail_next(n, status)`` makes the next n requests
get ``status``; ``answer_next(n, reply)`` / ``answer_always(reply)`` give any
status, headers and body bytes (gzip, binary, NUL...); ``on_request`` runs
before each answer is sent (to break something at that exact moment).
"""

from __future__ import annotations

import gzip
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _QuietServer(ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: a burst of new connections
    # overflowed it and each dropped SYN cost the sender a 1 s retransmission.
    request_queue_size = 128

    def handle_error(self, request: object, client_address: object) -> None:
        # A client closing a kept-alive connection is normal, not worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@dataclass
class Hook:
    headers: dict[str, str]
    body: bytes
    status: int
    at: float

    @property
    def json(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.body)
        return result


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b'{"ok":true}'
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})


def gzip_reply(status: int, text: str) -> Reply:
    """An answer compressed whatever the request's Accept-Encoding said (as a
    misconfigured proxy does); every gzip stream has NUL bytes."""
    return Reply(status, gzip.compress(text.encode()),
                 {"content-type": "application/json", "content-encoding": "gzip"})


class WebhookReceiver:
    def __init__(self, port: int) -> None:
        self.port = port
        self.hooks: list[Hook] = []
        self.lock = threading.Lock()
        self._scripted: list[Reply] = []
        self._default = Reply()
        self.on_request: Callable[[], None] | None = None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            # Headers and body are two writes: with Nagle on, the body would wait
            # for the client's delayed ACK (40 ms) on every request.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                if len(body) < length:
                    return  # the sender died mid-request: nothing was delivered
                with receiver.lock:
                    reply = receiver._scripted.pop(0) if receiver._scripted else receiver._default
                    receiver.hooks.append(
                        Hook({k.lower(): v for k, v in self.headers.items()}, body, reply.status, time.time())
                    )
                if receiver.on_request is not None:
                    receiver.on_request()
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, *args: object) -> None:
                pass

        self.url = f"http://127.0.0.1:{port}/hooks"
        self.server = _QuietServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fail_next(self, count: int, status: int = 500) -> None:
        self.answer_next(count, Reply(status, b'{"error":"scripted"}'))

    def answer_next(self, count: int, reply: Reply) -> None:
        with self.lock:
            self._scripted.extend([reply] * count)

    def answer_always(self, reply: Reply) -> None:
        """The answer to every request not scripted by ``answer_next``/``fail_next``."""
        with self.lock:
            self._default = reply

    def received(self, event: str | None = None, **data: Any) -> list[Hook]:
        """Successful (2xx-answered) hooks, filtered by event name and data fields."""
        with self.lock:
            hooks = list(self.hooks)
        out = []
        for hook in hooks:
            if hook.status >= 300:
                continue
            body = hook.json
            if event and body.get("event") != event:
                continue
            if any(body.get("data", {}).get(k) != v for k, v in data.items()):
                continue
            out.append(hook)
        return out

    def all_attempts(self, **data: Any) -> list[Hook]:
        with self.lock:
            hooks = list(self.hooks)
        return [h for h in hooks if all(h.json.get("data", {}).get(k) == v for k, v in data.items())]
