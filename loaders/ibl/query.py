"""IBL: find Brain-Wide Map probes by their good units and the Beryl regions those lie in.

Querying needs only the Brain-Wide Map units table (no ONE session, no ALF files); loading
a probe found here is :mod:`spikelab.loaders.ibl.load`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from spikelab.loaders.ibl._bwm_units import bwm_units, require_columns

if TYPE_CHECKING:
    import pandas as pd


def query_ibl_probes(
    target_regions: Iterable[str] | str | None = None,
    *,
    min_units: int = 0,
    min_fraction_in_target: float = 0.0,
    one: Any = None,
    units_table: pd.DataFrame | None = None,
) -> tuple[list[tuple[str, str]], pd.DataFrame]:
    """Find Brain-Wide Map probes by good-unit count and by the Beryl regions of their units.

    Parameters
    ----------
    target_regions : iterable of str | str | None, default: None
        Beryl acronyms (e.g. ``["MOs", "MOp"]``; one string is one region). A probe must
        have at least one good unit in them. None applies no region filter.
    min_units : int, default: 0
        Fewest good units a probe may have.
    min_fraction_in_target : float, default: 0.0
        Smallest fraction (0-1) of a probe's good units that lie in ``target_regions``;
        ignored when ``target_regions`` is None.
    one : one.api.One | None, default: None
        Passed to :func:`bwm_units` when the table has to be fetched.
    units_table : pandas.DataFrame | None, default: None
        A ready Brain-Wide Map units table (``eid``, ``pid``, and ``Beryl`` for a region
        query); then nothing is downloaded. Rows with ``label < 1`` are not counted.

    Returns
    -------
    probes : list of tuple of str
        ``(eid, pid)`` of the matching probes, most good units first (ties by eid, pid).
    stats : pandas.DataFrame
        One row per probe, same order: ``eid``, ``pid``, ``n_good_units`` and, with
        ``target_regions``, ``n_in_target`` and ``fraction_in_target``.

    Raises
    ------
    TypeError
        ``min_units`` is not an int.
    ValueError
        A negative ``min_units``, a fraction outside [0, 1], ``target_regions`` that are
        not acronyms, or a table without the columns needed.
    """
    regions = _region_list(target_regions)
    if isinstance(min_units, bool) or not isinstance(min_units, int | np.integer):
        raise TypeError(f"min_units must be an int, got {min_units!r}")
    if min_units < 0:
        raise ValueError(f"min_units must be >= 0, got {min_units}")
    if not 0.0 <= min_fraction_in_target <= 1.0:
        raise ValueError(f"min_fraction_in_target must lie in [0, 1], got {min_fraction_in_target}")
    table = units_table if units_table is not None else bwm_units(one)
    require_columns(table, ["eid", "pid"] + (["Beryl"] if regions is not None else []))
    stats = probe_stats(table, regions)
    keep = stats["n_good_units"] >= min_units
    if regions is not None:
        keep &= (stats["n_in_target"] > 0) & (stats["fraction_in_target"] >= min_fraction_in_target)
    stats = stats[keep].sort_values(
        ["n_good_units", "eid", "pid"], ascending=[False, True, True], kind="stable"
    )
    stats = stats.reset_index(drop=True)
    return list(zip(stats["eid"], stats["pid"], strict=True)), stats


def _region_list(target_regions: Iterable[str] | str | None) -> list[str] | None:
    if target_regions is None:
        return None
    regions = [target_regions] if isinstance(target_regions, str) else list(target_regions)
    if not regions or not all(isinstance(region, str) for region in regions):
        raise ValueError(
            f"target_regions must be Beryl acronyms such as ['MOs', 'MOp'], got {target_regions!r}"
        )
    return regions


def probe_stats(table: pd.DataFrame, regions: list[str] | None) -> pd.DataFrame:
    """Count the good units of each probe (and those in ``regions``) in one pass, unsorted."""
    import pandas as pd

    good = good_unit_mask(table)
    rows = table if good.all() else table[good]
    codes, pids = pd.factorize(rows["pid"])
    n_good = np.bincount(codes, minlength=len(pids))
    some_row = np.empty(len(pids), dtype=np.int64)
    some_row[codes] = np.arange(codes.size)  # any row of a probe names its session
    columns: dict[str, Any] = {
        "eid": rows["eid"].iloc[some_row].astype(str).to_numpy(),
        "pid": np.asarray(pids.astype(str)),
        "n_good_units": n_good.astype(np.int64),
    }
    if regions is not None:
        inside = rows["Beryl"].isin(regions).to_numpy(dtype=np.float64)
        in_target = np.bincount(codes, weights=inside, minlength=len(pids))
        columns["n_in_target"] = in_target.astype(np.int64)
        columns["fraction_in_target"] = in_target / np.maximum(n_good, 1)
    return pd.DataFrame(columns)


def good_unit_mask(table: pd.DataFrame) -> NDArray[np.bool_]:
    """Rows of the units table that are good units (``label >= 1``; all rows without labels)."""
    if "label" not in table.columns:
        return np.ones(len(table), dtype=bool)
    return (table["label"] >= 1).to_numpy(dtype=bool, na_value=False)
