"""What the pytest-html report shows besides pass/fail: each check's evidence and the decision."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from html import escape
from pathlib import Path

import pytest

from releasegate.config import Environment
from releasegate.evidence import Evidence
from releasegate.run import Run

_VERDICT_COLOURS = {"pass": "#1a7f37", "fail": "#cf222e", "no data": "#cf222e", "inconclusive": "#9a6700"}


def add_metadata(config: pytest.Config, env: Environment, release: str | None) -> None:
    """The environment table at the top of the HTML report."""
    try:
        from pytest_metadata.plugin import metadata_key
    except ImportError:
        return
    metadata = config.stash.get(metadata_key, None)
    if metadata is None:
        return
    metadata["releasegate environment"] = f"{env.name} ({env.environment.tier})"
    metadata["service"] = env.environment.service
    if release:
        metadata["release"] = release


def evidence_table(records: list[Evidence]) -> str:
    rows = "".join(
        "<tr>"
        f"<td>{escape(r.check)}</td>"
        f"<td>{escape(r.shown_value())}</td>"
        f"<td>{escape(r.expectation())}</td>"
        f"<td style='color:{_VERDICT_COLOURS.get(str(r.verdict), '#57606a')};font-weight:bold'>{escape(str(r.verdict))}</td>"
        f"<td>{escape(r.detail)}</td>"
        f"<td><code>{escape(r.source)}</code></td>"
        f"<td>{escape(r.at)}</td>"
        "</tr>"
        for r in records
    )
    return (
        "<table class='releasegate-evidence' style='border-collapse:collapse;margin:6px 0'>"
        "<tr><th>check</th><th>value</th><th>threshold</th><th>verdict</th><th>detail</th><th>source</th>"
        f"<th>time</th></tr>{rows}</table>"
    )


def charts_html(paths: Sequence[Path]) -> str:
    """The charts as <img> tags carrying their PNG data: the HTML report stays one file that
    can be mailed or archived without the reports directory. "" without charts."""
    if not paths:
        return ""
    images = "".join(
        f"<figure style='display:inline-block;width:49%;margin:6px 0;vertical-align:top'>"
        f"<img src='data:image/png;base64,"
        f"{base64.b64encode(path.read_bytes()).decode('ascii')}' alt='{escape(path.stem.replace('-', ' '))}' "
        f"style='max-width:100%;display:block'><figcaption>{escape(path.stem.replace('-', ' '))}"
        "</figcaption></figure>"
        for path in paths
        if path.is_file()
    )
    return f"<div class='releasegate-charts'><h3>Charts</h3>{images}</div>" if images else ""


def attach_evidence(report: pytest.TestReport, records: list[Evidence]) -> None:
    try:
        from pytest_html import extras
    except ImportError:
        return
    report.extras = [*getattr(report, "extras", []), extras.html(evidence_table(records))]


def summary_html(run: Run, charts: Sequence[Path] = ()) -> str:
    """What a reader must see first: the decision, the failed gate, the rollback, the charts."""
    pipeline = run.pipeline
    decision = str(pipeline.decision)
    colour = {"SUCCESS": "#1a7f37", "ROLLED_BACK": "#9a6700"}.get(decision, "#cf222e")
    lines = [
        f"<h2 id='releasegate-decision' style='color:{colour}'>Decision: {escape(decision)} "
        f"(exit {pipeline.exit_code})</h2>",
        f"<p>Release <b>{escape(run.release)}</b> to <b>{escape(run.env.name)}</b>; previous release "
        f"<b>{escape(run.previous_release or 'none (initial release)')}</b>; run <code>{escape(run.id)}</code></p>",
    ]
    if pipeline.failure:
        lines.append(
            f"<p id='releasegate-failed-gate'>Failed gate: <code>{escape(pipeline.failure.gate)}</code> "
            f"({escape(pipeline.failure.phase)}): {escape(pipeline.failure.message)}</p>"
        )
    rollback = []
    if run.rollback_duration_s is not None:
        state = "verified" if pipeline.undo_ok else "FAILED: " + pipeline.undo_detail
        lines.append(
            f"<p id='releasegate-rollback'>Rollback {escape(state)} in {run.rollback_duration_s:.1f} s</p>"
        )
        rollback = [e for e in run.ledger.run(run.id).evidence if e.phase == "rollback"]
    lines.append(charts_html(charts))
    if rollback:  # below the charts, folded: a rollback's evidence runs to dozens of lines
        lines.append(
            f"<details><summary>Rollback evidence ({len(rollback)} checks)</summary>{evidence_table(rollback)}"
            "</details>"
        )
    return (
        "<section id='releasegate-summary' style='border:1px solid #d0d7de;padding:8px 12px;margin:8px 0'>"
        + "".join(lines)
        + "</section>"
    )


def put_first(report: Path, block: str) -> bool:
    """Insert ``block`` into pytest-html's report right under its title, above its environment
    table and results: pytest-html offers a place only below its environment table, and it
    writes the file before the run's end (the rollback under xdist, the charts) is known."""
    try:
        text = report.read_text(encoding="utf-8")
    except OSError:
        return False
    for anchor in ("</h1>", "<body>"):
        at = text.find(anchor)
        if at != -1:
            at += len(anchor)
            report.write_text(text[:at] + block + text[at:], encoding="utf-8")
            return True
    return False
