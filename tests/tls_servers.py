"""Real TLS servers on 127.0.0.1 serving certificates made in the test (sandbox/tls.py: a CA of
the test's own, certificates it signs, valid, about to expire or expired, and self-signed ones).

Each server completes the handshake and closes: all a client needs to read the certificate.
"""

from __future__ import annotations

import socket
import ssl
import tempfile
import threading
from pathlib import Path

from sandbox.tls import Authority, Issued, self_signed

__all__ = ["Authority", "TlsServer", "self_signed"]


class TlsServer:
    """Serves one certificate on 127.0.0.1 (a free port) until closed."""

    def __init__(self, issued: Issued) -> None:
        self.issued = issued
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as tmp:
            self.context.load_cert_chain(*issued.write(Path(tmp), "server"))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handshake, args=(conn,), daemon=True).start()

    def _handshake(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            with self.context.wrap_socket(conn, server_side=True):
                pass
        except (OSError, ssl.SSLError):
            pass  # a client that refuses the certificate aborts the handshake
        finally:
            conn.close()

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()
