"""The deployment report: what an auditor reads, rendered only from the ledger.

Release and previous release, the decision, each phase's duration beside the runbook's plan,
every change made with how to undo it, every gate with its evidence, and the rollback.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from releasegate.config import Environment
from releasegate.evidence import Evidence
from releasegate.ledger import RunRecord
from releasegate.pipeline import PHASES

Out = Callable[[str], None]
REPORT_NAME = "deployment-report.md"
_MARK = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP"}


def write_deployment_report(
    record: RunRecord,
    env: Environment,
    directory: Path,
    charts: Sequence[Path] = (),
    notifications: Sequence[str] = (),
) -> Path:
    """Write ``deployment-report.md`` (the latest run) and keep a copy per run under runs/.

    ``charts`` (PNG files) are linked relative to each copy, so keep them where they are: a
    directory per run (e.g. ``charts/<run id>/``) keeps older reports' links working.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / REPORT_NAME
    path.write_text(
        render(record, env, charts, relative_to=directory, notifications=notifications), encoding="utf-8"
    )
    history = directory / "runs"
    history.mkdir(exist_ok=True)
    (history / f"{record.id}.md").write_text(
        render(record, env, charts, relative_to=history, notifications=notifications), encoding="utf-8"
    )
    return path


def render(
    record: RunRecord,
    env: Environment,
    charts: Sequence[Path] = (),
    *,
    relative_to: Path | None = None,
    notifications: Sequence[str] = (),
) -> str:
    """The report's Markdown; ``charts`` are linked relative to ``relative_to`` (the directory
    the report is written to), or as given without it."""
    lines: list[str] = []
    out = lines.append
    out(f"# Deployment report: {env.environment.service} {record.release} to {record.environment}")
    out("")
    out(f"**Decision: {record.decision or 'UNFINISHED'}** (exit code {_or(record.exit_code)})")
    out("")
    out("| | |")
    out("| --- | --- |")
    for label, value in (
        ("Environment", f"{record.environment} ({env.environment.tier})"),
        ("Release", record.release),
        ("Previous release", record.previous_release or "unknown"),
        ("Operator", record.operator),
        ("Run", f"`{record.id}`"),
        ("Started", record.started_at),
        ("Ended", record.ended_at or "did not end (killed?)"),
        ("Duration", _duration(record.started_at, record.ended_at)),
    ):
        out(f"| {label} | {_cell(value)} |")
    out("")
    _outcome(record, out)
    if notifications:
        out("## Notifications")
        out("")
        out("\n".join(f"- {line}" for line in notifications))
        out("")
    _phases(record, env, out)
    _charts(charts, relative_to, out)
    _changes(record, out)
    _gates(record, out)
    rollback = [e for e in record.evidence if e.phase == "rollback"]
    if rollback:
        out("## Rollback")
        out("")
        _evidence_table(rollback, out)
    return "\n".join(lines).rstrip() + "\n"


def _outcome(record: RunRecord, out: Out) -> None:
    out("## Outcome")
    out("")
    if record.decision == "SUCCESS":
        out(f"Every gate passed. {record.release} serves {record.environment}.")
    elif record.decision is None:
        out("The run did not finish: see the last phase below and run the rollback suite.")
    else:
        out(f"Failed gate: `{record.failed_gate}` in phase **{record.failed_phase}**.")
        out("")
        out(f"> {record.failure or ''}")
    rollback = next((p for p in record.phases if p["phase"] == "rollback"), None)
    if rollback:
        out("")
        verdict = (
            "verified"
            if rollback["outcome"] == "passed"
            else "FAILED: finish it by hand (see Rollback below)"
        )
        what = "Database restore" if record.decision == "ABORTED" else "Rollback"
        out(f"{what}: {verdict}, took {_duration(rollback['started_at'], rollback['ended_at'])}.")
    if any(e.check == "data written since the backup" for e in record.evidence):
        out("")
        out(
            "**Warning:** the database was restored from this run's backup; anything written after the backup "
            "was taken is lost."
        )
    out("")


