"""The IBL Brain-Wide Map units table: from ``brainwidemap`` when installed, else our own reader.

``brainwidemap`` is installed from its git repository, not from the package registry, so
spikelab cannot require it. Without it, :func:`bwm_units` downloads the published aggregate
``aggregates/<tag>/clusters.pqt`` from the public bucket ``ibl-brain-wide-map-public``
(unsigned S3 requests), checks its MD5, keeps it in the ONE cache folder and applies the
Brain-Wide Map unit filters itself.

Where the MD5 comes from: S3 publishes one with every object, its ETag. For an object
uploaded in one part the ETag is the MD5 of the bytes; for a multipart upload it is the MD5
of the parts' MD5 digests followed by ``-<number of parts>``, and the part size is read
from the object's first part (``HeadObject`` with ``PartNumber=1``). A caller who holds a
checksum from elsewhere passes it as ``expected_md5`` and then it must match as well.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import logging
import os
import threading
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from spikelab._optional import import_optional, is_installed
from spikelab.exceptions import DigestMismatchError, RemoteError
from spikelab.io.atomic import atomic_write
from spikelab.loaders._download import EtagDigest

OPENALYX_URL = "https://openalyx.internationalbrainlab.org"
PUBLIC_PASSWORD = "international"
BUCKET = "ibl-brain-wide-map-public"
DEFAULT_TAG = "2024_Q2_IBL_et_al_BWM"
TABLE_NAME = "clusters.pqt"
EXCLUDED_REGIONS = ("void", "root")
CHUNK_BYTES = 1024 * 1024
STREAM_ATTEMPTS = 3  # a transfer cut mid-body resumes with a Range request this many times
HASH_READ_BYTES = 4 * 1024 * 1024

_logger = logging.getLogger(__name__)
_memo: dict[tuple[Any, ...], pd.DataFrame] = {}
_memo_lock = threading.Lock()


def default_one() -> Any:
    """Connect to the public IBL server (OpenAlyx) with its public password.

    Returns
    -------
    one.api.OneAlyx
        ONE's own memoised instance: the same object for every call in a process.

    Raises
    ------
    ImportError
        If ONE-api is not installed.
    """
    one_api = import_optional("one.api", "ibl")
    return one_api.ONE(base_url=OPENALYX_URL, password=PUBLIC_PASSWORD, silent=True)


def bwm_units(
    one: Any = None,
    *,
    tag: str = DEFAULT_TAG,
    s3_endpoint_url: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    expected_md5: str | None = None,
    min_qc: float | None = 1.0,
    min_units_sessions: tuple[int, int] | None = (5, 2),
) -> pd.DataFrame:
    """Return the Brain-Wide Map units table: good units with their Beryl and Cosmos regions.

    With ``brainwidemap`` importable, its ``bwm_units(one)`` provides the table, filtered by
    its own criteria (release, sessions, units); only a missing ``Cosmos`` column is added.
    Otherwise the aggregate ``clusters.pqt`` of ``tag`` is downloaded once, verified, kept
    under ``<cache>/bwm_tables/<tag>/``, and filtered as ``brainwidemap`` filters units:
    ``label >= min_qc``; ``Beryl`` and ``Cosmos`` acronyms from ``atlas_id`` (iblatlas
    mappings); units in ``void``/``root`` or with an unknown atlas id dropped; a region kept
    in a session only with at least ``min_units_sessions[0]`` units there, and only if at
    least ``min_units_sessions[1]`` sessions keep it. The result is memoised per process, so
    later calls download and read nothing.

    Parameters
    ----------
    one : one.api.One | None, default: None
        Its ``cache_dir`` holds the downloaded table; ``brainwidemap`` also queries through it
        (then None connects to the public server).
    tag : str, default: "2024_Q2_IBL_et_al_BWM"
        Release tag of the aggregate table (the last one whose published checksums cover
        both ``clusters`` and ``trials``).
    s3_endpoint_url : str | None, default: None
        Another S3 endpoint (a mirror, a test server); else ``AWS_ENDPOINT_URL`` if set, else
        AWS.
    cache_dir : str | PathLike | None, default: None
        Folder for the table; else ``one.cache_dir``, else ONE's folder for the public server.
    expected_md5 : str | None, default: None
        A checksum known from elsewhere; the download must match it and the object's ETag.
    min_qc : float | None, default: 1.0
        Smallest ``label`` kept (1 = passed all three single-unit metrics); None keeps all.
        Used by our reader, not passed to ``brainwidemap``.
    min_units_sessions : tuple of int | None, default: (5, 2)
        Units per session and sessions per region for a region to stay; None skips this.
        Used by our reader, not passed to ``brainwidemap``.

    Returns
    -------
    pandas.DataFrame
        One row per unit: ``eid, pid, cluster_id, uuids, label, atlas_id, acronym, x, y, z``
        (metres), the QC metrics, ``Beryl`` and ``Cosmos``.

    Raises
    ------
    ImportError
        boto3 (``spikelab[s3]``) or iblatlas (``spikelab[ibl]``) is missing.
    RemoteError
        The table could not be downloaded.
    DigestMismatchError
        The downloaded bytes do not match the published MD5.
    """
    module = _brainwidemap()
    if module is not None:
        one = one if one is not None else default_one()
        key: tuple[Any, ...] = ("brainwidemap", str(one.cache_dir))

        def load() -> pd.DataFrame:
            return with_regions(pd.DataFrame(module.bwm_units(one)))

    else:
        folder = _cache_root(one, cache_dir) / "bwm_tables" / tag
        endpoint = s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        key = ("s3", str(folder.resolve()), endpoint, expected_md5, min_qc, min_units_sessions)

        def load() -> pd.DataFrame:
            path = fetch_clusters_table(folder, tag, endpoint_url=endpoint, md5=expected_md5)
            return filter_units(pd.read_parquet(path), min_qc, min_units_sessions)

    with _memo_lock:
        if key not in _memo:
            _memo[key] = load()
        return _memo[key].copy(deep=False)


def clear_bwm_units_cache() -> None:
    """Forget the tables :func:`bwm_units` keeps in memory (files on disk stay)."""
    with _memo_lock:
        _memo.clear()


def _brainwidemap() -> Any:
    """Import ``brainwidemap``; None when it is absent or fails to import."""
    if not is_installed("brainwidemap"):
        return None
    try:
        return importlib.import_module("brainwidemap")
    except ImportError as error:
        warnings.warn(
            f"brainwidemap is installed but does not import ({error}); reading the "
            "Brain-Wide Map table from the public bucket instead",
            UserWarning,
            stacklevel=3,
        )
        return None


def _cache_root(one: Any, cache_dir: str | os.PathLike[str] | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    if one is not None:
        return Path(one.cache_dir)
    params = import_optional("one.params", "ibl")
    try:
        return Path(params.get_cache_dir(OPENALYX_URL))
    except KeyError:  # ONE is set up, but not for the public server
        return Path(params.CACHE_DIR_DEFAULT, OPENALYX_URL.split("//", 1)[1])


# ------------------------------------------------------------------------ download


def fetch_clusters_table(
    folder: Path, tag: str, *, endpoint_url: str | None, md5: str | None
) -> Path:
    """Return ``folder/clusters.pqt``, downloading and verifying it unless a verified copy is there.

    A verified copy is one whose MD5 still equals the digest recorded beside it
    (``clusters.pqt.md5.json``) when it was downloaded; it is used without any request.
    """
    path = folder / TABLE_NAME
    record = folder / f"{TABLE_NAME}.md5.json"
    if _verified_copy(path, record, md5):
        return path
    client = s3_client(endpoint_url)
    digest, etag = download_verified(client, f"aggregates/{tag}/{TABLE_NAME}", path, md5=md5)
    with atomic_write(record) as handle:
        handle.write(
            json.dumps({"bucket": BUCKET, "tag": tag, "etag": etag, "md5": digest}).encode()
        )
    return path


def _verified_copy(path: Path, record: Path, md5: str | None) -> bool:
    if not (path.is_file() and record.is_file()):
        return False
    recorded = json.loads(record.read_text()).get("md5")
    digest = hashlib.md5()
    with path.open("rb") as handle:
        while block := handle.read(HASH_READ_BYTES):
            digest.update(block)
    if digest.hexdigest() != recorded or (md5 is not None and md5.lower() != recorded):
        _logger.info("cached %s does not match its recorded MD5; downloading it again", path)
        return False
    return True


def s3_client(endpoint_url: str | None) -> Any:
    """Make an S3 client that sends unsigned (anonymous) requests, with botocore's retries."""
    boto3 = import_optional("boto3", "s3")
    botocore_config = import_optional("botocore.config", "s3")
    config = botocore_config.Config(
        signature_version=import_optional("botocore", "s3").UNSIGNED,
        retries={"max_attempts": 5, "mode": "standard"},
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url, config=config, region_name="us-east-1"
    )


