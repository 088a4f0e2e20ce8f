"""kmock's KubernetesEmulator served over real HTTP from a background thread with its own loop.

The official client is synchronous: serving the emulator from the async ``kmock`` fixture and
calling it from the same thread deadlocks, so it runs in a thread of its own. ``ApiServer``
adds the little a real API server fills in and kmock does not: ``metadata.generation`` (1 on
create, +1 whenever ``spec`` changes, so ``kubectl rollout status`` has something to compare),
``uid``, ``resourceVersion`` and ``creationTimestamp``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import attrs
import kmock
from kmock import action

T = TypeVar("T")


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    """The emulator plus generation / uid / resourceVersion / creationTimestamp bookkeeping, and
    ``changes``: every PATCH, POST and DELETE it served, in order (method, path, body)."""

    changes: list[tuple[str, str, Any]] = attrs.field(factory=list)
    seen: list[tuple[str, str]] = attrs.field(factory=list)
    """Every request, in order: (method, path)."""
    _versions: Any = attrs.field(factory=lambda: itertools.count(1))

    async def _handle(self, request: kmock.Request) -> Any:
        self.seen.append((request.method.value, request.url.path))
        if request.method.value in ("PATCH", "POST", "DELETE"):
            self.changes.append((request.method.value, request.url.path, request.data))
        key = None
        before = None
        if request.resource is not None and request.action in (action.CREATE, action.UPDATE):
            name = request.name or (
                (request.data or {}).get("metadata", {}) if isinstance(request.data, dict) else {}
            ).get("name")
            namespace = request.namespace
            if namespace is None and isinstance(request.data, dict):
                namespace = request.data.get("metadata", {}).get("namespace")
            key = (request.resource, namespace, name)
            if request.action == action.UPDATE and key in self.objects and not self.objects[key].deleted:
                before = json.dumps(self.objects[key].raw.get("spec"), sort_keys=True)
        response = await super()._handle(request)
        if key is not None and key in self.objects and not self.objects[key].deleted:
            self._bookkeep(self.objects[key], created=request.action == action.CREATE, spec_before=before)
        return response

    def _bookkeep(self, obj: Any, *, created: bool, spec_before: str | None) -> None:
        metadata = dict(obj.raw.get("metadata") or {})
        if created:
            metadata.setdefault("uid", str(uuid.uuid4()))
            metadata.setdefault("creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            metadata["generation"] = 1
        elif spec_before != json.dumps(obj.raw.get("spec"), sort_keys=True):
            metadata["generation"] = int(metadata.get("generation") or 1) + 1
        metadata["resourceVersion"] = str(next(self._versions))
        obj["metadata"] = metadata


class EmulatorThread:
    """Runs an ApiServer on 127.0.0.1 in its own thread and event loop until ``close``."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kmock", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the kmock emulator did not start within 10 s")
        if self._failure is not None:
            raise RuntimeError(f"the kmock emulator failed to start: {self._failure}")

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to the starting thread
            self._failure = exc
            self._ready.set()
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with ApiServer() as server, kmock.Server(server) as http:
            self.server = server
            self.url = str(http.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def call(self, function: Callable[[], T], timeout_s: float = 10) -> T:
        """Run ``function`` inside the emulator's loop (between requests) and return its result."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(function())
            except BaseException as exc:
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return future.result(timeout_s)

    def close(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)
