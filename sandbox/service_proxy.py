"""What kube-proxy does for the sandbox's nodes: each Service's ClusterIP and port (loopback, see
sandbox.control_plane) forwards TCP connections to the Service's ready endpoints, as
the real endpoint controller lists them in the Service's EndpointSlices.

A connection goes to one endpoint, chosen in turn, for its whole life (kube-proxy balances
connections, not requests). A Service with no ready endpoint refuses connections. The Services
and EndpointSlices are read every ``POLL_S``: a selector switched by a blue-green deployment moves
new connections within that time. Runs in the node agent's process (sandbox.kubelet).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
from collections.abc import Iterator
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from sandbox.control_plane import listen_address

log = logging.getLogger("sandbox.service_proxy")
POLL_S = 0.3
Address = tuple[str, int]


def routes(services: list[Any], slices: list[Any]) -> dict[Address, list[Address]]:
    """(ClusterIP, port) -> the ready endpoints' (address, port), from the API's objects: the
    loopback address each pod's process listens on (sandbox.control_plane.listen_address)."""
    by_service: dict[tuple[str, str], list[Any]] = {}
    for s in slices:
        owner = (s.metadata.labels or {}).get("kubernetes.io/service-name")
        if owner:
            by_service.setdefault((s.metadata.namespace, owner), []).append(s)
    table: dict[Address, list[Address]] = {}
    for svc in services:
        ip = svc.spec.cluster_ip
        if not ip or ip == "None":
            continue
        for port in svc.spec.ports or []:
            table[(ip, port.port)] = sorted(
                _endpoints(by_service.get((svc.metadata.namespace, svc.metadata.name), []), port.name)
            )
    return table


def _endpoints(slices: list[Any], port_name: str | None) -> Iterator[Address]:
    for s in slices:
        number = next((p.port for p in s.ports or [] if (p.name or None) == (port_name or None)), None)
        if number is None:
            continue
        for endpoint in s.endpoints or []:
            if endpoint.conditions is None or endpoint.conditions.ready is not False:
                for address in endpoint.addresses or []:
                    yield listen_address(address), number


class ServiceProxy:
    """Listeners for the routes; ``run`` keeps them in step with the API (module docstring)."""

    def __init__(self, api: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api)
        self.discovery = client.DiscoveryV1Api(api)
        self.table: dict[Address, list[Address]] = {}
        self.servers: dict[Address, asyncio.base_events.Server] = {}
        self._turn = itertools.count()

    def start(self) -> None:
        threading.Thread(target=lambda: asyncio.run(self.run()), name="service-proxy", daemon=True).start()

    async def run(self) -> None:
        while True:
            try:
                services, slices = await asyncio.to_thread(self._read)
                self.table = routes(services, slices)
                await self._listen()
            except ApiException as exc:
                log.warning("services not read: %s", exc.reason)
            except Exception as exc:  # the API server restarts, say: keep the last table
                log.warning("services not read: %s", exc)
            await asyncio.sleep(POLL_S)

    def _read(self) -> tuple[list[Any], list[Any]]:
        return (
            self.core.list_service_for_all_namespaces().items,
            self.discovery.list_endpoint_slice_for_all_namespaces().items,
        )

    async def _listen(self) -> None:
        for address in list(self.servers):
            if address not in self.table:
                self.servers.pop(address).close()
                log.info("%s:%d closed", *address)
        for address in self.table:
            if address in self.servers:
                continue
            try:
                self.servers[address] = await asyncio.start_server(
                    lambda r, w, a=address: self._forward(a, r, w), host=address[0], port=address[1]
                )
                log.info("%s:%d listening", *address)
            except OSError as exc:
                log.warning("%s:%d cannot listen: %s", *address, exc)

    async def _forward(
        self, address: Address, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        endpoints = self.table.get(address) or []
        if not endpoints:
            writer.close()
            return
        target = endpoints[next(self._turn) % len(endpoints)]
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()