def _phases(record: RunRecord, env: Environment, out: Out) -> None:
    out("## Phases")
    out("")
    out("| Phase | Outcome | Duration | Planned (runbook) |")
    out("| --- | --- | --- | --- |")
    ran = {p["phase"]: p for p in record.phases}
    for phase in [*PHASES, "rollback"]:
        planned = env.planned_minutes.get(phase) if phase in PHASES else None
        entry = ran.get(phase)
        if entry is None:
            if phase in PHASES and any(g["phase"] == phase for g in record.gates):
                out(f"| {phase} | skipped | - | {_planned(planned)} |")
            continue
        out(
            f"| {phase} | {entry['outcome'] or 'running'} | {_duration(entry['started_at'], entry['ended_at'])} "
            f"| {_planned(planned)} |"
        )
    out("")


def _charts(charts: Sequence[Path], relative_to: Path | None, out: Out) -> None:
    if not charts:
        return
    out("## Charts")
    out("")
    for chart in charts:
        link = Path(os.path.relpath(chart, relative_to)).as_posix() if relative_to else chart.as_posix()
        out(f"![{chart.stem.replace('-', ' ')}]({link.replace(' ', '%20')})")
        out("")


def _changes(record: RunRecord, out: Out) -> None:
    out("## Changes made (written to the ledger before each one)")
    out("")
    if not record.intents:
        out("None: nothing in the target was changed.")
        out("")
        return
    out("| # | Action | About to | How to undo | Outcome |")
    out("| --- | --- | --- | --- | --- |")
    for number, intent in enumerate(record.intents, 1):
        undo = ", ".join(f"{k}: {_undo_value(v)}" for k, v in intent.undo.items() if v is not None)
        outcome = intent.outcome or "did not finish"
        if intent.detail:
            outcome += f": {intent.detail}"
        out(f"| {number} | {intent.action} | {_cell(intent.about_to)} | {_cell(undo)} | {_cell(outcome)} |")
    out("")


def _undo_value(value: object) -> str:
    """A document kept for the undo (a policy bundle) is in the ledger; the table says so."""
    if isinstance(value, dict) and len(str(value)) > 120:
        return f"kept in the ledger ({len(value)} keys)"
    return str(value)


def _gates(record: RunRecord, out: Out) -> None:
    out("## Gates")
    by_gate: dict[str, list[Evidence]] = {}
    for evidence in record.evidence:
        by_gate.setdefault(evidence.gate, []).append(evidence)
    for phase in PHASES:
        gates = [g for g in record.gates if g["phase"] == phase]
        if not gates:
            continue
        out("")
        out(f"### {phase}")
        for gate in gates:
            out("")
            mark = _MARK.get(gate["outcome"], gate["outcome"].upper())
            out(f"- **{mark}** {gate['title']}  ")
            out(f"  `{gate['gate']}` ({gate['duration_s']:.2f} s)")
            if gate["message"] and gate["outcome"] != "passed":
                out(f"  - {_cell(gate['message'])}")
            evidence = by_gate.get(gate["gate"], [])
            if evidence:
                out("")
                _evidence_table(evidence, out, indent="  ")
    out("")


def _evidence_table(records: list[Evidence], out: Out, indent: str = "") -> None:
    out(f"{indent}| Check | Value | Threshold | Verdict | Source | Time |")
    out(f"{indent}| --- | --- | --- | --- | --- | --- |")
    for e in records:
        value = e.shown_value() + (f" ({e.detail})" if e.detail else "")
        out(
            f"{indent}| {_cell(e.check)} | {_cell(value)} | {_cell(e.expectation())} | {e.verdict} | "
            f"{_cell(e.source)} | {e.at[11:23]} |"
        )
    out("")


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _or(value: object) -> str:
    return "-" if value is None else str(value)


def _planned(minutes: float | None) -> str:
    return "-" if minutes is None else f"{minutes:g} min"


def _duration(start: str | None, end: str | None) -> str:
    if not start or not end:
        return "-"
    seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