def download_verified(
    client: Any, key: str, destination: Path, *, md5: str | None
) -> tuple[str, str]:
    """Stream ``s3://ibl-brain-wide-map-public/<key>`` to ``destination`` after checking its MD5.

    The bytes go to a temporary file beside ``destination`` and are hashed as they arrive;
    only a file whose digest equals the ETag (and ``md5``, when given) is renamed into place.
    A body cut short resumes with a Range request pinned to the same ETag.

    Returns
    -------
    tuple of str
        The MD5 of the file and its ETag, both verified.

    Raises
    ------
    RemoteError
        The object is missing or the transfer kept failing.
    DigestMismatchError
        The bytes do not match.
    """
    botocore_exceptions = import_optional("botocore.exceptions", "s3")
    url = f"s3://{BUCKET}/{key}"
    try:
        response = client.get_object(Bucket=BUCKET, Key=key)
        etag = response["ETag"].strip('"').lower()
        size = int(response["ContentLength"])
        hashers = _hashers(client, key, etag, size)
        with atomic_write(destination) as handle:
            _copy_stream(client, key, response, etag, size, handle, hashers)
            digest = hashers["md5"].hexdigest()
            _check_digest(url, hashers.get("etag", hashers["md5"]).hexdigest(), etag, "its ETag")
            if md5 is not None:
                _check_digest(url, digest, md5.lower(), "expected_md5")
    except botocore_exceptions.ClientError as error:
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = error.response.get("Error", {}).get("Code")
        raise RemoteError(
            f"could not download {url}: {code} (HTTP {status}); check the tag, or pass "
            "units_table= to use a table you already have",
            status=status,
        ) from error
    except botocore_exceptions.BotoCoreError as error:
        raise RemoteError(f"could not download {url}: {error}") from error
    return str(digest), etag


