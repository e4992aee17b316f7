"""Exception types raised by spikelab.

Each class also derives from a builtin, so callers may catch either the specific class or
the builtin that upstream code expects.
"""

from __future__ import annotations

from urllib.error import URLError


class SpikelabError(Exception):
    """Base class of every spikelab error."""


class InvalidSpikeDataError(SpikelabError, ValueError):
    """Spike trains or their attributes break a SpikeData rule (sorted, finite, in range)."""


class FileFormatError(SpikelabError, ValueError):
    """An input file exists but its content does not match the format it is read as."""


class DatasetNotFoundError(SpikelabError, KeyError):
    """A dataset or key that the caller named is not in the file."""

    def __str__(self) -> str:
        # KeyError quotes its message; show it as plain text instead.
        return str(self.args[0]) if self.args else ""


class RemoteError(SpikelabError, URLError):
    """A remote service (DANDI, IBL) failed or refused a request, after any retries.

    It is a ``urllib.error.URLError`` (so an ``OSError``), as upstream callers expect.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    def __str__(self) -> str:
        return str(self.reason)


class StreamingError(RemoteError):
    """A remote file could not be streamed: no Range support, or unreadable HDF5 bytes."""


class RangeNotSupportedError(StreamingError):
    """The server does not answer HTTP Range requests with 206, so it cannot be streamed."""


class DigestMismatchError(SpikelabError, ValueError):
    """Downloaded bytes do not match the size or digest the archive publishes."""


class UntrustedPickleError(SpikelabError, ValueError):
    """A file needs unpickling (which can run code) but the caller did not trust it."""


class UnpicklingWarning(UserWarning):
    """A file was unpickled: pickles can run code, so only trusted files should be loaded."""


class NoUnitsError(SpikelabError, ValueError):
    """A file holds no spike-sorting results: no Units table, or one without spike times.

    Loaders that accept ``allow_no_units=True`` return N = 0 with the file's metadata instead.
    """


class DandiReadinessWarning(UserWarning):
    """A file spikelab wrote lacks something DANDI's upload validation requires."""


class PrefectServerError(SpikelabError, RuntimeError):
    """The local Prefect server spikelab starts did not come up, or cannot be managed."""


class ServerPortInUseError(PrefectServerError):
    """The port asked for the local Prefect server is taken by another program."""


class UnsafeRemoteDataError(SpikelabError, ValueError):
    """A server sent an identifier or a path that spikelab refuses to use.

    Identifiers from a remote archive (asset, blob and Zarr ids, dandiset ids, versions)
    must have their documented shape, and every local path built from server data must
    stay under its root folder; anything else may be an attack or a wrong API address.
    """


class LakeKeyConflictError(SpikelabError, FileExistsError):
    """A lake key already holds another input's manifest, which spikelab will not overwrite."""


class IngestFailedError(SpikelabError, RuntimeError):
    """An ingest flow run finished with failed assets; ``summary`` holds its run summary.

    Calling a flow raises it after the run summary and artifacts are written; call the
    flow with ``return_state=True`` and read ``spikelab.flows.run_summary(state)`` to get
    the summary without an exception.
    """

    def __init__(self, message: str, summary: object) -> None:
        super().__init__(message)
        self.summary = summary

    def __reduce__(self) -> tuple[type[IngestFailedError], tuple[str, object]]:
        return type(self), (str(self), self.summary)


class LakeCommitError(SpikelabError, RuntimeError):
    """A commit to a lake table kept conflicting with other writers and was given up.

    The table is as it was before the attempt; publishing the same assets again is safe.
    """


class LakeSchemaError(SpikelabError, ValueError):
    """An asset's units do not fit the lake table's columns (a column's type disagrees)."""


class UnknownRegionError(SpikelabError, ValueError):
    """A brain region asked for is no Allen CCF 2017 structure the lake knows.

    Regions are Allen acronyms (``CA1``, ``HPF``, ``VISp``) or structure names
    (``hippocampal formation``), matched without case; ``spikelab lake regions`` lists
    the regions the lake's units landed in.
    """


class IblLoginError(SpikelabError, ValueError):
    """The public IBL server (OpenAlyx) needs an account and none is configured.

    ONE-api no longer logs in with a shared public account: each user signs up at
    https://openalyx.internationalbrainlab.org/signup, then gives the login to spikelab.
    """


class LakeVersionError(SpikelabError, ValueError):
    """A requested lake version or time does not exist in the table's history."""


class ExternalLinkError(SpikelabError, ValueError):
    """A file points outside itself (an HDF5 external or soft link, a Zarr link or symlink).

    A file is read only from itself: spikelab refuses links that leave the file (or the
    group that holds spike-sorting results) and links that dangle, so a downloaded or
    streamed file cannot pull data from the reading machine. For a trusted local HDF5 file,
    pass ``allow_external_links=True`` to follow its external links.
    """


class HostUnreachableError(RemoteError):
    """A remote host's name does not resolve, or the host refused the connection.

    Asking again at once does not help (the machine is offline, the name is wrong, nothing
    listens on the port), so spikelab fails at once instead of retrying; the message reads
    ``cannot reach <host>: <why>``.
    """
