"""Staging's record of a release, read from the ledger: did it go out there, and was its rollback
drilled there?

Summit "Staging deployment successful and verified", GA 1.1 "Rollback tested in staging", Granter
6 "Rollback tested (on staging)", Release Manager "Rollback procedure tested and verified". The
runs are the ones ``pytest gates/ --env=staging`` and ``pytest rollback/ --env=staging --drill``
recorded; nothing else is taken as proof.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from releasegate.ledger import RunRecord

SUCCESS = "SUCCESS"
WENT_OUT_AND_FAILED = frozenset({"ROLLED_BACK", "ROLLBACK_FAILED"})


@dataclass(frozen=True)
class StagingVerdict:
    run: RunRecord | None
    """The run that proves it; None when none does."""
    age_days: float | None
    detail: str


def staged_release(deploys: list[RunRecord], release: str, now: datetime, environment: str) -> StagingVerdict:
    """The newest deployment of ``release`` that ended in SUCCESS, unless the release went out
    again later and had to be rolled back, or that run itself was rolled back by hand."""
    mine = sorted(
        (r for r in deploys if r.release == release and r.finished),
        key=lambda r: r.ended_at or "",
        reverse=True,
    )
    again = f"pytest gates/ --env={environment} --release={release}"
    for index, record in enumerate(mine):
        if record.decision != SUCCESS:
            continue
        failed_later = next((r for r in mine[:index] if r.decision in WENT_OUT_AND_FAILED), None)
        if failed_later is not None:
            return StagingVerdict(
                None,
                None,
                f"{release} passed in {environment} (run {record.id}) but a later run {failed_later.id} "
                f"ended {failed_later.decision}: fix it, then {again}",
            )
        if record.rolled_back_by:
            return StagingVerdict(
                None,
                None,
                f"run {record.id} of {release} in {environment} was rolled back by run {record.rolled_back_by}: {again}",
            )
        age = days_since(record.ended_at, now)
        return StagingVerdict(
            record,
            age,
            f"run {record.id} ended SUCCESS at {record.ended_at}, {age:g} days ago, by {record.operator}",
        )
    if mine:
        seen = ", ".join(f"run {r.id} {r.decision}" for r in mine[:3])
        return StagingVerdict(
            None, None, f"{release} never reached SUCCESS in {environment} ({seen}): {again}"
        )
    newest = max(deploys, key=lambda r: r.started_at, default=None)
    there = f" (newest there: {newest.release}, run {newest.id})" if newest else ""
    return StagingVerdict(None, None, f"{release} was never deployed to {environment}{there}: {again}")


def drilled_release(
    drills: list[RunRecord], deploys: list[RunRecord], release: str, now: datetime, environment: str
) -> StagingVerdict:
    """The newest rollback drill of a deployment of ``release`` decides: it must have passed."""
    of_release = {r.id for r in deploys if r.release == release}
    mine = sorted(
        (d for d in drills if d.target_run in of_release and d.finished),
        key=lambda d: d.ended_at or "",
        reverse=True,
    )
    drill = f"pytest rollback/ --env={environment} --drill"
    if not mine:
        return StagingVerdict(
            None, None, f"no rollback drill of {release} in {environment}: after deploying it there, {drill}"
        )
    newest = mine[0]
    if newest.decision != SUCCESS:
        return StagingVerdict(
            None,
            None,
            f"the last drill of {release} (run {newest.id}) ended {newest.decision}: "
            f"{newest.failure or newest.undo_detail or 'see its report'}; fix the rollback, then {drill}",
        )
    age = days_since(newest.ended_at, now)
    return StagingVerdict(
        newest,
        age,
        f"drill run {newest.id} went back to {newest.release} and forward again, ended SUCCESS at "
        f"{newest.ended_at}, {age:g} days ago",
    )


def days_since(when: str | None, now: datetime) -> float:
    """Days from a ledger time (ISO 8601, UTC) to ``now``, to two decimals."""
    if not when:
        return float("nan")
    return round((now - datetime.fromisoformat(when)).total_seconds() / 86400, 2)
