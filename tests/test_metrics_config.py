"""The [metrics] section: what loads, what is refused, and how PromQL templates are filled."""

from __future__ import annotations

from pathlib import Path

import pytest

from releasegate.config import MetricQueries, MetricsSettings, duration_seconds, load_environment
from releasegate.errors import ConfigError
from releasegate.probes.prometheus import fill

ROOT = Path(__file__).resolve().parents[1]
SANDBOX = (ROOT / "environments" / "sandbox.toml").read_text()


def load_with(tmp_path: Path, old: str, new: str) -> None:
    assert old in SANDBOX
    path = tmp_path / "env.toml"
    path.write_text(SANDBOX.replace(old, new, 1))
    load_environment(str(path), ROOT)


def test_the_sandbox_watches_the_runbooks_thresholds_scaled_to_seconds() -> None:
    metrics = load_environment("sandbox", ROOT).metrics
    assert metrics is not None

    assert metrics.prometheus_url == "http://127.0.0.1:28090"
    assert (metrics.scrape_interval_s, metrics.window) == (1, "10s")
    slo = metrics.slo
    assert (slo["error_ratio"].max, slo["error_ratio"].max_increase_points) == (0.001, 0.001)
    assert (slo["latency_p95"].max, slo["latency_p95"].unit, slo["latency_p95"].max_increase_ratio) == (
        200,
        "ms",
        0.25,  # the runbooks' 10 % in the example environments; the demo's own noise needs more
    )
    assert slo["latency_p99"].max == 500 and slo["db_query_p99"].max == 100
    assert slo["cpu"].max == 0.70 and slo["memory"].max == 0.70
    assert slo["cache_hit_ratio"].min == 0.85 and slo["cache_hit_ratio"].direction == "min"
    assert all(c.failure_limit == 3 for c in slo.values())
    assert metrics.canary.steps == [5, 25, 50, 100]
    assert metrics.canary.max_relative_degradation == 0.2
    assert metrics.burn_rate.windows == [("60s", "5s", 14.4), ("360s", "30s", 6.0)]
    assert metrics.load is not None and metrics.load.rps == 100
    assert metrics.check_names("observe") == list(slo)
    assert metrics.check_names("canary") == ["error_ratio", "latency_p95", "latency_p99"]


@pytest.mark.parametrize("name", ["staging.example", "production.example"])
def test_the_example_environments_carry_the_runbooks_thresholds(name: str) -> None:
    metrics = load_environment(name, ROOT).metrics
    assert metrics is not None

    assert metrics.slo["error_ratio"].max == 0.001
    assert metrics.slo["latency_p95"].max == 200
    assert metrics.slo["latency_p99"].max == 500
    assert metrics.slo["db_query_p99"].max == 100
    assert metrics.slo["cache_hit_ratio"].min == 0.85
    assert metrics.slo["db_connections"].max == 80
    assert metrics.burn_rate.windows == [("1h", "5m", 14.4), ("6h", "30m", 6.0)]
    assert metrics.load is None  # synthetic traffic only ever goes to loopback


def test_an_unknown_key_in_a_check_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"metrics\.slo\.error_ratio\.maximum: unknown key"):
        load_with(tmp_path, "max = 0.001\n", "maximum = 0.001\n")


def test_a_check_needs_exactly_one_threshold(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"metrics\.slo\.error_ratio: set exactly one of `max` or `min`"):
        load_with(tmp_path, "max = 0.001\n", "max = 0.001\nmin = 0.0\n")


def test_a_check_naming_no_query_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"metrics: slo\.error_ratio\.query: no query named 'error_rate'"):
        load_with(tmp_path, "max = 0.001\n", 'query = "error_rate"\nmax = 0.001\n')


def test_a_failure_limit_above_the_count_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="failure_limit 6 can never be reached in 5 samples"):
        load_with(tmp_path, "count = 5\nfailure_limit = 3\n", "count = 5\nfailure_limit = 6\n")


def test_a_limit_in_the_wrong_direction_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="a `min` check gets worse by decreasing"):
        load_with(tmp_path, "min = 0.85\n", "min = 0.85\nmax_increase_ratio = 0.1\n")


