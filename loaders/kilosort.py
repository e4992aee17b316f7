"""KiloSort / Phy output folders: spike_times.npy + spike_clusters.npy, labels, channels."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spikelab.exceptions import FileFormatError
from spikelab.loaders._common import errors_naming
from spikelab.loaders._phy_labels import ClusterTable, read_cluster_table
from spikelab.spikedata import SpikeData, group_by_unit
from spikelab.units import check_time_unit, to_ms


def load_spikedata_from_kilosort(
    folder: str | Path,
    *,
    fs_Hz: float | None,
    spike_times_file: str = "spike_times.npy",
    spike_clusters_file: str = "spike_clusters.npy",
    cluster_info_tsv: str | Path | None = None,
    time_unit: str = "samples",
    include_noise: bool = False,
    length_ms: float | None = None,
    channel_map_file: str = "channel_map.npy",
    channel_positions_file: str = "channel_positions.npy",
) -> SpikeData:
    """Load a KiloSort or Phy output folder, one unit per cluster.

    Spikes are grouped by cluster with one linear-time stable sort; the arrays are
    memory-mapped. Noise clusters are dropped unless ``include_noise``.

    Parameters
    ----------
    folder : str or Path
        The KiloSort/Phy output folder.
    fs_Hz : float or None
        Sampling rate in Hz (converts sample indices to ms). Required for
        ``time_unit='samples'``; may be None for ``'s'`` and ``'ms'``.
    spike_times_file : str, default: "spike_times.npy"
        Spike times file, relative to ``folder``.
    spike_clusters_file : str, default: "spike_clusters.npy"
        Cluster of each spike. When the default file is absent, ``spike_templates.npy``
        (uncurated KiloSort output) is used instead.
    cluster_info_tsv : str or Path or None, default: None
        A TSV with a ``cluster_id`` column and a ``group`` or ``KSLabel`` column; only that
        file is used. When None, the labels in the folder are read, curated first:
        ``cluster_group.tsv``, the ``group`` column of ``cluster_info.tsv``, then
        ``cluster_KSLabel.tsv``.
    time_unit : str, default: "samples"
        Unit of the spike times: ``'samples'``, ``'s'`` or ``'ms'``.
    include_noise : bool, default: False
        Keep clusters labelled ``noise``.
    length_ms : float | None, default: None
        Recording length; by default the last spike.
    channel_map_file : str, default: "channel_map.npy"
        Channel number of each template channel.
    channel_positions_file : str, default: "channel_positions.npy"
        Position of each channel (channels x 2 or 3).

    Returns
    -------
    SpikeData
        Units in ascending cluster id (``metadata['cluster_ids']``). Each unit has
        ``unit_id``, ``label`` and ``label_source`` (None when unlabelled), ``electrode``
        and ``location`` when known, and the other ``cluster_info.tsv`` columns.

    Raises
    ------
    FileNotFoundError
        The folder or a spike file is missing.
    ValueError
        A bad time unit or rate, arrays of different length, negative times or cluster
        ids, an empty TSV, or a file that is not a valid ``.npy``.
    """
    check_time_unit(time_unit, fs_Hz)
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"KiloSort folder not found: {root}")
    times = _load_npy(root / spike_times_file)
    clusters_path = root / spike_clusters_file
    if spike_clusters_file == "spike_clusters.npy" and not clusters_path.is_file():
        clusters_path = root / "spike_templates.npy"
        if not clusters_path.is_file():
            raise FileNotFoundError(
                f"neither spike_clusters.npy nor spike_templates.npy found in {root}"
            )
    clusters = _load_npy(clusters_path)
    if times.size != clusters.size:
        raise FileFormatError(
            f"{root}: {spike_times_file} has {times.size} spikes but {clusters_path.name} "
            f"has {clusters.size}; they must match one to one"
        )
    if times.dtype.kind not in "iuf":
        raise FileFormatError(
            f"{root}: {spike_times_file} must hold spike times as numbers, got dtype "
            f"{times.dtype}; re-export it from the sorter"
        )
    if times.size and times.dtype.kind in "if":
        if times.min() < 0:
            raise FileFormatError(f"{root}: {spike_times_file} holds negative spike times")
    clusters = _integer_ids(clusters, root, clusters_path.name)
    table = read_cluster_table(root, cluster_info_tsv)
    present, grouped, ends = _spikes_by_cluster(clusters, to_ms(times, time_unit, fs_Hz))
    kept_ids = [
        cluster_id
        for cluster_id in present
        if include_noise or table.labels.get(cluster_id) != "noise"
    ]
    row_of = {cluster_id: row for row, cluster_id in enumerate(present)}
    channels = _channels(root, kept_ids, present, clusters, table, channel_map_file)
    positions = _optional_npy(root / channel_positions_file)

    attributes = []
    for unit_index, cluster_id in enumerate(kept_ids):
        attributes.append(
            _unit_attributes(cluster_id, unit_index, channels.get(cluster_id), positions, table)
        )
    with errors_naming(root):
        return SpikeData.from_flat(
            grouped,
            ends,
            units=[row_of[cluster_id] for cluster_id in kept_ids],
            length=length_ms,
            neuron_attributes=attributes,
            metadata={
                "source_file": str(root),
                "format": "kilosort",
                "fs_Hz": None if fs_Hz is None else float(fs_Hz),
                "cluster_ids": kept_ids,
                "label_source": table.files_used,
                "clusters_file": clusters_path.name,
            },
        )


def _load_npy(path: Path) -> NDArray[Any]:
    if not path.is_file():
        raise FileNotFoundError(f"KiloSort file not found: {path}")
    try:
        return np.load(path, mmap_mode="r").reshape(-1)
    except (ValueError, OSError, EOFError) as error:  # EOFError: a 0-byte file
        raise FileFormatError(f"{path} is not a valid .npy file ({error})") from error


def _integer_ids(clusters: NDArray[Any], root: Path, name: str) -> NDArray[Any]:
    """Cluster ids as integers from 0 to 2**63 - 1, signed or unsigned as stored.

    Whole-number floats (some exporters write them) are cast; anything else, a negative
    id, or an unsigned id too large for int64 raises FileFormatError naming the file.
    """
    if clusters.dtype.kind == "f" and np.all(np.mod(clusters, 1) == 0):
        clusters = clusters.astype(np.int64)
    if clusters.dtype.kind not in "iu":
        raise FileFormatError(
            f"{root}: {name} must hold whole-number cluster ids, got dtype {clusters.dtype}"
        )
    if clusters.size and int(clusters.min()) < 0:
        raise FileFormatError(f"{root}: {name} holds negative cluster ids")
    if clusters.size and int(clusters.max()) > np.iinfo(np.int64).max:
        raise FileFormatError(
            f"{root}: {name} holds cluster id {int(clusters.max())}, beyond 2**63 - 1; "
            "cluster ids this large are not supported"
        )
    return clusters


def _spikes_by_cluster(
    clusters: NDArray[Any], times_ms: NDArray[np.float64]
) -> tuple[list[int], NDArray[np.float64], NDArray[np.int64]]:
    """Group spike times by cluster: the ids with spikes (ascending), the times, the ends.

    Ids up to a few times the spike count are grouped in one linear pass, one row per
    possible id; sparser ids (a few huge uint32 or uint64 ids) are first renumbered by
    rank, so that no row is allocated for ids that never occur.
    """
    if clusters.size == 0:
        return [], np.empty(0, dtype=np.float64), np.empty(0, dtype=np.int64)
    highest = int(clusters.max())
    if highest < 4 * clusters.size + 1024:
        grouped, ends = group_by_unit(clusters, times_ms, highest + 1)
        rows = np.flatnonzero(np.diff(ends, prepend=0))
        return rows.tolist(), grouped, ends[rows]
    ids, rank = np.unique(clusters, return_inverse=True)
    grouped, ends = group_by_unit(rank.reshape(-1), times_ms, ids.size)
    return [int(cluster_id) for cluster_id in ids], grouped, ends


def _optional_npy(path: Path, *, mmap: bool = False) -> NDArray[Any] | None:
    """Load an auxiliary .npy (channel map, positions, templates); a corrupt one only warns."""
    if not path.is_file():
        return None
    try:
        return np.load(path, mmap_mode="r" if mmap else None)
    except (ValueError, OSError, EOFError) as error:  # EOFError: a 0-byte file
        warnings.warn(f"ignoring unreadable {path} ({error})", UserWarning, stacklevel=3)
        return None


def _channels(
    root: Path,
    cluster_ids: list[int],
    all_cluster_ids: list[int],
    clusters: NDArray[Any],
    table: ClusterTable,
    channel_map_file: str,
) -> dict[int, int]:
    """Channel of each cluster: TSV ``ch``, else its dominant template's peak, else the map.

    ``cluster_ids`` are the kept clusters; ``all_cluster_ids`` every cluster with spikes,
    noise included, which decides whether ``channel_map[cluster_id]`` is only a guess.
    """
    channel_map = _optional_npy(root / channel_map_file)
    if channel_map is not None:
        channel_map = channel_map.reshape(-1)
    channels = {cid: table.channels[cid] for cid in cluster_ids if cid in table.channels}
    pending = [cid for cid in cluster_ids if cid not in channels]
    if pending:
        channels.update(_template_peak_channels(root, pending, clusters, channel_map))
    pending = [cid for cid in cluster_ids if cid not in channels]
    if pending and channel_map is not None:
        if all_cluster_ids != list(range(len(all_cluster_ids))):
            warnings.warn(
                f"{root}: cluster ids are not sequential (not 0..{len(all_cluster_ids) - 1}), "
                f"so reading each cluster's channel as {channel_map_file}[cluster_id] is only "
                "a guess",
                UserWarning,
                stacklevel=3,
            )
        for cid in pending:
            if cid < channel_map.size:
                channels[cid] = int(channel_map[cid])
            else:
                warnings.warn(
                    f"{root}: cluster {cid} is past the end of {channel_map_file} "
                    f"({channel_map.size} channels); it gets no electrode",
                    UserWarning,
                    stacklevel=3,
                )
    return channels


def _template_peak_channels(
    root: Path, cluster_ids: list[int], clusters: NDArray[Any], channel_map: NDArray[Any] | None
) -> dict[int, int]:
    templates_path = root / "templates.npy"
    templates = _optional_npy(templates_path, mmap=True)
    if templates is None:
        return {}
    if templates.ndim != 3:
        warnings.warn(
            f"Templates fallback skipped: {templates_path} must be 3-D (templates, samples, "
            f"channels) but has shape {templates.shape}; channels come from "
            "channel_map[cluster_id] instead",
            UserWarning,
            stacklevel=4,
        )
        return {}
    spike_templates_path = root / "spike_templates.npy"
    spike_templates = _optional_npy(spike_templates_path, mmap=True)
    if spike_templates is not None and spike_templates.size != clusters.size:
        warnings.warn(
            f"ignoring {spike_templates_path} for the channels: it has {spike_templates.size} "
            f"entries but there are {clusters.size} spikes",
            UserWarning,
            stacklevel=4,
        )
        return {}
    dominant: dict[int, int]
    if spike_templates is not None:
        try:
            spike_templates = _integer_ids(
                np.asarray(spike_templates).reshape(-1), root, spike_templates_path.name
            )
        except FileFormatError as error:
            warnings.warn(f"ignoring it for the channels: {error}", UserWarning, stacklevel=4)
            return {}
        wanted = np.isin(clusters, cluster_ids)
        # Both as int64 (ids are checked to fit): a uint64 beside an int64 would stack as float.
        pairs, pair_counts = np.unique(
            np.stack([clusters[wanted].astype(np.int64), spike_templates[wanted].astype(np.int64)]),
            axis=1,
            return_counts=True,
        )
        dominant = {}
        best: dict[int, int] = {}
        for (cid, template), count in zip(pairs.T.tolist(), pair_counts.tolist(), strict=True):
            if count > best.get(cid, 0):
                best[cid], dominant[cid] = count, template
    else:
        dominant = {cid: cid for cid in cluster_ids}  # uncurated: cluster id = template id
    channels = {}
    for cid, template in dominant.items():
        if template >= templates.shape[0]:
            continue
        waveform = np.asarray(templates[template])
        peak = int(np.argmax(waveform.max(axis=0) - waveform.min(axis=0)))
        if channel_map is None:
            channels[cid] = peak
        elif peak < channel_map.size:
            channels[cid] = int(channel_map[peak])
    return channels


def _unit_attributes(
    cluster_id: int,
    unit_index: int,
    channel: int | None,
    positions: NDArray[Any] | None,
    table: ClusterTable,
) -> dict[str, Any]:
    attributes: dict[str, Any] = dict(table.extra.get(cluster_id, {}))
    attributes.update(
        unit_id=cluster_id,
        label=table.labels.get(cluster_id),
        label_source=table.label_sources.get(cluster_id),
    )
    if channel is not None:
        attributes["electrode"] = channel
    if positions is not None:
        row = channel if channel is not None and 0 <= channel < len(positions) else unit_index
        if row < len(positions):
            attributes["location"] = [float(value) for value in np.ravel(positions[row])]
    return attributes
