"""The demo service's releases: what each build does, like the images in a registry.

The migrations each release introduces live in the directory of the same name next to this
module, ``releases/<release>/migrations/NNNN_name.sql``, beside what else each build ships: its
readiness ``artifacts``, its ``provenance.intoto.json`` and Summit's policy bundle
(``policy/bundle.json``, see sandbox.policy). The faulty 2.0.0 builds that read 2.0.0's schema
(bad-errors, bad-latency, slow-leak, errors-5x, slow-endpoint, ...) bring 2.0.0's migration: their ``migrations``
directory is a link to 2.0.0's, so the SQL exists once; so is their ``policy``, but for
2.0.0-bad-policy, whose only fault is its bundle.

Every release, good or faulty, also fails a share of its API requests at random when the sandbox
has a background error rate (``python -m sandbox up --background-error-rate R``, 0 by default; see
sandbox.service). ``2.0.0-errors-5x`` and ``2.0.0-slow-endpoint`` are the faults a judgement must
tell from that noise: five times the background error rate, and one endpoint's p95 half as long
again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MIGRATIONS_ROOT = Path(__file__).resolve().parent / "releases"
BASELINE = "1.0.0"
"""The release a fresh sandbox starts with."""


@dataclass(frozen=True)
class Release:
    name: str
    schema: str
    """The newest migration this build reads: /health says "behind" below it."""
    customer_tier: bool = False
    """Its API returns each customer's tier (the column 0002_customer_tier adds)."""
    fault: str | None = None
    """None, "bad-health" (/health answers 503), "crashloop" (exits 1 s after it serves),
    "bad-errors" (2 % of API requests answer 500), "bad-latency" (every answer takes twice
    as long), "slow-leak" (keeps 4 MiB more memory every second), "bad-extraction" (the
    Granter's extraction has no fallback), "errors-5x" (its API fails five times as often as the
    background error rate, 0.5 % without one) or "slow-endpoint" (GET /api/customers, the list,
    takes 1.5 times as long, the other routes as 2.0.0). See sandbox.service and sandbox.granter."""
    description: str = ""


RELEASES: dict[str, Release] = {
    r.name: r
    for r in (
        Release("1.0.0", "0001", description="the stable release a fresh sandbox runs"),
        Release("2.0.0", "0002", customer_tier=True, description="customer tiers (migration 0002)"),
        Release(
            "2.0.0-bad-migration",
            "0002",
            customer_tier=True,
            description="2.0.0 whose migrations fail half way (never gets deployed)",
        ),
        Release(
            "2.0.0-bad-health",
            "0001",
            fault="bad-health",
            description="/health/live passes, /health is 503: the gates must catch it",
        ),
        Release(
            "2.0.0-crashloop",
            "0001",
            fault="crashloop",
            description="exits with code 1 a second after it starts serving",
        ),
        Release(
            "2.0.0-bad-errors",
            "0002",
            customer_tier=True,
            fault="bad-errors",
            description="2.0.0 whose API answers 500 to 2 % of requests: the SLO gates must catch it",
        ),
        Release(
            "2.0.0-bad-latency",
            "0002",
            customer_tier=True,
            fault="bad-latency",
            description="2.0.0 that answers twice as slowly, still under 200 ms: only a comparison catches it",
        ),
        Release(
            "2.0.0-bad-extraction",
            "0002",
            customer_tier=True,
            fault="bad-extraction",
            description="2.0.0 whose Granter extraction lost its fallback: only the smoke journey catches it",
        ),
        Release(
            "2.0.0-bad-policy",
            "0002",
            customer_tier=True,
            description="2.0.0 whose Summit policy bundle reads dominance as equality (a TS user is denied an S "
            "entity): the Summit journeys must catch it",
        ),
        Release(
            "2.0.0-slow-leak",
            "0002",
            customer_tier=True,
            fault="slow-leak",
            description="2.0.0 whose memory grows 4 MiB a second: the watch after release must catch it",
        ),
        Release(
            "2.0.0-errors-5x",
            "0002",
            customer_tier=True,
            fault="errors-5x",
            description="2.0.0 whose API fails five times as often as the background error rate (0.5 % "
            "without one): a canary must tell it from the noise every release has",
        ),
        Release(
            "2.0.0-slow-endpoint",
            "0002",
            customer_tier=True,
            fault="slow-endpoint",
            description="2.0.0 whose GET /api/customers (the list) takes 1.5 times as long (its p95 up by "
            "half), every other route unchanged: only a per-route comparison catches it",
        ),
    )
}


def migrations_dir(release: str) -> Path:
    """Where ``release``'s migrations are (it may bring none)."""
    return MIGRATIONS_ROOT / release / "migrations"


def policy_bundle(release: str) -> Path:
    """The Summit policy bundle ``release`` ships (sandbox.policy reads it)."""
    return MIGRATIONS_ROOT / release / "policy" / "bundle.json"
