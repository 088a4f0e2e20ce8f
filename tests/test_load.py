"""The load generator: loopback only, and never more than it was told (against a real server)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from releasegate.actions.load import LoadGenerator, require_loopback
from releasegate.config import LoadSettings
from releasegate.errors import ActionError

pytestmark = pytest.mark.timeout(60)


class Server:
    """A real HTTP server on 127.0.0.1 that counts requests and how many run at once."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server.lock:
                    server.requests += 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                time.sleep(server.delay_s)
                status = 500 if self.path == "/fail" else 404 if self.path == "/missing" else 200
                with server.lock:  # done before the answer leaves: the client's next request may
                    server.in_flight -= 1  # arrive before this thread runs again
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com",
        "https://10.0.0.5:8080",
        "http://192.168.1.1",
        "http://127.0.0.1.example.com",
        "http://[2001:db8::1]",
    ],
)
def test_anything_but_loopback_is_refused_before_a_request_is_sent(url: str) -> None:
    with pytest.raises(
        ActionError, match=r"load generator: refusing to send traffic to .*only loopback hosts"
    ):
        LoadGenerator(url, ["/"], rps=1, duration_s=1)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080", "http://localhost:1", "http://127.1.2.3", "http://[::1]:80"]
)
def test_loopback_hosts_are_allowed(url: str) -> None:
    assert require_loopback(url) == url


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rps": 0, "duration_s": 1}, "rps must be above 0"),
        ({"rps": 10_000, "duration_s": 1}, "at most 500"),
        ({"rps": 1, "duration_s": 7200}, "duration_s must be above 0 and at most 3600"),
        ({"rps": 1, "duration_s": 1, "concurrency": 100}, "concurrency must be 1 to 32"),
    ],
)
def test_bounds_are_enforced(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ActionError, match=message):
        LoadGenerator("http://127.0.0.1:1", ["/"], **kwargs)  # type: ignore[arg-type]


def test_it_sends_at_most_rps_times_duration_and_stops_by_itself(server: Server) -> None:
    load = LoadGenerator(server.url, ["/a", "/b"], rps=40, concurrency=4, duration_s=1.5).start()

    stats = load.wait()

    assert not load.running
    assert load.max_requests == 60
    assert 50 <= stats.sent <= 60
    assert server.requests == stats.sent == stats.ok
    assert stats.duration_s == pytest.approx(1.5, abs=0.5)


def test_it_never_runs_more_requests_at_once_than_its_concurrency(server: Server) -> None:
    server.delay_s = 0.2  # each request takes 200 ms: 50 rps would need 10 at once

    stats = LoadGenerator(server.url, ["/"], rps=50, concurrency=2, duration_s=1).start().wait()

    assert server.max_in_flight <= 2
    assert stats.sent <= 12  # two at a time, 200 ms each, for about a second


def test_stop_ends_the_run_early_and_counts_answers_by_kind(server: Server) -> None:
    paths = ["/ok", "/fail", "/missing", "/ok"]
    with LoadGenerator(server.url, paths, rps=100, concurrency=2, duration_s=60) as load:
        deadline = time.monotonic() + 20
        while load.stats.sent < 20 and time.monotonic() < deadline:  # a slow machine sends fewer a second
            time.sleep(0.05)
    stats = load.stats

    assert not load.running
    assert 20 <= stats.sent < 1000, "stopped long before its 60 s at 100 requests/s"
    assert stats.server_errors == pytest.approx(stats.sent / 4, abs=1)
    assert stats.client_errors == pytest.approx(stats.sent / 4, abs=1)
    assert stats.ok + stats.client_errors + stats.server_errors == stats.sent
    assert stats.first_failures[0] == "GET /fail: 500"
    assert stats.server_error_ratio == pytest.approx(1 / 4, abs=0.05)


def test_no_answer_is_counted_as_an_error() -> None:
    # Seconds, not tenths: on a busy machine the client alone can take longer than 0.3 s to set up.
    stats = LoadGenerator("http://127.0.0.1:1", ["/"], rps=5, concurrency=1, duration_s=2).start().wait()

    assert stats.sent == stats.errors > 0
    assert stats.first_failures[0] == "GET /: ConnectError"
    assert stats.server_error_ratio is None


def test_a_request_that_timed_out_is_a_failure_like_a_5xx(server: Server) -> None:
    """A user who got no answer was not served: the summary says failed, not "0 answered 5xx"."""
    server.delay_s = 1.0

    stats = (
        LoadGenerator(server.url, ["/ok"], rps=4, concurrency=2, duration_s=1, timeout_s=0.3).start().wait()
    )

    assert stats.sent == stats.errors == stats.timed_out == stats.failed > 0
    assert stats.server_errors == 0 and stats.failure_ratio == 1.0
    assert stats.first_failures[0] == "GET /ok: ReadTimeout"
    assert stats.summary() == (
        f"{stats.sent} requests, {stats.sent} failed (0 answered 5xx, {stats.sent} no answer: "
        f"{stats.sent} timed out)"
    )


def test_settings_from_the_environment(server: Server) -> None:
    settings = LoadSettings(paths=["/x"], rps=10, concurrency=1, duration_s=0.5)

    load = LoadGenerator.from_settings(server.url, settings)

    assert (load.rps, load.concurrency, load.duration_s, load.max_requests) == (10, 1, 0.5, 5)
    assert 1 <= load.start().wait().sent <= 5, "bounded by rps x duration, however fast the machine"
