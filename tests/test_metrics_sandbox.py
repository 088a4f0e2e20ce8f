"""Prometheus in the sandbox, on real scraped data: targets follow rollouts, the faulty builds
show in the numbers the SLO gates will judge, and the probe reports what it cannot get.

One sandbox (with rollouts shortened: min_ready 0.5 s, drain 0.2 s) and one load generator
(40 requests per second through nginx) serve the whole module; the tests run in order, each
rolling out the release it looks at.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sandbox_env import running_sandbox, write_sandbox_env

from releasegate.actions.load import LoadGenerator
from releasegate.actions.migrate import apply_sql_migrations
from releasegate.analysis.thresholds import Verdict
from releasegate.config import Environment, load_environment
from releasegate.errors import ProbeError
from releasegate.platforms.local import LocalPlatform
from releasegate.probes.prometheus import Prometheus, Sample
from releasegate.sampling import sample_check
from sandbox import stack
from sandbox.releases import migrations_dir
from sandbox.stack import ROOT

pytestmark = pytest.mark.timeout(240)

WINDOW = "10s"
SETTLE_S = 11.0
"""After a rollout, a 10 s window holds only the new release's instances at full traffic."""


@pytest.fixture(scope="module")
def env_file(module_sandbox_dir: Path) -> Iterator[Path]:
    path = write_sandbox_env(
        module_sandbox_dir,
        **{"platform.local.min_ready_s": 0.5, "platform.local.drain_s": 0.2},
    )
    with running_sandbox(path, progress=lambda _line: None):
        yield path


@pytest.fixture(scope="module")
def env(env_file: Path) -> Environment:
    return load_environment(str(env_file), root=ROOT)


@pytest.fixture(scope="module")
def platform(env: Environment) -> LocalPlatform:
    assert env.platform.local is not None
    return LocalPlatform(env.platform.local, env.platform.url)


@pytest.fixture(scope="module")
def prometheus(env: Environment) -> Iterator[Prometheus]:
    probe = Prometheus.from_environment(env)
    yield probe
    probe.close()


@pytest.fixture(scope="module")
def load(env: Environment) -> Iterator[LoadGenerator]:
    assert env.metrics is not None and env.metrics.load is not None
    with LoadGenerator.from_settings(env.platform.url, env.metrics.load) as generator:
        yield generator


def roll_out(env: Environment, platform: LocalPlatform, release: str) -> float:
    """Migrate and deploy ``release``; the monotonic time the rollout completed."""
    assert apply_sql_migrations(env.database.dsn, migrations_dir(release)).ok
    result = platform.deploy(release)
    assert result.ok, result.reason
    return time.monotonic()


def settled(prometheus: Prometheus, release: str, since: float) -> None:
    """Wait until every instance of ``release`` is scraped and a full window has passed."""
    assert (
        prometheus.wait_for_data("targets_up", release=release, timeout_s=15, until=lambda n: n >= 3).value
        == 3
    )
    time.sleep(max(0.0, since + SETTLE_S - time.monotonic()))


def poll(measure: Callable[[], Sample], done: Callable[[Sample], bool], timeout_s: float = 15) -> Sample:
    deadline = time.monotonic() + timeout_s
    while not done(sample := measure()) and time.monotonic() < deadline:
        time.sleep(0.25)
    return sample


def value(prometheus: Prometheus, name: str, release: str) -> float:
    sample = prometheus.query(name, release=release, window=WINDOW)
    assert sample.value is not None, f"no data for {sample.promql}"
    return sample.value


def test_prometheus_scrapes_every_instance_with_its_release_and_instance_labels(
    env: Environment, platform: LocalPlatform, prometheus: Prometheus
) -> None:
    assert prometheus.ready()
    names = {i.name for i in platform.status().instances}
    deadline = time.monotonic() + 10
    while True:
        up = prometheus.vector('up{job="demo"} == 1')
        if len(up) == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)

    assert {s.labels["instance"] for s in up} == names
    assert {s.labels["release"] for s in up} == {"1.0.0"}
    assert all(s.value == 1 for s in up)
    assert stack.status(env).up
    assert "prometheus" in [c.name for c in stack.status(env).components]


