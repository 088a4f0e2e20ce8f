"""SLO checks sampled over time against Prometheus: the loop the SLO and observe gates share.

``sample_check`` asks one check's query every ``interval_s`` until ``analysis.slo`` has a
verdict (``count`` samples, or ``failure_limit`` failures in a row, whichever comes first);
``watch`` samples several checks on the observe schedule and stops at the first that fails.
Each sample is handed to ``on_sample`` as it is taken, so the gate records it as evidence
before the verdict, and a run killed half way still leaves every sample behind. A Prometheus
that cannot be reached raises ProbeError (after the probe's retries): never a pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from releasegate.analysis.slo import SampleVerdict, SeriesVerdict, SloRule, SloSeries
from releasegate.analysis.thresholds import Verdict
from releasegate.config import SloCheck
from releasegate.probes.prometheus import Prometheus, Sample

OnSample = Callable[[str, Sample, SampleVerdict], None]
"""Called with (check name, what Prometheus answered, how that sample was judged)."""


def _ignore(_name: str, _sample: Sample, _verdict: SampleVerdict) -> None:
    """An OnSample that records nothing."""


@dataclass(frozen=True)
class Clock:
    """Time, injectable so that tests need not wait."""

    now: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def sleep_until(self, when: float) -> None:
        delay = when - self.now()
        if delay > 0:
            self.sleep(delay)


def sample_check(
    prometheus: Prometheus,
    name: str,
    check: SloCheck,
    *,
    release: str,
    baseline: float | None = None,
    rule: SloRule | None = None,
    on_sample: OnSample = _ignore,
    clock: Clock = Clock(),
) -> SeriesVerdict:
    """Sample ``check`` for ``release`` until decided: at most ``count`` samples, ``interval_s`` apart.

    ``baseline`` (e.g. the previous release's value, measured before the rollout) turns on the
    check's relative limit; ``rule`` overrides the check's counts (the observe schedule does).
    """
    series = SloSeries(rule or SloRule.from_check(check))
    started = clock.now()
    while not series.decided:
        sample = prometheus.query(check.query, release=release, window=check.window)
        on_sample(name, sample, series.add(sample.value, baseline, sample.at_iso))
        if not series.decided:
            clock.sleep_until(started + len(series.samples) * check.interval_s)
    return series.result()


def watch(
    prometheus: Prometheus,
    checks: Mapping[str, SloCheck],
    offsets: Sequence[float],
    *,
    release: str,
    consecutive_failures: int,
    baselines: Mapping[str, float | None] | None = None,
    on_sample: OnSample = _ignore,
    clock: Clock = Clock(),
) -> dict[str, SeriesVerdict]:
    """The watch after release: every check at each offset (seconds from now), until the end
    of the schedule or the first check that fails (the caller rolls back at once).

    Each check's series fails after ``consecutive_failures`` failed samples in a row and passes
    once it has a sample at every offset.
    """
    if not offsets:
        raise ValueError("an observe schedule needs at least one sample")
    limit = min(consecutive_failures, len(offsets))
    started = clock.now()
    series = {
        name: SloSeries(SloRule.from_check(check, count=len(offsets), failure_limit=limit))
        for name, check in checks.items()
    }
    for offset in offsets:
        clock.sleep_until(started + offset)
        for name, check in checks.items():
            sample = prometheus.query(check.query, release=release, window=check.window)
            baseline = (baselines or {}).get(name)
            on_sample(name, sample, series[name].add(sample.value, baseline, sample.at_iso))
        if any(s.result().verdict is Verdict.FAIL for s in series.values()):
            break
    return {name: s.result() for name, s in series.items()}


def sample_together(
    prometheus: Prometheus,
    checks: Mapping[str, SloCheck],
    *,
    release: str,
    baselines: Mapping[str, float | None] | None = None,
    on_sample: OnSample = _ignore,
    clock: Clock = Clock(),
) -> dict[str, SeriesVerdict]:
    """Every check sampled on its own interval at the same time, until each is decided or one
    fails: the verify phase's SLOs take as long as the slowest check, not the sum of them.

    A check still undecided when another failed keeps verdict None, with the reason.
    """
    series = {name: SloSeries(SloRule.from_check(check)) for name, check in checks.items()}
    started = clock.now()
    due = dict.fromkeys(checks, started)
    failed: str | None = None
    while failed is None and (waiting := [n for n, s in series.items() if not s.decided]):
        name = min(waiting, key=lambda n: due[n])
        clock.sleep_until(due[name])
        check = checks[name]
        sample = prometheus.query(check.query, release=release, window=check.window)
        on_sample(name, sample, series[name].add(sample.value, (baselines or {}).get(name), sample.at_iso))
        due[name] += check.interval_s
        if series[name].result().verdict is Verdict.FAIL:
            failed = name
    results = {}
    for name, s in series.items():
        result = s.result()
        if not result.decided and failed is not None:
            result = SeriesVerdict(
                None, result.samples, f"not decided: sampling stopped when {failed} failed"
            )
        results[name] = result
    return results
