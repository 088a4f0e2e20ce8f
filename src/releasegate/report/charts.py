"""Charts of a run: error ratio and latency quantiles over its whole length, one line per release.

A table of samples says a gate passed; a chart shows why: the canary's errors climbing at the
25 % step while the stable release stayed flat, or the p99 drifting towards its limit before the
rollback. Fetching (Prometheus range queries) is apart from rendering (matplotlib, no I/O but
the PNG files), so the rendering is tested on hand-made data and the fetching on a real
Prometheus.

Missing data stays missing: a step where Prometheus had nothing (no traffic, no target yet) is a
gap in the line, never a zero, as in every check. The PNGs are deterministic for a given input:
no timestamps in their metadata, matplotlib's default style whatever the user's matplotlibrc.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from matplotlib import style as mpl_style
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, DateFormatter, date2num
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter
from matplotlib.transforms import blended_transform_factory

from releasegate.config import Environment
from releasegate.ledger import Ledger, RunRecord
from releasegate.probes.prometheus import Prometheus

ERROR_RATIO = "error_ratio"
LATENCY = ("latency_p95", "latency_p99")
QUERIES = (ERROR_RATIO, *LATENCY)
"""The named queries charted: their names in [metrics.queries]."""
FILES = {"error_ratio": "error-ratio.png", "latency": "latency.png"}
MAX_POINTS = 10_000
"""Prometheus refuses range queries of more than 11,000 points per series."""

Points = tuple[tuple[datetime, float | None], ...]
PhaseSpan = tuple[str, datetime, datetime | None]
"""A phase's name, start and end (None: it did not end; drawn to the end of the chart)."""
Mark = tuple[datetime, str]

_CANARY_STEP = re.compile(r"\bcanary\b.*?\bat (\d+(?:\.\d+)?) ?%")
_ROLLING_BACK = re.compile(r"\brolling back\b", re.IGNORECASE)
_COLOURS = ("#1f6feb", "#e36209", "#2da44e", "#8250df", "#bf3989")
_THRESHOLD_COLOUR = "#cf222e"
_PHASE_COLOURS = ("#eaeef2", "#f6f8fa")
_ROLLBACK_COLOUR = "#ffebe9"
_STYLE = {"latency_p95": "-", "latency_p99": "--"}
_SIZE_IN = (12.0, 5.0)
_DPI = 100
"""1200 x 500 pixels."""


@dataclass(frozen=True)
class ChartData:
    """What the charts show: per query, per release role ("stable", "canary"...), the points."""

    start: datetime
    end: datetime
    releases: dict[str, str]
    """Role -> release, oldest first: the order of the lines and their colours."""
    series: dict[str, dict[str, Points]] = field(default_factory=dict)
    """Query name -> role -> (time, value or None) points."""
    title: str = ""

    def points(self, query: str, role: str) -> Points:
        return self.series.get(query, {}).get(role, ())


# -- fetching ------------------------------------------------------------------------------------


def fetch_series(
    prometheus: Prometheus,
    env: Environment,
    releases: Mapping[str, str],
    start: datetime,
    end: datetime,
    step_s: float,
) -> ChartData:
    """Range queries of error ratio and latency quantiles for each release role, every step_s
    (coarser when the run is too long for one range query); no data stays None."""
    step = max(step_s, (end - start).total_seconds() / MAX_POINTS)
    series = {
        query: {
            role: tuple(
                (s.at, s.value)
                for s in prometheus.query_range(query, release=release, start=start, end=end, step_s=step)
            )
            for role, release in releases.items()
        }
        for query in QUERIES
    }
    title = f"{env.environment.service} in {env.name}"
    return ChartData(start, end, dict(releases), series, title)


# -- what happened when, from the ledger ---------------------------------------------------------


