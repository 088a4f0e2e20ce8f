"""pytest hooks: options, phase order, the decision, exit codes.

Registered through the ``pytest11`` entry point, so ``pytest gates/ --env=production
--release=4.0.0`` is all it takes. The plugin stays out of the way of any other test run: it
only acts when the run targets the suites (gates/, smoke/, e2e/, rollback/) or names an
environment or release.

Under pytest-xdist the controller owns the run (creates it, decides, undoes, reports) and the
workers attach to it through the ledger; a gate waits until every gate of the earlier phases
has finished on whichever worker ran it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from releasegate import fixtures, hookspecs, lease_hooks, plan
from releasegate.actions.backup import drop_scratch_copies
from releasegate.actions.load import LoadGenerator
from releasegate.analysis.thresholds import Verdict
from releasegate.config import Environment, Phase, check_release, configured, load_environment
from releasegate.errors import ConfigError, ReleasegateError
from releasegate.evidence import Evidence, GateFailure
from releasegate.ledger import Ledger, open_ledger
from releasegate.notify import deployment as notify_deployment
from releasegate.notify.messages import EVENT_OF_DECISION
from releasegate.pipeline import PHASES, phase_index
from releasegate.platforms import strategy_of
from releasegate.platforms.base import Progress
from releasegate.probes.postgres import Postgres
from releasegate.report import allure as allure_report
from releasegate.report import compliance
from releasegate.report import html as html_report
from releasegate.report.markdown import REPORT_NAME, write_deployment_report
from releasegate.rollback import RollbackSession
from releasegate.run import Run
from releasegate.state import (
    ENV_KEY,
    EVIDENCE_KEY,
    ROLLBACK_KEY,
    RUN_KEY,
    WORKER_RUN_ID,
    is_controller,
    is_worker,
    phase_of,
)

SUITES = ("gates", "smoke", "e2e", "rollback")
REPORTS_KEY = pytest.StashKey[Path]()
LEDGER_KEY = pytest.StashKey[Ledger]()
GATES_KEY = pytest.StashKey[dict[Phase, list[str]]]()
ALLURE_KEY = pytest.StashKey[Path]()
CHARTS_KEY = pytest.StashKey[list[Path]]()
RESUMED_KEY = pytest.StashKey[bool]()
SPENT_KEY = pytest.StashKey[float]()
"""Seconds a gate took, its fixtures' setup included (a backup happens in setup)."""
BARRIER_TIMEOUT_S = 6 * 3600
_signal_received = ["SIGINT"]


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
        "--env-override",
        dest="rg_env_overrides",
        action="append",
        default=[],
        metavar="PATH",
        help="a TOML file merged onto the environment key by key (repeatable, in order; "
        "[override] remove = [...] takes sections out), e.g. sandbox/replicas/summit.toml",
    )
    group.addoption(
        "--release",
        dest="rg_release",
        metavar="VERSION",
        default=None,
        help="gates/: the release to deploy (required); rollback/: the release to go back to",
    )
    group.addoption(
        "--reports",
        dest="rg_reports",
        metavar="DIR",
        default=None,
        help="where JUnit, HTML and the deployment report go (default: the environment's report.dir)",
    )
    group.addoption(
        "--dry-run",
        dest="rg_dry_run",
        action="store_true",
        default=False,
        help="print the plan (phases, actions, checks, thresholds) and change nothing",
    )
    group.addoption(
        "--resume",
        dest="rg_resume",
        action="store_true",
        default=False,
        help="continue the environment's unfinished run where it stopped, when its phase allows",
    )
    group.addoption(
        "--drill",
        dest="rg_drill",
        action="store_true",
        default=False,
        help="rollback/: roll the last release back and forward again, and record the drill",
    )
    group.addoption(
        "--confirm",
        dest="rg_confirm",
        action="append",
        default=[],
        metavar="ITEM=NAME",
        help='confirm a checklist item of [readiness.checklist] by name, e.g. --confirm "war room=alice"',
    )
    lease_hooks.add_options(group)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "phase(name): the deployment phase a gate belongs to")
    config.addinivalue_line("markers", "threshold(*keys): the environment keys a gate judges against")
    config.addinivalue_line("markers", "platform(*kinds): gates that apply only to these platform kinds")
    config.addinivalue_line("markers", "strategy(*names): gates that apply only to these rollout strategies")
    config.addinivalue_line("markers", "configured(section): gates that run only when the environment has it")
    if not _is_suite_run(config):
        return
    config.pluginmanager.register(fixtures, "releasegate-fixtures")
    try:
        env = load_environment(
            config.getoption("rg_env") or "sandbox", config.rootpath, config.getoption("rg_env_overrides")
        )
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    # A deployment: gates/, or any other gate modules run with --release (not the other suites).
    deploying = _targets(config, "gates") or (
        bool(config.getoption("rg_release")) and not any(_targets(config, s) for s in SUITES if s != "gates")
    )
    if deploying and not config.getoption("rg_release"):
        raise pytest.UsageError(
            "--release is required to run the gates: the release to deploy, e.g. --release=2.0.0"
        )
    if config.getoption("rg_release"):
        try:
            check_release(config.getoption("rg_release"), env)
        except ConfigError as exc:
            raise pytest.UsageError(str(exc)) from None
    config.stash[ENV_KEY] = env
    reports = Path(config.getoption("rg_reports") or env.report.dir)
    reports = reports if reports.is_absolute() else Path.cwd() / reports
    reports.mkdir(parents=True, exist_ok=True)
    config.stash[REPORTS_KEY] = reports
    if config.getoption("rg_dry_run") and not is_worker(config):
        lease_hooks.say_dry_run(env, _progress(config))
    if config.getoption("rg_dry_run") or config.option.collectonly:
        return  # a plan or a listing: nothing runs, the last run's reports and the ledger stay as they are
    if not config.option.xmlpath:
        config.option.xmlpath = str(reports / "junit.xml")
    if not getattr(config.option, "htmlpath", None):
        config.option.htmlpath = str(reports / "report.html")
        config.option.self_contained_html = True
    results = allure_report.configure(config, reports, worker=is_worker(config))
    if results is not None:
        config.stash[ALLURE_KEY] = results
    progress = _progress(config)
    if not is_worker(config) and (deploying or _targets(config, "rollback")):
        # A live holder is named before the ledger is even opened: a hung holder may hold that.
        kind = "deploy" if deploying else "drill" if config.getoption("rg_drill") else "rollback"
        lease_hooks.refuse_while_held(config, env, reports, kind)
    ledger = _open_ledger(env, reports)
    config.stash[LEDGER_KEY] = ledger
    try:
        if is_worker(config):
            if WORKER_RUN_ID in config.workerinput:  # none outside a deployment (pytest smoke/ -n 2)
                config.stash[RUN_KEY] = Run(env, ledger, config.workerinput[WORKER_RUN_ID], progress)
                lease_hooks.attach_worker(config, config.stash[RUN_KEY], progress)
        elif deploying:
            lease_hooks.check_first(config, env, ledger, progress, "deploy", config.getoption("rg_release"))
            config.stash[RUN_KEY] = _deployment_run(config, env, ledger, progress)
            lease_hooks.take(config, config.stash[RUN_KEY], progress)
        elif _targets(config, "rollback"):
            kind = "drill" if config.getoption("rg_drill") else "rollback"
            lease_hooks.check_first(config, env, ledger, progress, kind, config.getoption("rg_release"))
            session = RollbackSession.open(
                env,
                ledger,
                progress,
                to_release=config.getoption("rg_release"),
                drill=config.getoption("rg_drill"),
                argv=_argv(config),
            )
            config.stash[RUN_KEY] = session.run
            config.stash[ROLLBACK_KEY] = session
            lease_hooks.take(config, session.run, progress)
    except ReleasegateError as exc:
        raise pytest.UsageError(str(exc)) from None
    if not is_worker(config) and RUN_KEY in config.stash:
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)


