"""A real HTTP endpoint that records every webhook it receives.

Answers can be scripted: ``fail_next(n, status)`` makes the next n requests
get ``status``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass
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


class WebhookReceiver:
    def __init__(self, port: int) -> None:
        self.port = port
        self.hooks: list[Hook] = []
        self.lock = threading.Lock()
        self._scripted: list[int] = []
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
                    status = receiver._scripted.pop(0) if receiver._scripted else 200
                    receiver.hooks.append(
                        Hook({k.lower(): v for k, v in self.headers.items()}, body, status, time.time())
                    )
                answer = b'{"ok":true}' if status < 300 else b'{"error":"scripted"}'
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

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
        with self.lock:
            self._scripted.extend([status] * count)

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
