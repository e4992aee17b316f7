"""DANDI downloads: where assets land in the cache, how old partials expire, verified transfer.

The transfer itself (partial file, Range resume, hashing, verify-then-rename) is
:func:`spikelab.download.download_verified`; this module says what a DANDI asset's bytes must
match and where they may be written.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path, PurePosixPath

from spikelab.digests import Check, EtagDigest, file_digests
from spikelab.download import HttpSource, download_verified
from spikelab.exceptions import UnsafeRemoteDataError
from spikelab.io.atomic import older_than, remove_older_than
from spikelab.loaders.dandi._client import DandiClient
from spikelab.loaders.dandi._records import SHA256, DandiAsset

__all__ = [
    "download_asset",
    "fetch_asset",
    "expire_stale_downloads",
    "file_matches",
    "partial_max_age_seconds",
    "safe_destination",
]

#: Environment variable: age in hours after which a partial download is thrown away.
PARTIAL_MAX_AGE_VARIABLE = "SPIKELAB_PARTIAL_MAX_AGE_HOURS"
DEFAULT_PARTIAL_MAX_AGE_HOURS = 72.0
# Leftovers of an interrupted download: the partial file, its marker, a temporary file.
_LEFTOVER_SUFFIXES = (".partial", ".partial.json", ".part")
_MISMATCH_HINT = (
    ". The archive's copy or its published digest may be wrong: tell the dandiset's owners"
)


def _checks(asset: DandiAsset) -> list[Check]:
    """The check of the asset's published digest (none when the archive publishes none)."""
    if asset.digest is None:
        return []
    kind, value = asset.digest
    new_hasher = hashlib.sha256 if kind == SHA256 else partial(EtagDigest, asset.size or 0)
    return [Check(kind, value, new_hasher)]


def file_matches(path: Path, asset: DandiAsset) -> bool:
    """Tell whether a local file has the asset's published size and digest (hashing it once)."""
    if not path.is_file() or asset.size is None or path.stat().st_size != asset.size:
        return False
    checks = _checks(asset)
    found = file_digests(path, checks)
    return all(found[check.name] == check.expected for check in checks)


def safe_destination(download_dir: Path, asset_path: str) -> Path:
    """Place an asset under ``download_dir``, refusing paths that would leave it.

    Raises
    ------
    UnsafeRemoteDataError
        For absolute paths, ``..`` components, or a path that resolves outside (a ``ValueError``).
    """
    relative = PurePosixPath(asset_path.replace("\\", "/"))
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise UnsafeRemoteDataError(
            f"refusing asset path {asset_path!r}: it would be written outside {download_dir}"
        )
    root = download_dir.resolve()
    destination = root.joinpath(*relative.parts).resolve()
    if not destination.is_relative_to(root):
        raise UnsafeRemoteDataError(
            f"refusing asset path {asset_path!r}: it resolves outside {download_dir}"
        )
    return destination


def partial_max_age_seconds() -> float:
    """How old a partial download may get before it is discarded instead of resumed.

    Read from ``SPIKELAB_PARTIAL_MAX_AGE_HOURS`` (hours, default 72): a failed run leaves
    its partial download in the cache so that the next run resumes it, but a partial older
    than this, or any stale temporary file of the download area, is deleted.

    Raises
    ------
    ValueError
        The variable is set to something other than a non-negative number.
    """
    text = os.environ.get(PARTIAL_MAX_AGE_VARIABLE, "").strip()
    if not text:
        return DEFAULT_PARTIAL_MAX_AGE_HOURS * 3600
    try:
        hours = float(text)
    except ValueError:
        hours = math.nan
    if not hours >= 0:  # also refuses nan
        raise ValueError(
            f"{PARTIAL_MAX_AGE_VARIABLE}={text!r} is not a number of hours >= 0; "
            f"unset it for the default of {DEFAULT_PARTIAL_MAX_AGE_HOURS:g}"
        )
    return hours * 3600


def _walk(folder: Path) -> Iterator[tuple[Path, list[str]]]:
    """Every folder under ``folder`` with its file names, never following symbolic links."""
    for parent, _, files in os.walk(folder, followlinks=False):
        yield Path(parent), files


def expire_stale_downloads(folder: Path, max_age_seconds: float | None = None) -> list[Path]:
    """Delete partial downloads, their markers and ``.part`` files older than the limit.

    Empty folders that are as old go too. Files still being written are recent, so
    concurrent downloads are left alone; symbolic links are never followed.

    Parameters
    ----------
    folder : Path
        The download area (a missing folder has nothing to expire).
    max_age_seconds : float | None, default: None
        None reads :func:`partial_max_age_seconds`.

    Returns
    -------
    list of Path
        What was deleted.
    """
    limit = partial_max_age_seconds() if max_age_seconds is None else max_age_seconds
    if not folder.is_dir():
        return []
    walked = list(_walk(folder))
    # folders are judged by their age before this sweep empties them (which touches them)
    old_folders = [path for path, _ in walked[1:] if older_than(path, limit)]
    leftovers = (parent / name for parent, files in walked for name in files)
    removed = remove_older_than(
        (path for path in leftovers if path.name.endswith(_LEFTOVER_SUFFIXES)), limit
    )
    for path in sorted(old_folders, key=lambda p: len(p.parts), reverse=True):
        try:
            path.rmdir()
        except OSError:  # not empty, or just filled by a concurrent download
            continue
        removed.append(path)
    return removed


def download_asset(
    client: DandiClient,
    url: str,
    asset: DandiAsset,
    destination: Path,
    *,
    timeout_seconds: float = 600.0,
) -> Path:
    """Stream ``url`` (the asset's bytes) to ``destination``, verified before it is renamed.

    Bytes go to ``<destination>.partial``, hashed as they arrive. A broken transfer resumes
    with an HTTP Range request; a partial file left by an earlier run is resumed only when
    it was started for the same published digest and is younger than
    :func:`partial_max_age_seconds`. Bytes that do not match the published size or digest
    are deleted (with any older file at ``destination``) and never resumed: one fresh
    download follows, in case the transfer itself was corrupted, and a second mismatch is
    an error.

    Raises
    ------
    DigestMismatchError
        Both downloads differed from what the archive publishes.
    RemoteError, UnsafeRemoteDataError
        As for :func:`spikelab.download.download_verified`.
    """
    source = HttpSource(
        destination.name, lambda headers: client.request("GET", url, headers=headers, stream=True)
    )
    download_verified(
        source,
        destination,
        size=asset.size,
        checks=_checks(asset),
        policy=client.policy,
        timeout_seconds=timeout_seconds,
        partial_max_age_seconds=partial_max_age_seconds(),
        mismatch_hint=_MISMATCH_HINT,
    )
    return destination


def fetch_asset(
    client: DandiClient, asset: DandiAsset, destination: Path, *, timeout_seconds: float = 600.0
) -> Path:
    """Download ``asset`` to ``destination``, verified, from where the record says.

    See :meth:`DandiClient.read_blob`: the record's URL for a public asset, the API's
    download redirect for an embargoed one.
    """

    def download(url: str) -> Path:
        return download_asset(client, url, asset, destination, timeout_seconds=timeout_seconds)

    return client.read_blob(asset, download)