def phases_and_marks(
    record: RunRecord, events: Iterable[tuple[datetime | str, str]] = ()
) -> tuple[list[PhaseSpan], list[Mark]]:
    """The run's phases (rollback included) as spans, and as marks: canary steps and the rollback
    from the progress lines (``events``: (time, line), see ``timed_events``), and the failure."""
    phases = [
        (p["phase"], _when(p["started_at"]), _when(p["ended_at"]) if p["ended_at"] else None)
        for p in record.phases
    ]
    marks = [mark for at, line in events if (mark := _event_mark(_when(at), line)) is not None]
    failure = _failure_mark(record)
    if failure is not None:
        marks.append(failure)
    return phases, sorted(marks)


def timed_events(ledger: Ledger, run_id: str) -> list[tuple[datetime, str]]:
    """(time, line) of a run's progress lines."""
    return [(_when(at), line) for at, line in ledger.timed_events(run_id)]


def releases_of(record: RunRecord, events: Iterable[tuple[datetime | str, str]] = ()) -> dict[str, str]:
    """Role -> release: stable and canary when the run moved traffic in canary steps, previous
    and new otherwise; just the one release on a first deployment or a redeployment."""
    canary = any(_CANARY_STEP.search(line) for _at, line in events)
    old, new = ("stable", "canary") if canary else ("previous", "new")
    previous = record.previous_release
    if previous is None or previous == record.release:
        return {new: record.release}
    return {old: previous, new: record.release}


def _event_mark(at: datetime, line: str) -> Mark | None:
    step = _CANARY_STEP.search(line)
    if step:
        return at, f"canary {step.group(1)} %"
    if _ROLLING_BACK.search(line):
        return at, "rollback"
    return None


def _failure_mark(record: RunRecord) -> Mark | None:
    """When the failed gate finished (as the ledger has it), else when its phase ended."""
    if not record.failed_phase:
        return None
    label = f"failed: {_short_gate(record.failed_gate or record.failed_phase)}"
    gate = next((g for g in record.gates if g["gate"] == record.failed_gate), None)
    if gate is not None:
        return _when(gate["at"]), label
    phase = next((p for p in record.phases if p["phase"] == record.failed_phase), None)
    if phase is not None and phase["ended_at"]:
        return _when(phase["ended_at"]), label
    return None


def _short_gate(nodeid: str) -> str:
    return nodeid.rsplit("::", 1)[-1]


def _when(value: datetime | str) -> datetime:
    when = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


# -- glue ----------------------------------------------------------------------------------------


def charts_for_run(
    prometheus: Prometheus,
    env: Environment,
    record: RunRecord,
    out_dir: Path,
    *,
    events: Sequence[tuple[datetime | str, str]] = (),
    now: datetime | None = None,
) -> list[Path]:
    """Fetch and draw one run's charts into ``out_dir``: from its start to its end (or now),
    one step per scrape (at least 1 s), thresholds from [metrics.slo]. Call it once the run has
    ended; a ProbeError says Prometheus could not be asked."""
    if env.metrics is None:
        return []
    start = _when(record.started_at)
    end = _when(record.ended_at) if record.ended_at else (now or datetime.now(UTC))
    end = max(end, start + timedelta(seconds=1))
    step_s = max(1.0, env.metrics.scrape_interval_s)
    data = fetch_series(prometheus, env, releases_of(record, events), start, end, step_s)
    data = ChartData(data.start, data.end, data.releases, data.series, f"{data.title}, run {record.id}")
    phases, marks = phases_and_marks(record, events)
    return render(data, thresholds=thresholds_of(env), phases=phases, marks=marks, out_dir=out_dir)


def thresholds_of(env: Environment) -> dict[str, float]:
    """Query name -> the strictest ``max`` of the SLO checks on it, for the charted queries."""
    found: dict[str, float] = {}
    for check in (env.metrics.slo if env.metrics else {}).values():
        if check.max is not None and check.query in QUERIES:
            found[check.query] = min(check.max, found.get(check.query, math.inf))
    return found


# -- rendering -----------------------------------------------------------------------------------