def test_a_rollout_rewrites_the_targets_file_and_prometheus_follows_it(
    env: Environment, platform: LocalPlatform, prometheus: Prometheus, load: LoadGenerator
) -> None:
    done = roll_out(env, platform, "2.0.0")

    assert env.platform.local is not None and env.platform.local.targets_file
    groups = json.loads(Path(env.platform.local.targets_file).read_text())
    instances = {i.name: i.url.removeprefix("http://") for i in platform.status().instances}
    assert {g["labels"]["instance"]: g["targets"][0] for g in groups} == instances
    assert {g["labels"]["release"] for g in groups} == {"2.0.0"}

    seen = prometheus.wait_for_data("targets_up", release="2.0.0", timeout_s=15, until=lambda n: n >= 3)
    assert seen.value == 3, (
        f"Prometheus scrapes {seen.value} instance(s) of 2.0.0 {time.monotonic() - done:.1f} s on"
    )
    traffic = prometheus.wait_for_data("request_rate", release="2.0.0", timeout_s=10, window=WINDOW)
    assert traffic.value is not None and traffic.value > 0
    gone = poll(lambda: prometheus.query("targets_up", release="1.0.0"), lambda sample: sample.value is None)
    assert gone.value is None, "1.0.0's targets are gone: no data, not 0"


def test_bad_latency_answers_about_twice_as_slowly_as_2_0_0_and_under_200_ms(
    env: Environment, platform: LocalPlatform, prometheus: Prometheus, load: LoadGenerator
) -> None:
    done = roll_out(env, platform, "2.0.0")  # already serving after the test above: nothing to do
    settled(prometheus, "2.0.0", done)
    good = value(prometheus, "latency_p95", "2.0.0")

    done = roll_out(env, platform, "2.0.0-bad-latency")
    settled(prometheus, "2.0.0-bad-latency", done)
    bad = value(prometheus, "latency_p95", "2.0.0-bad-latency")

    assert 10 < good < 60, "2.0.0's p95 is its simulated downstream call, about 16 ms, and overhead"
    # Twice as long, and more on a busy machine: the extra wait ends late too (2.5 times seen).
    assert 1.6 <= bad / good <= 4, f"p95 {bad:.1f} ms against 2.0.0's {good:.1f} ms"
    assert bad < 200, "under the absolute threshold: only a comparison with 2.0.0 catches it"
    assert value(prometheus, "error_ratio", "2.0.0-bad-latency") == 0


def test_bad_errors_shows_an_error_ratio_of_about_2_percent_under_load(
    env: Environment, platform: LocalPlatform, prometheus: Prometheus, load: LoadGenerator
) -> None:
    before = load.stats
    done = roll_out(env, platform, "2.0.0-bad-errors")
    settled(prometheus, "2.0.0-bad-errors", done)

    ratio = value(prometheus, "error_ratio", "2.0.0-bad-errors")
    seen = load.stats

    assert 0.012 <= ratio <= 0.03, f"error ratio {ratio:.4f}"
    assert env.metrics is not None
    check = env.metrics.slo["error_ratio"]
    recorded: list[str] = []
    verdict = sample_check(
        prometheus,
        "error_ratio",
        check,
        release="2.0.0-bad-errors",
        on_sample=lambda _name, sample, judged: recorded.append(f"{sample.value:.3f} {judged.verdict}"),
    )
    assert verdict.verdict is Verdict.FAIL, verdict.reason  # the SLO gate's loop catches it
    # Judged on its counts: the first sample's hundreds of requests already show it
    assert verdict.reason.startswith("sample 1: the counts show it: "), verdict.reason
    assert "% confidence at least" in verdict.reason
    assert len(recorded) == 1 and recorded[0].endswith(" fail")
    assert seen.server_errors > before.server_errors
    assert value(prometheus, "latency_p95", "2.0.0-bad-errors") < 200
    assert value(prometheus, "memory_growth", "2.0.0-bad-errors") < 1 << 20, "no leak in this build"


