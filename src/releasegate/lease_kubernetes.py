"""The lease of a Kubernetes environment: a ``coordination.k8s.io/v1`` Lease in its namespace.

The environment is the namespace, so the lease is held there, where every runner that can deploy
to it can read it, whatever its ledger: ``kubectl get lease releasegate-<name> -n <namespace>``
shows the holder. The same rules as the database's lease row (releasegate.lease: ``verdict``)
decide; only the I/O differs:

- the Lease's ``holderIdentity`` is the holder's token (empty once released), ``acquireTime``
  and ``renewTime`` the take and the last heartbeat, ``leaseDurationSeconds`` its duration; who
  holds it (run, release, operator, host and pid, phase) is the annotation
  ``releasegate.dev/holder``, and it stays after the release, so the Lease says who held it last;
- a take or renewal is a replace carrying the ``resourceVersion`` read: two runs that read the
  same Lease cannot both write it (the second gets 409 Conflict, reads again, and is refused), and
  two that find none cannot both create it (409 AlreadyExists);
- "now" is the API server's clock (its ``Date`` header), so runners with skewed clocks agree, to
  the second.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from releasegate.config import Environment, KubernetesPlatformSettings
from releasegate.lease import Holder, LeaseState, Verdict, holder_gone, lease_name, verdict
from releasegate.probes.kubernetes import Kubernetes

HOLDER = "releasegate.dev/holder"
RELEASED_AT = "releasegate.dev/released-at"
FORCED_BY = "releasegate.dev/forced-by"
DURATION = "releasegate.dev/duration-s"
CONFLICT_RETRIES = 3
"""Another run wrote the Lease between our read and our write: read it again, this many times."""


class KubernetesLeaseStore:
    """The Lease ``releasegate-<lease name>`` in the environment's namespace."""

    def __init__(self, settings: KubernetesPlatformSettings, name: str) -> None:
        self.kube = Kubernetes(settings)
        self.api = client.CoordinationV1Api(self.kube.api_client)
        self.name = name
        self.object_name = f"releasegate-{self.name}"[:253]
        self.namespace = self.kube.namespace

    @classmethod
    def from_environment(cls, env: Environment) -> KubernetesLeaseStore:
        if env.platform.kubernetes is None:
            raise ValueError(f"{env.name}: a Lease needs [platform.kubernetes]")
        return cls(env.platform.kubernetes, lease_name(env))

    def where(self) -> str:
        return f"Lease {self.object_name} in namespace {self.namespace} at {self.kube.host}"

    def read(self) -> LeaseState:
        """The lease as it is now, taking nothing (no Lease: nobody ever held it)."""
        lease, now = self._get()
        return self._state(lease, now)

    def acquire(
        self,
        me: Holder,
        duration_s: float,
        *,
        force: bool = False,
        forced_by: str | None = None,
        held_before: bool = False,
    ) -> tuple[Verdict, LeaseState]:
        """Take or renew the Lease; ``held`` and ``lost`` leave it as it was."""
        for _ in range(CONFLICT_RETRIES):
            lease, now = self._get()
            state = self._state(lease, now)
            decided = verdict(
                state, me.token, holder_gone=holder_gone(state.holder), force=force, held_before=held_before
            )
            if decided not in ("take", "renew"):
                return decided, state
            body = self._claimed(
                lease, me, duration_s, now, decided, forced_by if force and state.live() else None
            )
            try:
                if lease is None:
                    written = self._call("create", self.api.create_namespaced_lease, self.namespace, body)
                else:
                    written = self._call(
                        "update", self.api.replace_namespaced_lease, self.object_name, self.namespace, body
                    )
            except ApiException as exc:
                if exc.status == 409:  # another run wrote it meanwhile: read again
                    continue
                raise self.kube.error(exc, True, "write", self._resource()) from None
            return decided, self._state(written, now)
        lease, now = self._get()
        return "held", self._state(lease, now)

    def release(self, token: str) -> LeaseState | None:
        """Free the Lease if ``token`` still holds it; its annotations keep who held it last."""
        for _ in range(CONFLICT_RETRIES):
            lease, now = self._get()
            state = self._state(lease, now)
            if lease is None or state.holder is None or state.holder.token != token or state.released_at:
                return None
            annotations = dict(lease.metadata.annotations or {})
            annotations[RELEASED_AT] = _stamp(now)
            lease.metadata.annotations = annotations
            lease.spec.holder_identity = None
            lease.spec.renew_time = now
            lease.spec.lease_duration_seconds = 1  # the minimum: free now, whatever reads it
            try:
                written = self._call(
                    "update", self.api.replace_namespaced_lease, self.object_name, self.namespace, lease
                )
            except ApiException as exc:
                if exc.status == 409:
                    continue
                raise self.kube.error(exc, True, "update", self._resource()) from None
            return self._state(written, now)
        return None

    # -- helpers ------------------------------------------------------------------------------

    def _resource(self) -> str:
        return f"leases.coordination.k8s.io/{self.object_name}"

    def _call(self, verb: str, call: Any, *args: Any) -> Any:
        """A write; a 409 Conflict is raised as it is (the caller reads again), others as one line."""
        body = args[-1]
        for attr in ("acquire_time", "renew_time"):
            moment = getattr(body.spec, attr)
            if isinstance(moment, datetime) and moment.microsecond == 0:
                # the client writes isoformat(), which leaves out a zero fraction, and the API
                # server's MicroTime wants one: the Date header's whole seconds, plus 1 µs
                setattr(body.spec, attr, moment.replace(microsecond=1))
        try:
            return call(*args, _request_timeout=self.kube.timeout_s)
        except ApiException as exc:
            if exc.status == 409:
                raise
            raise self.kube.error(exc, True, verb, self._resource()) from None
        except Exception as exc:  # unreachable, unreadable
            raise self.kube.error(exc, True, verb, self._resource()) from None

    def _get(self) -> tuple[Any | None, datetime]:
        """The Lease (None when there is none) and the API server's time of the answer."""
        try:
            lease, _status, headers = self.api.read_namespaced_lease_with_http_info(
                self.object_name, self.namespace, _request_timeout=self.kube.timeout_s
            )
        except ApiException as exc:
            if exc.status == 404:
                return None, _server_now(exc.headers)
            raise self.kube.error(exc, False, "get", self._resource()) from None
        except Exception as exc:
            raise self.kube.error(exc, False, "get", self._resource()) from None
        return lease, _server_now(headers)

    def _claimed(
        self,
        lease: Any | None,
        me: Holder,
        duration_s: float,
        now: datetime,
        decided: Verdict,
        forced: str | None,
    ) -> client.V1Lease:
        """The Lease with ``me`` holding it from ``now`` (a take) or renewed at ``now``."""
        lease = lease or client.V1Lease(
            metadata=client.V1ObjectMeta(
                name=self.object_name, labels={"app.kubernetes.io/managed-by": "releasegate"}
            ),
            spec=client.V1LeaseSpec(lease_transitions=0),
        )
        annotations = dict(lease.metadata.annotations or {})
        annotations[DURATION] = f"{duration_s:g}"
        if decided == "take":
            annotations[HOLDER] = json.dumps(me.to_dict(), sort_keys=True)
            annotations.pop(RELEASED_AT, None)
            annotations.pop(FORCED_BY, None)
            if forced:
                annotations[FORCED_BY] = forced
            if lease.spec.holder_identity and lease.spec.holder_identity != me.token:
                lease.spec.lease_transitions = (lease.spec.lease_transitions or 0) + 1
            lease.spec.holder_identity = me.token
            lease.spec.acquire_time = now
        elif me.phase is not None:  # a renewal says which phase the run is in
            holder = json.loads(annotations.get(HOLDER) or "{}")
            annotations[HOLDER] = json.dumps(holder | {"phase": me.phase}, sort_keys=True)
        lease.metadata.annotations = annotations
        lease.spec.renew_time = now
        lease.spec.lease_duration_seconds = max(1, math.ceil(duration_s))
        return lease

    def _state(self, lease: Any | None, now: datetime) -> LeaseState:
        if lease is None:
            return LeaseState(self.name, now)
        annotations = lease.metadata.annotations or {}
        spec = lease.spec
        try:
            holder = Holder(**json.loads(annotations[HOLDER])) if HOLDER in annotations else None
        except (TypeError, ValueError):
            holder = None  # not written by releasegate: someone else's claim, read as unknown
        duration = float(annotations.get(DURATION) or spec.lease_duration_seconds or 0)
        renewed = _utc(spec.renew_time)
        released = _parse(annotations.get(RELEASED_AT))
        if holder is None and spec.holder_identity:  # held by something that is not releasegate
            holder = Holder(spec.holder_identity, "?", "?", "?", "?", "?", 0)
        return LeaseState(
            self.name,
            now,
            holder,
            since=_utc(spec.acquire_time),
            heartbeat=renewed,
            expires_at=released or (renewed + timedelta(seconds=duration) if renewed else None),
            duration_s=duration,
            released_at=released,
            forced_by=annotations.get(FORCED_BY),
        )


def _server_now(headers: Any) -> datetime:
    """The API server's clock from its answer's ``Date`` header; this machine's without one."""
    date = (headers or {}).get("Date") or (headers or {}).get("date")
    try:
        return parsedate_to_datetime(date).astimezone(UTC) if date else datetime.now(UTC)
    except (TypeError, ValueError):
        return datetime.now(UTC)


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return None
