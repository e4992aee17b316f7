"""Convert a lake in the Hive layout (one Parquet file per asset) into the Delta tables.

The old layout (see the history of :mod:`spikelab.io.lake`)::

    <old>/units/source=<source>/dataset=<dataset>/<asset key>.parquet
    <old>/manifests/source=<source>/dataset=<dataset>/<asset key>.json (+ .png)
    <old>/raw/..., <old>/runs/...

becomes the layout of :mod:`spikelab.io.delta_lake` under a new root. The old lake is only
read, never changed or deleted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from spikelab.io import storage
from spikelab.io.delta_lake import Publication, publish, units_uri

DEFAULT_BATCH = 200
_FOOTER_KEY = b"spikelab"


def migrate(
    old_root: str | os.PathLike[str],
    new_root: str | os.PathLike[str],
    *,
    batch_size: int = DEFAULT_BATCH,
) -> dict[str, int]:
    """Publish every asset of a Hive-layout lake into a new lake's Delta tables.

    Each units file becomes its asset's rows in ``units``, with the asset's manifest (when
    there is one) in ``assets``; manifests of assets without a units file (failed loads)
    go to ``assets`` only. Manifests, rasters, raw recordings and run summaries are copied
    to the same relative paths; each copied manifest gains ``table_version`` and names the
    units table instead of the old Parquet file.

    Parameters
    ----------
    old_root, new_root : str or PathLike
        The lake to read (left as it is) and the root to write; they must differ.
    batch_size : int, default: 200
        Assets per commit.

    Returns
    -------
    dict
        ``assets`` (published), ``units`` (rows) and ``files_copied``.

    Raises
    ------
    ValueError
        If both roots are the same, or a units file carries no spikelab metadata.
    """
    old, new = _normal(old_root), _normal(new_root)
    if old == new:
        raise ValueError(f"migrate reads {old} and writes a new lake: give a different root")
    units_files = storage.list_files(storage.join(old, "units"), ".parquet")
    manifest_files = storage.list_files(storage.join(old, "manifests"), ".json")
    manifests = {path: _read_json(path) for path in manifest_files}
    with_units = {_manifest_path(old, path) for path in units_files}
    published = {"assets": 0, "units": 0}
    for batch in _batches(
        [*units_files, *(p for p in manifests if p not in with_units)], batch_size
    ):
        entries = [_entry(old, new, path, manifests) for path in batch]
        version = publish(new, [entry for entry, _ in entries])
        for entry, manifest_path in entries:
            published["assets"] += 1
            published["units"] += entry.units.num_rows if entry.units is not None else 0
            if manifest_path is not None:
                copy = dict(entry.manifest)
                if entry.units is not None:
                    copy["table_version"] = version
                target = new + manifest_path[len(old) :]
                storage.put_bytes(target, json.dumps(copy, indent=2, allow_nan=False).encode())
    copied = _copy_rest(old, new, set(manifests))
    return {**published, "files_copied": copied}


def _normal(root: str | os.PathLike[str]) -> str:
    """A root as listings spell its files: URLs as given, folders absolute."""
    text = str(root).rstrip("/")
    return text if storage.is_remote(text) else os.path.abspath(text)


def _read_json(path: str) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads(storage.get_bytes(path))
    return manifest


def _manifest_path(old: str, units_path: str) -> str:
    relative = units_path[len(storage.join(old, "units")) :]
    return storage.join(old, "manifests") + relative[: -len(".parquet")] + ".json"


def _batches(paths: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(paths), max(1, size)):
        yield paths[start : start + size]


def _entry(
    old: str, new: str, path: str, manifests: dict[str, dict[str, Any]]
) -> tuple[Publication, str | None]:
    """The publication of one old units file (or of a manifest alone) and its manifest path."""
    if path.endswith(".json"):
        manifest = manifests[path]
        key = (manifest["source"], manifest["dataset_id"], manifest["asset_id"])
        return Publication(key, None, _moved(manifest, old, new, path, None)), path
    units = pq.read_table(pa.BufferReader(storage.get_bytes(path)))
    raw_footer = (units.schema.metadata or {}).get(_FOOTER_KEY)
    if raw_footer is None:
        raise ValueError(
            f"{path} is not a spikelab units table (no {_FOOTER_KEY!r} metadata); "
            "move it out of the old lake's units folder and migrate again"
        )
    footer = json.loads(raw_footer)
    key = (footer["source"], footer["dataset_id"], footer["asset_id"])
    manifest_path: str | None = _manifest_path(old, path)
    found = manifests.get(manifest_path or "")
    if found is None:
        found = {"source": key[0], "dataset_id": key[1], "asset_id": key[2], "status": "ok"}
        manifest_path = None
    return Publication(key, units, _moved(found, old, new, path, units.num_rows)), manifest_path


def _moved(
    manifest: dict[str, Any], old: str, new: str, units_path: str, rows: int | None
) -> dict[str, Any]:
    """The manifest as the new lake tells it: outputs point into the new root."""
    outputs = []
    for output in manifest.get("outputs") or []:
        where = str(output.get("path", ""))
        if rows is not None and where.endswith(".parquet"):
            outputs.append({"path": units_uri(new), "rows": rows})
        elif where.startswith(old):
            outputs.append({**output, "path": new + where[len(old) :]})
        else:
            outputs.append(output)
    return {**manifest, "outputs": outputs}


def _copy_rest(old: str, new: str, manifests: set[str]) -> int:
    """Copy every file of manifests/, raw/ and runs/ that is not a manifest; the count."""
    copied = 0
    for folder in ("manifests", "raw", "runs"):
        for path in storage.list_files(storage.join(old, folder), ""):
            if path in manifests or path.rsplit("/", 1)[-1].startswith("."):
                continue  # manifests are rewritten; dot files are unfinished writes
            storage.put_bytes(new + path[len(old) :], storage.get_bytes(path))
            copied += 1
    return copied