def render(
    data: ChartData,
    *,
    thresholds: Mapping[str, float],
    phases: Sequence[PhaseSpan],
    marks: Sequence[Mark],
    out_dir: Path,
) -> list[Path]:
    """Write ``error-ratio.png`` and ``latency.png`` (1200 x 500) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, figure in figures(data, thresholds=thresholds, phases=phases, marks=marks).items():
        path = out_dir / FILES[name]
        FigureCanvasAgg(figure)
        figure.savefig(path, format="png", dpi=_DPI, metadata={"Software": None})
        written.append(path)
    return written


def figures(
    data: ChartData,
    *,
    thresholds: Mapping[str, float],
    phases: Sequence[PhaseSpan],
    marks: Sequence[Mark],
) -> dict[str, Figure]:
    """The two figures, not saved: what ``render`` draws, for tests to inspect. Artists carry a
    gid: ``series:<query>:<role>``, ``threshold:<query>``, ``phase:<name>``, ``mark:<label>``."""
    with mpl_style.context("default"):  # the same pictures whatever the user's matplotlibrc
        error = _figure(data, "error ratio", "error ratio (%)")
        _error_ratio(error.axes[0], data, thresholds)
        latency = _figure(data, "latency", "latency (ms)")
        _latency(latency.axes[0], data, thresholds)
        for figure in (error, latency):
            _decorate(figure.axes[0], data, phases, marks)
    return {"error_ratio": error, "latency": latency}


def xy(points: Points, scale: float = 1.0) -> tuple[list[datetime], list[float]]:
    """Times and values as drawn: None becomes NaN, which matplotlib leaves as a gap."""
    return [t for t, _ in points], [math.nan if v is None else v * scale for _, v in points]


def _figure(data: ChartData, what: str, ylabel: str) -> Figure:
    figure = Figure(figsize=_SIZE_IN, dpi=_DPI)
    figure.subplots_adjust(left=0.07, right=0.82, top=0.80, bottom=0.11)
    ax = figure.add_subplot()
    releases = ", ".join(f"{role} {release}" for role, release in data.releases.items())
    figure.suptitle(f"{what}: {data.title}" if data.title else what, x=0.07, ha="left", fontsize=13)
    figure.text(0.07, 0.905, releases, ha="left", fontsize=9, color="#57606a")
    ax.set_ylabel(ylabel)
    ax.set_xlabel("time (UTC)")
    ax.grid(True, color="#d0d7de", linewidth=0.6)
    return figure


def _colour(data: ChartData, role: str) -> str:
    return _COLOURS[list(data.releases).index(role) % len(_COLOURS)]


def _error_ratio(ax: Axes, data: ChartData, thresholds: Mapping[str, float]) -> None:
    top = _plot(ax, data, ERROR_RATIO, scale=100.0, style="-", suffix="")
    _no_data(ax, data, [ERROR_RATIO])
    limit = thresholds.get(ERROR_RATIO)
    if limit is not None:
        _threshold(ax, ERROR_RATIO, limit * 100, f"max {_number(limit * 100)} %")
        top = max(top, limit * 100)
    ax.set_ylim(-0.02 * top if top > 0 else -0.02, top * 1.15 if top > 0 else 1.0)  # 0 stays visible


def _latency(ax: Axes, data: ChartData, thresholds: Mapping[str, float]) -> None:
    top = max(_plot(ax, data, q, scale=1.0, style=_STYLE[q], suffix=f" {q[-3:]}") for q in LATENCY)
    _no_data(ax, data, LATENCY)
    limits = {q: thresholds[q] for q in LATENCY if q in thresholds}
    for query, limit in limits.items():
        _threshold(ax, query, limit, f"{query[-3:]} max {_number(limit)} ms")
    highest = max([top, *limits.values()])
    if top > 0 and highest > 5 * top:  # a linear axis would flatten the data against the limits
        ax.set_yscale("log")
        ax.set_ylim(_lowest(data, LATENCY, top) / 1.5, highest * 1.5)
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax.set_ylim(-0.02 * highest if highest > 0 else -0.02, highest * 1.15 if highest > 0 else 1.0)


def _plot(ax: Axes, data: ChartData, query: str, *, scale: float, style: str, suffix: str) -> float:
    """One line per role; returns the highest value drawn (0 without any)."""
    top = 0.0
    for role, release in data.releases.items():
        times, values = xy(data.points(query, role), scale)
        if not times:
            continue
        ax.plot(
            times,
            values,
            linestyle=style,
            marker="o",
            markersize=2.5,
            linewidth=1.6,
            color=_colour(data, role),
            label=f"{role} {release}{suffix}",
            gid=f"series:{query}:{role}",
        )
        top = max([top, *(v for v in values if not math.isnan(v))])
    return top


def _no_data(ax: Axes, data: ChartData, queries: Sequence[str]) -> None:
    """Say so when Prometheus had nothing at all, rather than leave an empty frame."""
    if not any(v is not None for q in queries for role in data.releases for _, v in data.points(q, role)):
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", fontsize=12, color="#57606a")


def _lowest(data: ChartData, queries: Sequence[str], default: float) -> float:
    values = [v for q in queries for role in data.releases for _, v in data.points(q, role) if v]
    return min(values, default=default)


def _threshold(ax: Axes, query: str, value: float, label: str) -> None:
    style = _STYLE.get(query, "--") if query != ERROR_RATIO else "--"
    ax.axhline(
        value, color=_THRESHOLD_COLOUR, linestyle=style, linewidth=1.2, label=label, gid=f"threshold:{query}"
    )
    ax.annotate(
        label,
        xy=(1.0, value),
        xycoords=ax.get_yaxis_transform(),
        xytext=(-4, 3),
        textcoords="offset points",
        ha="right",
        va="bottom",
        fontsize=8,
        color=_THRESHOLD_COLOUR,
    )


def _decorate(ax: Axes, data: ChartData, phases: Sequence[PhaseSpan], marks: Sequence[Mark]) -> None:
    """Phases shaded and named along the top, marks as vertical lines, time on x, legend."""
    ax.set_xlim(data.start, data.end)
    _phases(ax, data, phases)
    _marks(ax, data, marks)
    ax.xaxis.set_major_locator(AutoDateLocator(tz=UTC, minticks=4, maxticks=10))
    ax.xaxis.set_major_formatter(DateFormatter("%H:%M:%S", tz=UTC))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)


def _phases(ax: Axes, data: ChartData, phases: Sequence[PhaseSpan]) -> None:
    along_top = blended_transform_factory(ax.transData, ax.transAxes)
    for index, (name, start, end) in enumerate(phases):
        start, end = max(start, data.start), min(end or data.end, data.end)
        if end < start:
            continue
        colour = _ROLLBACK_COLOUR if name == "rollback" else _PHASE_COLOURS[index % 2]
        ax.axvspan(start, end, color=colour, zorder=0, linewidth=0, gid=f"phase:{name}")
        ax.text(
            start + (end - start) / 2,
            1.015 + 0.055 * (index % 2),  # alternate rows: short phases side by side stay legible
            name,
            transform=along_top,
            ha="center",
            va="bottom",
            fontsize=8,
            color="#24292f",
            clip_on=False,
        )


def _marks(ax: Axes, data: ChartData, marks: Sequence[Mark]) -> None:
    """Each label reads along its line, on its right; on its left when the previous mark is so
    close that the two would overlap (a failure and the rollback it starts)."""
    along_top = blended_transform_factory(ax.transData, ax.transAxes)
    close = (data.end - data.start) * 0.03
    previous: datetime | None = None
    for when, label in sorted(marks):
        if not data.start <= when <= data.end:
            continue
        alarming = label == "rollback" or label.startswith("failed")
        colour = _THRESHOLD_COLOUR if alarming else "#57606a"
        ax.axvline(when, color=colour, linestyle=":", linewidth=1.2, gid=f"mark:{label}")
        left = previous is None or when - previous > close
        nearby = [m for m, _ in marks if m != when and abs(m - when) <= close]
        side = -1 if nearby and left else 1
        ax.annotate(
            label,
            xy=(date2num(when), 0.97),  # a transform as xycoords converts no units
            xycoords=along_top,
            xytext=(3 * side, 0),
            textcoords="offset points",
            rotation=90,
            ha="right" if side < 0 else "left",
            va="top",
            fontsize=8,
            color=colour,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 1},
        )
        previous = when


def _number(value: float) -> str:
    return f"{value:g}"
