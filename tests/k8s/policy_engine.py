"""The policy engine of the Kubernetes tests' registry (``openpolicyagent/opa``, real_cluster.py),
run by the node agent as the process of a pod.

As an OPA told to pull one bundle at start, it loads the bundle its ``BUNDLE_VERSION`` names
from the bundle server, here a directory of Summit's bundles (sandbox/replicas/summit_policy,
each naming its own ``version``), checked by Summit's rules (sandbox.policy), and reports it as
Summit's API does (GA 6.2):

- ``GET /health/policy``: ``{"status": "healthy", "bundleVersion": "v4.0.0"}``, or 503
  ``{"status": "unhealthy", "reason": ...}`` when it has no bundle (none named, none such on
  the bundle server, or one it refuses);
- ``GET /health``: 200 once it serves (OPA's plain health check); ``GET /health?bundles``: 200
  only with its bundle active, 500 otherwise (OPA's, for a readiness probe that waits for it).

    python policy_engine.py --host H --port P --bundles DIR
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script by the node agent: sandbox.policy is the repo's
    sys.path.insert(0, str(ROOT))

from sandbox.policy import BundleError, read_bundle  # noqa: E402


def load(bundles: Path, version: str | None) -> tuple[dict[str, Any] | None, str]:
    """The bundle named ``version`` on the bundle server, or None and why not."""
    if not version:
        return None, "no bundle named (BUNDLE_VERSION is not set)"
    for path in sorted(bundles.glob("*.json")):
        try:
            if json.loads(path.read_text()).get("version") != version:
                continue
            return read_bundle(path), ""
        except BundleError as exc:
            return None, f"bundle {version} refused: {exc}"
        except (OSError, ValueError):
            continue
    return None, f"bundle {version}: not found on the bundle server"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="policy_engine.py")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bundles", type=Path, required=True, help="the bundle server: a directory")
    args = parser.parse_args(argv)
    bundle, problem = load(args.bundles, os.environ.get("BUNDLE_VERSION"))

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            path, _, query = self.path.partition("?")
            if path == "/health/policy":
                if bundle is None:
                    self._send(503, {"status": "unhealthy", "reason": problem})
                else:
                    self._send(200, {"status": "healthy", "bundleVersion": bundle["version"]})
            elif path == "/health":
                if "bundles" in query and bundle is None:
                    self._send(500, {"error": problem})
                else:
                    self._send(200, {})
            else:
                self._send(404, {"code": "resource_not_found", "message": f"{path} not found"})

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    if bundle is None:  # OPA's log lines
        print(
            json.dumps({"level": "error", "msg": f"Bundle load failed: {problem}", "name": "main"}),
            flush=True,
        )
    else:
        print(json.dumps({"level": "info", "msg": "Bundle loaded and activated successfully.",
                          "name": "main", "revision": bundle["version"]}), flush=True)  # fmt: skip
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
