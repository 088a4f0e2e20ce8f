"""Observe: the watch after release, and the error budget.

Granter "Monitoring phase": every 5 minutes for the first 30, every 10 to the hour, every 30 to
four hours (the sandbox scales minutes to seconds); Summit GA 8.2 "Monitor SLOs" and the
optimisation summary's "3 consecutive failures"; the SRE workbook's multi-window burn rates.
A failure here ROLLS BACK (exit 11).
"""

import pytest

from releasegate.analysis.burn_rate import evaluate_all, windows_from
from releasegate.analysis.counts import Counts
from releasegate.analysis.thresholds import Verdict
from releasegate.state import ENV_KEY
from releasegate.verification import series_holds

pytestmark = pytest.mark.phase("observe")


def pytest_generate_tests(metafunc):
    if "watched" in metafunc.fixturenames:
        env = metafunc.config.stash.get(ENV_KEY, None)
        metrics = env.metrics if env is not None else None
        metafunc.parametrize("watched", metrics.check_names("observe") if metrics else [])


def test_slo_holds_through_the_watch(watched, observation, env, check):
    """Monitor every N minutes: the SLO on the observe schedule, consecutive failures roll back."""
    series_holds(check, watched, observation[watched], env.metrics.slo[watched])


def test_error_budget_is_not_burning(observation, prometheus, release, env, check):
    """Error budget burn rate acceptable (GA 8.2): page when both windows of a pair burn too fast."""
    burn = env.metrics.burn_rate
    windows = windows_from(burn.windows)
    ratios = {}
    for window in sorted({w for pair in windows for w in (pair.long, pair.short)}):
        sample = prometheus.query(burn.query, release=release, window=window)
        ratios[window] = sample.value
        check.record(f"{burn.query} over {window}", sample.value, source=sample.source)
        if burn.events is not None and burn.total is not None:  # judged on the counts behind it
            failed = prometheus.query(burn.events, release=release, window=window)
            total = prometheus.query(burn.total, release=release, window=window)
            ratios[window] = Counts.of(failed.value, total.value)
            check.record(
                f"requests failed of all over {window}", str(ratios[window] or "no data"), source=total.source
            )
    verdict, results = evaluate_all(windows, ratios, burn.objective, env.metrics.confidence)
    for result in results:
        check.sample(
            f"burn rate {result.window.long}/{result.window.short}",
            result.long_burn,
            result.verdict,
            comparator="<=",
            threshold=result.window.factor,
            detail=result.detail,
        )
    check.decide(
        f"error budget (objective {burn.objective:g})",
        verdict,
        "; ".join(r.detail for r in results if r.verdict is not Verdict.PASS),
    )
