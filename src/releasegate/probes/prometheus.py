"""Prometheus: the numbers behind the SLO checks, each with the PromQL, URL and time it came from.

Queries are templates from the environment (``[metrics.queries]``) with three placeholders,
``{service}``, ``{release}`` and ``{window}``. Only those exact tokens are replaced, so label
matchers (``{job="a"}``) and regex repetitions (``"5.{2}"``) stay as written.

An empty answer (no series: no traffic, no target yet) and NaN (0/0, a quantile of nothing)
are ``None``, never 0, so a check on them is NO_DATA. Prometheus being down or refusing a query
is one ProbeError line naming it and its URL.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
import urllib3
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from releasegate.analysis.histogram import Histogram
from releasegate.config import Environment, MetricQueries, MetricsSettings, duration_seconds
from releasegate.errors import ConfigError, ProbeError
from releasegate.redaction import redact

_PLACEHOLDER = re.compile(r"\{(service|release|window)\}")
_UNSAFE_LABEL_VALUE = re.compile(r"[\"'`\\\n\r{}]")
_RETRY_STATUSES = (502, 503, 504)

T = TypeVar("T")


def fill(template: str, *, service: str, release: str, window: str) -> str:
    """The PromQL of ``template`` for one service, release and window.

    Values go inside PromQL strings, so quotes, backslashes and braces are refused rather than
    escaped: a release name never needs them.
    """
    for what, value in (("service", service), ("release", release)):
        if _UNSAFE_LABEL_VALUE.search(value):
            raise ValueError(f"{what} {value!r} cannot be put in a PromQL label matcher")
    duration_seconds(window)  # raises on anything but a Prometheus duration
    values = {"service": service, "release": release, "window": window}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


@dataclass(frozen=True)
class Sample:
    """One number from Prometheus, and where it came from: what evidence records."""

    promql: str
    url: str
    value: float | None
    """None when Prometheus had no data or the answer was NaN."""
    at: datetime
    """The evaluation time of the query (UTC)."""
    query: str = ""
    """The name of the query in [metrics.queries], or "" for raw PromQL."""
    release: str = ""
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def source(self) -> str:
        """``PromQL <query> @ <url>`` for the evidence's source column."""
        return redact(f"PromQL {self.promql} @ {self.url}")

    @property
    def at_iso(self) -> str:
        return self.at.isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Series:
    """One series of a range query: its labels and (time, value or None) points."""

    labels: dict[str, str]
    points: tuple[tuple[datetime, float | None], ...]


