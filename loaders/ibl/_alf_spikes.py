"""IBL: a probe's ALF ``spikes`` and ``clusters`` arrays, turned into its good units' trains."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spikelab.exceptions import FileFormatError
from spikelab.spikedata import group_by_unit
from spikelab.units import to_ms


def good_unit_trains(
    spikes: Mapping[str, Any], cluster_ids: NDArray[Any], collection: str
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Spike times in ms grouped by good unit (in ``cluster_ids`` order), with end offsets."""
    if "times" not in spikes or "clusters" not in spikes:
        raise FileFormatError(
            f"the spikes object in {collection} lacks times or clusters (it has {sorted(spikes)})"
        )
    times = np.asarray(spikes["times"], dtype=np.float64).reshape(-1)
    clusters = cluster_numbers(np.asarray(spikes["clusters"]).reshape(-1), collection)
    if times.size != clusters.size:
        raise FileFormatError(
            f"{collection}: {times.size} spike times but {clusters.size} spike clusters"
        )
    wanted = cluster_numbers(np.asarray(cluster_ids).reshape(-1), "the units table")
    unit_index = unit_of_spike(clusters, wanted)
    kept = unit_index >= 0
    grouped, ends = group_by_unit(unit_index[kept], times[kept], wanted.size)
    return to_ms(grouped, "s", copy=False), ends


def cluster_numbers(ids: NDArray[Any], where: str) -> NDArray[np.int64]:
    """Cluster ids (ALF stores uint32) as int64, refusing fractions and negative ids."""
    if ids.dtype.kind == "f" and np.all(np.mod(ids, 1) == 0):
        ids = ids.astype(np.int64)
    if ids.dtype.kind not in "iu":
        raise FileFormatError(f"{where}: cluster ids must be whole numbers, got dtype {ids.dtype}")
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) > np.iinfo(np.int64).max):
        raise FileFormatError(
            f"{where}: cluster ids must lie in 0..2**63 - 1, found {int(ids.min())}.."
            f"{int(ids.max())}"
        )
    return ids.astype(np.int64, copy=False)


def unit_of_spike(clusters: NDArray[np.int64], wanted: NDArray[np.int64]) -> NDArray[np.int64]:
    """Position of each spike's cluster in ``wanted`` (ascending, unique), or -1.

    A lookup table indexed by cluster id when the ids are small (the usual 0..N), else a
    binary search, so that a huge id allocates nothing.
    """
    if wanted.size == 0:
        return np.full(clusters.size, -1, dtype=np.int64)
    highest = max(int(clusters.max()) if clusters.size else 0, int(wanted.max()))
    if highest < 4 * (clusters.size + wanted.size) + 1024:
        unit_of_cluster = np.full(highest + 1, -1, dtype=np.int64)
        unit_of_cluster[wanted] = np.arange(wanted.size)
        return unit_of_cluster[clusters]
    found = np.searchsorted(wanted, clusters).clip(max=wanted.size - 1)
    return np.where(wanted[found] == clusters, found, -1)


def channel_of_cluster(
    clusters: Mapping[str, Any] | None, cluster_ids: NDArray[Any], pid: str, collection: str
) -> NDArray[Any] | None:
    """Each cluster's channel; FileFormatError if the table names clusters the sorting lacks."""
    if clusters is None or "channels" not in clusters:
        return None
    channels = np.asarray(clusters["channels"]).reshape(-1)
    beyond = cluster_ids[cluster_ids >= channels.size]
    if beyond.size:
        raise FileFormatError(
            f"the units table gives pid {pid} clusters {beyond.tolist()[:5]} but {collection} "
            f"has {channels.size} clusters: the table and the spike sorting do not match "
            "(another collection or revision?)"
        )
    return channels
