"""Allure results: a step per action and per check, with the evidence attached.

allure-pytest writes the results; this module adds what a deployment needs on top: each check
as a step whose status is its verdict, the evidence record (value, threshold, source, HTTP
exchange) as a JSON attachment, each mutation as a step carrying its intent, the environment
(``environment.properties``) and categories that sort failures into gate failed,
infrastructure error and no data. ``make report`` turns the results into one HTML file.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from releasegate.analysis.thresholds import Verdict
from releasegate.evidence import Evidence
from releasegate.redaction import redact

RESULTS_DIR = "allure-results"

# First match wins: a missing measurement before an unreachable dependency before the rest.
CATEGORIES = [
    {
        "name": "No data",
        "description": "Nothing to judge: a query or probe returned nothing. Never a pass.",
        "matchedStatuses": ["failed", "broken"],
        "messageRegex": "(?s).*(no data|inconclusive).*",
    },
    {
        "name": "Infrastructure error",
        "description": "A dependency could not be reached or did not answer in time.",
        "matchedStatuses": ["failed", "broken"],
        "messageRegex": "(?s).*(refused|not running|no answer|timed out|timeout|cannot connect|unreachable"
        "|could not connect|not found).*",
    },
    {
        "name": "Gate failed",
        "description": "A check measured something and it was outside its threshold.",
        "matchedStatuses": ["failed"],
    },
    {"name": "Broken", "description": "An unexpected error in a gate.", "matchedStatuses": ["broken"]},
]


def available() -> bool:
    try:
        import allure_commons  # noqa: F401
    except ImportError:
        return False
    return True


def configure(config: pytest.Config, reports: Path, *, worker: bool) -> Path | None:
    """Send allure-pytest's results to ``reports/allure-results`` unless --alluredir says otherwise.

    The controller (or the single process) starts from a clean directory; xdist workers add to it.
    """
    if not available() or not hasattr(config.option, "allure_report_dir"):
        return None
    if not config.option.allure_report_dir:
        config.option.allure_report_dir = str(reports / RESULTS_DIR)
        config.option.clean_alluredir = not worker
    return Path(config.option.allure_report_dir)


def _logger() -> Any | None:
    """allure-pytest's reporter when it writes results (--alluredir), else None."""
    if not available():
        return None
    from allure_commons import plugin_manager

    for plugin in plugin_manager.get_plugins():
        logger = getattr(plugin, "allure_logger", None)
        if logger is not None and hasattr(logger, "get_last_item"):
            return logger
    return None


def _in_test() -> bool:
    """Whether allure-pytest is recording a test or fixture now (not, e.g., the xdist controller
    rolling back after every worker has stopped: that rollback is in the ledger and reports)."""
    logger = _logger()
    if logger is None:
        return False
    from allure_commons.model2 import ExecutableItem

    return logger.get_last_item(ExecutableItem) is not None


def attach_charts(paths: Sequence[Path]) -> str:
    """Attach chart PNGs: to the running test or fixture when there is one; otherwise (at
    session finish, where the charts are drawn) as global attachments of the whole run, which
    Allure 3 and recent Allure 2 show on their own tab and older Allure 2 ignores.

    Returns where they went: "test", "global", or "" (no Allure results being written).
    """
    if not paths or _logger() is None:
        return ""
    import allure
    from allure_commons.types import AttachmentType

    where = "test" if _in_test() else "global"
    attach = allure.attach.file if where == "test" else allure.global_attach.file
    for path in paths:
        attach(str(path), name=f"chart: {path.stem.replace('-', ' ')}", attachment_type=AttachmentType.PNG)
    return where


def check_step(evidence: Evidence) -> None:
    """One step per measurement: its line as the title, its verdict as the status."""
    if not _in_test():
        return
    from allure_commons import plugin_manager
    from allure_commons.types import AttachmentType

    step = uuid.uuid4().hex
    plugin_manager.hook.start_step(uuid=step, title=evidence.line()[:300], params={})
    plugin_manager.hook.attach_data(
        body=json.dumps(evidence.to_dict(), indent=2),
        name=f"evidence: {evidence.check}",
        attachment_type=AttachmentType.JSON,
        extension="json",
    )
    failed = evidence.verdict in (Verdict.FAIL, Verdict.NO_DATA, Verdict.INCONCLUSIVE)
    error = AssertionError(evidence.line()) if failed else None
    plugin_manager.hook.stop_step(
        uuid=step, exc_type=type(error) if error else None, exc_val=error, exc_tb=None
    )


@contextmanager
def action_step(action: str, about_to: str, undo: dict[str, Any]) -> Iterator[None]:
    """A mutation as a step: what it is about to change and how to undo it, attached."""
    if not _in_test():
        yield
        return
    import allure
    from allure_commons.types import AttachmentType

    with allure.step(f"action {action}: {redact(about_to)}"):
        allure.attach(
            redact(json.dumps({"about_to": about_to, "undo": undo}, indent=2)),
            name=f"intent: {action}",
            attachment_type=AttachmentType.JSON,
        )
        yield


@contextmanager
def journey_step(title: str) -> Iterator[None]:
    """A user journey's step (``granter: log in``) as a step; its timing is in the evidence."""
    if not _in_test():
        yield
        return
    import allure

    with allure.step(redact(title)):
        yield


def write_environment(results: Path, values: dict[str, str | None]) -> None:
    """``environment.properties``: the table at the top of the Allure report."""
    results.mkdir(parents=True, exist_ok=True)
    lines = [f"{key}={_escape(redact(value or 'unknown'))}" for key, value in values.items()]
    (results / "environment.properties").write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_categories(results: Path) -> None:
    results.mkdir(parents=True, exist_ok=True)
    (results / "categories.json").write_text(json.dumps(CATEGORIES, indent=2), encoding="utf-8")


def commit(root: Path) -> str | None:
    """The commit under test: the CI's variable, else ``git rev-parse HEAD`` of the suite."""
    for variable in ("GITHUB_SHA", "CI_COMMIT_SHA", "GIT_COMMIT"):
        if os.environ.get(variable):
            return os.environ[variable]
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", " ").replace("=", "\\=").replace(":", "\\:")
