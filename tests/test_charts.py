"""Charts of a run: drawn from hand-made data (gaps stay gaps, thresholds, phases and marks,
deterministic PNGs), placed from a real ledger, fetched from a real Prometheus after real traffic
to two releases, and carried into the HTML, Markdown and Allure reports."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sandbox_env import running_sandbox, write_sandbox_env

from releasegate.actions.load import LoadGenerator
from releasegate.actions.migrate import apply_sql_migrations
from releasegate.config import Environment, load_environment
from releasegate.ledger import Ledger
from releasegate.platforms.local import LocalPlatform
from releasegate.probes.prometheus import Prometheus
from releasegate.report import charts
from releasegate.report.allure import attach_charts
from releasegate.report.charts import ChartData, Points
from releasegate.report.html import charts_html
from releasegate.report.markdown import render as render_markdown
from releasegate.report.markdown import write_deployment_report
from sandbox.releases import migrations_dir

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
THRESHOLDS = {"error_ratio": 0.001, "latency_p95": 200.0, "latency_p99": 500.0}


def at(second: float) -> datetime:
    return T0 + timedelta(seconds=second)


def points(values: list[float | None]) -> Points:
    return tuple((at(i), v) for i, v in enumerate(values))


def sample_data() -> ChartData:
    """60 s of a canary: stable throughout with 10 s without traffic, canary from 20 s on."""
    stable = [None if 30 <= i < 40 else 0.0 for i in range(60)]
    canary = [None if i < 20 else (0.02 if i >= 45 else 0.0005) for i in range(60)]
    latency = {
        q: {
            "stable": points([None if 30 <= i < 40 else base + (i % 5) for i in range(60)]),
            "canary": points([None if i < 20 else base * 1.5 + (i % 3) for i in range(60)]),
        }
        for q, base in (("latency_p95", 18.0), ("latency_p99", 30.0))
    }
    return ChartData(
        at(0),
        at(59),
        {"stable": "1.0.0", "canary": "2.0.0"},
        {"error_ratio": {"stable": points(stable), "canary": points(canary)}, **latency},
        "demo in sandbox",
    )


PHASES = [("deploy", at(0), at(20)), ("verify", at(20), at(46)), ("rollback", at(47), None)]
MARKS = [(at(22), "canary 10 %"), (at(30), "canary 50 %"), (at(46), "failed: test_slo"), (at(47), "rollback")]


def drawn(figure, prefix: str) -> dict[str, object]:
    """The figure's artists whose gid starts with ``prefix``, by gid."""
    return {a.get_gid(): a for a in figure.findobj(lambda a: (a.get_gid() or "").startswith(prefix))}


def texts(figure) -> list[str]:
    return [t.get_text().strip() for t in figure.findobj(lambda a: hasattr(a, "get_text"))]


# -- rendering ------------------------------------------------------------------------------------


def test_each_release_has_its_line_and_missing_data_stays_a_gap_never_zero() -> None:
    figures = charts.figures(sample_data(), thresholds=THRESHOLDS, phases=PHASES, marks=MARKS)

    lines = drawn(figures["error_ratio"], "series:")
    stable = lines["series:error_ratio:stable"].get_ydata()
    canary = lines["series:error_ratio:canary"].get_ydata()

    assert lines["series:error_ratio:stable"].get_label() == "stable 1.0.0"
    assert lines["series:error_ratio:canary"].get_label() == "canary 2.0.0"
    assert all(math.isnan(v) for v in stable[30:40]), "no traffic is a gap"
    assert list(stable[:30]) == [0.0] * 30, "no errors with traffic is a real 0"
    assert all(math.isnan(v) for v in canary[:20]), "before the canary existed: a gap"
    assert canary[45] == pytest.approx(2.0), "drawn in percent"
    latency = drawn(figures["latency"], "series:")
    assert set(latency) == {
        f"series:{q}:{role}" for q in ("latency_p95", "latency_p99") for role in ("stable", "canary")
    }
    assert all(math.isnan(v) for v in latency["series:latency_p99:stable"].get_ydata()[30:40])
    assert latency["series:latency_p95:canary"].get_label() == "canary 2.0.0 p95"