def _hashers(client: Any, key: str, etag: str, size: int) -> dict[str, Any]:
    """The file's MD5 and, for a multipart ETag ``<md5>-<parts>``, the digest of that layout."""
    hashers: dict[str, Any] = {"md5": hashlib.md5()}
    if "-" in etag:
        part = client.head_object(Bucket=BUCKET, Key=key, PartNumber=1)
        hashers["etag"] = EtagDigest(size)
        hashers["etag"].part_size = int(part["ContentLength"])
    return hashers


def _copy_stream(
    client: Any, key: str, response: Any, etag: str, size: int, out: Any, hashers: dict[str, Any]
) -> None:
    """Write the body to ``out``; resume a body cut short with a Range request on the same ETag."""
    botocore_exceptions = import_optional("botocore.exceptions", "s3")
    urllib3_exceptions = import_optional("urllib3.exceptions", "s3")
    cut_short = (
        botocore_exceptions.ResponseStreamingError,
        botocore_exceptions.ReadTimeoutError,
        urllib3_exceptions.HTTPError,
    )
    have, problem = 0, ""
    for attempt in range(STREAM_ATTEMPTS):
        if attempt:
            response = client.get_object(
                Bucket=BUCKET, Key=key, Range=f"bytes={have}-", IfMatch=f'"{etag}"'
            )
        try:
            for block in read_blocks(response["Body"]):
                out.write(block)
                for hasher in hashers.values():
                    hasher.update(block)
                have += len(block)
        except cut_short as error:
            problem = f"{type(error).__name__}: {error}"
            continue
        if have >= size:
            return
        problem = "the body ended early"
    raise RemoteError(
        f"downloading s3://{BUCKET}/{key} failed {STREAM_ATTEMPTS} times, last at byte {have} "
        f"of {size} ({problem})"
    )


