"""A journey's HTTP session: one base URL, cookies and a bearer token kept between requests.

Like the probes' ``Http``, a refused connection or a timeout is a ProbeError naming the URL;
any HTTP status is an answer, for the journey to judge.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from releasegate.errors import ProbeError
from releasegate.probes.http import Exchange, Http, _reason
from releasegate.redaction import redact, register_secret


class Session(Http):
    """``session.post("/auth/login", json={...})`` -> an Exchange (status, body, elapsed_ms)."""

    def __init__(self, base_url: str, *, timeout_s: float = 10.0, component: str = "journey") -> None:
        super().__init__(base_url, timeout_s=timeout_s, component=component)
        self._token: str | None = None

    def bearer(self, token: str | None) -> None:
        """Send ``Authorization: Bearer <token>`` from now on (None stops); the token is masked
        in every report from the moment it is known."""
        if token:
            register_secret(token)
        self._token = token

    def url(self, path: str) -> str:
        """A path under the base URL, or an absolute URL as it is."""
        return path if path.startswith(("http://", "https://")) else super().url(path)

    def get(self, path: str, **kw: Any) -> Exchange:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Exchange:
        return self.request("POST", path, **kw)

    def delete(self, path: str, **kw: Any) -> Exchange:
        return self.request("DELETE", path, **kw)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
    ) -> Exchange:
        """One request; ``token`` overrides the session's bearer token for this request only."""
        url = self.url(path)
        sent = dict(headers or {})
        bearer = token or self._token
        if bearer:
            register_secret(bearer)
            sent["Authorization"] = f"Bearer {bearer}"
        started = time.perf_counter()
        try:
            response = self.client.request(method, url, json=json, params=params, headers=sent)
        except httpx.TimeoutException:
            raise ProbeError(
                f"{self.component} at {redact(url)}", f"no answer within {self.timeout_s:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise ProbeError(
                f"{self.component} at {redact(url)}", _reason(exc), "is it running and is its base_url right?"
            ) from None
        elapsed_ms = (time.perf_counter() - started) * 1000
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        return Exchange(method, str(response.url), response.status_code, elapsed_ms, body, response.text)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
