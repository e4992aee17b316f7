"""Write files under a temporary name beside their destination, then rename into place."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

_MAX_NAME_ATTEMPTS = 100


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
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(_MAX_NAME_ATTEMPTS):
        candidate = target.parent / f".{target.name}.{secrets.token_hex(6)}.part"
        try:
            return os.open(candidate, flags, 0o666), candidate
        except FileExistsError:
            continue
    raise FileExistsError(
        f"could not create a temporary file beside {target}: {_MAX_NAME_ATTEMPTS} names taken"
    )
