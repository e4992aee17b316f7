"""What every spikelab task shares: content-based cache keys, retry rules, the staging area."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prefect.context import TaskRunContext
from prefect.tasks import exponential_backoff

from spikelab.exceptions import DigestMismatchError, RemoteError
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
    """Local working area for downloads and staged outputs (``SPIKELAB_CACHE_DIR``)."""
    folder = Path(os.environ.get("SPIKELAB_CACHE_DIR") or Path.home() / ".cache" / "spikelab")
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


def retry_unless_client_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry failures except those that will not change: HTTP 4xx (but 429), bad digests.

    The client already retried transient network errors inside the attempt.
    """
    try:
        state.result()
    except DigestMismatchError:
        return False
    except RemoteError as error:
        return not (error.status is not None and 400 <= error.status < 500 and error.status != 429)
    except Exception:  # noqa: BLE001 - any other failure may be transient
        return True
    return True


def file_identity(paths: Iterable[Path], *, hash_limit_bytes: int = 2 << 30) -> str:
    """Identify files by content: sha256 of each, or size + mtime above ``hash_limit_bytes``."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        stat = path.stat()
        digest.update(path.name.encode())
        if stat.st_size > hash_limit_bytes:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
            continue
        with path.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return f"sha256:{digest.hexdigest()}"
