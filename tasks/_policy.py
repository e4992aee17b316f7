"""What every spikelab task shares: content-based cache keys, retry rules, the staging area."""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import requests
from prefect.context import TaskRunContext
from prefect.tasks import exponential_backoff

from spikelab.exceptions import RemoteError
from spikelab.http import TRANSIENT_ERRORS, unreachable
from spikelab.loaders import LOADER_VERSIONS

# Network tasks: 4 retries, 2 s, 4 s, 8 s, 16 s apart (each +/- 50 % jitter).
NETWORK_RETRIES: dict[str, Any] = {
    "retries": 4,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
}
# Parameters that say where bytes are, not what they are: never part of a cache key.
LOCATION_PARAMETERS = frozenset({"path", "lake"})


def cache_dir() -> Path:
    """Local working area for downloads and staged outputs (``SPIKELAB_CACHE_DIR``), absolute."""
    folder = Path(os.environ.get("SPIKELAB_CACHE_DIR") or Path.home() / ".cache" / "spikelab")
    folder = folder.absolute()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def content_cache_key(loader: str) -> Callable[[TaskRunContext, dict[str, Any]], str]:
    """Build a ``cache_key_fn`` from a task's content identity, parameters and loader version.

    Every parameter takes part except locations (``path``, ``lake``): the same bytes at
    another temporary path hit the same entry. Callers pass the content's identity (file
    sha256, DANDI asset id + digest, IBL pid + revision) as a parameter. Secrets are never
    task parameters, so they never reach a key.
    """
    version = LOADER_VERSIONS[loader]

    def key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
        identity = {
            name: value for name, value in parameters.items() if name not in LOCATION_PARAMETERS
        }
        text = json.dumps(
            {"task": context.task.name, "loader_version": version, "parameters": identity},
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(text.encode()).hexdigest()

    return key


# Failures that may pass if the same request is sent again later: the HTTP layer's, and
# a timeout of a socket outside it.
_TRANSIENT_ERRORS = (*TRANSIENT_ERRORS, TimeoutError)


def _transient_status(status: int | None) -> bool:
    return status is not None and (status == 429 or 500 <= status < 600)


def is_transient(error: BaseException) -> bool:
    """Tell whether Prefect should run a failed task again: a network failure nobody retried.

    Each kind of failure is retried by one layer (see :mod:`spikelab.http`). A
    :class:`~spikelab.exceptions.RemoteError` comes from spikelab's HTTP layer once its
    own retries of the request were spent, so it is not retried again. What Prefect
    retries is what fails in code without retries of its own (ONE-api's requests to
    Alyx, a socket timeout): a reset, a timeout, HTTP 429 and 5xx. A host that cannot be
    reached at all (its name does not resolve, it refuses the connection) is permanent,
    as are unsafe identifiers or paths, malformed files (``FileFormatError``,
    ``ValueError``, ``KeyError``), digest mismatches, other HTTP answers and missing
    local files.
    """
    if isinstance(error, RemoteError):
        return False  # spikelab's HTTP layer has retried it already
    if unreachable(error) is not None:
        return False  # offline, a wrong host name, nothing listening: not within minutes
    if isinstance(error, requests.HTTPError):
        response = error.response
        return _transient_status(None if response is None else response.status_code)
    if isinstance(error, urllib.error.HTTPError):
        return _transient_status(error.code)
    if isinstance(error, requests.exceptions.SSLError):
        return False  # a certificate problem does not fix itself
    return isinstance(error, _TRANSIENT_ERRORS)


def retry_unless_client_error(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry a failed task only when its error is transient.

    A permanent error, or one spikelab's HTTP layer already retried (see
    :func:`is_transient`), fails the task at once, with its message.
    """
    try:
        state.result()
    except Exception as error:  # noqa: BLE001 - the state's exception decides
        return is_transient(error)
    return False


HASH_LIMIT_BYTES = 2 << 30  # larger files are identified by size and mtime, not hashed


def file_identity(paths: Iterable[Path], *, hash_limit_bytes: int = HASH_LIMIT_BYTES) -> str:
    """Identify files by content: ``sha256:<hex>``.

    One file's identity is the sha256 of its bytes, as ``sha256sum`` prints it, so
    byte-identical files share it wherever they are. Several files (a KiloSort folder) are
    identified by the sha256 of one ``<name> <sha256>`` line per file; a file larger than
    ``hash_limit_bytes`` counts by its size and modification time instead of its bytes.
    """
    files = sorted(paths)
    digests = [_file_digest(path, hash_limit_bytes) for path in files]
    if len(files) == 1 and not digests[0].startswith("size:"):
        return f"sha256:{digests[0]}"
    lines = "".join(f"{path.name} {digest}\n" for path, digest in zip(files, digests, strict=True))
    return f"sha256:{hashlib.sha256(lines.encode()).hexdigest()}"


def _file_digest(path: Path, hash_limit_bytes: int) -> str:
    """A file's sha256 (hex), or ``size:<bytes>:<mtime ns>`` when it is too large to hash."""
    stat = path.stat()
    if stat.st_size > hash_limit_bytes:
        return f"size:{stat.st_size}:{stat.st_mtime_ns}"
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
