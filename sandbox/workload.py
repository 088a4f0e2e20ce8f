"""A small HTTP workload for the node agent's tests: an image the tests' registry maps to it runs
this process, which behaves as ``--behaviours`` (a JSON file, image -> behaviour) says for its image.

It is the release under test, not a double of anything releasegate talks to: the faults are real
behaviour of a real process (it exits, it never answers ready, it writes error lines, it grows),
seen by the real node agent, controllers and API server. A behaviour:

- ``crash_after_s``: exit with ``exit_code`` (default 1) that long after it starts serving, never
  ready before (it crashes while starting up, so no rollout can pass before it does);
- ``never_ready``: ``/health`` answers 503 (``/health/live`` still 200);
- ``ready_after_s``: ``/health`` answers 503 until then;
- ``log_lines``: lines written to stdout once serving;
- ``leak_mib_per_s``: keeps that much more memory every second (an OOMKill to be);
- ``crash_times``: exit only on the first N starts of each pod (counted in a file beside the behaviours).

- ``error_rate``: what ``GET /analysis`` reports (``{"error_rate": 0.0}`` otherwise), for an
  Argo AnalysisTemplate's web provider.

GET /health answers ``{"status": "healthy", "version": <the image's tag>}``; GET /metrics has
``workload_requests_total`` by path and status in Prometheus's text format, so a Prometheus that
discovers the pods has something to scrape. It is the standard
library's HTTP server, not the sandbox's Starlette stack: tests start dozens of pods on two
cores, and each starts in a tenth of the time.
"""

from __future__ import annotations

import argparse
import http.server
import ipaddress
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from sandbox.images import split_image


def behaviour_of(path: Path, image: str) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()).get(image, {}))
    except (OSError, ValueError):
        return {}


PATHS = ("/health", "/health/live", "/analysis", "/metrics")
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def metrics_text(counts: list[tuple[tuple[str, int], int]]) -> str:
    """The request counter in Prometheus's text exposition format (no client library: the
    workload starts in a tenth of the sandbox service's time and must stay that quick)."""
    lines = [
        "# HELP workload_requests_total Requests answered, by path and status.",
        "# TYPE workload_requests_total counter",
    ]
    lines += [
        f'workload_requests_total{{path="{path}",status="{status}"}} {n}' for (path, status), n in counts
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.workload")
    parser.add_argument("--image", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--behaviours", default=os.environ.get("WORKLOAD_BEHAVIOURS", ""))
    args = parser.parse_args(argv)
    if not ipaddress.ip_address(args.host).is_loopback:
        parser.error(f"--host {args.host} is not a loopback address")
    path = Path(args.behaviours)
    behaviour = behaviour_of(path, args.image)
    tag = split_image(args.image)[1]
    pod = os.environ.get("HOSTNAME", args.host)  # the pod's name: addresses are used again
    starts_file = path.with_name(f"starts-{pod}-{args.image.replace('/', '_').replace(':', '_')}")
    starts = int(starts_file.read_text()) + 1 if starts_file.exists() else 1
    starts_file.write_text(str(starts))
    crash = "crash_after_s" in behaviour and starts <= behaviour.get("crash_times", 1 << 30)
    started = time.monotonic()
    requests: dict[tuple[str, int], int] = {}
    counting = threading.Lock()

    def answer(request: http.server.BaseHTTPRequestHandler, status: int, body: dict[str, Any] | str) -> None:
        path = request.path if request.path in PATHS else "other"  # a bounded set of series
        with counting:
            requests[path, status] = requests.get((path, status), 0) + 1
        text = isinstance(body, str)
        data = body.encode() if text else json.dumps(body).encode()
        request.send_response(status)
        request.send_header("Content-Type", METRICS_TYPE if text else "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if self.path == "/health":
                starting = time.monotonic() - started < behaviour.get("ready_after_s", 0)
                if behaviour.get("never_ready") or crash or starting:
                    answer(self, 503, {"status": "starting", "version": tag})
                else:
                    answer(self, 200, {"status": "healthy", "version": tag})
            elif self.path == "/health/live":
                answer(self, 200, {"status": "alive"})
            elif self.path == "/analysis":
                answer(self, 200, {"error_rate": float(behaviour.get("error_rate", 0.0)), "version": tag})
            elif self.path == "/metrics":
                with counting:
                    counts = sorted(requests.items())
                answer(self, 200, metrics_text(counts))
            else:
                answer(self, 404, {"error": "not found"})

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(f"workload {args.image} serving on {args.host}:{args.port}", flush=True)
    for line in behaviour.get("log_lines", []):
        print(line, flush=True)
    if crash:
        threading.Timer(
            float(behaviour["crash_after_s"]), lambda: os._exit(int(behaviour.get("exit_code", 1)))
        ).start()
    if behaviour.get("leak_mib_per_s"):
        kept: list[bytearray] = []

        def leak() -> None:
            while True:
                kept.append(bytearray(os.urandom(1)) * int(float(behaviour["leak_mib_per_s"]) * 1024 * 1024))
                time.sleep(1)

        threading.Thread(target=leak, daemon=True).start()
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
