"""Synthetic traffic for the canary and observe phases, like Flagger's load tester, but bounded.

Metrics need requests: a canary at 5 % of no traffic has no error ratio. This sends GETs to a
service on this machine only (loopback: 127.0.0.0/8, localhost, ::1; anything else is refused),
at most ``rps`` per second from at most ``concurrency`` threads, and stops by itself after
``duration_s``: it can never run away. Paths are requested round-robin.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

import httpx

from releasegate.config import LoadSettings
from releasegate.errors import ActionError

MAX_RPS = 500.0
MAX_CONCURRENCY = 32
MAX_DURATION_S = 3600.0


@dataclass(frozen=True)
class LoadStats:
    """What was sent and how it was answered."""

    sent: int = 0
    ok: int = 0
    """Answered below 400."""
    client_errors: int = 0
    """Answered 4xx."""
    server_errors: int = 0
    """Answered 5xx."""
    errors: int = 0
    """No answer: refused, reset, timed out."""
    timed_out: int = 0
    """Of the errors: no answer within the timeout."""
    duration_s: float = 0.0
    first_failures: tuple[str, ...] = field(default_factory=tuple)

    @property
    def answered(self) -> int:
        return self.ok + self.client_errors + self.server_errors

    @property
    def failed(self) -> int:
        """Answered 5xx or not answered at all: a request that timed out failed its user too."""
        return self.server_errors + self.errors

    @property
    def server_error_ratio(self) -> float | None:
        """5xx over answered requests; None before any answer."""
        return self.server_errors / self.answered if self.answered else None

    @property
    def failure_ratio(self) -> float | None:
        """Failed (5xx or no answer) over sent; None before anything was sent."""
        return self.failed / self.sent if self.sent else None

    def summary(self) -> str:
        """``300 requests, 4 failed (1 answered 5xx, 3 no answer: 2 timed out)``."""
        return (
            f"{self.sent} requests, {self.failed} failed ({self.server_errors} answered 5xx, "
            f"{self.errors} no answer: {self.timed_out} timed out)"
        )

    @property
    def rps(self) -> float:
        return self.sent / self.duration_s if self.duration_s else 0.0


def require_loopback(url: str) -> str:
    """The URL when its host is on this machine; ActionError naming the host otherwise."""
    host = urlsplit(url).hostname or ""
    if not _is_loopback(host):
        raise ActionError(
            f"load generator: refusing to send traffic to {host or url!r}: "
            "only loopback hosts (127.0.0.0/8, localhost, ::1) are allowed"
        )
    return url


class LoadGenerator:
    """``with LoadGenerator(url, paths, rps=50, concurrency=4, duration_s=30) as load: ...``

    Or ``start()`` ... ``stop()``; ``stats`` can be read at any time.
    """

    def __init__(
        self,
        base_url: str,
        paths: Sequence[str],
        *,
        rps: float,
        concurrency: int = 4,
        duration_s: float,
        timeout_s: float = 5.0,
    ) -> None:
        self.base_url = require_loopback(base_url).rstrip("/")
        if not paths or any(not p.startswith("/") for p in paths):
            raise ActionError("load generator: give at least one path, each starting with /")
        if not 0 < rps <= MAX_RPS:
            raise ActionError(f"load generator: rps must be above 0 and at most {MAX_RPS:g} (got {rps:g})")
        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise ActionError(
                f"load generator: concurrency must be 1 to {MAX_CONCURRENCY} (got {concurrency})"
            )
        if not 0 < duration_s <= MAX_DURATION_S:
            raise ActionError(
                f"load generator: duration_s must be above 0 and at most {MAX_DURATION_S:g} (got {duration_s:g})"
            )
        self.paths = list(paths)
        self.rps = rps
        self.concurrency = concurrency
        self.duration_s = duration_s
        self.timeout_s = timeout_s
        self.max_requests = math.floor(rps * duration_s)
        """The most it will ever send: ``rps × duration_s``."""
        self._lock = threading.Lock()
        self._stats = LoadStats()
        self._next = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = 0.0
        self._stopped_at: float | None = None

    @classmethod
    def from_settings(cls, base_url: str, settings: LoadSettings) -> LoadGenerator:
        return cls(
            base_url,
            settings.paths,
            rps=settings.rps,
            concurrency=settings.concurrency,
            duration_s=settings.duration_s,
            timeout_s=settings.timeout_s,
        )

    def __enter__(self) -> LoadGenerator:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    @property
    def stats(self) -> LoadStats:
        with self._lock:
            end = self._stopped_at if self._stopped_at is not None else time.monotonic()
            return replace(self._stats, duration_s=end - self._started if self._started else 0.0)

    def start(self) -> LoadGenerator:
        if self._threads:
            raise ActionError("load generator: already started (one generator, one run)")
        self._started = time.monotonic()
        self._threads = [
            threading.Thread(target=self._worker, name=f"releasegate-load-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout_s: float | None = None) -> LoadStats:
        """Stop sending, wait for requests in flight, and return the final counts."""
        self._stop.set()
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else self.timeout_s + 1)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            if self._stopped_at is None and self._started:
                self._stopped_at = time.monotonic()
        return self.stats

    def wait(self) -> LoadStats:
        """Block until ``duration_s`` is over (or it was stopped), then stop."""
        for thread in self._threads:
            thread.join(self.duration_s + self.timeout_s + 1)
        return self.stop()

    def _slot(self) -> tuple[int, float] | None:
        """The next request's number and when to send it; None when the run is over."""
        with self._lock:
            n = self._next
            if n >= self.max_requests:
                return None
            self._next += 1
        return n, self._started + n / self.rps

    def _worker(self) -> None:
        # A new connection for each request, as requests from many users arrive: a load balancer
        # that balances connections (kube-proxy, a Service's ClusterIP) would otherwise send a
        # worker's every request to the pod its one connection reached, and a canary started
        # after the load would get none of it.
        fresh = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(
            base_url=self.base_url, timeout=self.timeout_s, trust_env=False, limits=fresh
        ) as client:
            while not self._stop.is_set():
                slot = self._slot()
                if slot is None:
                    return
                n, when = slot
                if self._stop.wait(max(0.0, when - time.monotonic())):
                    return
                if time.monotonic() - self._started > self.duration_s:
                    return
                self._send(client, self.paths[n % len(self.paths)])

    def _send(self, client: httpx.Client, path: str) -> None:
        failure = ""
        timed_out = False
        try:
            status = client.get(path).status_code
        except httpx.HTTPError as exc:
            status = 0
            timed_out = isinstance(exc, httpx.TimeoutException)
            failure = f"GET {path}: {type(exc).__name__}"
        with self._lock:
            s = self._stats
            if status == 0:
                s = replace(s, errors=s.errors + 1, timed_out=s.timed_out + timed_out)
            elif status >= 500:
                s = replace(s, server_errors=s.server_errors + 1)
                failure = f"GET {path}: {status}"
            elif status >= 400:
                s = replace(s, client_errors=s.client_errors + 1)
            else:
                s = replace(s, ok=s.ok + 1)
            if failure and len(s.first_failures) < 5:
                s = replace(s, first_failures=(*s.first_failures, failure))
            self._stats = replace(s, sent=s.sent + 1)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
