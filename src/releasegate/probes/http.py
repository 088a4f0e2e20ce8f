"""HTTP questions to a service: its health endpoints, through the load balancer or directly.

A refused connection or a timeout is a ProbeError naming the URL, never an empty pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from releasegate.errors import ProbeError
from releasegate.redaction import redact


@dataclass(frozen=True)
class Exchange:
    """One request and its answer, as evidence needs it."""

    method: str
    url: str
    status: int
    elapsed_ms: float
    body: Any
    text: str
    headers: dict[str, str] = field(default_factory=dict)
    """Lower-case names: what rate limits and pagination are read from."""

    @property
    def source(self) -> str:
        return redact(f"{self.method} {self.url}")


class Http:
    def __init__(self, base_url: str, *, timeout_s: float = 5.0, component: str = "service") -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.component = component
        self._client: httpx.Client | None = None

    @property
    def client(self) -> httpx.Client:
        """One client per probe: building one loads TLS settings and costs about 20 ms of CPU."""
        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout_s, follow_redirects=False)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def get(self, path: str) -> Exchange:
        return self.request("GET", path)

    def request(
        self,
        method: str,
        path: str,
        *,
        hint: str = "is it running and is platform.url right?",
        max_text: int | None = 2000,
        **kw: Any,
    ) -> Exchange:
        """One request; any HTTP status is an answer, a refused connection or a timeout is a
        ProbeError naming the URL and ``hint``. ``kw`` goes to httpx (json, params, headers); the
        text is kept up to ``max_text`` characters (None: all of it)."""
        url = self.url(path)
        started = time.perf_counter()
        try:
            response = self.client.request(method, url, **kw)
        except httpx.TimeoutException:
            raise ProbeError(
                f"{self.component} at {redact(url)}", f"no answer within {self.timeout_s:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise ProbeError(f"{self.component} at {redact(url)}", _reason(exc), hint) from None
        elapsed_ms = (time.perf_counter() - started) * 1000
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        return Exchange(
            method,
            str(response.url),
            response.status_code,
            elapsed_ms,
            body,
            response.text[:max_text],
            {name.lower(): value for name, value in response.headers.items()},
        )


def _reason(exc: httpx.HTTPError) -> str:
    text = str(exc) or type(exc).__name__
    if "refused" in text.lower():
        return "connection refused"
    return redact(text.splitlines()[0])
