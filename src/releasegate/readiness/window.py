"""The deployment window: allowed days and hours in the team's time zone, outside any freeze.

Release Manager "Maintenance window scheduled"; Summit GA 1.2's deployment window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Freeze:
    start: date
    end: date
    """Inclusive: the whole day."""
    reason: str


@dataclass(frozen=True)
class WindowVerdict:
    open: bool
    local_time: str
    reason: str


def judge_window(
    now: datetime, timezone: str, days: list[str], start: time, end: time, freezes: list[Freeze]
) -> WindowVerdict:
    """Open when ``now`` (aware) falls on an allowed day, within [start, end), and in no freeze."""
    local = now.astimezone(ZoneInfo(timezone))
    shown = f"{local:%a %Y-%m-%d %H:%M} {timezone}"
    for freeze in freezes:
        if freeze.start <= local.date() <= freeze.end:
            return WindowVerdict(
                False, shown, f"change freeze {freeze.start} to {freeze.end}: {freeze.reason}"
            )
    if DAYS[local.weekday()] not in days:
        return WindowVerdict(
            False, shown, f"{DAYS[local.weekday()]} is not a deployment day ({', '.join(days)})"
        )
    if not (start <= local.time() < end):
        return WindowVerdict(False, shown, f"outside the deployment hours {start:%H:%M}-{end:%H:%M}")
    return WindowVerdict(True, shown, f"{', '.join(days)} {start:%H:%M}-{end:%H:%M}, no freeze")
