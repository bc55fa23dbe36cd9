"""What every scenario needs: the real services (as in the tests), an account, headers."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.servers import ThrowawayPostgres
from tests.support.stack import BIN, Stack, _rabbitmqctl

BENCH_ENV = {
    "MAILGATE_LOG_LEVEL": "WARNING",
    # Production intervals for checking folders other than INBOX (the tests use 2 s).
    "MAILGATE_IMAP_FOLDER_POLL": "60",
    "MAILGATE_IMAP_FOLDER_POLL_NOTIFIED": "600",
    # Two API processes for two cores; the reference app runs as many.
    "MAILGATE_API_WORKERS": os.environ.get("MAILGATE_API_WORKERS", "2"),
    "MAILGATE_DELIVERY_RETRY_BASE": "15",
    "MAILGATE_SENDER_CLAIM_TIMEOUT": "120",
    "MAILGATE_SMTP_TIMEOUT": "30",
}


@dataclass
class Row:
    scenario: str
    figure: str
    value: float
    unit: str
    reference: str
    reference_value: float
    higher_is_better: bool = True
    target: str = ""

    @property
    def ratio(self) -> float:
        if not self.reference_value:
            return float("nan")
        return self.value / self.reference_value


@dataclass
class Bench:
    stack: Stack
    token: str | None
    rows: list[Row] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        return headers

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.stack.api_url, headers=self.headers, timeout=30)

    def create_account(self, smtp_port: int, auth: bool = False) -> str:
        account = f"bench-{uuid.uuid4().hex[:8]}"
        smtp: dict[str, Any] = {"host": "127.0.0.1", "port": smtp_port, "secure": False}
        if auth:
            smtp["auth"] = {"user": account, "pass": "smtp-password"}
        with self.api() as api:
            api.post("/v1/account", json={"account": account, "email": f"{account}@bench.test",
                                          "imap": False, "smtp": smtp}).raise_for_status()
        return account

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(f"  {row.scenario:14} {row.figure:42} {row.value:10.1f} {row.unit:6} "
              f"vs {row.reference}: {row.reference_value:.1f} (ratio {row.ratio:.2f})", flush=True)


class BenchStack(Stack):
    """The services on their own durable PostgreSQL (fsync on, like production), so
    the figures do not depend on whatever else uses the machine's shared server."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.pg = ThrowawayPostgres(durable=True)
        self.database_url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.pg.port}/{self.db_name}"
        self.env["MAILGATE_DATABASE_URL"] = self.database_url

    def create(self) -> None:
        self.pg.start()
        subprocess.run(["psql", self.pg.admin_url, "-qc", f'CREATE DATABASE "{self.db_name}"'], check=True,
                       capture_output=True)
        _rabbitmqctl("add_vhost", self.vhost)
        _rabbitmqctl("set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*")
        subprocess.run([str(BIN / "mailgate"), "migrate"], env=self.env, check=True, capture_output=True)

    def destroy(self) -> None:
        for service in self.services.values():
            service.kill(signal.SIGTERM)
        _rabbitmqctl("delete_vhost", self.vhost)
        self.pg.destroy()


def new_stack(extra_env: dict[str, str] | None = None) -> Stack:
    stack = BenchStack(Path(tempfile.mkdtemp(prefix="mailgate-bench-")))
    stack.env.update(BENCH_ENV)
    stack.env.update(extra_env or {})
    stack.create()
    return stack


def machine_facts() -> dict[str, str]:
    def sh(cmd: str) -> str:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()

    return {
        "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip(),
        "cores": sh("nproc"),
        "memory": sh("free -h | awk '/Mem:/{print $2}'"),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "postgresql": sh("psql --version"),
        "rabbitmq": sh("rabbitmqctl version 2>/dev/null | tail -1"),
        "date": sh("date -u +%Y-%m-%dT%H:%M:%SZ"),
    }


def dump_json(path: Path, rows: list[Row]) -> None:
    path.write_text(json.dumps([r.__dict__ for r in rows], indent=2))
