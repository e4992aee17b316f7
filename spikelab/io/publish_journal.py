"""Journals of the work left after a commit, so a writer killed in between is made good.

A batch of assets lands in the lake in one commit; only then are each asset's raster PNG
and manifest (which records the commit's version) written. A writer killed between the
two leaves assets whose rows are in the tables but whose files are missing or old, and a
re-run skips them, as the tables say they are current. So before each commit the
publisher writes a journal (``<root>/journals/*.json``) holding every asset's raster, and
removes it once the files are written. :func:`repair_stale` finishes the work of any
journal left behind: the manifest comes from the asset's row (the assets table keeps it),
the raster from the journal, when that raster is the one the row's manifest names.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from spikelab.io import delta_lake, storage
from spikelab.io.atomic import STALE_AFTER_SECONDS
from spikelab.io.delta_lake import AssetKey, AssetRecord
from spikelab.io.lake import Lake
from spikelab.io.manifest import put_manifest, read_manifest, with_table_version

JOURNAL_FOLDER = "journals"


def write_journal(lake: Lake, rasters: Mapping[AssetKey, bytes]) -> str:
    """Record each asset's raster PNG before the commit that publishes it; the journal's path."""
    path = storage.join(lake.root, JOURNAL_FOLDER, f"{uuid.uuid4().hex}.json")
    entries = [
        {"key": list(key), "raster": base64.b64encode(raster).decode()}
        for key, raster in rasters.items()
    ]
    storage.put_bytes(path, json.dumps({"assets": entries}).encode())
    return path


def repair_stale(lake: Lake, *, older_than_seconds: float = STALE_AFTER_SECONDS) -> list[AssetKey]:
    """Finish the work of journals older than ``older_than_seconds``, then remove them.

    Younger journals may belong to a commit going on at the same time and are kept. For
    each asset of a stale journal: if its row is ``ok`` and its manifest names this
    journal's raster (by sha256), the raster and the manifest (stamped with the row's
    version) are written unless the manifest already records that version; if its row is
    not ``ok``, its raster is removed, as the publisher would have; otherwise (no row, or a
    later publication) nothing is done.

    Returns
    -------
    list of tuple
        The keys of the assets whose raster and manifest were written.
    """
    repaired: list[AssetKey] = []
    for path in storage.files_older_than(
        storage.join(lake.root, JOURNAL_FOLDER), ".json", older_than_seconds
    ):
        rasters = _rasters(path)
        records = delta_lake.asset_records(lake.root, rasters)
        for key, raster in rasters.items():
            record = records.get(key)
            if record is None:
                continue
            if record.status != "ok":
                storage.remove(lake.raster_path(*key))
            elif _left_unwritten(lake, key, record, raster):
                storage.put_bytes(lake.raster_path(*key), raster)
                put_manifest(
                    lake.manifest_path(*key), with_table_version(record.manifest, record.version)
                )
                repaired.append(key)
        storage.remove(path)
    return repaired


def _rasters(path: str) -> dict[AssetKey, bytes]:
    """The rasters a journal holds, by asset key; none if the file is not a journal."""
    try:
        entries: Iterable[dict[str, Any]] = json.loads(storage.get_bytes(path))["assets"]
        rasters = {}
        for entry in entries:
            source, dataset_id, asset_id = entry["key"]
            if not all(isinstance(part, str) for part in (source, dataset_id, asset_id)):
                return {}
            rasters[source, dataset_id, asset_id] = base64.b64decode(entry["raster"])
        return rasters
    except (ValueError, KeyError, TypeError):
        return {}


def _left_unwritten(lake: Lake, key: AssetKey, record: AssetRecord, raster: bytes) -> bool:
    """Tell whether ``record`` names ``raster`` and the asset's manifest lacks its version.

    A row naming another raster is a later publication; a manifest recording the row's
    version means the writer got that far.
    """
    path = lake.raster_path(*key)
    digest = hashlib.sha256(raster).hexdigest()
    if not any(
        output.get("path") == path and output.get("sha256") == digest
        for output in record.manifest.get("outputs") or []
    ):
        return False
    try:
        written = read_manifest(lake.manifest_path(*key)).get("table_version")
    except (FileNotFoundError, ValueError):
        return True
    return bool(written != record.version)
