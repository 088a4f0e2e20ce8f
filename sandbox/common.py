"""What the sandbox's components share: their status line, errors, and process helpers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from releasegate.errors import ReleasegateError

SETTINGS_TABLE = "demo_settings"
"""The sandbox's settings for the demo service, in its database (name, value): ``up
--background-error-rate`` writes ``background_error_rate``, each instance reads it as it starts."""


class SandboxError(ReleasegateError):
    """A sandbox component did not start or stop; the message says which and why."""


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    up: bool
    address: str
    pid: int | None = None
    detail: str = ""

    def line(self) -> str:
        pid = f"pid {self.pid}" if self.pid else "-"
        return f"{self.name:<11} {'up' if self.up else 'down':<5} {self.address:<22} {pid:<10} {self.detail}".rstrip()


def run(argv: list[str], what: str, timeout_s: float = 60.0) -> str:
    """Run a command to completion; a failure raises SandboxError with its output's last lines."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except FileNotFoundError:
        raise SandboxError(f"{what}: {argv[0]} not found (run `make setup` to install it)") from None
    except subprocess.TimeoutExpired:
        raise SandboxError(f"{what}: `{' '.join(argv)}` did not finish within {timeout_s:g} s") from None
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise SandboxError(
            f"{what}: `{Path(argv[0]).name}` exited with {proc.returncode}: {last_lines(output)}"
        )
    return output


def pid_from_file(path: Path, command: str) -> int | None:
    """The pid in ``path`` if that process is alive and is ``command`` (a reused pid is not)."""
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if cmdline_has(pid, command) else None


def cmdline_has(pid: int, needle: str) -> bool:
    try:
        return needle.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def accepts(port: int, timeout_s: float = 0.5) -> bool:
    """Whether something listens on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_for(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return condition()


def stop_pid(pid: int, command: str, sig: signal.Signals, timeout_s: float) -> None:
    """Send ``sig``, wait for the exit, SIGKILL after ``timeout_s``; never signals a reused pid."""
    if not cmdline_has(pid, command):
        return
    os.kill(pid, sig)
    if not wait_for(lambda: not cmdline_has(pid, command), timeout_s):
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not cmdline_has(pid, command), 5.0)


def last_lines(text: str, count: int = 3) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-count:]) or "(no output)"


def tail_file(path: Path, count: int = 3) -> str:
    try:
        return last_lines(path.read_text(errors="replace"), count)
    except OSError:
        return f"(no log at {path})"


def spawn(argv: list[str], log: Path, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a long-running component in its own session (it outlives its starter), its output
    appended to ``log``, its pid written beside the log as ``<name>.pid``."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=cwd,
        )
    log.with_suffix(".pid").write_text(f"{proc.pid}\n")
    return proc


def await_ready(
    what: str, proc: subprocess.Popen[bytes], ready: Callable[[], bool], timeout_s: float, log: Path
) -> None:
    """Until ``ready()`` says so; a process that exits first, or a wait past ``timeout_s``, raises
    SandboxError with the last lines of its log. Each answer of ``ready`` is taken once: a check
    that passed is not asked again (on a busy machine a second look may time out)."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        code = proc.poll()
        if code is not None:
            raise SandboxError(
                f"kubernetes: {what} exited with {code} while starting: {tail_file(log)} (log: {log})"
            )
        if time.monotonic() > deadline:
            raise SandboxError(
                f"kubernetes: {what} did not become ready within {timeout_s:g} s: {tail_file(log)} (log: {log})"
            )
        time.sleep(0.1)
