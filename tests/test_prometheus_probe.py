"""The Prometheus probe's failures, on real sockets: refused, silent, 5xx, a refused query.

The answers of a real Prometheus (data, no data, NaN) are in test_metrics_sandbox.py; here an
HTTP double plays a Prometheus that misbehaves, which a real one cannot be made to do.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote_plus

import pytest

from releasegate.config import MetricsSettings
from releasegate.errors import ProbeError
from releasegate.probes.prometheus import Prometheus

pytestmark = pytest.mark.timeout(60)


class Double:
    """Answers every request with ``status`` and ``body``; counts the requests."""

    def __init__(self) -> None:
        self.status = 200
        self.body: object = {"status": "success", "data": {"resultType": "vector", "result": []}}
        self.requests = 0
        self.respond: Callable[[str], object] | None = None
        """When set: the body for each request's path (its query), instead of ``body``."""
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                double.requests += 1
                body = double.respond(unquote_plus(self.path)) if double.respond else double.body
                data = json.dumps(body).encode()
                self.send_response(double.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def double() -> Iterator[Double]:
    d = Double()
    thread = threading.Thread(target=d.httpd.serve_forever, daemon=True)
    thread.start()
    yield d
    d.httpd.shutdown()
    d.httpd.server_close()


def test_nothing_listening_is_one_line_naming_prometheus_and_its_url() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()

    with pytest.raises(ProbeError) as error:
        Prometheus(f"http://127.0.0.1:{port}", retries=2).instant("up")

    assert str(error.value) == (
        f"Prometheus at http://127.0.0.1:{port}: connection refused (is it running? check metrics.prometheus_url)"
    )
    assert time.monotonic() - started < 3


def test_a_silent_server_times_out_after_its_retries() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # connections complete in the backlog; nothing ever answers
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()

        with pytest.raises(
            ProbeError, match=r"^Prometheus at .*: no answer within 0.3 s \(metrics.timeout_s\)$"
        ):
            Prometheus(url, timeout_s=0.3, retries=1).instant("up")

        assert 0.6 <= time.monotonic() - started < 3  # the first try and one retry


def test_a_prometheus_that_keeps_failing_is_retried_then_reported(double: Double) -> None:
    double.status, double.body = 503, {"status": "error"}

    with pytest.raises(ProbeError, match=r"kept answering 502/503/504 after 2 retries"):
        Prometheus(double.url, retries=2).instant("up")

    assert double.requests == 3


def test_a_refused_query_says_why(double: Double) -> None:
    double.status = 400
    double.body = {"status": "error", "errorType": "bad_data", "error": 'parse error: unexpected "}"'}

    with pytest.raises(ProbeError) as error:
        Prometheus(double.url).instant("sum(up{)")

    assert (
        str(error.value)
        == f'Prometheus at {double.url}: HTTP 400: parse error: unexpected "}}" for sum(up{{)'
    )
    assert double.requests == 1  # a 400 is not retried


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"resultType": "vector", "result": []}, None),
        ({"resultType": "vector", "result": [{"metric": {}, "value": [1700000000, "NaN"]}]}, None),
        ({"resultType": "vector", "result": [{"metric": {}, "value": [1700000000, "0"]}]}, 0.0),
        ({"resultType": "scalar", "result": [1700000000, "NaN"]}, None),
        ({"resultType": "scalar", "result": [1700000000, "2.5"]}, 2.5),
        ({"resultType": "vector", "result": [{"metric": {}, "value": [1700000000, "+Inf"]}]}, float("inf")),
    ],
)
def test_no_data_and_nan_are_none_and_zero_stays_zero(
    double: Double, data: object, expected: float | None
) -> None:
    double.body = {"status": "success", "data": data}

    sample = Prometheus(double.url).instant("q")

    assert sample.value == expected
    assert sample.promql == "q" and sample.url == double.url


def test_several_series_where_one_number_is_expected_is_an_error(double: Double) -> None:
    double.body = {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": {"instance": i}, "value": [1, "1"]} for i in "ab"],
        },
    }

    with pytest.raises(
        ProbeError, match=r"2 series where one number was expected from up \(aggregate the query"
    ):
        Prometheus(double.url).instant("up")
    assert [s.labels["instance"] for s in Prometheus(double.url).vector("up")] == ["a", "b"]


def test_a_named_query_is_filled_from_the_environment(double: Double) -> None:
    settings = MetricsSettings(prometheus_url=double.url, window="30s")
    prometheus = Prometheus.from_settings(settings, service="demo")

    sample = prometheus.query("request_rate", release="2.0.0")

    assert sample.promql == (
        'sum(rate(http_requests_total{job="demo",release="2.0.0",route!~"/metrics|/health.*"}[30s]))'
    )
    assert (sample.query, sample.release, sample.value) == ("request_rate", "2.0.0", None)
    assert sample.source == f"PromQL {sample.promql} @ {double.url}"
    assert prometheus.promql("cpu", release="1.0.0", window="1m").endswith("[1m]))")


def test_a_release_name_that_cannot_be_a_label_value_is_refused_before_asking(double: Double) -> None:
    prometheus = Prometheus(double.url, service="demo")

    with pytest.raises(ProbeError, match=r"cannot ask about cpu: release 'x\"y' cannot be put in a PromQL"):
        prometheus.query("cpu", release='x"y')
    assert double.requests == 0


def test_each_query_is_asked_again_until_it_answers_or_the_wait_is_over(double: Double) -> None:
    """A fresh release's series appear with their first observation: cpu answers a few asks
    after request_rate; memory never does, and is not needed, so it does not hold the wait."""
    asked = {"cpu": 0}
    empty = {"resultType": "vector", "result": []}

    def respond(path: str) -> object:
        one = {"resultType": "scalar", "result": [1700000000, "1.5"]}
        if "process_cpu" in path:
            asked["cpu"] += 1
            return {"status": "success", "data": one if asked["cpu"] >= 3 else empty}
        if "process_resident" in path:
            return {"status": "success", "data": empty}
        return {"status": "success", "data": one}

    double.respond = respond
    prometheus = Prometheus.from_settings(
        MetricsSettings(prometheus_url=double.url, window="30s"), service="demo"
    )
    queries = {"request_rate": None, "cpu": None, "memory": None}

    started = time.monotonic()
    answers = prometheus.answers(
        queries, release="1.0.0", timeout_s=5, poll_s=0.05, needed=lambda name: name != "memory"
    )

    assert time.monotonic() - started < 2  # not the whole 5 s: memory is not waited for
    assert (answers["request_rate"].value, answers["cpu"].value, answers["memory"].value) == (1.5, 1.5, None)
    assert asked["cpu"] == 3

    answers = prometheus.answers(queries, release="1.0.0", timeout_s=0.5, poll_s=0.05)
    assert answers["memory"].value is None  # needed: asked until the wait was over, then None
