"""A journey's HTTP session: one base URL, cookies and a bearer token kept between requests.

Like the probes' ``Http``, a refused connection or a timeout is a ProbeError naming the URL;
any HTTP status is an answer, for the journey to judge.
"""

from __future__ import annotations

from typing import Any

from releasegate.probes.http import Exchange, Http
from releasegate.redaction import register_secret


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

    def request(  # type: ignore[override]
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
        sent = dict(headers or {})
        bearer = token or self._token
        if bearer:
            register_secret(bearer)
            sent["Authorization"] = f"Bearer {bearer}"
        return super().request(
            method,
            path,
            hint="is it running and is its base_url right?",
            max_text=None,  # a journey reads whole answers (/metrics)
            json=json,
            params=params,
            headers=sent,
        )
