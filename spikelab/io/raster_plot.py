"""A raster-plot PNG of a SpikeData, for a quick look at each ingested asset."""

from __future__ import annotations

import io
import os

import numpy as np

from spikelab.io import storage
from spikelab.spikedata import SpikeData

MAX_POINTS = 200_000


def raster_png(sd: SpikeData, *, title: str = "", max_points: int = MAX_POINTS) -> bytes:
    """Render every unit's spikes as dots (thinned evenly beyond ``max_points``) as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    idces, times = sd.idces_times()
    if idces.size > max_points:
        keep = np.linspace(0, idces.size - 1, max_points).astype(np.int64)
        idces, times = idces[keep], times[keep]
    figure = Figure(figsize=(8, 4), dpi=100)
    axes = figure.add_subplot()
    axes.scatter(times / 1000.0, idces, s=1, marker="|", color="black", linewidths=0.5)
    axes.set_xlabel("time (s)")
    axes.set_ylabel("unit")
    axes.set_title(title or f"{sd.N} units, {sum(t.size for t in sd.train)} spikes", fontsize=9)
    axes.set_xlim(sd.start_time / 1000.0, (sd.start_time + max(sd.length, 1e-3)) / 1000.0)
    axes.set_ylim(-0.5, max(sd.N, 1) - 0.5)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def write_raster_png(sd: SpikeData, dest: str | os.PathLike[str], *, title: str = "") -> str:
    """Write :func:`raster_png` to ``dest`` (local or URL), atomically; return the path."""
    storage.put_bytes(dest, raster_png(sd, title=title))
    return str(dest)
