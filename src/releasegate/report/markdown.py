"""The deployment report: what an auditor reads, rendered only from the ledger.

Release and previous release, the decision, each phase's duration beside the runbook's plan,
every change made with how to undo it, every gate with its evidence, and the rollback.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from releasegate.config import Environment
from releasegate.evidence import Evidence
from releasegate.lease import describe_record as describe_lease
from releasegate.ledger import Intent, RunRecord
from releasegate.pipeline import PHASES
from releasegate.release_names import fill

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
        *([("Lease", describe_lease(record.results["lease"]))] if "lease" in record.results else []),
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
    _changes(record, env, out)
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


def _changes(record: RunRecord, env: Environment, out: Out) -> None:
    out("## Changes made (written to the ledger before each one)")
    out("")
    if not record.intents:
        out("None: nothing in the target was changed.")
        out("")
        return
    out("| # | Action | About to | Done | How to undo | Undone |")
    out("| --- | --- | --- | --- | --- | --- |")
    rollback = [e for e in record.evidence if e.phase == "rollback"]
    for number, intent in enumerate(record.intents, 1):
        about = fill(intent.about_to, record.release)
        out(
            f"| {number} | {intent.action} | {_cell(about)} | {_cell(_done(intent, record))} | "
            f"{_cell(_how_to_undo(intent))} | {_cell(_undone(intent, record, env, rollback))} |"
        )
    out("")


def _done(intent: Intent, record: RunRecord) -> str:
    """What the change did: for a migration, the versions it applied and where the schema went."""
    outcome = intent.outcome or "did not finish"
    result = record.results.get("migrate") if intent.action == "migrate" else None
    if isinstance(result, dict) and "version_before" in result:
        applied = ", ".join(str(v) for v in result.get("applied") or []) or "nothing"
        moved = f"schema {result.get('version_before') or 'none'} -> {result.get('version_after') or 'none'}"
        text = f"applied {applied} ({moved}, in {float(result.get('duration_s') or 0):.2f} s)"
        if not result.get("ok", True):
            text = f"failed: {result.get('error') or intent.detail}; {moved}"
        return text if outcome == "done" else f"{outcome}: {text}"
    return f"{outcome}: {intent.detail}" if intent.detail else outcome


def _how_to_undo(intent: Intent) -> str:
    """How the change can be undone, from what the ledger kept before it happened."""
    undo = dict(intent.undo)
    if intent.action == "migrate":
        backup = undo.get("backup")
        sha = str(undo.get("sha256") or "")[:12]
        before = undo.get("schema_version_before") or "none"
        restore = f"restore {backup} (sha256 {sha}...)" if backup else "restore from the run's backup"
        if undo.get("policy") == "down-migrations":
            return f"down-migrations back to {before}; else {restore}"
        return f"{restore}: schema back to {before}, rows as at the backup"
    return ", ".join(f"{k}: {_undo_value(v)}" for k, v in undo.items() if v is not None)


_UNDONE_BY: dict[str, tuple[str, ...]] = {
    "migrate": ("database restored", "down-migrations"),
    "deploy": (
        "application rolled back",
        "instances left running after the initial release",
        "initial release",
    ),
    "canary-weight": ("application rolled back", "instances left running after the initial release"),
    "policy": ("policy bundle active after the rollback",),
    "maintenance": ("maintenance mode",),
    "retire": (),
}
"""The rollback's checks that undo each kind of change (see releasegate.run)."""


def _undone(intent: Intent, record: RunRecord, env: Environment, rollback: list[Evidence]) -> str:
    """What was actually done to undo it: nothing (not needed), or the rollback's own checks."""
    if not any(p["phase"] == "rollback" for p in record.phases):
        return "not needed" if record.decision == "SUCCESS" else "-"
    prefixes = _UNDONE_BY.get(intent.action, ())
    done = [e for e in rollback if e.check.startswith(prefixes)] if prefixes else []
    if done:
        failed = [e for e in done if str(e.verdict) not in ("pass", "info", "recorded")]
        shown = "; ".join(f"{e.check}: {e.shown_value()}" for e in done[:2])
        return ("FAILED: " if failed else "") + shown
    if intent.action == "migrate":
        if record.decision == "ABORTED" or env.rollback.database != "never":
            return "not undone: see Rollback"
        return "kept as migrated (rollback.database = never): the previous release runs on this schema"
    return "-"


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
        skipped: dict[str, list[dict]] = {}
        for gate in gates:
            if gate["outcome"] == "skipped":
                skipped.setdefault(gate["message"] or "", []).append(gate)
        for gate in gates:
            same = skipped.get(gate["message"] or "", []) if gate["outcome"] == "skipped" else []
            if len(same) > 1:
                if gate is same[0]:
                    _skipped_together(same, out)
                continue
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


def _skipped_together(gates: list[dict], out: Out) -> None:
    """Gates skipped for one reason (everything after a failure): one line, with a count."""
    titles: dict[str, int] = {}
    for gate in gates:  # "Metrics acceptable (GA 6.3): the SLO ... [cpu]" -> "Metrics acceptable (GA 6.3)"
        short = re.sub(r" \[[^\]]*\]$", "", gate["title"]).split(": ", 1)[0].rstrip(".")
        titles[short] = titles.get(short, 0) + 1
    out("")
    out(f"- **SKIP** {len(gates)} gates: {_cell(gates[0]['message'] or 'skipped')}  ")
    out("  " + _cell("; ".join(t if n == 1 else f"{t} (x{n})" for t, n in titles.items())))


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
