"""Free disk where a backup will be written."""

from __future__ import annotations

import shutil
from pathlib import Path


def free_bytes(path: Path) -> tuple[Path, int]:
    """Free bytes on the filesystem that holds ``path`` (or its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe, shutil.disk_usage(probe).free
