"""IBL: load one Brain-Wide Map probe's good units, trials and metadata through ONE-api.

The units are the probe's rows of the Brain-Wide Map units table; their spikes, clusters
and channels are ALF objects that ONE loads. Finding probes is :mod:`spikelab.loaders.ibl.query`.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from numpy.typing import NDArray

if TYPE_CHECKING:
    import pandas as pd

from spikelab._optional import import_optional
from spikelab.exceptions import DatasetNotFoundError
from spikelab.loaders._common import errors_naming
from spikelab.loaders.ibl._alf_spikes import channel_of_cluster, good_unit_trains
from spikelab.loaders.ibl._bwm_units import (
    bwm_units,
    default_one,
    require_columns,
    with_regions,
)
from spikelab.loaders.ibl._metadata import (
    BestEffort,
    electrodes_by_channel,
    insertion_fields,
    integer_or_none,
    number_or_none,
    session_fields,
    subject_fields,
    text_or_none,
    trial_fields,
)
from spikelab.loaders.ibl.query import good_unit_mask
from spikelab.spikedata import SpikeData

# Tried after the probe's own collections, except those of other probes once the probe is known.
FALLBACK_COLLECTIONS = ("alf/probe00/pykilosort", "alf/probe01/pykilosort", "alf")
TRIALS_COLLECTION = "alf"
QC_FIELDS = (
    "label",
    "firing_rate",
    "presence_ratio",
    "amp_median",
    "contamination",
    "drift",
    "noise_cutoff",
    "spike_count",
)

CHANNEL_ATTRIBUTES = ["brainLocationIds_ccf_2017", "mlapdv", "localCoordinates", "rawInd"]


def load_spikedata_from_ibl(
    eid: str | uuid.UUID,
    pid: str | uuid.UUID,
    *,
    length_ms: float | None = None,
    collection: str | None = None,
    one: Any = None,
    units_table: pd.DataFrame | None = None,
) -> SpikeData:
    """Load the good units of one IBL probe insertion, with trials and session metadata.

    The units are the probe's rows of the Brain-Wide Map units table (``label == 1``),
    ordered by cluster id; their spikes come from the ALF ``spikes`` object. The
    collection is found from the probe name (the Alyx insertion record online; offline the
    cache's ``insertions.pqt`` or a ``probe_name`` column of the table): first
    ``alf/<probe>/pykilosort``, then ``alf/<probe>``, then the fallback list without other
    probes' collections (all of it when the probe name is unknown).

    Parameters
    ----------
    eid : str | uuid.UUID
        Session (experiment) id.
    pid : str | uuid.UUID
        Probe insertion id.
    length_ms : float | None, default: None
        Recording length; otherwise the last spike time.
    collection : str | None, default: None
        Load from this ALF collection only (e.g. ``"alf/probe00/pykilosort"``); no search
        and no fallback.
    one : one.api.One | None, default: None
        A ready ONE instance (reuse one per flow run); None connects to the public server.
    units_table : pandas.DataFrame | None, default: None
        A ready Brain-Wide Map units table; None fetches it with :func:`bwm_units`.

    Returns
    -------
    SpikeData
        Spike times in ms. Each unit: ``unit_id`` and ``cluster_id``, ``location_label``
        (the Beryl acronym), ``beryl``, ``cosmos``, ``acronym`` (Allen), ``atlas_id``,
        ``electrode`` (channel), ``location`` ([x, y, z] in mm), ``group_name`` (probe),
        ``cluster_uuid`` and the QC fields of the table. Metadata: ``eid``, ``pid``,
        ``identifier``, ``format`` ("IBL"), ``collection``, ``unit_count``,
        ``duration_seconds``; trial times in ms (``trial_start_times``,
        ``trial_end_times``, ``stim_on_times``, ``stim_off_times``, ``go_cue_times``,
        ``response_times``, ``feedback_times``, ``first_movement_times``) with ``n_trials``
        and the unconverted ``choice``, ``feedback_type``, ``contrast_left``,
        ``contrast_right``, ``probability_left``; and, as far as they can be looked up,
        session, subject and insertion fields and ``electrodes_by_channel``
        (``{channel: {location, group_name, x, y, z, atlas_id, local_x, local_y,
        raw_index}}``, x/y/z in mm, local in µm). A lookup that fails leaves its fields out.

    Raises
    ------
    ImportError
        ONE-api is not installed (``pip install 'spikelab[ibl]'``).
    ValueError
        An id that is not a UUID, a pid of another session, or no spikes without
        ``length_ms``.
    DatasetNotFoundError
        (a ``KeyError``) No ``spikes`` object in the collections tried; the message lists
        them.
    FileFormatError
        The table names clusters the spike sorting does not have.
    """
    alf_errors = import_optional("one.alf.exceptions", "ibl")
    eid, pid = _uuidtext_or_none(eid, "eid"), _uuidtext_or_none(pid, "pid")
    one = one if one is not None else default_one()
    table = units_table if units_table is not None else bwm_units(one)
    units = probe_units(table, eid, pid)
    lookup = BestEffort((alf_errors.ALFError, OSError, LookupError, ValueError))
    insertion = lookup("insertion", _insertion_record, one, pid) or {}
    if insertion.get("eid") not in (None, eid):
        raise ValueError(f"pid {pid} is an insertion of session {insertion['eid']}, not of {eid}")
    probe = insertion.get("name") or _probe_name_from_table(table, pid)
    tried = [collection] if collection else candidate_collections(probe)
    spikes, found = _load_spikes(
        one, eid, pid, tried, alf_errors.ALFObjectNotFound, lookup, explicit=bool(collection)
    )
    if probe is None and collection is None and found != "alf":
        warnings.warn(
            f"the probe name of pid {pid} is unknown (no insertion record, no probe_name "
            f"column): loaded {found}, the first collection of the fallback order with "
            "spikes; pass collection= if that is another probe's",
            UserWarning,
            stacklevel=2,
        )
    clusters = lookup("clusters", _load, one, eid, "clusters", found, ["channels"])
    channels = lookup("channels", _load, one, eid, "channels", found, CHANNEL_ATTRIBUTES)
    channel_of = channel_of_cluster(clusters, units["cluster_id"].to_numpy(), pid, found)
    times_ms, ends = good_unit_trains(spikes, units["cluster_id"].to_numpy(), found)
    if times_ms.size == 0 and length_ms is None:
        raise ValueError(
            f"probe {pid} has no spikes from good units ({len(units)} good units in the "
            "Brain-Wide Map table): pass length_ms to get an empty SpikeData"
        )
    metadata: dict[str, Any] = {
        "eid": eid,
        "pid": pid,
        "identifier": eid,
        "format": "IBL",
        "collection": found,
        "unit_count": len(units),
    }
    trials = lookup("trials", one.load_object, eid, "trials", collection=TRIALS_COLLECTION)
    metadata.update(trial_fields(trials or {}))
    session = lookup("session", _session_record, one, eid) or {}
    metadata.update(session_fields(session))
    if _is_online(one) and session.get("subject"):
        subject = lookup("subject", one.alyx.rest, "subjects", "read", id=session["subject"])
        metadata.update(subject_fields(subject or {}, metadata.get("session_start_time")))
    metadata.update(insertion_fields(insertion))
    if channels is not None:
        metadata["electrodes_by_channel"] = lookup(
            "channel regions", electrodes_by_channel, channels, probe
        )
    metadata = {key: value for key, value in metadata.items() if value is not None}
    with errors_naming(f"IBL probe {pid}"):
        sd = SpikeData.from_flat(
            times_ms,
            ends,
            length=length_ms,
            neuron_attributes=unit_attributes(units, channel_of, probe),
            metadata=metadata,
        )
    sd.metadata["duration_seconds"] = sd.length / 1000.0
    return sd


def _uuidtext_or_none(value: str | uuid.UUID, name: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise ValueError(
            f"{name} must be an IBL UUID such as '0802ced5-33a3-405e-8336-b65ebc5cb07c', "
            f"got {value!r}"
        ) from None


def probe_units(table: pd.DataFrame, eid: str, pid: str) -> pd.DataFrame:
    """Return the good units of ``pid`` in the units table, one row per cluster, by cluster id."""
    require_columns(table, ["pid", "cluster_id"])
    rows = table[(table["pid"].astype(str) == pid) & good_unit_mask(table)]
    if "eid" in rows.columns and not (rows["eid"].astype(str) == eid).all():
        other = rows.loc[rows["eid"].astype(str) != eid, "eid"].iloc[0]
        raise ValueError(
            f"the units table lists pid {pid} under session {other}, not {eid}: check the pair"
        )
    duplicated = rows["cluster_id"][rows["cluster_id"].duplicated()]
    if duplicated.size:
        raise ValueError(
            f"the units table lists cluster(s) {sorted(set(duplicated.tolist()))} of pid {pid} "
            "more than once"
        )
    rows = rows.sort_values("cluster_id", kind="stable").reset_index(drop=True)
    return with_regions(rows) if "atlas_id" in rows.columns else rows


def candidate_collections(probe: str | None) -> list[str]:
    """Order the collections to try for ``probe`` (see :func:`load_spikedata_from_ibl`)."""
    if probe is None:
        return list(FALLBACK_COLLECTIONS)
    own = [f"alf/{probe}/pykilosort", f"alf/{probe}"]
    others = [c for c in FALLBACK_COLLECTIONS if c.split("/")[1:2] in ([], [probe])]
    return own + [c for c in others if c not in own]


def _load(one: Any, eid: str, name: str, collection: str, attributes: list[str]) -> Any:
    """Load only the named attributes of an ALF object (online, ONE downloads just those)."""
    return one.load_object(eid, name, collection=collection, attribute=attributes)


def _load_spikes(
    one: Any,
    eid: str,
    pid: str,
    tried: list[str],
    not_found: type[Exception],
    lookup: BestEffort,
    *,
    explicit: bool,
) -> tuple[Mapping[str, Any], str]:
    for collection in tried:
        try:
            spikes = _load(one, eid, "spikes", collection, ["times", "clusters"])
        except not_found:
            continue
        return spikes, collection
    present = lookup("collections", one.list_collections, eid)
    where = "the collection given" if explicit else "any of the collections tried"
    raise DatasetNotFoundError(
        f"no spikes object for probe {pid} of session {eid} in {where}: "
        f"{', '.join(tried)}. The session has "
        f"{', '.join(sorted(present)) if present else 'no listed collections'}; pass "
        "collection= naming the probe's spike-sorting collection"
    )


def unit_attributes(
    units: pd.DataFrame, channel_of: NDArray[Any] | None, probe: str | None
) -> list[dict[str, Any]]:
    """Build the per-unit attributes from the table rows (see :func:`load_spikedata_from_ibl`)."""
    attributes = []
    for row in units.to_dict("records"):
        cluster = int(row["cluster_id"])
        beryl = text_or_none(row.get("Beryl"))
        unit: dict[str, Any] = {
            "unit_id": cluster,
            "cluster_id": cluster,
            "location_label": beryl,
            "beryl": beryl,
            "cosmos": text_or_none(row.get("Cosmos")),
            "acronym": text_or_none(row.get("acronym")),
            "atlas_id": integer_or_none(row.get("atlas_id")),
            "group_name": probe,
        }
        if channel_of is not None:
            unit["electrode"] = int(channel_of[cluster])
        xyz = [
            value * 1000.0 for axis in "xyz" if (value := number_or_none(row.get(axis))) is not None
        ]
        if len(xyz) == 3:  # the table gives metres
            unit["location"] = xyz
        if (uuid_text := text_or_none(row.get("uuids"))) is not None:
            unit["cluster_uuid"] = uuid_text
        unit.update({name: number_or_none(row[name]) for name in QC_FIELDS if name in row})
        if "spike_count" in unit:
            unit["spike_count"] = integer_or_none(unit["spike_count"])
        attributes.append(unit)
    return attributes


# ------------------------------------------------------------------------ metadata


def _is_online(one: Any) -> bool:
    return not getattr(one, "offline", True) and hasattr(one, "alyx")


def _insertion_record(one: Any, pid: str) -> dict[str, Any] | None:
    """``{eid, name, model, json}`` of the insertion: Alyx online, ``insertions.pqt`` offline."""
    import pandas as pd

    if _is_online(one):
        record = one.alyx.rest("insertions", "read", id=pid)
        return {
            "eid": str(record["session"]),
            "name": record.get("name"),
            "model": record.get("model"),
            "json": record.get("json"),
        }
    path = Path(one.cache_dir) / "insertions.pqt"
    if not path.is_file():
        return None
    table = pd.read_parquet(path).reset_index()
    rows = table[table["id"].astype(str) == pid]
    if rows.empty:
        return None
    row = rows.iloc[0]
    return {key: row.get(key) for key in ("name", "model", "json")} | {"eid": str(row["eid"])}


def _probe_name_from_table(table: pd.DataFrame, pid: str) -> str | None:
    for column in ("probe_name", "pname"):
        if column in table.columns:
            names = table.loc[table["pid"].astype(str) == pid, column].dropna()
            if not names.empty:
                return str(names.iloc[0])
    return None


def _session_record(one: Any, eid: str) -> Mapping[str, Any]:
    if _is_online(one):
        return one.alyx.rest("sessions", "read", id=eid)  # type: ignore[no-any-return]
    return dict(one.get_details(eid))