def read_blocks(body: Any) -> Iterable[bytes]:
    """Yield the blocks of an S3 response body as they arrive."""
    return body.iter_chunks(CHUNK_BYTES)  # type: ignore[no-any-return]


def _check_digest(url: str, actual: str, published: str, where: str) -> None:
    if actual != published:
        raise DigestMismatchError(
            f"download of {url} is corrupt: MD5 {actual} but {where} is {published}; "
            "nothing was kept, try again"
        )


# ------------------------------------------------------------------------ filters


def filter_units(
    table: pd.DataFrame, min_qc: float | None, min_units_sessions: tuple[int, int] | None
) -> pd.DataFrame:
    """Apply the Brain-Wide Map unit filters (see :func:`bwm_units`) to a clusters table."""
    require_columns(table, ["eid"] + (["label"] if min_qc is not None else []))
    if min_qc is not None:
        table = table[table["label"] >= min_qc]
    table = with_regions(table)
    table = table[table["Beryl"].notna() & ~table["Beryl"].isin(EXCLUDED_REGIONS)]
    if min_units_sessions is not None:
        table = table[_thinned(table, *min_units_sessions)]
    return table.reset_index(drop=True)


def require_columns(table: pd.DataFrame, names: Iterable[str]) -> None:
    """Raise ValueError naming the columns a units table lacks, and those it has."""
    missing = [name for name in names if name not in table.columns]
    if missing:
        raise ValueError(
            f"the Brain-Wide Map units table lacks the column(s) {missing}; it has "
            f"{sorted(map(str, table.columns))}"
        )


def with_regions(table: pd.DataFrame) -> pd.DataFrame:
    """Add ``Beryl`` and ``Cosmos`` acronyms computed from ``atlas_id`` where they are missing."""
    missing = [name for name in ("Beryl", "Cosmos") if name not in table.columns]
    if not missing:
        return table
    require_columns(table, ["atlas_id"])
    return table.assign(
        **{name: region_acronyms(table["atlas_id"], mapping=name) for name in missing}
    )


def region_acronyms(atlas_ids: ArrayLike, mapping: str) -> NDArray[np.object_]:
    """Map Allen atlas ids to acronyms of ``mapping`` ("Allen", "Beryl", "Cosmos").

    iblatlas silently drops ids it does not know; here they, and NaN ids, become None.

    Raises
    ------
    ImportError
        If iblatlas (``spikelab[ibl]``) is not installed.
    """
    regions = _brain_regions()
    ids = np.asarray(atlas_ids, dtype=np.float64).reshape(-1)
    unique, inverse = np.unique(ids, return_inverse=True)
    known = np.isfinite(unique) & np.isin(unique, regions.id)
    names = np.full(unique.size, None, dtype=object)
    names[known] = regions.id2acronym(unique[known].astype(np.int64), mapping=mapping)
    return names[inverse]  # type: ignore[no-any-return]


@functools.cache
def _brain_regions() -> Any:
    return import_optional("iblatlas.regions", "ibl").BrainRegions()


def _thinned(table: pd.DataFrame, min_units: int, min_sessions: int) -> NDArray[np.bool_]:
    """Rows whose (region, session) has ``min_units`` units, in a region ``min_sessions`` keep."""
    pairs = table.groupby(["Beryl", "eid"], sort=False, observed=True).size()
    pairs = pairs[pairs >= min_units]
    sessions = pairs.groupby(level="Beryl", sort=False).size()
    regions = sessions[sessions >= min_sessions].index
    kept = pairs[pairs.index.get_level_values("Beryl").isin(regions)]
    rows = pd.MultiIndex.from_frame(table[["Beryl", "eid"]])
    return rows.isin(kept.index)  # type: ignore[no-any-return]
