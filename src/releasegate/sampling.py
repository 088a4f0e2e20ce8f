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

from releasegate.analysis.canary import CanaryRule, CanaryVerdict, judge_canary
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
    Mann-Whitney test uses the per-interval samples.
    """
    samples = StepSamples({n: [] for n in rules}, {n: [] for n in rules}, {})
    started = clock.now()
    needed = max(rule.min_samples for _check, rule in rules.values())
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
        }
        verdict = judge_canary(
            {
                name: (samples.canary[name], samples.stable[name], rule)
                for name, (_check, rule) in rules.items()
            },
            totals,
        )
        if verdict.verdict is Verdict.FAIL:
            return verdict, samples
        rate = prometheus.query("request_rate", release=canary, window=so_far).value
        # rate() extrapolates to now; the requests since the last scrape are not judged yet.
        judged_s = max(0.0, elapsed_s - scrape_interval_s)
        samples.canary_requests = None if rate is None else rate * judged_s
        served = samples.canary_requests or 0
        enough_requests = served >= min_requests
        if elapsed_s >= pause_s and index >= needed and verdict.verdict is Verdict.PASS and enough_requests:
            return verdict, samples
        if elapsed_s >= give_up:
            if verdict.verdict is Verdict.PASS or not enough_requests:
                note = (
                    f"not enough requests to judge: the canary served {served:.0f} of {min_requests} "
                    f"requests needed in {elapsed_s:.0f} s (the step may run {give_up:g} s)"
                )
                if verdict.verdict is not Verdict.PASS:
                    note += f"; {verdict.reason}"
                verdict = CanaryVerdict(Verdict.NO_DATA, verdict.metrics, note=note)
            return verdict, samples
        if elapsed_s >= pause_s and clock.now() >= next_word:
            missing = f"{served:.0f} of {min_requests} requests" if not enough_requests else verdict.reason
            progress(f"{label}: {missing}, waiting up to {give_up - elapsed_s:.0f} s more")
            next_word = clock.now() + max(pause_s, interval_s)
