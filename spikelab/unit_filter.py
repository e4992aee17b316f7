"""Which units a question to the lake selects: one value, checked once where it enters.

``spikelab lake units`` and ``lake export`` build a :class:`UnitFilter` from their options;
:func:`spikelab.lake_queries.find_units`, :func:`spikelab.io.lake_export.lake_spikedata`
and the other query functions take one (or the same keywords, from which they build it),
and hand that value down unchanged to the SQL that answers it
(:func:`spikelab.lake_queries.units_sql`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TypedDict

from spikelab.session_fields import normalise_species


@dataclass(frozen=True)
class UnitFilter:
    """The units to select: every filter given must hold; more columns to return.

    Parameters
    ----------
    regions : sequence of str, default: ()
        Allen CCF 2017 structures (acronyms or names, any case); a unit matches when its
        ``region`` is one of them or lies below one (``HPF`` keeps CA1, DG ...).
    region_labels : sequence of str, default: ()
        Labels as written; a unit matches when its raw ``location_label`` is one of them.
    source, dataset : str | None, default: None
        Keep one source (``dandi``, ``ibl``, ``files``) or one dataset id.
    min_rate_hz : float | None, default: None
        Keep units firing at least this fast.
    species : str | None, default: None
        Keep units of subjects of this species (``mouse`` or ``Mus musculus``); kept as
        its binomial name.
    good : bool, default: False
        Keep units whose ``quality`` is ``good``.
    columns : sequence of str, default: ()
        More columns of the units or sessions tables to return (``sex``, ``age_days``,
        ``spike_times_ms`` ...).

    A lone string given for a sequence counts as one item (``regions="CA1"``).

    Raises
    ------
    ValueError
        If ``min_rate_hz`` is negative, NaN or infinite.
    TypeError
        If a sequence holds something other than text.

    Examples
    --------
    >>> selection = UnitFilter(regions="HPF", species="mouse", min_rate_hz=1)
    >>> selection.regions, selection.species, selection.min_rate_hz
    (('HPF',), 'Mus musculus', 1.0)
    """

    regions: Sequence[str] = ()
    region_labels: Sequence[str] = ()
    source: str | None = None
    dataset: str | None = None
    min_rate_hz: float | None = None
    species: str | None = None
    good: bool = False
    columns: Sequence[str] = ()

    def __post_init__(self) -> None:
        for name in ("regions", "region_labels", "columns"):
            object.__setattr__(self, name, _texts(name, getattr(self, name)))
        for name in ("source", "dataset"):
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None else str(value))
        rate = self.min_rate_hz
        if rate is not None:
            rate = float(rate)
            if not math.isfinite(rate) or rate < 0:
                raise ValueError(
                    f"min_rate_hz must be a finite rate >= 0 Hz, got {self.min_rate_hz!r}"
                )
        object.__setattr__(self, "min_rate_hz", rate)
        if self.species is not None:
            object.__setattr__(self, "species", normalise_species(self.species) or self.species)
        object.__setattr__(self, "good", bool(self.good))

    @classmethod
    def of(cls, selection: UnitFilter | None = None, **keywords: object) -> UnitFilter:
        """``selection`` as it is, or a filter built from ``keywords`` (not both).

        Raises
        ------
        TypeError
            If both are given, ``selection`` is no UnitFilter, or a keyword is no field.
        """
        if selection is None:
            return cls(**keywords)  # type: ignore[arg-type]
        if not isinstance(selection, UnitFilter):
            raise TypeError(
                f"the selection must be a UnitFilter, got {type(selection).__name__} "
                f"{selection!r}: give filters by keyword (regions=[...], dataset=...)"
            )
        if keywords:
            raise TypeError(
                f"give a UnitFilter or its keywords, not both (got a UnitFilter and "
                f"{', '.join(sorted(keywords))}): put those in the UnitFilter"
            )
        return selection

    def with_columns(self, *names: str) -> UnitFilter:
        """The same filter also returning ``names`` (after its own columns)."""
        added = tuple(name for name in dict.fromkeys(names) if name not in self.columns)
        return replace(self, columns=(*self.columns, *added)) if added else self


class UnitFilterKeywords(TypedDict, total=False):
    """The fields of :class:`UnitFilter` as keywords (functions take ``**filters``)."""

    regions: Sequence[str]
    region_labels: Sequence[str]
    source: str | None
    dataset: str | None
    min_rate_hz: float | None
    species: str | None
    good: bool
    columns: Sequence[str]


def _texts(name: str, value: Sequence[str] | str | None) -> tuple[str, ...]:
    """A tuple of texts from a sequence of them, one text or None."""
    if value is None:
        return ()
    items = (value,) if isinstance(value, str) else tuple(value)
    wrong = [item for item in items if not isinstance(item, str)]
    if wrong:
        raise TypeError(f"{name} must be texts, got {wrong!r} among {list(items)!r}")
    return items