def _deployment_run(config: pytest.Config, env: Environment, ledger: Ledger, progress: Progress) -> Run:
    """A new run, or with --resume the unfinished one; refuses to start over an unfinished run."""
    release = config.getoption("rg_release")
    unfinished = _unfinished_run(env, ledger)
    if config.getoption("rg_resume"):
        if unfinished is None:
            raise ReleasegateError(f"--resume: no unfinished run in {env.name} to resume")
        if unfinished.release != release:
            raise ReleasegateError(
                f"--resume: the unfinished run {unfinished.id} deploys {unfinished.release}, not {release}"
            )
        reason = plan.resume_refusal(unfinished, env)
        if reason:
            raise ReleasegateError(
                f"cannot resume run {unfinished.id}: {reason}; undo it with pytest rollback/ --env={env.name}"
            )
        progress(
            f"resuming run {unfinished.id} ({unfinished.release}), stopped during "
            f"{plan.last_phase(unfinished) or 'preflight'}"
        )
        return Run(env, ledger, unfinished.id, progress)
    if unfinished is not None:
        phase = plan.last_phase(unfinished) or "preflight"
        # "stopped" only when it is: a live holder of the lease was refused before we got here.
        how = lease_hooks.unfinished_text(config)
        known = config.stash.get(lease_hooks.STATE_KEY, None) is not None
        stopped = f"stopped during {phase}, {how}" if known else f"last in {phase}, {how}"
        raise ReleasegateError(
            f"{env.name} has an unfinished run {unfinished.id} ({unfinished.release}, {stopped}, "
            f"pid {unfinished.pid} on {unfinished.host}): undo it with `pytest rollback/ --env={env.name}` "
            f"or continue it with `pytest gates/ --env={env.name} --release={unfinished.release} --resume`"
        )
    return Run.start(env, release, ledger, progress, meta={"argv": _argv(config)})


