"""The instances of a release asked for their own health before they take traffic: each canary
instance before a canary step moves the weight, each green instance before the switch.

The metrics tell canary from stable by the ``release`` label the platform gives each instance;
they never ask what the build says it is. A build whose health endpoint reports the previous
version (or is unhealthy while its readiness probe passes) looks fine to them and would be
promoted. So each instance is asked directly, with the judgement verification uses for every
instance after a rollout (``verification.health_is``, by the environment's health contract): one
place decides what "healthy, on this release" means.

Where the platform lists the instances (the local platform's canary and green) each is asked at
its own address. Elsewhere the instances of the release in ``platform.status()`` stand in; when
their addresses do not answer from here (pods outside the cluster), the platform's readiness and
the release it reports (the image) are recorded instead, and the evidence says that the
instance itself was not asked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from releasegate.config import VerifySettings
from releasegate.evidence import Checker, Evidence, GateFailure
from releasegate.platforms.base import Instance, Platform
from releasegate.probes.http import Http
from releasegate.verification import health_is


def instances_of(platform: Platform, release: str, listing: str) -> list[Instance]:
    """The running instances of ``release``: the platform's own list (``listing``, e.g.
    ``canary_instances``) when it has one, else those of the release in its status."""
    listed: Callable[[], list[Instance]] | None = getattr(platform, listing, None)
    if listed is not None:
        return list(listed())
    return [i for i in platform.status().instances if i.release == release]


def ask_health(
    instances: list[Instance],
    release: str,
    verify: VerifySettings,
    *,
    role: str,
    reachable: bool = True,
    when: str = "",
) -> dict[str, Any]:
    """Every instance asked for its health and version.

    Returns ``{"instances": n, "healthy": bool, "problem": str, "evidence": [Evidence dicts]}``,
    JSON-able so that ``Run.once`` can share it; the gate records the evidence (``replay``). No
    instance at all is not healthy (``instances`` 0 lets the caller ask again once there are some).
    """
    checker = Checker(lambda _e: None, phase="deploy")
    problems: list[str] = []
    path = verify.health_path
    for instance in instances:
        label = f"{role} {instance.name}{f' {when}' if when else ''}"
        try:
            if reachable and instance.url:
                http = Http(instance.url, timeout_s=verify.request_timeout_s, component=instance.name)
                health_is(checker, http, verify, release, f"{label} {path}")
            else:
                detail = (
                    "its address does not answer from here: the platform's readiness and the release "
                    f"of its image stand in for {path}"
                )
                checker.equals(f"{label} release", instance.release, release, source="platform status")
                checker.holds(f"{label} ready", instance.ready, source="platform status", detail=detail)
        except GateFailure as failed:
            problems.append(str(failed))
    if not instances:
        problems.append(f"no {role} instance of {release} runs")
    return {
        "instances": len(instances),
        "healthy": bool(instances) and not problems,
        "problem": "; ".join(problems),
        "evidence": [e.to_dict() for e in checker.records],
    }


def replay(check: Checker, asked: dict[str, Any], role: str, release: str) -> None:
    """The answers ``ask_health`` kept, as the gate's own evidence, then its verdict."""
    for record in asked["evidence"]:
        seen = Evidence.from_dict(record)
        check.sample(
            seen.check,
            seen.value,
            seen.verdict,
            unit=seen.unit,
            comparator=seen.comparator,
            threshold=seen.threshold,
            source=seen.source,
            detail=seen.detail,
            at=seen.at,
        )
    check.holds(
        f"every {role} instance healthy on {release} ({asked['instances']} asked)",
        asked["healthy"],
        detail=asked["problem"],
        source=f"each {role} instance",
    )