def test_a_misspelt_placeholder_in_a_query_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"metrics\.queries\.cpu: unknown placeholder \{relase\}"):
        load_with(
            tmp_path,
            'window = "10s"\n',
            'window = "10s"\nqueries = { cpu = \'rate(x{release="{relase}"}[1m])\' }\n',
        )


def test_canary_steps_must_climb_to_100(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="the last step must be 100"):
        load_with(tmp_path, "steps = [5, 25, 50, 100]", "steps = [5, 10, 25, 50]")
    with pytest.raises(ConfigError, match="increasing percentages"):
        load_with(tmp_path, "steps = [5, 25, 50, 100]", "steps = [10, 5, 100]")


def test_a_burn_rate_pair_needs_a_long_and_a_short_window(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="the long window 5s must be longer than the short one 60s"):
        load_with(tmp_path, '["60s", "5s", 14.4]', '["5s", "60s", 14.4]')
    with pytest.raises(ConfigError, match="not a Prometheus duration"):
        load_with(tmp_path, '["60s", "5s", 14.4]', '["an hour", "5s", 14.4]')


def test_a_baseline_from_history_names_its_days_as_durations(tmp_path: Path) -> None:
    history = '[metrics.baseline]\nsource = "history"\noffsets = ["1d", "7d"]\n\n[metrics.slo.error_ratio]'
    load_with(tmp_path, "[metrics.slo.error_ratio]", history)
    with pytest.raises(ConfigError, match="not a Prometheus duration"):
        load_with(tmp_path, "[metrics.slo.error_ratio]", history.replace('"7d"', '"a week"'))
    with pytest.raises(ConfigError, match="source"):
        load_with(tmp_path, "[metrics.slo.error_ratio]", history.replace('"history"', '"yesterday"'))


def test_defaults_need_only_the_url() -> None:
    metrics = MetricsSettings(prometheus_url="http://prometheus.internal:9090/")

    assert metrics.prometheus_url == "http://prometheus.internal:9090"
    assert metrics.canary.steps == [5, 10, 25, 50, 75, 100]
    assert [s.until_s for s in metrics.observe.schedule] == [1800, 3600, 14400]
    assert metrics.burn_rate.objective == 0.999
    assert metrics.baseline.source == "before"  # history only where Prometheus keeps it
    assert set(MetricQueries().names()) >= {
        "error_ratio", "latency_p95", "latency_p99", "db_query_p99", "cpu", "memory",
        "restarts", "db_connections", "cache_hit_ratio",
    }  # fmt: skip


def test_durations() -> None:
    assert duration_seconds("90s") == 90
    assert duration_seconds("1h30m") == 5400
    assert duration_seconds("500ms") == 0.5
    with pytest.raises(ValueError):
        duration_seconds("5 minutes")


# -- filling templates: only the exact placeholders ---------------------------------------------


def test_only_the_exact_placeholders_are_filled_and_promql_braces_stay() -> None:
    template = 'sum(rate(x{job="{service}",release="{release}",status=~"5.{2}",a="{other}"}[{window}]))'

    promql = fill(template, service="demo", release="2.0.0-bad-errors", window="30s")

    assert promql == 'sum(rate(x{job="demo",release="2.0.0-bad-errors",status=~"5.{2}",a="{other}"}[30s]))'


def test_a_value_that_would_break_out_of_its_label_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be put in a PromQL label matcher"):
        fill('x{release="{release}"}', service="demo", release='1"} or vector(1) #', window="1m")
    with pytest.raises(ValueError, match="not a Prometheus duration"):
        fill("rate(x[{window}])", service="demo", release="1.0.0", window="1m] or vector(1) [1m")


def test_every_default_query_fills_to_promql_without_placeholders() -> None:
    queries = MetricQueries()
    for name in queries.names():
        promql = fill(queries.get(name), service="demo", release="1.0.0", window="5m")
        assert "{service}" not in promql and "{release}" not in promql and "{window}" not in promql
        assert promql.count("(") == promql.count(")"), name