def _unfinished_run(env: Environment, ledger: Ledger) -> Any:
    for run_id in ledger.runs(env.name, limit=20, kind="deploy"):
        header = ledger.header(run_id)
        if not header.finished and header.rolled_back_by is None:
            return ledger.run(run_id)
    return None


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` for gates: their checks wait on networks and services, not on CPUs, so four
    workers per core, up to 16 (each is one Python process of about 50 MB)."""
    if not _is_suite_run(config):
        return None
    return min(16, 4 * (os.cpu_count() or 1))


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist: every worker attaches to the controller's run."""
    run = node.config.stash.get(RUN_KEY, None)
    if run is not None:
        node.workerinput[WORKER_RUN_ID] = run.id
        held = lease_hooks.worker_input(node.config)
        if held is not None:
            node.workerinput[lease_hooks.WORKER_LEASE] = held


def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    env = config.stash.get(ENV_KEY, None)
    if env is None or is_worker(config):
        return
    html_report.add_metadata(config, env, config.getoption("rg_release"))
    finisher = _Finisher(config)
    config.pluginmanager.register(finisher, "releasegate-finisher")
    run = config.stash.get(RUN_KEY, None)
    if run is not None and is_controller(config):
        finisher.worker_lines = _WorkerLines(config, run)
    if config.getoption("rg_dry_run") or config.option.collectonly:
        return
    progress = _progress(config)
    try:
        config.hook.pytest_releasegate_prepare(config=config, env=env, progress=progress)
    except ReleasegateError as exc:
        progress(f"could not prepare {env.name}: {exc}")
    if run is not None:
        lease_hooks.take_pending(config, run, progress)
    if run is not None and run.kind == "deploy":
        finisher.notify("start", run, progress)
        run.announce = lambda event: finisher.notify(event, run, progress)
    if (
        env.metrics is not None
        and env.metrics.load is not None
        and config.stash.get(RUN_KEY, None) is not None
    ):
        finisher.load = _start_load(env, progress)


def _start_load(env: Environment, progress: Progress) -> LoadGenerator | None:
    """Synthetic traffic for environments that ask for it ([metrics.load], loopback only), so
    that Prometheus has requests to measure: started once for the run, stopped at its end."""
    assert env.metrics is not None and env.metrics.load is not None
    try:
        load = LoadGenerator.from_settings(env.platform.url, env.metrics.load).start()
    except ReleasegateError as exc:
        progress(f"no synthetic load: {exc}")
        return None
    settings = env.metrics.load
    progress(
        f"synthetic load: {settings.rps:g} requests/s to {env.platform.url} for at most {settings.duration_s:g} s"
    )
    return load


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    env = config.stash.get(ENV_KEY, None)
    if env is not None:
        # Gates for a platform, strategy or section this environment does not use are not part of its runbook.
        strategy = strategy_of(env)
        elsewhere = [
            i
            for i in items
            if ((m := i.get_closest_marker("platform")) and env.platform.kind not in m.args)
            or ((m := i.get_closest_marker("strategy")) and strategy not in m.args)
            or ((m := i.get_closest_marker("configured")) and not configured(env, m.args[0]))
        ]
        if elsewhere:
            config.hook.pytest_deselected(items=elsewhere)
            items[:] = [i for i in items if i not in elsewhere]
    gates: dict[Phase, list[str]] = {}
    for item in items:
        try:
            phase = phase_of(item)
        except ValueError:
            marker = item.get_closest_marker("phase")
            raise pytest.UsageError(
                f"{item.nodeid}: unknown phase {marker.args[0]!r} (expected one of {', '.join(PHASES)})"
            ) from None
        if phase is not None:
            gates.setdefault(phase, []).append(item.nodeid)
    if not gates:
        return
    items.sort(key=lambda i: phase_index(phase_of(i)) if phase_of(i) else len(PHASES))
    config.stash[GATES_KEY] = gates
    if config.getoption("rg_dry_run"):
        env = config.stash[ENV_KEY]
        terminal = config.pluginmanager.get_plugin("terminalreporter")
        lines = plan.render(
            env,
            config.getoption("rg_release"),
            [i for i in items if phase_of(i)],
            show_gates=config.option.verbose > 0,
        )
        if terminal is not None:
            terminal.ensure_newline()
            for line in lines:
                terminal.write_line(line)
        config.hook.pytest_deselected(items=list(items))
        items[:] = []
        return
    run = config.stash.get(RUN_KEY, None)
    if run is not None and not is_worker(config):
        env = config.stash[ENV_KEY]
        run.progress(
            f"run {run.id}: {run.release} to {env.name} ({env.environment.tier}), "
            f"{sum(len(g) for g in gates.values())} gates"
        )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    run = item.config.stash.get(RUN_KEY, None)
    phase = phase_of(item)
    if run is None or phase is None:
        return
    if is_worker(item.config):
        _wait_for_earlier_phases(item, run, phase)
    reason = run.refresh().skip_reason(phase)
    if reason:
        pytest.skip(reason)
    if run.ledger.gate_outcomes(run.id).get(item.nodeid) == "passed":
        item.stash[RESUMED_KEY] = True  # its ledger entry stays "passed"
        pytest.skip(f"passed before the interruption (run {run.id}): resumed after it")
    run.phase_started(phase)


def _wait_for_earlier_phases(item: pytest.Item, run: Run, phase: Phase) -> None:
    """xdist: a gate starts only when every gate of the earlier phases has finished somewhere."""
    gates = item.config.stash.get(GATES_KEY, {})
    earlier = {g for p in PHASES[: phase_index(phase)] for g in gates.get(p, [])}
    started = time.monotonic()
    said = started
    while True:
        outcomes = run.ledger.gate_outcomes(run.id)
        if earlier <= outcomes.keys() or run.refresh().failure is not None:
            return
        waited = time.monotonic() - started
        if waited > BARRIER_TIMEOUT_S:
            pytest.fail(
                f"waited {waited:.0f} s for {len(earlier - outcomes.keys())} earlier gates on other "
                "workers: did a worker die? see the ledger",
                pytrace=False,
            )
        if time.monotonic() - said > 30:
            said = time.monotonic()
            run.progress(f"{item.nodeid}: waiting for {len(earlier - outcomes.keys())} {phase}-earlier gates")
        time.sleep(0.1)


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
    if run is None:
        return
    phase = phase_of(item)
    if run.kind != "deploy":
        _rollback_report(run, item, report)
        return
    if phase is None:
        return
    if report.failed:
        message = _one_line(report)
        if call.excinfo is not None and not call.excinfo.errisinstance(GateFailure):
            # A probe or action that could not even measure: no data, recorded as such.
            run.record_evidence(
                Evidence(
                    check=_title(item),
                    value=None,
                    verdict=Verdict.FAIL,
                    detail=message,
                    gate=item.nodeid,
                    phase=str(phase),
                )
            )
        run.gate_failed(phase, item.nodeid, message)
    spent = item.stash.get(SPENT_KEY, 0.0) + report.duration
    item.stash[SPENT_KEY] = spent
    if item.stash.get(RESUMED_KEY, False):
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        outcome_text = "skipped" if report.skipped else report.outcome
        run.ledger.gate(run.id, item.nodeid, phase, _title(item), outcome_text, spent, _one_line(report))


def _rollback_report(run: Run, item: pytest.Item, report: pytest.TestReport) -> None:
    """In ``pytest rollback/`` any failed check means the rollback is not done: exit 12."""
    if report.failed and run.pipeline.undo_ok is not False:
        run.pipeline.undo_finished(False, f"{item.nodeid}: {_one_line(report)}")
    if report.when == "call" or (report.when == "setup" and not report.passed):
        outcome_text = "skipped" if report.skipped else report.outcome
        run.ledger.gate(
            run.id, item.nodeid, "rollback", _title(item), outcome_text, report.duration, _one_line(report)
        )


class _Finisher:
    """Registered at session start, after every plugin's configure, so that its sessionfinish
    runs after fixture teardown and after xdist's workers stopped, and before pytest-html
    writes its report with the decision in it."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.worker_lines: _WorkerLines | None = None
        self.load: LoadGenerator | None = None
        self.notifications: list[str] = []

    def notify(self, event: str, run: Run, progress: Progress, report: str = "") -> None:
        """Tell the environment's webhook (controller only: workers never get here); the outcome
        is a line of the output and of the report, whatever it is."""
        if run.env.notify is None:
            return
        try:
            serving = run.platform.current_release()
        except ReleasegateError:
            serving = None
        line = notify_deployment.tell(run.env, event, run.ledger.run(run.id), report, serving)
        if line is not None:
            progress(line)
            self.notifications.append(line)

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        """Ctrl-C or SIGTERM: the phase that was running failed; undo follows as for any failure."""
        run = self.config.stash.get(RUN_KEY, None)
        if run is not None and run.kind == "deploy":
            run.interrupted(_signal_received[0])

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        config = session.config
        if config.getoption("rg_dry_run"):
            if session.exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
                session.exitstatus = pytest.ExitCode.OK
            return
        run = config.stash.get(RUN_KEY, None)
        if run is None:
            return
        if self.worker_lines is not None:
            self.worker_lines.close()
        if self.load is not None:
            stats = self.load.stop()
            run.progress(f"synthetic load stopped: {stats.summary()}")
        if run.kind == "deploy":
            run.undo_if_needed()
            _drop_scratch_left(run)
        run.finish()
        lease_hooks.release(config, run)
        charts = _charts(run, config.stash[REPORTS_KEY])
        config.stash[CHARTS_KEY] = charts
        record = run.ledger.run(run.id)
        event = EVENT_OF_DECISION.get(record.decision or "")
        if run.kind == "deploy" and event is not None:
            self.notify(event, run, _progress(config), str(config.stash[REPORTS_KEY] / REPORT_NAME))
        run.report_path = write_deployment_report(
            run.ledger.run(run.id), run.env, config.stash[REPORTS_KEY], charts, self.notifications
        )
        logged = compliance.log_run(
            run.env, run.ledger.run(run.id), run.report_path, config.stash[REPORTS_KEY]
        )
        if logged is not None:
            _progress(config)(f"compliance log: {_shown(logged)}")
        allure_report.attach_charts(charts)
        results = config.stash.get(ALLURE_KEY, None)
        if results is not None:
            allure_report.write_categories(results)
            allure_report.write_environment(
                results,
                {
                    "environment": f"{run.env.name} ({run.env.environment.tier})",
                    "release": run.release,
                    "previous.release": run.previous_release,
                    "run": run.id,
                    "kind": run.kind,
                    "decision": str(run.pipeline.decision),
                    "commit": allure_report.commit(config.rootpath),
                },
            )
        interrupted = session.exitstatus == pytest.ExitCode.INTERRUPTED and run.pipeline.failure is not None
        if interrupted or session.exitstatus not in (
            pytest.ExitCode.INTERRUPTED,
            pytest.ExitCode.INTERNAL_ERROR,
            pytest.ExitCode.USAGE_ERROR,
        ):
            session.exitstatus = run.pipeline.exit_code

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        """report.html: the decision, the failed gate and the charts above everything else, once
        pytest-html has written it (it does so before the run's end is known under xdist)."""
        lease_hooks.release_quietly(config)
        run = config.stash.get(RUN_KEY, None)
        html = getattr(config.option, "htmlpath", None)
        if run is None or not html or config.getoption("rg_dry_run"):
            return
        html_report.put_first(Path(html), html_report.summary_html(run, config.stash.get(CHARTS_KEY, [])))


def _drop_scratch_left(run: Run) -> None:
    """The fallback: scratch copies a run left (it stopped before their use was over) are dropped
    when it ends; normally each went right after its use."""
    restored = run.ledger.result(run.id, "scratch") or {}
    names = [r["database"] for r in restored.values() if isinstance(r, dict) and "database" in r]
    if not names:
        return
    try:
        drop_scratch_copies(Postgres(run.env.database), names, run.progress)
    except ReleasegateError as exc:
        run.progress(f"scratch database(s) {', '.join(names)} not dropped: {exc}")


def _charts(run: Run, reports: Path) -> list[Path]:
    """The run's error ratio and latencies, drawn from Prometheus once the run has ended."""
    if run.env.metrics is None or run.kind != "deploy":
        return []
    from releasegate.probes.prometheus import Prometheus
    from releasegate.report import charts  # matplotlib: only when there is something to draw

    prometheus = Prometheus.from_environment(run.env)
    try:
        return charts.charts_for_run(
            prometheus,
            run.env,
            run.ledger.run(run.id),
            reports / "charts" / run.id,
            events=charts.timed_events(run.ledger, run.id),
        )
    except ReleasegateError as exc:
        run.progress(f"no charts: {exc}")
        return []
    finally:
        prometheus.close()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    run = config.stash.get(RUN_KEY, None)
    if run is None or is_worker(config):
        return
    pipeline = run.pipeline
    decision = pipeline.decision
    color = {"SUCCESS": {"green": True}, "ROLLED_BACK": {"yellow": True}}.get(decision, {"red": True})
    tw = terminalreporter
    tw.write_sep("=", f"releasegate: {decision} (exit {pipeline.exit_code})", bold=True, **color)
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
    if run.report_path:
        tw.write_line(f"deployment report: {_shown(run.report_path)}")
    tw.write_line(
        f"ledger: {run.ledger.where if run.ledger.dsn else _shown(Path(run.ledger.where))} (run {run.id})"
    )


@pytest.hookimpl(optionalhook=True)
def pytest_html_report_title(report: Any) -> None:
    report.title = "releasegate gates"


def _open_ledger(env: Environment, reports: Path) -> Ledger:
    try:
        return open_ledger(env.ledger, reports / "ledger.sqlite")
    except ReleasegateError as exc:
        raise pytest.UsageError(str(exc)) from None


def _sigterm_as_interrupt(signum: int, _frame: object) -> None:
    """SIGTERM (a CI runner cancelling the job) stops the run like Ctrl-C: cleanly, then undo."""
    _signal_received[0] = signal.Signals(signum).name
    raise KeyboardInterrupt(f"{_signal_received[0]} received")


def _is_suite_run(config: pytest.Config) -> bool:
    options = (
        "rg_env",
        "rg_env_overrides",
        "rg_release",
        "rg_reports",
        "rg_dry_run",
        "rg_resume",
        "rg_drill",
    )
    if any(config.getoption(o) for o in options):
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
    """Progress lines: into the ledger always; on the terminal even while pytest captures output
    (an xdist worker has no terminal: the controller shows its lines, see _WorkerLines)."""
    source = config.workerinput["workerid"] if is_worker(config) else "main"

    def emit(line: str) -> None:
        run = config.stash.get(RUN_KEY, None)
        if run is not None:
            run.ledger.event(run.id, source, line)
        if not is_worker(config):
            _say(config, line)

    return emit


def _say(config: pytest.Config, line: str) -> None:
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if terminal is None:  # before pytest's terminal exists (while configuring)
        sys.stderr.write(f"  releasegate | {line}\n")
        sys.stderr.flush()
        return
    if capture is not None:
        with capture.global_and_fixture_disabled():
            terminal.ensure_newline()
            terminal.write_line(f"  releasegate | {line}", cyan=True)
    else:
        terminal.write_line(f"  releasegate | {line}")
    terminal.flush()


class _WorkerLines:
    """The xdist controller's window on its workers: their progress lines, read from the ledger."""

    def __init__(self, config: pytest.Config, run: Run) -> None:
        self.config = config
        self.run = run
        self.seen = max((seq for seq, _s, _l in run.ledger.events(run.id)), default=0)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._tail, name="releasegate-worker-lines", daemon=True)
        self.thread.start()

    def _tail(self) -> None:
        while not self.stop.wait(0.5):
            self.flush()

    def flush(self) -> None:
        try:
            events = self.run.ledger.events(self.run.id, self.seen)
        except Exception:
            return
        for seq, source, line in events:
            self.seen = seq
            if source != "main":
                _say(self.config, f"[{source}] {line}")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        self.flush()


def _title(item: pytest.Item) -> str:
    """A gate's title is the first line of its docstring (the runbook line it implements), filled
    from the environment as the plan shows it."""
    return plan.title(item, item.config.stash.get(ENV_KEY, None))


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
