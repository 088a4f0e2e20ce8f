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
        f"<img src='data:image/png;base64,{base64.b64encode(path.read_bytes()).decode('ascii')}' "
        f"alt='{escape(path.stem.replace('-', ' '))}' style='max-width:100%;display:block;margin:6px 0'>"
        for path in paths
    )
    return f"<div class='releasegate-charts'><h3>Charts</h3>{images}</div>"


def attach_evidence(report: pytest.TestReport, records: list[Evidence]) -> None:
    try:
        from pytest_html import extras
    except ImportError:
        return
    report.extras = [*getattr(report, "extras", []), extras.html(evidence_table(records))]


def summary(prefix: list[str], run: Run) -> None:
    """The decision, the failed gate and the rollback, above the results table."""
    pipeline = run.pipeline
    decision = str(pipeline.decision)
    colour = {"SUCCESS": "#1a7f37", "ROLLED_BACK": "#9a6700"}.get(decision, "#cf222e")
    lines = [
        f"<h2 style='color:{colour}'>Decision: {escape(decision)} (exit {pipeline.exit_code})</h2>",
        f"<p>Release <b>{escape(run.release)}</b> to <b>{escape(run.env.name)}</b>; previous release "
        f"<b>{escape(run.previous_release or 'unknown')}</b>; run <code>{escape(run.id)}</code></p>",
    ]
    if pipeline.failure:
        lines.append(
            f"<p>Failed gate: <code>{escape(pipeline.failure.gate)}</code> ({escape(pipeline.failure.phase)}): "
            f"{escape(pipeline.failure.message)}</p>"
        )
    if run.rollback_duration_s is not None:
        state = "verified" if pipeline.undo_ok else "FAILED: " + pipeline.undo_detail
        lines.append(f"<p>Rollback {escape(state)} in {run.rollback_duration_s:.1f} s</p>")
        rollback = [e for e in run.ledger.run(run.id).evidence if e.phase == "rollback"]
        if rollback:
            lines.append(evidence_table(rollback))
    prefix.extend(lines)
