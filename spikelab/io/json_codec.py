"""Turn metadata (numpy values, dates, int-keyed dicts) into JSON and back.

``to_plain`` gives readable JSON for manifests and reports (lossy: arrays become lists, dict
keys strings). ``encode``/``decode`` round-trip exactly, by tagging the few values JSON
cannot hold, for metadata stored inside Parquet files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import PurePath
from typing import Any

import numpy as np

_ARRAY, _DICT, _TUPLE, _FLOAT = "__ndarray__", "__dict__", "__tuple__", "__float__"


def to_plain(value: Any) -> Any:
    """Make ``value`` JSON-serialisable for humans: arrays to lists, NaN to None."""
    if isinstance(value, Mapping):
        return {str(key): to_plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return to_plain(value.tolist())
    if isinstance(value, np.generic):
        return to_plain(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


def encode(value: Any) -> Any:
    """Make ``value`` JSON-serialisable so that :func:`decode` restores it exactly."""
    if isinstance(value, np.ndarray):
        return {
            _ARRAY: {
                "dtype": value.dtype.str,
                "shape": value.shape,
                "data": encode(value.ravel().tolist()),
            }
        }
    if isinstance(value, np.generic):
        return encode(value.item())
    if isinstance(value, Mapping):
        if all(isinstance(key, str) for key in value) and _ARRAY not in value:
            return {key: encode(item) for key, item in value.items()}
        return {_DICT: [[encode(key), encode(item)] for key, item in value.items()]}
    if isinstance(value, tuple):
        return {_TUPLE: [encode(item) for item in value]}
    if isinstance(value, list):
        return [encode(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return {_FLOAT: repr(value)}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return to_plain(value)


def decode(value: Any) -> Any:
    """Invert :func:`encode`."""
    if isinstance(value, list):
        return [decode(item) for item in value]
    if not isinstance(value, dict):
        return value
    if _ARRAY in value and len(value) == 1:
        spec = value[_ARRAY]
        flat = np.array(decode(spec["data"]), dtype=np.dtype(spec["dtype"]))
        return flat.reshape(spec["shape"])
    if _DICT in value and len(value) == 1:
        return {_hashable(decode(key)): decode(item) for key, item in value[_DICT]}
    if _TUPLE in value and len(value) == 1:
        return tuple(decode(item) for item in value[_TUPLE])
    if _FLOAT in value and len(value) == 1:
        return float(value[_FLOAT])
    return {key: decode(item) for key, item in value.items()}


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key
