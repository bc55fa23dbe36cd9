"""Throwaway PostgreSQL and RabbitMQ servers that a test may stop, kill and restart.

They run on their own ports and data directories, so breaking them never
touches the machine's shared servers.  Start-up: PostgreSQL ~1.5 s, RabbitMQ ~5 s.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import time
from pathlib import Path

from tests.support.stack import free_port, wait_for


def _as_postgres(command: str) -> None:
    subprocess.run(["su", "postgres", "-s", "/bin/sh", "-c", command], check=True, capture_output=True)


class ThrowawayPostgres:
    """``durable=False`` (tests) trades crash safety for speed; benchmarks keep fsync on."""

    def __init__(self, durable: bool = False, max_connections: int = 300) -> None:
        self.durable = durable
        self.max_connections = max_connections
        self.port = free_port()
        # Short (socket paths are limited) and unique per server, not only per process.
        self.base = Path(f"/tmp/mgpg{os.getpid()}_{self.port}")
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not bins:
            raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
        self.bin = Path(bins[-1])

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        if not (self.base / "data").exists():
            self.base.mkdir(exist_ok=True)
            shutil.chown(self.base, "postgres", "postgres")
            _as_postgres(f"{self.bin}/initdb -D {self.base}/data -U postgres -A trust -E UTF8 "
                         "--no-locale --no-sync")
        options = f"-h 127.0.0.1 -p {self.port} -k {self.base} -c max_connections={self.max_connections}"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        _as_postgres(f"{self.bin}/pg_ctl -D {self.base}/data -l {self.base}/pg.log -w -o '{options}' start")

    def stop(self) -> None:
        _as_postgres(f"{self.bin}/pg_ctl -D {self.base}/data -m fast -w stop")

    def destroy(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.base, ignore_errors=True)


class ThrowawayRabbitMQ:
    def __init__(self) -> None:
        self.base = Path(f"/tmp/mgrmq{os.getpid()}")
        self.port = free_port()
        self.env = {
            **os.environ,
            "RABBITMQ_NODENAME": f"mgchaos{os.getpid()}@localhost",
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_PID_FILE": str(self.base / "rabbit.pid"),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def ctl(self, *args: str) -> str:
        return subprocess.run(["/usr/lib/rabbitmq/bin/rabbitmqctl", *args], env=self.env, check=True,
                              capture_output=True, text=True).stdout

    def alarms(self) -> str:
        """The resource alarms in effect, as ``rabbitmq-diagnostics alarms`` reports them."""
        return subprocess.run(["/usr/lib/rabbitmq/bin/rabbitmq-diagnostics", "-q", "alarms"], env=self.env,
                              check=True, capture_output=True, text=True).stdout

    def start(self) -> None:
        self.base.mkdir(exist_ok=True)
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\nloopback_users = none\nlog.console = false\n"
        )
        (self.base / "enabled_plugins").write_text("[].\n")
        subprocess.run(["/usr/lib/rabbitmq/bin/rabbitmq-server", "-detached"], env=self.env, check=True,
                       capture_output=True)
        self.ctl("wait", "--timeout", "60", str(self.base / "rabbit.pid"))

    def stop(self) -> None:
        pid_file = self.base / "rabbit.pid"
        if not pid_file.exists():
            return
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 15)

        def gone() -> bool:
            try:
                os.kill(pid, 0)
                return False
            except ProcessLookupError:
                return True

        wait_for(gone, timeout=30, message="RabbitMQ to stop")
        time.sleep(0.5)

    def queue_depth(self, name: str) -> int:
        for line in self.ctl("-q", "list_queues", "name", "messages").splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == name:
                return int(parts[1])
        return 0

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
