"""What a platform (where a release runs) offers the gates: small on purpose.

The local platform (processes behind nginx) implements it now; Kubernetes and Helm will
implement the same four operations, so the gates and the rollback never know which it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

Progress = Callable[[str], None]
"""Receives one human line per step of a long wait ("instance 2/3 ready after 1.4 s")."""


def no_progress(_line: str) -> None:
    """A Progress that says nothing."""


@dataclass(frozen=True)
class Instance:
    """One running copy of a release, reachable directly (not through the load balancer)."""

    name: str
    release: str
    url: str
    ready: bool
    detail: str = ""


@dataclass(frozen=True)
class PlatformStatus:
    release: str | None
    previous_release: str | None
    desired: int
    instances: tuple[Instance, ...]
    in_service: tuple[str, ...] = ()
    """Names of the instances the load balancer sends traffic to."""

    @property
    def releases_serving(self) -> set[str]:
        return {i.release for i in self.instances if i.name in self.in_service}


@dataclass
class RolloutResult:
    """What a deploy or a rollback did. ``ok`` False carries the reason a person can act on."""

    ok: bool
    release: str
    previous_release: str | None
    duration_s: float
    reason: str = ""
    events: list[str] = field(default_factory=list)


class Platform(Protocol):
    def current_release(self) -> str | None:
        """The release serving now, or None when nothing is deployed."""

    def status(self) -> PlatformStatus:
        """Instances, their releases and readiness, and what the load balancer routes to."""

    def deploy(self, release: str, progress: Progress = no_progress) -> RolloutResult:
        """Roll ``release`` out with the platform's strategy, waiting until done or failed."""

    def rollback(self, to_release: str | None = None, progress: Progress = no_progress) -> RolloutResult:
        """Roll back to ``to_release`` (default: the previous release), by the same mechanism."""
