"""Write files under a temporary name beside their destination, then rename into place."""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from spikelab.exceptions import UnsafeRemoteDataError

_MAX_NAME_ATTEMPTS = 100
_TOKEN_BYTES = 6
# A temporary name is ".<name>.<12 hex>.part"; the name part is cut to keep it within the
# 255 bytes most filesystems allow.
_NAME_LIMIT_BYTES = 255 - len(".") - len(".") - 2 * _TOKEN_BYTES - len(".part")
_TEMPORARY = re.compile(rf"^\..+\.[0-9a-f]{{{2 * _TOKEN_BYTES}}}\.part$", re.DOTALL)
STALE_AFTER_SECONDS = 3600.0


@contextmanager
def atomic_write(destination: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[bytes]]:
    """Open a temporary file beside ``destination``; rename it into place on success.

    If the block raises, the temporary file is removed and ``destination`` is untouched,
    so a crash never leaves a partial file under the final name. The file gets the usual
    permissions of a new file (``0o666`` minus the umask), as a plain ``open`` would give.

    Parameters
    ----------
    destination : str or PathLike
        The final path. Missing parent folders are created.
    mode : str, default: "wb"
        Mode passed to :func:`os.fdopen` for the temporary file.

    Yields
    ------
    IO[bytes]
        The open temporary file.

    Raises
    ------
    FileExistsError
        If no free temporary name could be found beside ``destination``.
    """
    target = Path(destination)
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_path = _create_temporary(target)
    try:
        with os.fdopen(descriptor, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_path, target)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise


def _create_temporary(target: Path) -> tuple[int, Path]:
    """Create ``.<name>.<random>.part`` beside ``target`` and return its descriptor and path.

    ``tempfile.mkstemp`` would create the file with mode ``0o600``, which the rename would
    then carry to the final file; ``os.open`` with ``0o666`` applies the umask instead.
    A name near the filesystem's limit is cut in the temporary name (only there).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    name = target.name
    while len(os.fsencode(name)) > _NAME_LIMIT_BYTES:  # cut whole characters only
        name = name[:-1]
    for _ in range(_MAX_NAME_ATTEMPTS):
        candidate = target.parent / f".{name}.{secrets.token_hex(_TOKEN_BYTES)}.part"
        try:
            return os.open(candidate, flags, 0o666), candidate
        except FileExistsError:
            continue
    raise FileExistsError(
        f"could not create a temporary file beside {target}: {_MAX_NAME_ATTEMPTS} names taken"
    )


def is_temporary(name: str) -> bool:
    """Tell whether a file name is one :func:`atomic_write` gives its temporary files."""
    return _TEMPORARY.match(name) is not None


def remove_stale_temporaries(
    root: str | os.PathLike[str], *, older_than_seconds: float = STALE_AFTER_SECONDS
) -> list[Path]:
    """Remove the temporary files that writers killed mid-write left under ``root``.

    A temporary file (``.<name>.<12 hex>.part``) is stale when it was last written more
    than ``older_than_seconds`` ago; younger ones may belong to a write in progress (a run
    going on at the same time) and are kept.

    Parameters
    ----------
    root : str or PathLike
        Folder searched, with its subfolders; a missing folder has nothing to remove.
    older_than_seconds : float, default: 3600.0
        Age, from the last modification, beyond which a temporary file is stale.

    Returns
    -------
    list of Path
        The files removed.
    """
    temporaries = (Path(folder, name) for folder, _, names in os.walk(root) for name in names)
    return remove_older_than((p for p in temporaries if is_temporary(p.name)), older_than_seconds)


def remove_older_than(paths: Iterable[Path], older_than_seconds: float) -> list[Path]:
    """Delete each of ``paths`` last modified more than ``older_than_seconds`` ago.

    Younger files may belong to a run going on at the same time and are kept; a file that
    vanishes meanwhile (renamed into place, removed by its writer) is passed over. Links
    are judged and removed as links, never followed.

    Returns
    -------
    list of Path
        The files removed.
    """
    cutoff = time.time() - older_than_seconds
    removed = []
    for path in paths:
        try:
            if path.lstat().st_mtime < cutoff:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:
            continue
    return removed


def older_than(path: Path, max_age_seconds: float) -> bool:
    """Tell whether ``path`` was last modified more than ``max_age_seconds`` ago."""
    try:
        return time.time() - path.lstat().st_mtime > max_age_seconds
    except FileNotFoundError:  # removed meanwhile by a concurrent run
        return False


def contained(root: Path, path: Path, what: str) -> Path:
    """Resolve ``path`` and check that it lies under ``root``; return the resolved path.

    Symbolic links are followed, so a link planted under ``root`` cannot lead outside.

    Raises
    ------
    UnsafeRemoteDataError
        ``path`` resolves outside ``root``.
    """
    base = root.resolve()
    resolved = path.resolve()
    if not resolved.is_relative_to(base):
        raise UnsafeRemoteDataError(
            f"refusing {what} {path}: it resolves to {resolved}, outside {base}"
        )
    return resolved
