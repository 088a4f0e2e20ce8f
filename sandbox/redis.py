"""Redis for the sandbox: one server on 127.0.0.1, no persistence, files in ``<sandbox>/redis``."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import redis as redis_client

from sandbox.common import ComponentStatus, SandboxError, pid_from_file, run, stop_pid, tail_file, wait_for


class Redis:
    name = "redis"

    def __init__(self, sandbox_dir: Path, url: str) -> None:
        self.port = urlsplit(url).port or 6379
        self.dir = sandbox_dir / "redis"
        self.pid_file = self.dir / "redis.pid"
        self.log = self.dir / "redis.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def pid(self) -> int | None:
        return pid_from_file(self.pid_file, "redis-server")

    def answers(self) -> bool:
        try:
            with redis_client.Redis(
                host="127.0.0.1", port=self.port, socket_timeout=1, socket_connect_timeout=1
            ) as client:
                return bool(client.ping())
        except (redis_client.RedisError, OSError):
            return False

    def start(self) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        run(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.dir),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
                "--pidfile",
                str(self.pid_file),
                "--logfile",
                str(self.log),
            ],
            "Redis",
        )
        if not wait_for(self.answers, 10.0):
            raise SandboxError(f"Redis did not answer PING on {self.address}: {tail_file(self.log)}")
        return f"started on {self.address} (pid {self.pid()})"

    def stop(self) -> str:
        pid = self.pid()
        if pid is None:
            return "not running"
        subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "shutdown", "nosave"],
            capture_output=True,
            timeout=10,
            check=False,
        )
        stop_pid(pid, "redis-server", signal.SIGTERM, 5.0)  # a no-op once it has exited
        return "stopped"

    def status(self) -> ComponentStatus:
        pid = self.pid()
        if pid is None:
            return ComponentStatus(self.name, False, self.address, None, "not running")
        if not self.answers():
            return ComponentStatus(self.name, False, self.address, pid, "running but not answering PING")
        return ComponentStatus(self.name, True, self.address, pid)
