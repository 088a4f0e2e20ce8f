"""A plain-HTTP front of the real API server, for tests: it forwards every request as the
cluster's admin (its client certificate), records every request (``seen``) and the writes
(``changes``), and injects what the real API server cannot be made to do on demand (``fail``: a
5xx, a 429 with its Retry-After, an answer that comes too late, a connection dropped without
one).

releasegate is pointed at it through a kubeconfig of its own (``write_kubeconfig``); the tests'
own client talks to the API server directly. With ``forward_credentials`` it shows no
certificate of its own and forwards the client's ``Authorization``: the API server then
authenticates and authorizes the client's own token (a ServiceAccount's, with its RBAC).
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}
DROP = -1
"""``fail``'s status for a connection closed without an answer (a load balancer or an API server
going away mid-request)."""
_REASONS = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int
    times: int
    delay_s: float = 0.0
    message: str | None = None
    headers: dict[str, str] | None = None


class ApiProxy:
    def __init__(self, upstream: str, context: ssl.SSLContext, *, forward_credentials: bool = False) -> None:
        self.upstream = urlparse(upstream)
        self.context = context
        self.forward_credentials = forward_credentials
        self.seen: list[tuple[str, str]] = []
        """Every request, in order: (method, path without the query)."""
        self.changes: list[tuple[str, str, Any]] = []
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy._lock:
                    proxy.seen.append((self.command, urlparse(self.path).path))
                fault = proxy._fault(self.command, self.path)
                if fault is not None:
                    if fault.delay_s:
                        time.sleep(fault.delay_s)
                    if fault.status == DROP:
                        self.close_connection = True
                        with contextlib.suppress(OSError):  # gone already
                            self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if fault.status:
                        self._answer(fault)
                        return
                if self.command in ("POST", "PUT", "PATCH", "DELETE"):
                    try:
                        parsed = json.loads(body) if body else None
                    except ValueError:
                        parsed = body
                    with proxy._lock:
                        proxy.changes.append((self.command, urlparse(self.path).path, parsed))
                upstream = http.client.HTTPSConnection(
                    proxy.upstream.hostname, proxy.upstream.port, context=proxy.context, timeout=120
                )
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in _HOP and (proxy.forward_credentials or k.lower() != "authorization")
                }
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                try:
                    self.send_response(response.status)
                    for key, value in response.getheaders():
                        if key.lower() not in _HOP:
                            self.send_header(key, value)
                    self.send_header("Connection", "close")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    while chunk := response.read1(65536):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                except (OSError, ValueError, http.client.HTTPException):
                    pass  # either side went away (a watch ends, the test stops): nothing to say
                finally:
                    upstream.close()
                self.close_connection = True

            def _answer(self, fault: Fault) -> None:
                """A Status as the API server writes one, with the fault's code and message."""
                message = fault.message or f"injected by the test's API proxy: {fault.status}"
                payload = json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                      "message": message, "reason": _REASONS.get(fault.status, ""),
                                      "code": fault.status}).encode()  # fmt: skip
                try:
                    self.send_response(fault.status)
                    self.send_header("Content-Type", "application/json")
                    for key, value in (fault.headers or {}).items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client gave up waiting
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

            def log_message(self, *_args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fail(self, method: str, path: str, status: int, *, times: int = 1, delay_s: float = 0.0,
             message: str | None = None, headers: dict[str, str] | None = None) -> None:  # fmt: skip
        """The next ``times`` ``method`` requests whose path matches ``path`` (a regex), each after
        ``delay_s``, get ``status`` with the API server's Status body (``message``) and ``headers``
        (e.g. Retry-After); ``status`` 0 forwards them, DROP closes the connection unanswered."""
        with self._lock:
            self.faults.append(Fault(method, re.compile(path), status, times, delay_s, message, headers))

    def requests_to(self, method: str, path: str, since: int = 0) -> int:
        """How many ``method`` requests for exactly ``path`` came, after the first ``since`` of ``seen``."""
        with self._lock:
            return self.seen[since:].count((method, path))

    def _fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times > 0 and fault.method == method and fault.path.search(path):
                    fault.times -= 1
                    return fault
        return None

    def write_kubeconfig(self, path: Path, context: str, namespace: str) -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "sandbox", "cluster": {"server": self.url}}],
                    "users": [{"name": "releasegate", "user": {"token": "unused-by-the-proxy"}}],
                    "contexts": [
                        {
                            "name": context,
                            "context": {"cluster": "sandbox", "user": "releasegate", "namespace": namespace},
                        }
                    ],
                    "current-context": context,
                }
            )
        )
        return path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
