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

GET /health answers ``{"status": "healthy", "version": <the image's tag>}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from sandbox.images import split_image
from sandbox.web import loopback_server


def behaviour_of(path: Path, image: str) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()).get(image, {}))
    except (OSError, ValueError):
        return {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.workload")
    parser.add_argument("--image", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--behaviours", default=os.environ.get("WORKLOAD_BEHAVIOURS", ""))
    args = parser.parse_args(argv)
    path = Path(args.behaviours)
    behaviour = behaviour_of(path, args.image)
    tag = split_image(args.image)[1]
    starts_file = path.with_name(f"starts-{args.host}-{args.image.replace('/', '_').replace(':', '_')}")
    starts = int(starts_file.read_text()) + 1 if starts_file.exists() else 1
    starts_file.write_text(str(starts))
    crash = "crash_after_s" in behaviour and starts <= behaviour.get("crash_times", 1 << 30)
    state: dict[str, Any] = {"started": 0.0, "leak": []}

    async def health(_request: Request) -> JSONResponse:
        loop = asyncio.get_running_loop()
        ready_after = behaviour.get("ready_after_s", 0)
        if behaviour.get("never_ready") or crash or loop.time() - state["started"] < ready_after:
            return JSONResponse({"status": "starting", "version": tag}, status_code=503)
        return JSONResponse({"status": "healthy", "version": tag})

    async def live(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def analysis(_request: Request) -> JSONResponse:
        return JSONResponse({"error_rate": float(behaviour.get("error_rate", 0.0)), "version": tag})

    async def on_start() -> None:
        loop = asyncio.get_running_loop()
        state["started"] = loop.time()
        print(f"workload {args.image} serving on {args.host}:{args.port}", flush=True)
        for line in behaviour.get("log_lines", []):
            print(line, flush=True)
        if crash:
            loop.call_later(
                float(behaviour["crash_after_s"]), lambda: os._exit(int(behaviour.get("exit_code", 1)))
            )
        if behaviour.get("leak_mib_per_s"):
            state["leak_task"] = loop.create_task(leak(float(behaviour["leak_mib_per_s"])))

    async def leak(mib: float) -> None:
        while True:
            state["leak"].append(bytearray(os.urandom(1)) * int(mib * 1024 * 1024))
            await asyncio.sleep(1)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await on_start()
        yield

    app = Starlette(
        routes=[Route("/health", health), Route("/health/live", live), Route("/analysis", analysis)],
        lifespan=lifespan,
    )
    server = loopback_server(app, args.port, args.host)
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
