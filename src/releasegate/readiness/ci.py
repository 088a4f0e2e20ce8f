"""The CI workflow of a release's commit: did its latest run complete with success?

Summit GA 1.1 "MVP-4 gate workflow passed" (``gh run list --workflow=mvp4-gate.yml``), Summit
"All CI checks pass". Judged on GitHub Actions' workflow runs as the REST API lists them. A run
still queued or in progress, or no run at all, is never a pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SUCCESS = "success"


@dataclass(frozen=True)
class WorkflowVerdict:
    state: str | None
    """The latest run's conclusion when it completed, else its status; None when there is no run."""
    detail: str

    @property
    def passed(self) -> bool:
        return self.state == SUCCESS


def judge_latest_run(runs: list[dict[str, Any]], workflow: str, commit: str) -> WorkflowVerdict:
    """The newest run decides (a re-run or a later push supersedes what came before)."""
    if not runs:
        return WorkflowVerdict(
            None,
            f"no run of {workflow} for commit {commit}: was the workflow triggered for it? "
            f"(gh workflow run {workflow} --ref <the release's tag>)",
        )
    latest = max(runs, key=lambda r: (str(r.get("created_at") or ""), int(r.get("id") or 0)))
    name = f"run #{latest.get('run_number', '?')}" + (
        f" attempt {latest['run_attempt']}" if int(latest.get("run_attempt") or 1) > 1 else ""
    )
    where = f" ({latest['html_url']})" if latest.get("html_url") else ""
    status = str(latest.get("status") or "unknown")
    if status != "completed":
        return WorkflowVerdict(
            status,
            f"{name} is {status.replace('_', ' ')} since {latest.get('created_at', '?')}: "
            f"wait for it to finish, then run the gates again{where}",
        )
    conclusion = str(latest.get("conclusion") or "none")
    if conclusion != SUCCESS:
        return WorkflowVerdict(
            conclusion,
            f"{name} concluded {conclusion} at {latest.get('updated_at', '?')}: "
            f"fix the release, run {workflow} again{where}",
        )
    return WorkflowVerdict(SUCCESS, f"{name} concluded success at {latest.get('updated_at', '?')}{where}")