def test_range_queries_give_one_sample_per_step_and_none_where_there_was_nothing(
    platform: LocalPlatform, prometheus: Prometheus, load: LoadGenerator
) -> None:
    release = platform.current_release()
    assert release is not None
    youngest = poll(
        lambda: prometheus.instant(
            f'min(time() - process_start_time_seconds{{job="demo",release="{release}"}})'
        ),
        lambda sample: sample.value is not None,
    ).value
    assert youngest is not None
    served = min(youngest, load.stats.duration_s)
    time.sleep(max(0.0, 12 - served))  # every instance has had traffic for longer than the range

    def ranges() -> tuple[list[Sample], list[Sample]]:
        end = datetime.now(UTC)
        start = end - timedelta(seconds=8)
        serving = prometheus.query_range(
            "request_rate", release=release, start=start, end=end, step_s=2, window="5s"
        )
        return serving, prometheus.query_range(
            "request_rate", release="9.9.9", start=start, end=end, step_s=2
        )

    # A busy machine scrapes late: wait (bounded) until Prometheus has the whole range of traffic.
    deadline = time.monotonic() + 30
    serving, nothing = ranges()
    while not all(s.value for s in serving) and time.monotonic() < deadline:
        time.sleep(0.5)
        serving, nothing = ranges()

    assert len(serving) == len(nothing) == 5
    assert all(s.value is not None and s.value > 0 for s in serving), [s.value for s in serving]
    assert [s.value for s in nothing] == [None] * 5
    assert [round((s.at - serving[0].at).total_seconds()) for s in serving] == [0, 2, 4, 6, 8]


def test_slow_leak_shows_memory_growing(
    env: Environment, platform: LocalPlatform, prometheus: Prometheus, load: LoadGenerator
) -> None:
    roll_out(env, platform, "2.0.0-slow-leak")
    assert prometheus.wait_for_data(
        "targets_up", release="2.0.0-slow-leak", timeout_s=15, until=lambda n: n >= 3
    )
    first = prometheus.wait_for_data("memory", release="2.0.0-slow-leak", timeout_s=10)
    assert first.value is not None
    eight_mib = 8 / 256  # the memory query is a fraction of 256 MiB

    later = prometheus.wait_for_data(
        "memory", release="2.0.0-slow-leak", timeout_s=10, until=lambda v: v > first.value + eight_mib
    )
    growth = prometheus.wait_for_data(
        "memory_growth", release="2.0.0-slow-leak", timeout_s=10, window=WINDOW, until=lambda v: v > 2 << 20
    )

    assert later.value is not None and later.value > first.value + eight_mib, (first.value, later.value)
    assert growth.value is not None and growth.value > 2 << 20, f"growth {growth.value} B/s"


def test_no_data_and_nan_are_none_never_zero(prometheus: Prometheus, load: LoadGenerator) -> None:
    nobody = prometheus.query("error_ratio", release="9.9.9")
    nan = prometheus.instant("vector(0) / vector(0)")
    zero = prometheus.instant("vector(0)")
    scalar = prometheus.instant("scalar(vector(2))")

    assert nobody.value is None and nan.value is None
    assert zero.value == 0.0 and scalar.value == 2.0
    assert nobody.promql.startswith('(sum(rate(http_requests_total{job="demo",release="9.9.9"')
    assert nobody.url == prometheus.url and nobody.release == "9.9.9" and nobody.query == "error_ratio"
    assert abs((datetime.now(UTC) - nobody.at).total_seconds()) < 5


def test_a_query_prometheus_refuses_is_one_line(prometheus: Prometheus) -> None:
    with pytest.raises(ProbeError) as error:
        prometheus.instant("sum(up{)")

    assert str(error.value).startswith(f"Prometheus at {prometheus.url}: HTTP 400: ")
    assert str(error.value).endswith(" for sum(up{)")
    assert "\n" not in str(error.value)


def test_a_stopped_prometheus_is_one_probe_error_line(env: Environment, prometheus: Prometheus) -> None:
    sandbox = stack.load(env)
    assert sandbox.prometheus is not None
    sandbox.prometheus.stop()

    with pytest.raises(ProbeError) as error:
        prometheus.query("error_ratio", release="2.0.0")

    assert str(error.value) == (
        f"Prometheus at {prometheus.url}: connection refused (is it running? check metrics.prometheus_url)"
    )
    assert stack.status(env).not_up == ["prometheus"]
