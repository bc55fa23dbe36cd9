"""The services under test, run as real processes against real servers.

One ``Stack`` per test session: its own PostgreSQL database and RabbitMQ
vhost (so concurrent runs never share state), migrations applied with the
real ``mailgate migrate`` command, and each service started with its own
console script, exactly as an operator would.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx

BIN = Path(sys.executable).parent
PG_ADMIN = os.environ.get("MAILGATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_BASE = os.environ.get("MAILGATE_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672")

# Fast leases so a killed replica's accounts move within seconds in tests.
IMAP_SYNC_ENV = {"MAILGATE_IMAP_HEARTBEAT": "1", "MAILGATE_IMAP_LEASE_TTL": "4",
                 "MAILGATE_IMAP_SCAN_INTERVAL": "1", "MAILGATE_IMAP_RETRY_BASE": "0.5",
                 "MAILGATE_IMAP_RETRY_MAX": "5"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.1,
             message: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def _psql(sql: str) -> None:
    subprocess.run(["psql", PG_ADMIN, "-q", "-v", "ON_ERROR_STOP=1", "-c", sql], check=True,
                   capture_output=True)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True)


class Service:
    def __init__(self, name: str, command: str, env: dict[str, str], log_dir: Path,
                 health_url: str) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.health_url = health_url
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([str(BIN / self.command)], env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited: {self.log_tail()}")
            try:
                return httpx.get(self.health_url, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout, message=f"{self.name} ready")

    def kill(self, sig: int = signal.SIGKILL) -> int | None:
        if self.proc is None:
            return None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=40)
        finally:
            self.proc = None

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class Stack:
    def __init__(self, workdir: Path) -> None:
        self.run_id = f"{os.getpid()}_{int(time.time())}"
        self.db_name = f"mailgate_test_{self.run_id}"
        self.vhost = f"mailgate_test_{self.run_id}"
        self.workdir = workdir
        self.database_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{self.db_name}"
        self.amqp_url = f"{AMQP_BASE}/{self.vhost}"
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        # Every /v1 route needs a token; tests use this preset admin token.
        self.admin_token = "test-admin-" + uuid.uuid4().hex
        self.auth_headers = {"Authorization": f"Bearer {self.admin_token}"}
        self.env = {
            **os.environ,
            "MAILGATE_DATABASE_URL": self.database_url,
            "MAILGATE_AMQP_URL": self.amqp_url,
            "MAILGATE_API_PORT": str(self.api_port),
            "MAILGATE_SECRET": "test-secret-" + self.run_id,
            "MAILGATE_ADMIN_TOKEN": self.admin_token,
            "MAILGATE_DELIVERY_RETRY_BASE": "1",
            "MAILGATE_DELIVERY_RETRY_MAX": "4",
            "MAILGATE_WEBHOOK_RETRY_BASE": "0.5",
            "MAILGATE_WEBHOOK_RETRY_MAX": "2",
            "MAILGATE_SENDER_CLAIM_TIMEOUT": "6",
            "MAILGATE_SENDER_STOP_GRACE": "5",
            "MAILGATE_SMTP_TIMEOUT": "5",
            "MAILGATE_THROTTLE_BASE": "1",
            "MAILGATE_SENDER_POLL_INTERVAL": "0.2",
            "MAILGATE_WEBHOOK_POLL_INTERVAL": "0.2",
            "MAILGATE_WEBHOOKS_ALLOW_PRIVATE": "true",
            "MAILGATE_LOG_LEVEL": "INFO",
            # Folders other than INBOX are checked every 2 s (NOTIFY or not), so tests see
            # their news quickly; the benchmark keeps the production intervals.
            "MAILGATE_IMAP_FOLDER_POLL": "2",
            "MAILGATE_IMAP_FOLDER_POLL_NOTIFIED": "2",
        }
        self.services: dict[str, Service] = {}
        self.smtp_port = 0  # set when smtp-ingress is added
        # The MX door (smtp-ingress's second listener) of the default smtp-ingress.
        self.mx_port = free_port()

    # --- infrastructure ---------------------------------------------------

    def create(self) -> None:
        _psql(f'CREATE DATABASE "{self.db_name}"')
        _rabbitmqctl("add_vhost", self.vhost)
        _rabbitmqctl("set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*")
        subprocess.run([str(BIN / "mailgate"), "migrate"], env=self.env, check=True,
                       capture_output=True)

    def destroy(self) -> None:
        for service in self.services.values():
            service.kill(signal.SIGTERM)
        try:
            _psql(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        finally:
            _rabbitmqctl("delete_vhost", self.vhost)

    def rows(self, query: str, *args: object) -> list[asyncpg.Record]:
        """Run one SQL statement against this stack's database: what a test checks there."""
        async def run() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self.database_url.replace("+asyncpg", ""))
            try:
                return list(await conn.fetch(query, *args))
            finally:
                await conn.close()
        return asyncio.run(run())

    def wait_routed(self, address: str) -> None:
        """Wait until the MX door knows a route just added for ``address`` (a miss rereads
        the routes at most once a second), probing with RSET-ended transactions."""
        def known() -> bool:
            with smtplib.SMTP("127.0.0.1", self.mx_port, timeout=15) as client:
                client.ehlo("probe.example.net")
                assert client.mail(f"probe-{uuid.uuid4().hex[:8]}@sender.example.net")[0] == 250
                code, _ = client.rcpt(address)
                client.rset()
                return code == 250
        wait_for(known, timeout=10, interval=0.2, message=f"a route for {address}")

    # --- services ---------------------------------------------------------

    def add_service(self, name: str, command: str, health_url: str,
                    extra_env: dict[str, str] | None = None) -> Service:
        service = Service(name, command, {**self.env, **(extra_env or {})}, self.workdir, health_url)
        self.services[name] = service
        return service

    def add_worker(self, name: str, command: str, extra_env: dict[str, str] | None = None) -> Service:
        port = free_port()
        env = {"MAILGATE_HEALTH_PORT": str(port), **(extra_env or {})}
        return self.add_service(name, command, f"http://127.0.0.1:{port}/health/ready", env)

    def start_default(self) -> None:
        self.add_service("api", "mailgate-api", f"{self.api_url}/health")
        self.add_worker("sender", "mailgate-sender")
        self.add_worker("webhooks", "mailgate-webhooks")
        self.add_worker("imap-sync", "mailgate-imap-sync", IMAP_SYNC_ENV)
        self.add_smtp_ingress()
        for service in self.services.values():
            service.start(wait=False)
        for service in self.services.values():
            service.wait_ready()

    def add_smtp_ingress(self, name: str = "smtp-ingress",
                         extra_env: dict[str, str] | None = None) -> Service:
        """The SMTP door on a free port, with STARTTLS from a throwaway self-signed cert."""
        cert, key = self.workdir / "smtp-cert.pem", self.workdir / "smtp-key.pem"
        if not cert.exists():
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                            "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                           check=True, capture_output=True)
        port = free_port()
        mx: dict[str, str] = {}
        if name == "smtp-ingress":
            self.smtp_port = port
            # Unlimited rates: a test session sends every message from 127.0.0.1.
            mx = {"MAILGATE_MX_HOST": "127.0.0.1", "MAILGATE_MX_PORT": str(self.mx_port),
                  "MAILGATE_MX_RATE_PER_IP": "0", "MAILGATE_MX_RATE_PER_SENDER": "0",
                  "MAILGATE_MX_HOSTNAME": "mx.mailgate.test"}
        return self.add_worker(name, "mailgate-smtp-ingress", {
            **mx,
            "MAILGATE_SMTP_PORT": str(port),
            "MAILGATE_SMTP_TLS_CERT": str(cert),
            "MAILGATE_SMTP_TLS_KEY": str(key),
            "MAILGATE_SMTP_HOSTNAME": "mailgate.test",
            "MAILGATE_SMTP_AUTH_FAILURE_DELAY": "0.2",
            **(extra_env or {}),
        })

    def keep_logs(self, target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        for service in self.services.values():
            if service.log_path.exists():
                shutil.copy(service.log_path, target / service.log_path.name)
