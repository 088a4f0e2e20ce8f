"""Which metric names a Prometheus text exposition (``GET /metrics``) has: pure parsing.

A histogram ``x`` shows as ``x_bucket``, ``x_sum`` and ``x_count`` samples, a counter as
``x_total``: a name counts as exposed when its family or any of its samples is there.
"""

from __future__ import annotations

import re

_SAMPLE_NAME = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)")
_SAMPLE_SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created", "_info", "_gcount", "_gsum")


def metric_names(text: str) -> set[str]:
    """Every family named in ``# HELP``/``# TYPE`` lines and every sample's name."""
    names: set[str] = set()
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            parts = line.split()
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                names.add(parts[2])
        elif match := _SAMPLE_NAME.match(line):
            names.add(match.group(1))
    return names


def exposes(names: set[str], name: str) -> bool:
    """``release_manager_request_duration_seconds`` is exposed by its ``_bucket`` samples too;
    ``x_total`` by a family ``x``."""
    if name in names or any(name + suffix in names for suffix in _SAMPLE_SUFFIXES):
        return True
    return name.endswith("_total") and name.removesuffix("_total") in names
