"""Import optional heavy dependencies on demand, with an install hint when they are missing."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType


def import_optional(module: str, extra: str) -> ModuleType:
    """Import ``module``, or raise ImportError naming the spikelab extra that provides it.

    Parameters
    ----------
    module : str
        Dotted module name, e.g. ``"pynwb"``.
    extra : str
        The spikelab extra that installs it, e.g. ``"nwb"``.

    Raises
    ------
    ImportError
        If the module cannot be imported; chained to the original error.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"{module} is needed here but could not be imported ({error}). "
            f"Install it with: pip install 'spikelab[{extra}]'"
        ) from error


def is_installed(module: str) -> bool:
    """Tell whether ``module`` can be imported, without importing it."""
    return importlib.util.find_spec(module) is not None