class Prometheus:
    """A Prometheus server's HTTP API, through prometheus-api-client's PrometheusConnect."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 5.0,
        retries: int = 2,
        service: str = "",
        window: str = "5m",
        queries: MetricQueries | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.retries = retries
        self.service = service
        self.window = window
        self.queries = queries or MetricQueries()
        self.component = f"Prometheus at {redact(self.url)}"
        session = requests.Session()
        session.trust_env = not _is_loopback(urlsplit(self.url).hostname or "")  # no proxy for 127.0.0.1
        retry = Retry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            backoff_factor=0.2,
            status_forcelist=_RETRY_STATUSES,
            allowed_methods=None,
            raise_on_status=True,
        )
        self._session = session
        self._client = PrometheusConnect(url=self.url, retry=retry, session=session, timeout=timeout_s)

    @classmethod
    def from_settings(cls, settings: MetricsSettings, service: str) -> Prometheus:
        return cls(
            settings.prometheus_url,
            timeout_s=settings.timeout_s,
            retries=settings.retries,
            service=service,
            window=settings.window,
            queries=settings.queries,
        )

    @classmethod
    def from_environment(cls, env: Environment) -> Prometheus:
        if env.metrics is None:
            raise ConfigError(f"{env.source}: no [metrics] section: where is Prometheus?")
        return cls.from_settings(env.metrics, env.environment.service)

    def close(self) -> None:
        self._session.close()

    # -- named queries from the environment -----------------------------------------------------

    def promql(self, name: str, *, release: str, window: str | None = None) -> str:
        """The filled PromQL of the query called ``name`` in [metrics.queries]."""
        try:
            template = self.queries.get(name)
        except KeyError as exc:
            raise ConfigError(f"metrics.queries: {exc.args[0]}") from None
        try:
            return fill(template, service=self.service, release=release, window=window or self.window)
        except ValueError as exc:
            raise ProbeError(self.component, f"cannot ask about {name}: {exc}") from None

    def query(
        self, name: str, *, release: str, window: str | None = None, at: datetime | None = None
    ) -> Sample:
        """The named query's one number for ``release`` now (or at ``at``); None without data."""
        sample = self.instant(self.promql(name, release=release, window=window), at=at)
        return _named(sample, name, release)

    def histograms(
        self, name: str, *, release: str, window: str | None = None, at: datetime | None = None
    ) -> tuple[dict[str, Histogram], Sample]:
        """The named query's bucket counts for ``release`` now (or at ``at``), one Histogram per
        group of labels other than ``le`` (``route=/api/orders``; ``""`` when the query sums them
        all), and the sample it came from (its value: the requests counted). Empty without data."""
        promql = self.promql(name, release=release, window=window)
        samples = self.vector(promql, at=at)
        buckets: dict[str, list[tuple[float, float]]] = {}
        for sample in samples:
            labels = dict(sample.labels)
            le = labels.pop("le", None)
            if le is None:
                raise ProbeError(
                    self.component,
                    f"{name} answered a series without an `le` label: {promql}",
                    "a histogram query keeps `le`, e.g. sum by (le) (increase(..._bucket[{window}]))",
                )
            if sample.value is None:
                continue
            group = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
            buckets.setdefault(group, []).append((float(le), sample.value))
        groups = {group: Histogram.of(pairs) for group, pairs in sorted(buckets.items())}
        total = sum(h.total for h in groups.values()) if groups else None
        when = samples[0].at if samples else (at or _now())
        return groups, Sample(promql, self.url, total, when, name, release)

    def query_range(
        self,
        name: str,
        *,
        release: str,
        start: datetime,
        end: datetime,
        step_s: float,
        window: str | None = None,
    ) -> list[Sample]:
        """The named query evaluated every ``step_s`` from ``start`` to ``end``: one Sample per
        step, value None where Prometheus had nothing (the canary's per-interval samples)."""
        promql = self.promql(name, release=release, window=window)
        return [_named(s, name, release) for s in self.steps(promql, start=start, end=end, step_s=step_s)]

    def wait_for_data(
        self,
        name: str,
        *,
        release: str,
        timeout_s: float,
        poll_s: float = 0.5,
        window: str | None = None,
        until: Callable[[float], bool] | None = None,
    ) -> Sample:
        """Poll the named query until it has a value (and ``until(value)`` holds), at most
        ``timeout_s``; returns the last sample, whose value may still be None.

        New targets are picked up on Prometheus's ~5 s discovery cycle, then scraped: a fresh
        release has no series for a few seconds, which is not an error.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            sample = self.query(name, release=release, window=window)
            if sample.value is not None and (until is None or until(sample.value)):
                return sample
            if time.monotonic() >= deadline:
                return sample
            time.sleep(poll_s)

    def answers(
        self,
        queries: Mapping[str, str | None],
        *,
        release: str,
        histograms: Collection[str] = (),
        timeout_s: float,
        poll_s: float = 0.5,
        needed: Callable[[str], bool] = lambda _name: True,
    ) -> dict[str, Sample]:
        """Each named query (with its window) asked for ``release`` until every ``needed`` one has
        a value, at most ``timeout_s``: a series appears with its first observation, so one query
        of a freshly started release may answer a scrape or two after another. A histogram query's
        sample counts its requests."""
        answered: dict[str, Sample] = {}
        deadline = time.monotonic() + timeout_s
        while True:
            for name, window in queries.items():
                if name in answered and answered[name].value is not None:
                    continue
                if name in histograms:
                    _groups, answered[name] = self.histograms(name, release=release, window=window)
                else:
                    answered[name] = self.query(name, release=release, window=window)
            missing = [n for n, sample in answered.items() if sample.value is None and needed(n)]
            if not missing or time.monotonic() >= deadline:
                return answered
            time.sleep(poll_s)

    # -- raw PromQL -----------------------------------------------------------------------------

    def instant(self, promql: str, *, at: datetime | None = None) -> Sample:
        """One number: a scalar, or a vector of at most one series (aggregate the query if not)."""
        samples = self.vector(promql, at=at)
        if len(samples) > 1:
            raise ProbeError(
                self.component,
                f"{len(samples)} series where one number was expected from {promql}",
                "aggregate the query, e.g. sum(...) or max(...)",
            )
        if samples:
            return samples[0]
        return Sample(promql, self.url, None, at or _now())

    def vector(self, promql: str, *, at: datetime | None = None) -> list[Sample]:
        """An instant query: one Sample per series (e.g. per instance); [] when there is none."""
        when = at or _now()
        result = self._call(
            promql, lambda: self._client.custom_query(promql, params={"time": when.timestamp()})
        )
        if _is_scalar(result):
            return [Sample(promql, self.url, _number(result[1]), when)]
        return [
            Sample(promql, self.url, _number(item["value"][1]), when, labels=dict(item.get("metric", {})))
            for item in result
        ]

    def range(self, promql: str, *, start: datetime, end: datetime, step_s: float) -> list[Series]:
        """A range query: every series with its points (NaN as None)."""
        if step_s <= 0 or end < start:
            raise ValueError("a range query needs start <= end and a positive step")
        result = self._call(
            promql,
            lambda: self._client.custom_query_range(
                promql, start_time=start, end_time=end, step=f"{step_s:g}s"
            ),
        )
        if _is_scalar(result):
            return [Series({}, ((_time(result[0]), _number(result[1])),))]
        return [
            Series(
                dict(item.get("metric", {})), tuple((_time(t), _number(v)) for t, v in item.get("values", []))
            )
            for item in result
        ]

    def steps(self, promql: str, *, start: datetime, end: datetime, step_s: float) -> list[Sample]:
        """A range query of one number per step: a Sample for every step, None where missing."""
        series = self.range(promql, start=start, end=end, step_s=step_s)
        if len(series) > 1:
            raise ProbeError(
                self.component,
                f"{len(series)} series where one number per step was expected from {promql}",
                "aggregate the query, e.g. sum(...) or max(...)",
            )
        found = {round(t.timestamp(), 3): v for t, v in series[0].points} if series else {}
        first = round(start.timestamp())  # prometheus-api-client sends whole seconds
        count = int((round(end.timestamp()) - first) // step_s) + 1
        grid = [round(first + i * step_s, 3) for i in range(count)]
        return [Sample(promql, self.url, found.get(t), _time(t)) for t in grid]

    # -- Prometheus's own state: what readiness checks ------------------------------------------

    def targets(self) -> list[dict[str, Any]]:
        """Active scrape targets: job, instance, health ("up"/"down"/"unknown"), last error."""
        data = self._api("/api/v1/targets", {"state": "active"})
        return [
            {
                "job": t.get("labels", {}).get("job") or t.get("scrapePool", "?"),
                "instance": t.get("labels", {}).get("instance", "?"),
                "health": t.get("health", "unknown"),
                "error": t.get("lastError", ""),
            }
            for t in (data or {}).get("activeTargets", [])
        ]

    def alerting_rules(self) -> list[str]:
        """The names of the alerting rules loaded (``/api/v1/rules?type=alert``)."""
        data = self._api("/api/v1/rules", {"type": "alert"})
        return [r.get("name", "?") for g in (data or {}).get("groups", []) for r in g.get("rules", [])]

    def firing_alerts(self) -> list[dict[str, str]]:
        """Alerts firing now, each with its labels (``alertname``, ``severity``, ...)."""
        data = self._api("/api/v1/alerts", {})
        return [
            dict(a.get("labels", {})) for a in (data or {}).get("alerts", []) if a.get("state") == "firing"
        ]

    def _api(self, path: str, params: dict[str, str]) -> Any:
        def get() -> Any:
            response = self._session.get(f"{self.url}{path}", params=params, timeout=self.timeout_s)
            response.raise_for_status()
            body = response.json()
            if body.get("status") != "success":
                raise ValueError(body.get("error") or "status is not success")
            return body.get("data")

        return self._call(path, get)

    def ready(self) -> bool:
        """Whether Prometheus answers ``/-/ready`` (it may still have no data: see wait_for_data)."""
        try:
            response = self._session.get(f"{self.url}/-/ready", timeout=self.timeout_s)
        except requests.RequestException:
            return False
        return response.status_code == 200

    # -- errors ---------------------------------------------------------------------------------

    def _call(self, promql: str, request: Callable[[], T]) -> T:
        try:
            return request()
        except requests.exceptions.RetryError:
            raise ProbeError(
                self.component,
                f"kept answering {'/'.join(map(str, _RETRY_STATUSES))} after {self.retries} retries",
            ) from None
        except (requests.exceptions.Timeout, requests.exceptions.ConnectionError) as exc:
            if isinstance(exc, requests.exceptions.Timeout) or _timed_out(exc):  # retries ran out on timeouts
                raise ProbeError(
                    self.component, f"no answer within {self.timeout_s:g} s", "metrics.timeout_s"
                ) from None
            reason = "connection refused" if "refused" in str(exc).lower() else _first_line(exc)
            raise ProbeError(self.component, reason, "is it running? check metrics.prometheus_url") from None
        except PrometheusApiClientException as exc:
            raise ProbeError(self.component, f"{_api_error(exc)} for {promql}") from None
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            raise ProbeError(self.component, f"unexpected answer to {promql}: {_first_line(exc)}") from None


def _named(sample: Sample, name: str, release: str) -> Sample:
    return Sample(sample.promql, sample.url, sample.value, sample.at, name, release, sample.labels)


def _is_scalar(result: Any) -> bool:
    return isinstance(result, list) and len(result) == 2 and isinstance(result[0], int | float)


def _number(text: Any) -> float | None:
    """Prometheus sends numbers as strings; NaN (0/0, a quantile of nothing) is no data."""
    value = float(text)
    return None if math.isnan(value) else value


def _time(ts: float) -> datetime:
    return datetime.fromtimestamp(float(ts), UTC)


def _now() -> datetime:
    return datetime.now(UTC)


def _api_error(exc: PrometheusApiClientException) -> str:
    """``HTTP 400: parse error at char 5: ...`` from the client's ``HTTP Status Code 400 (b'{..}')``."""
    text = str(exc)
    status = re.search(r"HTTP Status Code (\d+)", text)
    body = text[text.find("(b") + 3 : text.rfind(")") - 1] if "(b" in text else ""
    detail = ""
    try:
        detail = json.loads(body.encode().decode("unicode_escape")).get("error", "")
    except (ValueError, AttributeError):
        detail = body[:200]
    code = f"HTTP {status.group(1)}" if status else "an error"
    return f"{code}: {detail}" if detail else code


def _timed_out(exc: BaseException) -> bool:
    """Whether retries ran out on timeouts: requests then raises ConnectionError, not Timeout."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    refused = isinstance(reason, urllib3.exceptions.NewConnectionError)  # a ConnectTimeoutError, oddly
    return isinstance(reason, urllib3.exceptions.TimeoutError) and not refused


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return redact(lines[0] if lines else type(exc).__name__)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
