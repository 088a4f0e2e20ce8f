"""Steady probe traffic through the load balancer while something changes (a rollout, a migration).

"No request failed while it ran" needs requests: this sends a bounded number, at a fixed rate, to
the configured service URL(s), round-robin, from a background dispatcher. Each request runs on its
own worker, so a request that hangs (a user route waiting behind a migration's lock) does not stop
the ones after it from being sent; each has ``timeout_s``, and one that got no answer in time, or
none at all, is a failure like a 5xx.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import httpx

MAX_IN_FLIGHT = 64
"""At most this many requests wait for an answer at once (``rps × timeout_s`` when less): when
every one of them hangs, the next is sent as soon as one times out."""


@dataclass
class TrafficStats:
    url: str
    sent: int = 0
    failed: int = 0
    """Answered 5xx, or no answer: refused, reset, or timed out."""
    duration_s: float = 0.0
    failures: list[str] = field(default_factory=list)
    """The first few failures, as ``+1.2 s GET URL: status 502`` or the error (when it was sent)."""
    timed_out: int = 0
    """Of the failed: no answer within the timeout (also counted in ``failed``)."""
    statuses: dict[str, int] = field(default_factory=dict)
    """How the requests were answered: ``{"200": 40, "500": 3, "timeout": 5}``."""
    timeout_s: float = 0.0
    before_serving: int = 0
    """With ``until_serving``: requests that failed before the service first answered (it was
    down by design, in maintenance mode), not counted in ``failed``."""
    serving_after_s: float | None = None
    """With ``until_serving``: when the first answer came, from the start."""


class TrafficProbe:
    """``with TrafficProbe(urls, rps=10, timeout_s=5, max_duration_s=900) as probe: ...``; then
    ``probe.stats``. On exit it stops sending and waits for the requests in flight up to their
    timeout; one still unanswered then counts as timed out."""

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        rps: float,
        timeout_s: float,
        max_duration_s: float,
        until_serving: bool = False,
    ) -> None:
        """``until_serving``: the service is down by design as the probe starts (maintenance mode,
        scaled to 0, which this change ends): failures answered before its first answer are
        counted apart (``before_serving``); from then on, each is a failure."""
        self._until_serving = until_serving
        self._urls = [urls] if isinstance(urls, str) else list(urls)
        if not self._urls:
            raise ValueError("probe traffic needs at least one URL")
        self.stats = TrafficStats(url=", ".join(self._urls), timeout_s=timeout_s)
        self._interval = 1.0 / rps
        self._timeout_s = timeout_s
        self._max_requests = int(rps * max_duration_s) + 1
        self._max_in_flight = max(2, min(MAX_IN_FLIGHT, math.ceil(rps * timeout_s) + 1))
        self._slots = threading.Semaphore(self._max_in_flight)
        self._lock = threading.Lock()
        self._closed = False
        self._futures: list[Future[None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="releasegate-traffic", daemon=True)
        self._started = 0.0
        self._client = httpx.Client(
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=self._max_in_flight, max_keepalive_connections=8),
        )
        self._pool = ThreadPoolExecutor(self._max_in_flight, thread_name_prefix="releasegate-traffic")

    def __enter__(self) -> TrafficProbe:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self._timeout_s + 1)
        with self._lock:
            pending = [f for f in self._futures if not f.done()]
        wait(pending, timeout=self._timeout_s + 1)
        with self._lock:
            self._closed = True  # answers arriving after this are not counted twice
            for future in self._futures:
                if not future.done():
                    self._count(
                        "timeout", f"no answer within {self._timeout_s:g} s (still waiting at the end)"
                    )
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()
        self.stats.duration_s = time.monotonic() - self._started

    def _run(self) -> None:
        for n in range(self._max_requests):
            due = self._started + n * self._interval
            if self._stop.wait(max(0.0, due - time.monotonic())):
                return
            while not self._slots.acquire(timeout=0.05):
                if self._stop.is_set():
                    return
            url = self._urls[n % len(self._urls)]
            with self._lock:
                self.stats.sent += 1
                self._futures.append(self._pool.submit(self._one, url))

    def _one(self, url: str) -> None:
        at = f"+{time.monotonic() - self._started:.1f} s"  # when it was sent, from the start
        try:
            try:
                status = self._client.get(url).status_code
            except httpx.TimeoutException:
                self._answered("timeout", f"{at} GET {url}: no answer within {self._timeout_s:g} s")
                return
            except httpx.HTTPError as exc:
                self._answered("error", f"{at} GET {url}: {type(exc).__name__}: {exc}".splitlines()[0])
                return
            self._answered(str(status), f"{at} GET {url}: status {status}" if status >= 500 else "")
        finally:
            self._slots.release()

    def _answered(self, kind: str, failure: str) -> None:
        with self._lock:
            if not self._closed:
                self._count(kind, failure)

    def _count(self, kind: str, failure: str) -> None:
        stats = self.stats
        if self._until_serving and stats.serving_after_s is None:
            if failure:
                stats.before_serving += 1
                return
            stats.serving_after_s = round(time.monotonic() - self._started, 2)
        stats.statuses[kind] = stats.statuses.get(kind, 0) + 1
        if kind == "timeout":
            stats.timed_out += 1
        if failure:
            stats.failed += 1
            if len(stats.failures) < 5:
                stats.failures.append(failure)