def test_the_xy_helper_turns_none_into_nan() -> None:
    times, values = charts.xy(points([1.0, None, 0.0]), scale=100)

    assert times == [at(0), at(1), at(2)]
    assert values[0] == 100 and math.isnan(values[1]) and values[2] == 0


def test_thresholds_are_drawn_and_labelled_with_their_values() -> None:
    figures = charts.figures(sample_data(), thresholds=THRESHOLDS, phases=[], marks=[])

    error = drawn(figures["error_ratio"], "threshold:")["threshold:error_ratio"]
    latency = drawn(figures["latency"], "threshold:")

    assert list(error.get_ydata()) == [pytest.approx(0.1)] * 2, "0.001 is 0.1 %"
    assert "max 0.1 %" in texts(figures["error_ratio"])
    assert list(latency["threshold:latency_p95"].get_ydata()) == [200, 200]
    assert list(latency["threshold:latency_p99"].get_ydata()) == [500, 500]
    assert {"p95 max 200 ms", "p99 max 500 ms"} <= set(texts(figures["latency"]))
    ax = figures["latency"].axes[0]
    assert ax.get_yscale() == "log", "limits 10x above the data: linear would flatten the data"
    assert ax.get_ylim()[1] > 500


def test_phases_are_shaded_and_named_and_marks_are_vertical_lines() -> None:
    figures = charts.figures(sample_data(), thresholds=THRESHOLDS, phases=PHASES, marks=MARKS)

    for figure in figures.values():
        assert set(drawn(figure, "phase:")) == {"phase:deploy", "phase:verify", "phase:rollback"}
        marks = drawn(figure, "mark:")
        assert set(marks) == {f"mark:{label}" for _, label in MARKS}
        assert {"canary 10 %", "failed: test_slo", "rollback", "deploy", "verify"} <= set(texts(figure))
        assert marks["mark:canary 10 %"].get_xdata()[0] == at(22)


def test_without_any_data_the_chart_says_so() -> None:
    data = ChartData(
        at(0), at(10), {"new": "2.0.0"}, {q: {"new": points([None] * 11)} for q in charts.QUERIES}
    )

    figures = charts.figures(data, thresholds=THRESHOLDS, phases=[], marks=[])

    assert all("no data" in texts(f) for f in figures.values())


def test_render_writes_two_pngs_of_1200_by_500_identical_for_the_same_input(tmp_path: Path) -> None:
    first = charts.render(
        sample_data(), thresholds=THRESHOLDS, phases=PHASES, marks=MARKS, out_dir=tmp_path / "a"
    )
    again = charts.render(
        sample_data(), thresholds=THRESHOLDS, phases=PHASES, marks=MARKS, out_dir=tmp_path / "b"
    )

    assert [p.name for p in first] == ["error-ratio.png", "latency.png"]
    for path, other in zip(first, again, strict=True):
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        assert struct.unpack(">II", data[16:24]) == (1200, 500)
        assert len(data) > 20_000
        assert data == other.read_bytes(), "deterministic: no timestamp, no version in the file"
        assert b"tIME" not in data and b"matplotlib" not in data


# -- phases and marks from the ledger ---------------------------------------------------------------


def failed_canary_run(ledger: Ledger) -> str:
    run_id = ledger.start_run("sandbox", "2.0.0")
    ledger.set_previous_release(run_id, "1.0.0")
    ledger.phase_started(run_id, "deploy")
    ledger.event(run_id, "main", "deploying 2.0.0")
    ledger.event(run_id, "main", "canary 2.0.0 at 10 %")
    ledger.event(run_id, "gw1", "canary 2.0.0 at 50 %")
    ledger.gate(
        run_id, "gates/test_40_deploy.py::test_canary_slo", "deploy", "canary SLO", "failed", 1.2, "p95"
    )
    ledger.record_failure(run_id, "deploy", "gates/test_40_deploy.py::test_canary_slo", "p95 above 200 ms")
    ledger.phase_finished(run_id, "deploy", "failed")
    ledger.phase_started(run_id, "rollback")
    ledger.event(run_id, "main", "rolling back sandbox to 1.0.0")
    ledger.phase_finished(run_id, "rollback", "passed")
    ledger.finish_run(run_id, "ROLLED_BACK", 11)
    return run_id


