"""Steady probe traffic through the load balancer while a rollout runs.

"No request failed during the rollout" needs requests: this sends a bounded number, at a fixed
rate, only to loopback or the configured service URL, from a background thread.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx


@dataclass
class TrafficStats:
    url: str
    sent: int = 0
    failed: int = 0
    duration_s: float = 0.0
    failures: list[str] = field(default_factory=list)
    """The first few failures, as ``status 502`` or the error."""


class TrafficProbe:
    def __init__(self, url: str, *, rps: float, timeout_s: float, max_duration_s: float) -> None:
        self.stats = TrafficStats(url=url)
        self._interval = 1.0 / rps
        self._timeout_s = timeout_s
        self._max_requests = int(rps * max_duration_s) + 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="releasegate-traffic", daemon=True)
        self._started = 0.0

    def __enter__(self) -> TrafficProbe:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self._timeout_s + 1)
        self.stats.duration_s = time.monotonic() - self._started

    def _run(self) -> None:
        with httpx.Client(timeout=self._timeout_s) as client:
            while not self._stop.is_set() and self.stats.sent < self._max_requests:
                tick = time.monotonic()
                self._one(client)
                self._stop.wait(max(0.0, self._interval - (time.monotonic() - tick)))

    def _one(self, client: httpx.Client) -> None:
        self.stats.sent += 1
        try:
            response = client.get(self.stats.url)
        except httpx.HTTPError as exc:
            self._failed(f"{type(exc).__name__}: {exc}".splitlines()[0])
            return
        if response.status_code >= 500:
            self._failed(f"status {response.status_code}")

    def _failed(self, what: str) -> None:
        self.stats.failed += 1
        if len(self.stats.failures) < 5:
            self.stats.failures.append(what)
