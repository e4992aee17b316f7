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

import contextlib
import functools
import hashlib
import importlib
import json
import logging
import os
import threading
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

if TYPE_CHECKING:
    import pandas as pd

from spikelab import download, http
from spikelab._optional import import_optional, is_installed
from spikelab.digests import Check, EtagDigest, file_digests
from spikelab.exceptions import IblLoginError, RemoteError
from spikelab.io.atomic import atomic_write

OPENALYX_URL = "https://openalyx.internationalbrainlab.org"
# The OpenAlyx account spikelab logs in with (ONE-api asks each user for their own).
USERNAME_ENV = "SPIKELAB_ALYX_USERNAME"
PASSWORD_ENV = "SPIKELAB_ALYX_PASSWORD"
BUCKET = "ibl-brain-wide-map-public"
DEFAULT_TAG = "2024_Q2_IBL_et_al_BWM"
TABLE_NAME = "clusters.pqt"
EXCLUDED_REGIONS = ("void", "root")
CHUNK_BYTES = 1024 * 1024
STREAM_ATTEMPTS = 3  # tries of a transfer cut mid-body (resumed with a Range request)

_logger = logging.getLogger(__name__)
_memo: dict[tuple[Any, ...], pd.DataFrame] = {}
_memo_lock = threading.Lock()


def default_one() -> Any:
    """Connect to the public IBL server (OpenAlyx) with the user's account.

    The login is ``$SPIKELAB_ALYX_USERNAME`` (and ``$SPIKELAB_ALYX_PASSWORD``), else what
    ``ONE.setup()`` stored on this machine (see :func:`alyx_login`).

    Returns
    -------
    one.api.OneAlyx
        ONE's own memoised instance: the same object for every call in a process.

    Raises
    ------
    ImportError
        If ONE-api is not installed.
    IblLoginError
        If no login is configured.
    """
    one_api = import_optional("one.api", "ibl")
    username = alyx_login()
    password = os.environ.get(PASSWORD_ENV) or None
    return one_api.ONE(base_url=OPENALYX_URL, username=username, password=password, silent=True)


def alyx_login() -> str:
    """The OpenAlyx login: ``$SPIKELAB_ALYX_USERNAME``, else the one ONE stored.

    Raises
    ------
    IblLoginError
        If neither is set, saying how to get and give one.
    """
    username = os.environ.get(USERNAME_ENV)
    if not username:
        try:
            from one import params
        except ImportError:
            params = None
        stored = params.get(client=OPENALYX_URL, silent=True) if params is not None else None
        username = getattr(stored, "ALYX_LOGIN", None)
    if not username:
        raise IblLoginError(
            f"the IBL server {OPENALYX_URL} needs an account and none is configured: sign "
            f"up at {OPENALYX_URL}/signup, then set {USERNAME_ENV} and {PASSWORD_ENV} (or "
            "store the login once with: python -c 'from one.api import ONE; ONE.setup()')"
        )
    return str(username)


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
    import pandas as pd

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
    digest = file_digests(path, [Check("md5", None, hashlib.md5)])["md5"]
    if digest != recorded or (md5 is not None and md5.lower() != recorded):
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

    The transfer is :func:`spikelab.download.download_verified`: the bytes go to a partial file
    beside ``destination``, hashed as they arrive, and only a file whose digest equals the
    ETag (and ``md5``, when given) is renamed into place. A body cut short resumes with a
    Range request pinned to the same ETag.

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
        source = _S3Source(client, key)
        with contextlib.closing(source):
            digests = download.download_verified(
                source,
                destination,
                size=source.size,
                checks=_checks(client, key, source.etag, source.size, md5),
                policy=http.RetryPolicy(STREAM_ATTEMPTS),
                fresh_attempts=1,
                mismatch_hint=", try again",
            )
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
    return digests["md5"], source.etag


class _S3Source:
    """The object's bytes: the body of a first GetObject, then Range requests on its ETag."""

    def __init__(self, client: Any, key: str) -> None:
        botocore_exceptions = import_optional("botocore.exceptions", "s3")
        self.name = f"s3://{BUCKET}/{key}"
        self.transient = (
            *http.TRANSIENT_ERRORS,
            botocore_exceptions.ResponseStreamingError,
            botocore_exceptions.ReadTimeoutError,
        )
        self._client, self._key = client, key
        self._first: Any = client.get_object(Bucket=BUCKET, Key=key)
        self.etag = str(self._first["ETag"]).strip('"').lower()
        self.size = int(self._first["ContentLength"])

    def close(self) -> None:
        """Close the first answer's body if no transfer took it."""
        if self._first is not None:
            self._first["Body"].close()
            self._first = None

    @contextmanager
    def open(self, offset: int) -> Iterator[tuple[int, Iterable[bytes]]]:
        response, self._first = self._first, None
        if response is not None and offset:
            response["Body"].close()
            response = None
        if response is None:
            ranged = {"Range": f"bytes={offset}-"} if offset else {}
            response = self._client.get_object(
                Bucket=BUCKET, Key=self._key, IfMatch=f'"{self.etag}"', **ranged
            )
        served = response["ResponseMetadata"].get("HTTPStatusCode") == 206
        try:
            yield (offset if served else 0), read_blocks(response["Body"])
        finally:
            response["Body"].close()


def _checks(client: Any, key: str, etag: str, size: int, md5: str | None) -> list[Check]:
    """MD5 (recorded), the ETag (the MD5 itself, or for ``<md5>-<parts>`` the parts' digest)."""
    said = "MD5 {actual} but its ETag is {expected}"
    if "-" in etag:  # multipart: the part size is the size of the object's first part
        part_size = int(client.head_object(Bucket=BUCKET, Key=key, PartNumber=1)["ContentLength"])
        checks = [
            Check("md5", None, hashlib.md5),
            Check("etag", etag, functools.partial(EtagDigest, size, part_size), said),
        ]
    else:
        checks = [Check("md5", etag, hashlib.md5, said)]
    if md5 is not None:
        expected = "MD5 {actual} but expected_md5 is {expected}"
        checks.append(Check("expected_md5", md5.lower(), hashlib.md5, expected))
    return checks


def read_blocks(body: Any) -> Iterable[bytes]:
    """Yield the blocks of an S3 response body as they arrive."""
    return body.iter_chunks(CHUNK_BYTES)  # type: ignore[no-any-return]


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
    import pandas as pd

    pairs = table.groupby(["Beryl", "eid"], sort=False, observed=True).size()
    pairs = pairs[pairs >= min_units]
    sessions = pairs.groupby(level="Beryl", sort=False).size()
    regions = sessions[sessions >= min_sessions].index
    kept = pairs[pairs.index.get_level_values("Beryl").isin(regions)]
    rows = pd.MultiIndex.from_frame(table[["Beryl", "eid"]])
    return rows.isin(kept.index)  # type: ignore[no-any-return]
