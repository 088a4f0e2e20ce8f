"""TLS certificates: how long each host's certificate is still valid, in days.

A release must not go out days before users get certificate errors. Pure: the probe
(``releasegate.probes.tls``) connects and reads; this judges.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class CertificateVerdict:
    host: str
    days_left: float | None
    """None when the certificate could not be read or does not verify."""
    ok: bool
    detail: str


def judge_certificate(
    host: str, not_after: datetime, now: datetime, min_days: float, about: str
) -> CertificateVerdict:
    """Valid for more than ``min_days`` from ``now``; ``about`` says whose certificate it is."""
    days = round((not_after - now).total_seconds() / 86400, 1)
    expires = f"expires {not_after:%Y-%m-%d %H:%M} UTC"
    if days <= min_days:
        return CertificateVerdict(
            host, days, False, f"{expires}, within {min_days:g} days: renew it; {about}"
        )
    return CertificateVerdict(host, days, True, f"{expires}; {about}")


def unreadable(host: str, problem: str) -> CertificateVerdict:
    """A certificate that could not be read or did not verify: never a pass."""
    return CertificateVerdict(host, None, False, problem)
