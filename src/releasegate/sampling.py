"""SLO checks sampled over time against Prometheus: the loop the SLO and observe gates share.

``sample_check`` asks one check's query every ``interval_s`` until ``analysis.slo`` has a
verdict (``count`` samples, or ``failure_limit`` failures in a row, whichever comes first);
``watch`` samples several checks on the observe schedule and stops at the first that fails.
Each sample is handed to ``on_sample`` as it is taken, so the gate records it as evidence
before the verdict, and a run killed half way still leaves every sample behind. A Prometheus
that cannot be reached raises ProbeError (after the probe's retries): never a pass.

A check judged on counts (``SloCheck.counted``) is measured over everything since its series
began (its window and the time since), so no request is judged twice; ``measure`` asks its
events and total, or its histogram, and hands the counts to the judgement with the number.

With a ``History`` (``[metrics.baseline] source = "history"``), a check with a relative limit
is compared at every sample with the previous release over the same window at the same time
of previous days (``measure_history``): counted checks count by count and route by route, the
others against the median of those days' values.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from releasegate.analysis.canary import (
    CanaryRule,
    CanaryVerdict,
    Counted,
    groups_still_to_compare,
    judge_canary,
)
from releasegate.analysis.counts import Counts, per_look
from releasegate.analysis.histogram import Histogram, merged
from releasegate.analysis.slo import Against, SampleVerdict, SeriesVerdict, SloRule, SloSeries
from releasegate.analysis.thresholds import Verdict
from releasegate.config import SloCheck, duration_seconds
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


@dataclass(frozen=True)
class Measurement:
    """One check's answer for one release over one window: its number, the sample that stands
    for it in the evidence, and what a check judged on counts counted."""

    value: float | None
    sample: Sample
    counted: Counted = None


def measure(
    prometheus: Prometheus,
    check: SloCheck,
    *,
    release: str,
    window: str | None,
    at: datetime | None = None,
) -> Measurement:
    """The check's value for ``release`` over ``window`` (ending now, or ``at``): its query, or for
    a counted check its events over its total, or the quantile of its histogram, with the counts."""
    if check.events is not None and check.total is not None:
        events = prometheus.query(check.events, release=release, window=window, at=at)
        total = prometheus.query(check.total, release=release, window=window, at=at)
        counts = Counts.of(events.value, total.value)
        value = counts.ratio if counts else None
        promql = f"({events.promql}) / ({total.promql})"
        return Measurement(value, Sample(promql, total.url, value, total.at, check.query, release), counts)
    if check.histogram is not None and check.quantile is not None:
        groups, sample = prometheus.histograms(check.histogram, release=release, window=window, at=at)
        q = merged(groups).quantile(check.quantile) if groups else None
        value = None if q is None else q * check.histogram_scale
        return Measurement(
            value, Sample(sample.promql, sample.url, value, sample.at, check.query, release), groups
        )
    sample = prometheus.query(check.query, release=release, window=window, at=at)
    return Measurement(sample.value, sample)


@dataclass(frozen=True)
class History:
    """The baseline of a release that has no stable release beside it: the previous release's
    own numbers at the same time of previous days (``offsets``, e.g. 1d and 7d ago)."""

    release: str
    offsets: tuple[str, ...]

    def name(self, found: Sequence[str]) -> str:
        return f"{self.release} {', '.join(found)} ago"


@dataclass(frozen=True)
class Past:
    """What ``measure_history`` found: the offsets with data, and what they add up to."""

    found: tuple[str, ...]
    value: float | None
    counted: Counted = None
    sample: Sample | None = None


def measure_history(
    prometheus: Prometheus, check: SloCheck, history: History, *, window: str | None, at: datetime
) -> Past:
    """``check`` for the previous release over ``window`` ending ``at`` minus each offset. Counts
    and histograms of the offsets with data are added (more requests, the same population);
    plain values give their median. No offset with data: value None, found ()."""
    found: list[str] = []
    values: list[float] = []
    counts: Counts | None = None
    groups: dict[str, list[Histogram]] = {}
    last: Sample | None = None
    for offset in history.offsets:
        then = at - timedelta(seconds=duration_seconds(offset))
        m = measure(prometheus, check, release=history.release, window=window, at=then)
        last = m.sample
        if m.value is None:
            continue
        found.append(offset)
        values.append(m.value)
        if isinstance(m.counted, Counts):
            counts = m.counted if counts is None else counts + m.counted
        elif isinstance(m.counted, Mapping):
            for group, histogram in m.counted.items():
                groups.setdefault(group, []).append(histogram)
    if not found:
        return Past((), None, sample=last)
    if counts is not None:
        return Past(tuple(found), counts.ratio, counts, last)
    if groups:
        added = {group: merged(dict(enumerate(hs))) for group, hs in groups.items()}
        q = merged(added).quantile(check.quantile or 0.5)
        return Past(tuple(found), None if q is None else q * check.histogram_scale, added, last)
    return Past(tuple(found), statistics.median(values), sample=last)


def window_s(prometheus: Prometheus, check: SloCheck) -> float:
    """How far back each sample of ``check`` looks: 0 for a query without ``{window}`` (a gauge)."""
    if "{window}" not in prometheus.queries.get(check.query):
        return 0.0
    return duration_seconds(check.window or prometheus.window)


def series_window(prometheus: Prometheus, check: SloCheck, elapsed_s: float) -> str | None:
    """The window a sample is asked over: the check's own, or for a counted check its window and
    everything since the series began (each request judged once, in one growing sample)."""
    if not check.counted:
        return check.window
    return f"{round(duration_seconds(check.window or prometheus.window) + elapsed_s)}s"


def rule_for(
    prometheus: Prometheus,
    check: SloCheck,
    confidence: float,
    *,
    count: int | None = None,
    failure_limit: int | None = None,
) -> SloRule:
    samples = count if count is not None else check.count
    return SloRule.from_check(
        check,
        count=count,
        failure_limit=failure_limit,
        window_s=window_s(prometheus, check),
        confidence=per_look(confidence, samples),  # every sample looks at the same growing counts
    )


def _add(
    series: SloSeries,
    prometheus: Prometheus,
    check: SloCheck,
    *,
    release: str,
    baseline: float | None,
    elapsed_s: float,
    counted_since_s: float = 0.0,
    history: History | None = None,
) -> tuple[Sample, SampleVerdict]:
    """Measure ``check`` and judge it as the next sample of ``series``: against ``baseline``, or
    with a ``history``, against the previous release over the same window on previous days."""
    window = series_window(prometheus, check, elapsed_s + counted_since_s)
    m = measure(prometheus, check, release=release, window=window)
    against = None
    if history is not None and series.rule.relative is not None:
        past = measure_history(prometheus, check, history, window=window, at=m.sample.at)
        baseline = past.value
        if check.counted:  # without data on any day: "not compared with ...", the threshold alone
            name = history.name(past.found or history.offsets)
            against = Against(past.counted, (release, name), past.value)
    verdict = series.add(
        m.value, baseline, m.sample.at_iso, counted=m.counted, elapsed_s=elapsed_s, against=against
    )
    return m.sample, verdict


def sample_check(
    prometheus: Prometheus,
    name: str,
    check: SloCheck,
    *,
    release: str,
    baseline: float | None = None,
    rule: SloRule | None = None,
    confidence: float = 0.99,
    on_sample: OnSample = _ignore,
    clock: Clock = Clock(),
) -> SeriesVerdict:
    """Sample ``check`` for ``release`` until decided: at most ``count`` samples, ``interval_s`` apart.

    ``baseline`` (e.g. the previous release's value, measured before the rollout) turns on the
    check's relative limit; ``rule`` overrides the check's counts (the observe schedule does).
    """
    series = SloSeries(rule or rule_for(prometheus, check, confidence))
    started = clock.now()
    while not series.decided:
        elapsed = clock.now() - started
        on_sample(
            name, *_add(series, prometheus, check, release=release, baseline=baseline, elapsed_s=elapsed)
        )
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
    history: History | None = None,
    confidence: float = 0.99,
    counted_since_s: float = 0.0,
    on_sample: OnSample = _ignore,
    clock: Clock = Clock(),
) -> dict[str, SeriesVerdict]:
    """The watch after release: every check at each offset (seconds from now), until the end
    of the schedule or the first check that fails (the caller rolls back at once). A relative
    limit is judged against ``baselines``, or with a ``history``, against the previous release.

    Each check's series fails after ``consecutive_failures`` failed samples in a row and passes
    once it has a sample at every offset. A check judged on counts counts everything since
    ``counted_since_s`` before the watch began (the verify phase's requests: a small excess
    needs every request there is to show).
    """
    if not offsets:
        raise ValueError("an observe schedule needs at least one sample")
    limit = min(consecutive_failures, len(offsets))
    started = clock.now()
    series = {
        name: SloSeries(rule_for(prometheus, check, confidence, count=len(offsets), failure_limit=limit))
        for name, check in checks.items()
    }
    for offset in offsets:
        clock.sleep_until(started + offset)
        for name, check in checks.items():
            baseline = (baselines or {}).get(name)
            elapsed = clock.now() - started
            measured = _add(
                series[name],
                prometheus,
                check,
                release=release,
                baseline=baseline,
                elapsed_s=elapsed,
                counted_since_s=counted_since_s,
                history=history,
            )
            on_sample(name, *measured)
        if any(s.result().verdict is Verdict.FAIL for s in series.values()):
            break
    return {name: s.result() for name, s in series.items()}


def sample_together(
    prometheus: Prometheus,
    checks: Mapping[str, SloCheck],
    *,
    release: str,
    baselines: Mapping[str, float | None] | None = None,
    history: History | None = None,
    confidence: float = 0.99,
    on_sample: OnSample = _ignore,
    clock: Clock = Clock(),
) -> dict[str, SeriesVerdict]:
    """Every check sampled on its own interval at the same time, until each is decided or one
    fails: the verify phase's SLOs take as long as the slowest check, not the sum of them.

    A check still undecided when another failed keeps verdict None, with the reason.
    """
    series = {name: SloSeries(rule_for(prometheus, check, confidence)) for name, check in checks.items()}
    started = clock.now()
    due = dict.fromkeys(checks, started)
    failed: str | None = None
    while failed is None and (waiting := [n for n, s in series.items() if not s.decided]):
        name = min(waiting, key=lambda n: due[n])
        clock.sleep_until(due[name])
        check = checks[name]
        baseline = (baselines or {}).get(name)
        elapsed = clock.now() - started
        on_sample(
            name,
            *_add(
                series[name],
                prometheus,
                check,
                release=release,
                baseline=baseline,
                elapsed_s=elapsed,
                history=history,
            ),
        )
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


@dataclass
class StepSamples:
    """What one canary step measured: per check, the canary's and the stable release's samples."""

    canary: dict[str, list[float | None]]
    stable: dict[str, list[float | None]]
    sources: dict[str, str]
    canary_requests: float | None = None
    """Requests the canary served in the step so far (request_rate over the step)."""


def sample_canary_step(
    prometheus: Prometheus,
    rules: Mapping[str, tuple[SloCheck, CanaryRule]],
    *,
    canary: str,
    stable: str,
    pause_s: float,
    interval_s: float,
    window: str | None,
    min_requests: int = 0,
    max_step_s: float | None = None,
    scrape_interval_s: float = 0.0,
    warmup_s: float = 0.0,
    label: str = "canary step",
    on_sample: Callable[[int, StepSamples], None] = lambda _i, _s: None,
    progress: Callable[[str], None] = lambda _line: None,
    clock: Clock = Clock(),
) -> tuple[CanaryVerdict, StepSamples]:
    """Canary and stable sampled over the same intervals for ``pause_s``, judged after each
    interval once they can be: a failure ends the step at once; a pass needs the whole pause,
    the minimum samples with data on both sides, and ``min_requests`` served by the canary.
    While samples or requests are missing the step runs on, up to ``max_step_s`` from its start
    (default: three pauses, or the pause and twice the minimum samples' intervals), saying so
    through ``progress`` once the pause is over and once a pause after that; then it is no data,
    never a pass: a step that passed on too few requests would catch a canary failing at the
    threshold only by luck. Requests count only up to the last scrape (``scrape_interval_s``
    ago): a request whose error Prometheus has not seen yet cannot count towards a pass.

    The absolute and relative limits use each side's total over the step so far (at 5 % of little
    traffic a 2 % error rate shows in the total long before it shows in a typical interval); the
    Mann-Whitney test uses the per-interval samples. A check judged on counts is judged on both
    sides' counts over the step after its first ``warmup_s`` (freshly started canary instances
    answer their first requests slowly), and the per-interval samples are only its evidence. A
    latency judged route by route waits, within ``max_step_s``, for each route that will have the
    requests to compare its quantile by then: a step that passed before the one slow endpoint was
    compared would pass it by luck. A route too rare for that is named as not compared.
    """
    samples = StepSamples({n: [] for n in rules}, {n: [] for n in rules}, {})
    started = clock.now()
    # Checks judged on counts need requests, not samples: only the others wait for min_samples.
    needed = max((rule.min_samples for check, rule in rules.values() if not check.counted), default=1)
    give_up = max_step_s if max_step_s is not None else max(pause_s + 2 * needed * interval_s, 3 * pause_s)
    next_word = started + pause_s
    index = 0
    while True:
        index += 1
        clock.sleep_until(started + index * interval_s)
        for name, (check, _rule) in rules.items():
            for side, release in (("canary", canary), ("stable", stable)):
                sample = prometheus.query(check.query, release=release, window=window)
                getattr(samples, side)[name].append(sample.value)
                samples.sources[f"{name} {side}"] = sample.source
        on_sample(index, samples)
        elapsed_s = clock.now() - started
        so_far = f"{max(1, round(elapsed_s))}s"
        totals = {
            name: (
                prometheus.query(check.query, release=canary, window=so_far).value,
                prometheus.query(check.query, release=stable, window=so_far).value,
            )
            for name, (check, _rule) in rules.items()
            if not check.counted
        }
        judged = elapsed_s - warmup_s
        counted: dict[str, tuple[Counted, Counted]] = {}
        for name, (check, _rule) in rules.items():
            if not check.counted:
                continue
            # increase() extrapolates a window's first and last scrape to its ends: over a window of
            # two scrapes one error counts as two. Four scrapes or more before counts are judged.
            if judged < max(1.0, 4 * scrape_interval_s):
                counted[name] = (None, None)
                continue
            window_now = f"{max(1, round(judged))}s"
            counted[name] = (
                measure(prometheus, check, release=canary, window=window_now).counted,
                measure(prometheus, check, release=stable, window=window_now).counted,
            )
        so_far_samples = {
            name: (samples.canary[name], samples.stable[name], rule) for name, (_check, rule) in rules.items()
        }
        verdict = judge_canary(so_far_samples, totals, counted)

        if verdict.verdict is Verdict.FAIL:
            return verdict, samples
        rate = prometheus.query("request_rate", release=canary, window=so_far).value
        # rate() extrapolates to now; the requests since the last scrape are not judged yet.
        # ... and those of the warm-up are not judged at all.
        judged_s = max(0.0, elapsed_s - scrape_interval_s - warmup_s)
        samples.canary_requests = None if rate is None else rate * judged_s
        served = samples.canary_requests or 0
        enough_requests = served >= min_requests
        # a route with too few requests to compare yet, that will have them before the step's
        # limit: the one slow endpoint must be compared before the step passes
        waiting = [
            f"{name} {group}"
            for name, (_check, rule) in rules.items()
            if name in counted
            for group in groups_still_to_compare(*counted[name], rule, judged, give_up - elapsed_s)
        ]
        ready = enough_requests and not waiting
        if elapsed_s >= pause_s and index >= needed and verdict.verdict is Verdict.PASS and ready:
            # the look that would pass the step: the counts judged at the last look's confidence
            return judge_canary(so_far_samples, totals, counted, final=True), samples
        if elapsed_s >= give_up:
            short = []
            if not enough_requests:
                short.append(f"the canary served {served:.0f} of {min_requests} requests needed")
            if index < needed:
                short.append(f"{index} of {needed} samples taken")
            if verdict.verdict is Verdict.PASS and not short:  # only routes short: compared as they are
                return judge_canary(so_far_samples, totals, counted, final=True), samples
            if short or verdict.verdict is Verdict.PASS:
                note = (
                    f"not enough to judge: {'; '.join(short) or 'no verdict'} in {elapsed_s:.0f} s "
                    f"(the step may run {give_up:g} s)"
                )
                if verdict.verdict is not Verdict.PASS:
                    note += f"; {verdict.reason}"
                verdict = CanaryVerdict(Verdict.NO_DATA, verdict.metrics, note=note)
            return verdict, samples
        if elapsed_s >= pause_s and clock.now() >= next_word:
            missing = (
                f"{served:.0f} of {min_requests} requests"
                if not enough_requests
                else f"waiting for {'; '.join(waiting)}"
                if waiting
                else verdict.reason
            )
            progress(f"{label}: {missing}, waiting up to {give_up - elapsed_s:.0f} s more")
            next_word = clock.now() + max(pause_s, interval_s)
