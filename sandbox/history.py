"""A serving release's history for the sandbox's Prometheus: what it would hold after days of it.

A real service's Prometheus keeps the previous release's numbers at this time of previous days,
which ``[metrics.baseline] source = "history"`` compares a new release with. A fresh sandbox has
none, so ``python -m sandbox history --offset 1d`` records what the serving release's instances
exported over the last ``record_s`` seconds (their real counters, scraped), lays that recording
end to end over the span a run will ask about at ``now - offset``, writes it as TSDB blocks with
``promtool tsdb create-blocks-from openmetrics`` (Prometheus's own backfill) and restarts the
sandbox's Prometheus so it reads them. A counter carries on from one copy to the next, so rates
and increases over any window are the recorded ones.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from sandbox.common import SandboxError
from sandbox.prometheus import Prometheus, prometheus_tool

COUNTER_SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")
"""Series that only grow (until a restart): a later copy carries on from the one before."""

EVERY_S = 2.0
"""The history keeps a point every this many seconds: enough for the sandbox's 10 s windows,
and half the samples (a demo release exports thousands of bucket series)."""


def backfill(
    prometheus: Prometheus,
    release: str,
    *,
    offset_s: float,
    record_s: float = 60.0,
    before_s: float = 300.0,
    after_s: float = 900.0,
    progress: Callable[[str], None] = print,
) -> str:
    """Give ``release`` a history ``offset_s`` ago: its last ``record_s`` seconds of series laid
    over ``[now - offset_s - before_s, now - offset_s + after_s]``. Returns what was written."""
    if offset_s <= before_s + record_s:
        raise SandboxError(f"an offset of {offset_s:g} s would overlap what the sandbox serves now")
    now = time.time()
    series = _recorded(prometheus, release, record_s)
    if not series:
        raise SandboxError(
            f"Prometheus has no series of release {release} in the last {record_s:g} s: "
            "is it serving, and scraped? (python -m sandbox status)"
        )
    start, end = now - offset_s - before_s, now - offset_s + after_s
    with tempfile.TemporaryDirectory(dir=prometheus.dir) as scratch:
        text = Path(scratch) / "history.om"
        samples = _write_openmetrics(text, series, start, end)
        blocks = Path(scratch) / "blocks"
        blocks.mkdir()
        done = subprocess.run(
            [
                prometheus_tool("promtool"),
                "tsdb",
                "create-blocks-from",
                "openmetrics",
                "--quiet",
                str(text),
                str(blocks),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode:
            raise SandboxError(f"promtool could not write the history: {done.stderr.strip()[-500:]}")
        prometheus.data.mkdir(parents=True, exist_ok=True)
        for block in blocks.iterdir():
            shutil.move(str(block), prometheus.data / block.name)
    progress(
        f"history: {len(series)} series of {release}, {samples} samples, "
        f"{offset_s / 3600:g} h ago; restarting Prometheus to read them"
    )
    prometheus.stop()
    prometheus.start()
    return f"{release} {offset_s:g} s ago: {len(series)} series, {samples} samples"


def _recorded(prometheus: Prometheus, release: str, record_s: float) -> list[tuple[dict, list]]:
    """Every raw sample of the release's series over the last ``record_s`` seconds."""
    selector = f'{{job="{prometheus.job}",release="{release}"}}[{math.ceil(record_s)}s]'
    try:
        answer = httpx.get(
            f"{prometheus.url}/api/v1/query", params={"query": selector}, timeout=30.0, trust_env=False
        )
        answer.raise_for_status()
    except httpx.HTTPError as exc:
        raise SandboxError(f"Prometheus at {prometheus.address} did not answer: {exc}") from None
    result = answer.json()["data"]["result"]
    series = [
        (item["metric"], _thinned([(float(t), float(v)) for t, v in item["values"]]))
        for item in result
        if len(item["values"]) >= 2
    ]
    return _without_idle_buckets(series)


def _thinned(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """A point every ``EVERY_S`` at most, the last one kept (the recording's whole increase)."""
    kept = [points[0]]
    for point in points[1:-1]:
        if point[0] - kept[-1][0] >= EVERY_S - 1e-6:
            kept.append(point)
    return [*kept, points[-1]]


def _without_idle_buckets(series: list[tuple[dict, list]]) -> list[tuple[dict, list]]:
    """Leave out the bucket series of a histogram that counted nothing while recording (a route
    no request took): they add nothing to any sum, and they are most of the series."""
    grew: dict[tuple, bool] = {}
    for labels, points in series:
        if labels["__name__"].endswith("_bucket"):
            key = _bucket_group(labels)
            grew[key] = grew.get(key, False) or points[-1][1] > points[0][1]
    return [
        (labels, points)
        for labels, points in series
        if not labels["__name__"].endswith("_bucket") or grew[_bucket_group(labels)]
    ]


def _bucket_group(labels: dict) -> tuple:
    return tuple(sorted((k, v) for k, v in labels.items() if k != "le"))


def _write_openmetrics(path: Path, series: list[tuple[dict, list]], start: float, end: float) -> int:
    """Each series copied end to end from ``start`` to ``end``, by metric name (OpenMetrics keeps
    a metric's samples together); the number of samples written."""
    written = 0
    by_name: dict[str, list[tuple[dict, list]]] = {}
    for labels, points in series:
        by_name.setdefault(labels["__name__"], []).append((labels, points))
    with path.open("w", encoding="utf-8") as out:
        for name in sorted(by_name):
            for labels, points in by_name[name]:
                shown = ",".join(f'{k}="{_escaped(v)}"' for k, v in sorted(labels.items()) if k != "__name__")
                for at, value in _laid_out(points, start, end, name.endswith(COUNTER_SUFFIXES)):
                    out.write(f"{name}{{{shown}}} {value!r} {at:.3f}\n")
                    written += 1
        out.write("# EOF\n")
    return written


def _laid_out(points: list, start: float, end: float, counter: bool) -> Iterator[tuple[float, float]]:
    """The recording's points copied one after another from ``start`` until ``end``; a counter's
    copy starts where the one before ended."""
    first_at, first_value = points[0]
    step = (points[-1][0] - first_at) / (len(points) - 1)
    length = points[-1][0] - first_at + step  # one scrape between copies
    grown = points[-1][1] - first_value if counter else 0.0
    copy = 0
    while True:
        for at, value in points:
            when = start + copy * length + (at - first_at)
            if when > end:
                return
            yield when, (value - first_value) + copy * grown if counter else value
        copy += 1


def _escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
