"""pytest hooks: options, phase order, the decision, exit codes.

Registered through the ``pytest11`` entry point, so ``pytest gates/ --env=production
--release=4.0.0`` is all it takes. The plugin stays out of the way of any other test run: it
only acts when the run targets the suites (gates/, smoke/, e2e/, rollback/) or names an
environment or release.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from releasegate import fixtures, hookspecs
from releasegate.analysis.thresholds import Verdict
from releasegate.config import load_environment
from releasegate.errors import ConfigError, ReleasegateError
from releasegate.evidence import Evidence, GateFailure
from releasegate.ledger import Ledger
from releasegate.pipeline import PHASES, phase_index
from releasegate.platforms.base import Progress
from releasegate.report import html as html_report
from releasegate.report.markdown import write_deployment_report
from releasegate.run import Run
from releasegate.state import ENV_KEY, EVIDENCE_KEY, RUN_KEY, phase_of

SUITES = ("gates", "smoke", "e2e", "rollback")
DEPLOYMENT_SUITE = "gates"
REPORTS_KEY = pytest.StashKey[Path]()
SPENT_KEY = pytest.StashKey[float]()
"""Seconds a gate took, its fixtures' setup included (a backup happens in setup)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("releasegate", "releasegate deployment gates")
    group.addoption(
        "--env",
        dest="rg_env",
        metavar="NAME|PATH",
        default=None,
        help="environment: a name under environments/ or a path to a TOML file (default: sandbox)",
    )
    group.addoption(
        "--release",
        dest="rg_release",
        metavar="VERSION",
        default=None,
        help="the release to deploy (required for gates/)",
    )
    group.addoption(
        "--reports",
        dest="rg_reports",
        metavar="DIR",
        default=None,
        help="where JUnit, HTML and the deployment report go (default: the environment's report.dir)",
    )


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "phase(name): the deployment phase a gate belongs to")
    if not _is_suite_run(config):
        return
    config.pluginmanager.register(fixtures, "releasegate-fixtures")
    try:
        env = load_environment(config.getoption("rg_env") or "sandbox", config.rootpath)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    if _targets(config, DEPLOYMENT_SUITE) and not config.getoption("rg_release"):
        raise pytest.UsageError(
            "--release is required to run the gates: the release to deploy, e.g. --release=2.0.0"
        )
    config.stash[ENV_KEY] = env
    reports = Path(config.getoption("rg_reports") or env.report.dir)
    if not reports.is_absolute():
        reports = Path.cwd() / reports
    reports.mkdir(parents=True, exist_ok=True)
    config.stash[REPORTS_KEY] = reports
    if not config.option.xmlpath:
        config.option.xmlpath = str(reports / "junit.xml")
    if not getattr(config.option, "htmlpath", None):
        config.option.htmlpath = str(reports / "report.html")
        config.option.self_contained_html = True


