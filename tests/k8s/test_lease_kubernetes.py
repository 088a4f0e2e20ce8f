"""The lease of a Kubernetes environment (issue 12): a coordination.k8s.io Lease in its namespace,
on the real API server. Two runners that share nothing but the cluster: exactly one takes it, the
other is refused with the holder named; a release frees it and says who held it last; a holder
that stops renewing loses it after its duration, on the API server's clock."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from kubernetes import client
from real_cluster import Cluster

from releasegate.lease import Holder, holder_for, holder_line
from releasegate.lease_kubernetes import KubernetesLeaseStore


def store(kube: Cluster) -> KubernetesLeaseStore:
    return KubernetesLeaseStore(kube.settings(), "granter-production")


def away(run_id: str, release: str = "2.0.0") -> Holder:
    """A holder on another machine: only its renewals say it is alive."""
    return replace(holder_for(run_id, "deploy", release), machine="", process_start=None)


def test_two_runners_race_for_the_lease_and_exactly_one_takes_it(kube: Cluster) -> None:
    first, second = away("run-a"), away("run-b", "2.0.1")

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda me: store(kube).acquire(me, 30), [first, second]))

    verdicts = sorted(v for v, _ in results)
    assert verdicts == ["held", "take"], results
    winner = first if results[0][0] == "take" else second
    refused = next(state for v, state in results if v == "held")
    assert refused.holder is not None and refused.holder.run_id == winner.run_id
    line = holder_line("granter-production", refused)
    assert f"run {winner.run_id} (deploy {winner.release}" in line and "expires at" in line
    lease = client.CoordinationV1Api(kube.admin).read_namespaced_lease(
        "releasegate-granter-production", kube.namespace
    )
    assert lease.spec.holder_identity == winner.token, "kubectl get lease shows the holder"
    assert lease.spec.lease_duration_seconds == 30


def test_a_released_lease_is_free_and_says_who_held_it_last(kube: Cluster) -> None:
    me, next_run = away("run-a"), away("run-b")
    assert store(kube).acquire(me, 30)[0] == "take"
    assert store(kube).acquire(me, 30)[0] == "renew", "the heartbeat"

    released = store(kube).release(me.token)

    assert released is not None and released.released_at is not None and not released.live()
    state = store(kube).read()
    assert state.holder is not None and state.holder.run_id == "run-a", "who held it last"
    assert store(kube).acquire(next_run, 30)[0] == "take"
    assert store(kube).release(me.token) is None, "a release by a former holder changes nothing"


def test_a_holder_that_stops_renewing_loses_it_after_its_duration(kube: Cluster) -> None:
    gone, next_run = away("run-a"), away("run-b")
    assert store(kube).acquire(gone, 2)[0] == "take"
    assert store(kube).acquire(next_run, 2)[0] == "held"

    time.sleep(3.2)  # the Date header counts whole seconds

    decided, state = store(kube).acquire(next_run, 2)
    assert decided == "take" and state.holder is not None and state.holder.run_id == "run-b"
    assert store(kube).acquire(gone, 2, held_before=True)[0] == "lost", "the old holder learns it lost it"
