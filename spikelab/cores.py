"""How many CPU cores this process may use (light: loaders and config both ask)."""

from __future__ import annotations

import os


def cpu_slots() -> int:
    """How many CPU-bound steps (decode, table, raster) may run at once: the usable cores."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)
