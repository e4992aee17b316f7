"""Exception types raised by spikelab.

Each class also derives from a builtin, so callers may catch either the specific class or
the builtin that upstream code expects.
"""

from __future__ import annotations


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
