"""Each canary instance asked for its own health before a canary step moves the weight.

The metrics compare canary and stable by the ``release`` label the platform gives each
instance; they never ask what the build says it is. A build whose health endpoint reports the
previous version (or is unhealthy while its readiness probe passes) looks fine to them and would
be promoted. So every step starts by asking each canary instance directly, with the judgement
verification uses for every instance after a rollout (``verification.health_is``): one place
decides what "healthy, on this release" means.

Where the platform lists the canary's instances (``canary_instances()``, the local platform) each
is asked at its own address. Elsewhere the instances of the release in ``platform.status()``
stand in; when their addresses do not answer from here (pods outside the cluster), the
platform's readiness and the release it reports (the image) are recorded instead, and the
evidence says that the instance itself was not asked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from releasegate.evidence import Checker, GateFailure
from releasegate.platforms.base import Instance, Platform
from releasegate.probes.http import Http
from releasegate.verification import health_is


def canary_instances(platform: Platform, release: str) -> list[Instance]:
    """The running instances of the canary ``release``: the platform's own list when it has one."""
    listed: Callable[[], list[Instance]] | None = getattr(platform, "canary_instances", None)
    if listed is not None:
        return list(listed())
    return [i for i in platform.status().instances if i.release == release]


def ask_canary_health(
    platform: Platform,
    release: str,
    health_path: str,
    timeout_s: float,
    *,
    reachable: bool = True,
    when: str = "",
) -> dict[str, Any]:
    """Every canary instance of ``release`` asked for its health and version.

    Returns ``{"instances": n, "healthy": bool, "problem": str, "evidence": [Evidence dicts]}``,
    JSON-able so that ``Run.once`` can share it; the gate records the evidence. No instance at
    all is not healthy (``instances`` 0 lets the caller ask again once the weight created some).
    """
    checker = Checker(lambda _e: None, phase="deploy")
    instances = canary_instances(platform, release)
    problems: list[str] = []
    for instance in instances:
        label = f"canary {instance.name}{f' {when}' if when else ''}"
        try:
            if reachable and instance.url:
                http = Http(instance.url, timeout_s=timeout_s, component=instance.name)
                health_is(checker, http, health_path, release, f"{label} {health_path}")
            else:
                detail = (
                    "its address does not answer from here: the platform's readiness and the release "
                    f"of its image stand in for {health_path}"
                )
                checker.equals(f"{label} release", instance.release, release, source="platform status")
                checker.holds(f"{label} ready", instance.ready, source="platform status", detail=detail)
        except GateFailure as failed:
            problems.append(str(failed))
    if not instances:
        problems.append(f"no instance of the canary {release} runs")
    return {
        "instances": len(instances),
        "healthy": bool(instances) and not problems,
        "problem": "; ".join(problems),
        "evidence": [e.to_dict() for e in checker.records],
    }