def test_phases_and_marks_come_from_the_ledger_in_order(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    run_id = failed_canary_run(ledger)
    record = ledger.run(run_id)
    events = charts.timed_events(ledger, run_id)

    phases, marks = charts.phases_and_marks(record, events)

    assert [name for name, _, _ in phases] == ["deploy", "rollback"]
    assert all(start <= end for _, start, end in phases if end is not None)
    assert [label for _, label in marks] == [
        "canary 10 %",
        "canary 50 %",
        "failed: test_canary_slo",
        "rollback",
    ]
    assert [when for when, _ in marks] == sorted(when for when, _ in marks)
    assert marks[2][0] == datetime.fromisoformat(record.gates[0]["at"]), "when the failed gate ended"
    assert all(when.tzinfo is not None for when, _ in marks)
    assert charts.releases_of(record, events) == {"stable": "1.0.0", "canary": "2.0.0"}


def test_a_rolling_deploy_has_previous_and_new_and_a_first_deploy_one_release(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    rolling = ledger.start_run("sandbox", "2.0.0")
    ledger.set_previous_release(rolling, "1.0.0")
    first = ledger.start_run("sandbox", "1.0.0")

    assert charts.releases_of(ledger.run(rolling), []) == {"previous": "1.0.0", "new": "2.0.0"}
    assert charts.releases_of(ledger.run(first), []) == {"new": "1.0.0"}
    assert charts.phases_and_marks(ledger.run(first), []) == ([], [])


def test_thresholds_are_the_slo_checks_max() -> None:
    env = load_environment("sandbox", ROOT)

    assert charts.thresholds_of(env) == THRESHOLDS


# -- the reports ---------------------------------------------------------------------------------


def test_the_html_summary_embeds_the_pngs_and_markdown_links_them_relative_to_each_copy(
    tmp_path: Path,
) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    run_id = failed_canary_run(ledger)
    record = ledger.run(run_id)
    env = load_environment("sandbox", ROOT)
    reports = tmp_path / "reports"
    paths = charts.render(
        sample_data(), thresholds=THRESHOLDS, phases=PHASES, marks=MARKS, out_dir=reports / "charts" / run_id
    )

    html = charts_html(paths)
    write_deployment_report(record, env, reports, charts=paths)
    latest = (reports / "deployment-report.md").read_text()
    history = (reports / "runs" / f"{run_id}.md").read_text()

    assert html.count("<img src='data:image/png;base64,iVBORw0KGgo") == 2
    assert "alt='error ratio'" in html and charts_html([]) == ""
    assert "## Charts" in latest
    assert f"![error ratio](charts/{run_id}/error-ratio.png)" in latest
    assert f"![latency](../charts/{run_id}/latency.png)" in history
    assert render_markdown(record, env) == render_markdown(record, env, []), "no charts: as before"
    assert "## Charts" not in render_markdown(record, env)


def test_charts_go_to_the_allure_test_inside_a_test_and_to_the_run_outside(tmp_path: Path) -> None:
    paths = charts.render(
        sample_data(), thresholds=THRESHOLDS, phases=[], marks=[], out_dir=tmp_path / "charts"
    )
    listed = ", ".join(repr(str(p)) for p in paths)
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(f"""
            from pathlib import Path
            from releasegate.report.allure import attach_charts
            CHARTS = [Path(p) for p in ({listed},)]

            def pytest_sessionfinish(session):
                Path("outside.txt").write_text(attach_charts(CHARTS))
        """)
    )
    (tmp_path / "test_inner.py").write_text(
        "from conftest import CHARTS\nfrom releasegate.report.allure import attach_charts\n\n"
        "def test_inside():\n    assert attach_charts(CHARTS) == 'test'\n"
    )
    results = tmp_path / "results"
    options = [f"--alluredir={results}", "test_inner.py"]

    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:releasegate", "-p", "no:cacheprovider", "-q", *options],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "outside.txt").read_text() == "global"
    result = json.loads(next(results.glob("*-result.json")).read_text())
    run_wide = [a for f in results.glob("*-globals.json") for a in json.loads(f.read_text())["attachments"]]
    for attachments in (result["attachments"], run_wide):
        assert sorted((a["name"], a["type"]) for a in attachments) == [
            ("chart: error ratio", "image/png"),
            ("chart: latency", "image/png"),
        ]
        assert all((results / a["source"]).read_bytes().startswith(PNG_SIGNATURE) for a in attachments)
    assert attach_charts([]) == ""


# -- fetching from a real Prometheus ----------------------------------------------------------------


@pytest.fixture(scope="module")
def env(module_sandbox_dir: Path) -> Iterator[Environment]:
    """A sandbox whose queries look 4 s back, so 8 s without traffic is a gap."""
    path = write_sandbox_env(
        module_sandbox_dir,
        **{"platform.local.min_ready_s": 0.5, "platform.local.drain_s": 0.2, "metrics.window": "4s"},
    )
    with running_sandbox(path, progress=lambda _line: None):
        yield load_environment(str(path), root=ROOT)


def traffic(env: Environment) -> LoadGenerator:
    assert env.metrics is not None and env.metrics.load is not None
    return LoadGenerator.from_settings(env.platform.url, env.metrics.load)


def served(prometheus: Prometheus, release: str) -> None:
    sample = prometheus.wait_for_data("error_ratio", release=release, timeout_s=20)
    assert sample.value is not None, f"no data for {release}"


@pytest.mark.timeout(180)
def test_fetch_series_gives_both_releases_their_points_and_a_quiet_spell_is_a_gap(
    env: Environment, tmp_path: Path
) -> None:
    assert env.platform.local is not None
    platform = LocalPlatform(env.platform.local, env.platform.url)
    prometheus = Prometheus.from_environment(env)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    run_id = ledger.start_run(env.name, "2.0.0")
    ledger.set_previous_release(run_id, "1.0.0")
    start = datetime.now(UTC)
    with traffic(env):
        served(prometheus, "1.0.0")
        time.sleep(2)
    quiet_from = datetime.now(UTC)
    time.sleep(9)
    quiet_to = datetime.now(UTC)
    ledger.phase_started(run_id, "deploy")
    with traffic(env):
        assert apply_sql_migrations(env.database.dsn, migrations_dir("2.0.0")).ok
        assert platform.deploy("2.0.0").ok
        ledger.phase_finished(run_id, "deploy", "passed")
        served(prometheus, "2.0.0")
        time.sleep(3)
    end = datetime.now(UTC)

    data = charts.fetch_series(prometheus, env, {"stable": "1.0.0", "canary": "2.0.0"}, start, end, 1)
    paths = charts.charts_for_run(
        prometheus, env, ledger.run(run_id), tmp_path / "charts", events=charts.timed_events(ledger, run_id)
    )
    prometheus.close()

    for query in charts.QUERIES:
        for role in ("stable", "canary"):
            assert any(v is not None for _, v in data.points(query, role)), (query, role)
    quiet = [
        v
        for t, v in data.points("error_ratio", "stable")
        if quiet_from + timedelta(seconds=6) <= t <= quiet_to - timedelta(seconds=0.5)
    ]
    assert len(quiet) >= 2 and quiet == [None] * len(quiet), "no traffic: a gap, not zeros"
    before = [v for t, v in data.points("latency_p95", "canary") if t < quiet_to]
    assert before and set(before) == {None}, "2.0.0 before it was deployed: a gap"
    assert [p.name for p in paths] == ["error-ratio.png", "latency.png"]
    assert all(p.read_bytes().startswith(PNG_SIGNATURE) for p in paths)
