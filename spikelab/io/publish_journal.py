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
    each asset of a stale journal, by its row in the assets table and its manifest:

    - row ``ok`` and naming this journal's raster (by sha256), manifest not yet recording
      that version or a later one: the raster and the manifest (from the row, stamped with
      its version) are written;
    - row not ``ok`` (its units were deleted) and manifest not ``ok``: the raster is
      removed, as the publisher would have;
    - otherwise (no row, a later publication, the work already done): nothing.

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
        records = delta_lake.asset_records(lake, rasters)
        for key, raster in rasters.items():
            record = records.get(key)
            if record is None:
                continue
            written = _manifest(lake, key)
            if record.status != "ok":
                if written.get("status") != "ok":
                    storage.remove(lake.raster_path(*key))
            elif _names(record, raster) and not _records_version(written, record.version):
                storage.put_bytes(lake.raster_path(*key), raster)
                put_manifest(
                    lake.manifest_path(*key), with_table_version(record.manifest, record.version)
                )
                repaired.append(key)
        storage.remove(path)
    return repaired


def _rasters(path: str) -> dict[AssetKey, bytes]:
    """The rasters a journal holds, by asset key; none if the file is not a journal (or gone)."""
    try:
        entries: Iterable[dict[str, Any]] = json.loads(storage.get_bytes(path))["assets"]
        rasters = {}
        for entry in entries:
            source, dataset_id, asset_id = entry["key"]
            if not all(isinstance(part, str) for part in (source, dataset_id, asset_id)):
                return {}
            rasters[source, dataset_id, asset_id] = base64.b64decode(entry["raster"])
        return rasters
    except (FileNotFoundError, ValueError, KeyError, TypeError):  # gone: another run's repair
        return {}


def _manifest(lake: Lake, key: AssetKey) -> dict[str, Any]:
    """The asset's manifest as it is on disk; empty when there is none (or it is not JSON)."""
    try:
        return read_manifest(lake.manifest_path(*key))
    except (FileNotFoundError, ValueError):
        return {}


def _names(record: AssetRecord, raster: bytes) -> bool:
    """Tell whether the row's manifest lists ``raster`` (by sha256) among its PNG outputs."""
    digest = hashlib.sha256(raster).hexdigest()
    return any(
        str(output.get("path", "")).endswith(".png") and output.get("sha256") == digest
        for output in record.manifest.get("outputs") or []
    )


def _records_version(manifest: Mapping[str, Any], version: int | None) -> bool:
    """Tell whether a manifest records ``version`` or a later one (a later run's work)."""
    written = manifest.get("table_version")
    return isinstance(written, int) and version is not None and written >= version