def pytest_sessionstart(session: pytest.Session) -> None:
    env = session.config.stash.get(ENV_KEY, None)
    if env is None:
        return
    html_report.add_metadata(session.config, env, session.config.getoption("rg_release"))
    progress = _progress(session.config)
    try:
        session.config.hook.pytest_releasegate_prepare(config=session.config, env=env, progress=progress)
    except ReleasegateError as exc:
        progress(f"could not prepare {env.name}: {exc}")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    gates = []
    for item in items:
        try:
            phase = phase_of(item)
        except ValueError:
            marker = item.get_closest_marker("phase")
            raise pytest.UsageError(
                f"{item.nodeid}: unknown phase {marker.args[0]!r} (expected one of {', '.join(PHASES)})"
            ) from None
        if phase is not None:
            gates.append(item)
    if not gates:
        return
    items.sort(key=lambda i: phase_index(phase_of(i)) if phase_of(i) else len(PHASES))
    env = config.stash[ENV_KEY]
    release = config.getoption("rg_release")
    if not release:
        raise pytest.UsageError(
            "--release is required to run the gates: the release to deploy, e.g. --release=2.0.0"
        )
    ledger = Ledger(config.stash[REPORTS_KEY] / "ledger.sqlite")
    run = Run(env, release, ledger, _progress(config), meta={"argv": _argv(config)})
    config.stash[RUN_KEY] = run
    run.progress(f"run {run.id}: {release} to {env.name} ({env.environment.tier}), {len(gates)} gates")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    run = item.config.stash.get(RUN_KEY, None)
    phase = phase_of(item)
    if run is None or phase is None:
        return
    reason = run.pipeline.skip_reason(phase)
    if reason:
        pytest.skip(reason)
    run.phase_started(phase)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if call.excinfo is not None and call.excinfo.errisinstance((GateFailure, ReleasegateError)):
        report.longrepr = f"{call.excinfo.value}"
    records = item.stash.get(EVIDENCE_KEY, [])
    if report.when == "call" and records:
        item.user_properties.extend(("evidence", r.line()) for r in records)
        html_report.attach_evidence(report, records)
    run = item.config.stash.get(RUN_KEY, None)
    phase = phase_of(item)
    if run is None or phase is None:
        return
    if report.failed:
        run.pipeline.gate_failed(phase, item.nodeid, _one_line(report))
        if call.excinfo is not None and not call.excinfo.errisinstance(GateFailure):
            # A probe or action that could not even measure: no data, recorded as such.
            run.record(
                Evidence(
                    check=_title(item),
                    value=None,
                    verdict=Verdict.FAIL,
                    detail=_one_line(report),
                    gate=item.nodeid,
                    phase=str(phase),
                )
            )
    spent = item.stash.get(SPENT_KEY, 0.0) + report.duration
    item.stash[SPENT_KEY] = spent
    if report.when == "call" or (report.when == "setup" and not report.passed):
        outcome_text = "skipped" if report.skipped else report.outcome
        run.ledger.gate(run.id, item.nodeid, phase, _title(item), outcome_text, spent, _one_line(report))


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> Generator[None, None, None]:
    run = session.config.stash.get(RUN_KEY, None)
    if run is not None:
        run.undo_if_needed()
        run.finish()
        path = write_deployment_report(run.ledger.run(run.id), run.env, session.config.stash[REPORTS_KEY])
        run.report_path = path
        if session.exitstatus not in (
            pytest.ExitCode.INTERRUPTED,
            pytest.ExitCode.INTERNAL_ERROR,
            pytest.ExitCode.USAGE_ERROR,
        ):
            session.exitstatus = run.pipeline.exit_code
    yield


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    run = config.stash.get(RUN_KEY, None)
    if run is None:
        return
    pipeline = run.pipeline
    decision = pipeline.decision
    color = {"SUCCESS": {"green": True}, "ROLLED_BACK": {"yellow": True}}.get(decision, {"red": True})
    terminalreporter.write_sep(
        "=", f"releasegate: {decision} (exit {pipeline.exit_code})", bold=True, **color
    )
    tw = terminalreporter
    tw.write_line(
        f"release {run.release} to {run.env.name}; previous release {run.previous_release or 'unknown'}"
    )
    if pipeline.failure:
        tw.write_line(f"failed gate: {pipeline.failure.gate} ({pipeline.failure.phase})")
        tw.write_line(f"  {pipeline.failure.message}")
    if run.rollback_duration_s is not None:
        state = "verified" if pipeline.undo_ok else "FAILED"
        tw.write_line(f"rollback {state} in {run.rollback_duration_s:.1f} s")
        if pipeline.undo_ok is False:
            tw.write_line(f"  left to do by hand: {pipeline.undo_detail}", red=True, bold=True)
    reports = config.stash[REPORTS_KEY]
    tw.write_line(f"deployment report: {_shown(run.report_path or reports)}")
    tw.write_line(f"ledger: {_shown(run.ledger.path)} (run {run.id})")


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_summary(
    prefix: list[str], summary: list[str], postfix: list[str], session: pytest.Session
) -> None:
    run = session.config.stash.get(RUN_KEY, None)
    if run is not None:
        html_report.summary(prefix, run)


@pytest.hookimpl(optionalhook=True)
def pytest_html_report_title(report: Any) -> None:
    report.title = "releasegate gates"


def _is_suite_run(config: pytest.Config) -> bool:
    if any(config.getoption(o) for o in ("rg_env", "rg_release", "rg_reports")):
        return True
    return any(_targets(config, suite) for suite in SUITES)


def _targets(config: pytest.Config, suite: str) -> bool:
    """Whether the command line points into ``suite`` (``gates/``, ``gates/test_x.py::test``)."""
    root = (config.rootpath / suite).resolve()
    for arg in config.args:
        path = Path(arg.split("::", 1)[0])
        path = (config.invocation_params.dir / path).resolve()
        if path == root or root in path.parents:
            return True
    return False


def _progress(config: pytest.Config) -> Progress:
    """Lines that reach the terminal even while pytest captures output: long waits show."""
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")

    def emit(line: str) -> None:
        if terminal is None:
            return
        if capture is not None:
            with capture.global_and_fixture_disabled():
                terminal.ensure_newline()
                terminal.write_line(f"  releasegate | {line}", cyan=True)
        else:
            terminal.write_line(f"  releasegate | {line}")

    return emit


def _title(item: pytest.Item) -> str:
    """A gate's title is the first line of its docstring: the runbook line it implements."""
    doc = getattr(getattr(item, "function", None), "__doc__", None)
    return doc.strip().splitlines()[0] if doc else item.name


def _one_line(report: pytest.TestReport) -> str:
    if report.passed:
        return ""
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    text = str(report.longrepr or "").strip()
    if not text:
        return ""
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line[1:].strip() for line in lines if line.startswith("E ")]
    return (errors[0] if errors else lines[-1])[:500]


def _argv(config: pytest.Config) -> list[str]:
    return list(config.invocation_params.args)


def _shown(path: Path) -> str:
    """Relative to where the command ran when inside it, else absolute."""
    path = path.resolve()
    cwd = Path.cwd().resolve()
    return str(path.relative_to(cwd)) if path.is_relative_to(cwd) else str(path)
