"""SpikeData: spike trains of N units in milliseconds, with per-unit attributes and metadata."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from spikelab.exceptions import InvalidSpikeDataError

_CHECK_BLOCK = 1 << 17  # spikes validated per step of from_flat (1 MiB: stays in cache)

if TYPE_CHECKING:  # scipy.sparse takes ~0.1 s to import: only when used
    from scipy import sparse

FloatArray = NDArray[np.float64]


class SpikeData:
    """Spike trains of ``N`` units on one time axis, in milliseconds.

    Parameters
    ----------
    train : sequence of array_like
        One 1-D array of spike times (ms) per unit. Each is copied to float64 and sorted.
    N : int | None, default: None
        Number of units. Defaults to ``len(train)``; a larger ``N`` adds empty units at the end.
    length : float | None, default: None
        Duration of the recording in ms. Defaults to the last spike minus ``start_time``
        (exactly 0.0 when there are no spikes).
    start_time : float, default: 0.0
        Time of the recording start in ms; may be negative. Spike times are absolute.
    neuron_attributes : sequence of dict | None, default: None
        One dict of attributes per unit (``unit_id``, ``electrode``, ``location`` ...).
    metadata : mapping | None, default: None
        Recording-level information (source file, sampling rate, subject ...).
    raw_data : array_like | None, default: None
        Optional raw traces, channels x samples.
    raw_time : array_like | None, default: None
        Time of each raw sample in ms; its length must match ``raw_data``'s columns.

    Raises
    ------
    InvalidSpikeDataError
        (a ``ValueError``) when a train is not 1-D or holds NaN/inf, ``N`` is smaller than
        the number of trains, the attributes do not hold one dict per unit, a spike lies
        before ``start_time`` or after ``start_time + length``, or the raw time vector does
        not match the raw data.

    Examples
    --------
    >>> sd = SpikeData([[1.0, 5.0], [2.5]], length=10.0)
    >>> sd.N, sd.length
    (2, 10.0)
    """

    __hash__ = None  # type: ignore[assignment]

    def __init__(
        self,
        train: Iterable[ArrayLike],
        *,
        N: int | None = None,
        length: float | None = None,
        start_time: float = 0.0,
        neuron_attributes: Sequence[Mapping[str, Any]] | None = None,
        metadata: Mapping[str, Any] | None = None,
        raw_data: ArrayLike | None = None,
        raw_time: ArrayLike | None = None,
    ) -> None:
        self._assign(
            [_as_train(times, index) for index, times in enumerate(train)],
            N=N,
            length=length,
            start_time=start_time,
            neuron_attributes=neuron_attributes,
            metadata=metadata,
            raw_data=raw_data,
            raw_time=raw_time,
        )

    def _assign(
        self,
        trains: list[FloatArray],
        *,
        N: int | None = None,
        length: float | None = None,
        start_time: float = 0.0,
        neuron_attributes: Sequence[Mapping[str, Any]] | None = None,
        metadata: Mapping[str, Any] | None = None,
        raw_data: ArrayLike | None = None,
        raw_time: ArrayLike | None = None,
    ) -> None:
        """Set every field from trains that are already 1-D, finite, sorted float64."""
        if N is not None:
            if N < len(trains):
                raise InvalidSpikeDataError(
                    f"N={N} is smaller than the number of spike trains given ({len(trains)})"
                )
            trains.extend(np.empty(0, dtype=np.float64) for _ in range(N - len(trains)))
        self.train: list[FloatArray] = trains
        self.start_time = _finite_float(start_time, "start_time")
        self.length = self._checked_length(length)
        self.neuron_attributes = _checked_attributes(neuron_attributes, self.N)
        self.metadata: dict[str, Any] = dict(metadata) if metadata is not None else {}
        self.raw_data, self.raw_time = _checked_raw(raw_data, raw_time)

    @classmethod
    def from_flat(
        cls,
        times: ArrayLike,
        ends: ArrayLike,
        *,
        units: Sequence[int] | None = None,
        scale: float = 1.0,
        **kwargs: Any,
    ) -> SpikeData:
        """Build from every unit's times in one flat array plus each unit's end offset.

        The layout of ragged NWB columns and of :func:`group_by_unit`. Validation runs once
        over the whole array rather than once per unit, which matters for many units.

        Parameters
        ----------
        times : array_like
            Spike times in ms, unit after unit. A float64 array is used (and sorted within
            units) in place, not copied.
        ends : array_like of int
            Cumulative end offset of each unit into ``times``; the last equals its length.
        units : sequence of int | None, default: None
            Keep only these units, in this order.
        scale : float, default: 1.0
            Multiply the times by this, in place, in the pass that checks them (e.g.
            ``units.ms_per("s")`` for times in seconds), saving a pass over a large array.
        **kwargs
            Passed on as to the constructor (``length``, ``metadata`` ...).

        Raises
        ------
        InvalidSpikeDataError
            Offsets that decrease or do not end at ``len(times)``, or NaN/infinite times.
        """
        flat = np.asarray(times, dtype=np.float64).reshape(-1)
        offsets = np.asarray(ends, dtype=np.int64).reshape(-1)
        if offsets.size and (offsets.min() < 0 or np.any(np.diff(offsets) < 0)):
            raise InvalidSpikeDataError("ends must be non-decreasing cumulative offsets")
        if (offsets[-1] if offsets.size else 0) != flat.size:
            raise InvalidSpikeDataError(
                f"ends must finish at the number of spike times ({flat.size})"
            )
        starts = np.concatenate([[0], offsets[:-1]]) if offsets.size else offsets
        backwards = _scaled_steps_down(flat, scale)
        unit_of_step = np.searchsorted(offsets, backwards, side="right")
        inside = backwards != starts[unit_of_step]  # a step down at a unit's start is fine
        for unit in np.unique(unit_of_step[inside]):
            segment = flat[starts[unit] : offsets[unit]]
            segment.sort()
        trains = [flat[a:b] for a, b in zip(starts.tolist(), offsets.tolist(), strict=True)]
        if units is not None:
            trains = [trains[unit] for unit in units]
        sd = cls.__new__(cls)
        sd._assign(trains, **kwargs)
        return sd

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_idces_times(
        cls, idces: ArrayLike, times: ArrayLike, N: int | None = None, **kwargs: Any
    ) -> SpikeData:
        """Build from paired arrays: the unit index of each spike and its time (ms).

        Parameters
        ----------
        idces : array_like of int
            Unit index of each spike (0-based, non-negative).
        times : array_like of float
            Spike times in ms, same length as ``idces``.
        N : int | None, default: None
            Number of units; defaults to ``max(idces) + 1``.
        **kwargs
            Passed on to the constructor (``length``, ``metadata`` ...).

        Raises
        ------
        InvalidSpikeDataError
            Arrays of different length, a negative index, or an index >= ``N``.
        """
        unit_of_spike = np.asarray(idces).ravel()
        spike_times = np.asarray(times, dtype=np.float64).ravel()
        if unit_of_spike.shape != spike_times.shape:
            raise InvalidSpikeDataError(
                f"idces and times must have the same length, got {unit_of_spike.size} "
                f"and {spike_times.size}"
            )
        if unit_of_spike.size and not np.issubdtype(unit_of_spike.dtype, np.integer):
            if not np.all(np.mod(unit_of_spike, 1) == 0):
                raise InvalidSpikeDataError("idces must be whole numbers (unit indices)")
            unit_of_spike = unit_of_spike.astype(np.int64)
        if unit_of_spike.size and unit_of_spike.min() < 0:
            raise InvalidSpikeDataError(
                f"idces must be non-negative, found {int(unit_of_spike.min())}"
            )
        n_units = int(unit_of_spike.max()) + 1 if unit_of_spike.size else 0
        if N is not None and N < n_units:
            raise InvalidSpikeDataError(f"idces reach unit {n_units - 1} but N={N}")
        grouped, ends = group_by_unit(unit_of_spike, spike_times, n_units if N is None else N)
        return cls.from_flat(grouped, ends, **kwargs)

    @classmethod
    def from_raster(cls, raster: ArrayLike, bin_size_ms: float, **kwargs: Any) -> SpikeData:
        """Build from a units x bins matrix of spike counts.

        Each count ``c`` in bin ``t`` becomes ``c`` spikes spread evenly strictly inside
        that bin, so ``sd.raster(bin_size_ms)`` gives back the same matrix. The length is
        always ``bins * bin_size_ms``.

        Raises
        ------
        InvalidSpikeDataError
            The raster is not 2-D, holds negative or fractional counts, or the bin size is
            not positive.
        """
        counts = np.asarray(raster)
        if counts.ndim != 2:
            raise InvalidSpikeDataError(
                f"a raster must be 2-D (units x bins), got {counts.ndim}-D shape {counts.shape}"
            )
        bin_size = _finite_float(bin_size_ms, "bin_size_ms")
        if bin_size <= 0:
            raise InvalidSpikeDataError(f"bin_size_ms must be positive, got {bin_size_ms!r}")
        if counts.size and counts.min() < 0:
            raise InvalidSpikeDataError("a raster holds spike counts: negative values found")
        if counts.size and not np.issubdtype(counts.dtype, np.integer):
            if not np.all(np.mod(counts, 1) == 0):
                raise InvalidSpikeDataError("a raster holds spike counts: fractions found")
        counts = counts.astype(np.int64)
        start = float(kwargs.get("start_time", 0.0))
        n_units, n_bins = counts.shape
        unit_of_spike, bin_of_spike = np.nonzero(counts)
        per_cell = counts[unit_of_spike, bin_of_spike]
        unit_rep = np.repeat(unit_of_spike, per_cell)
        bin_rep = np.repeat(bin_of_spike, per_cell)
        count_rep = np.repeat(per_cell, per_cell)
        # k-th spike of a cell with c spikes sits at (k + 1) / (c + 1) of the bin.
        first_of_cell = np.repeat(np.cumsum(per_cell) - per_cell, per_cell)
        rank = np.arange(unit_rep.size) - first_of_cell
        times = start + (bin_rep + (rank + 1) / (count_rep + 1)) * bin_size
        kwargs["length"] = n_bins * bin_size
        return cls.from_flat(*group_by_unit(unit_rep, times, n_units), **kwargs)

    # ------------------------------------------------------------------ basic facts
    @property
    def N(self) -> int:
        """Number of units."""
        return len(self.train)

    def __len__(self) -> int:
        return self.N

    def __repr__(self) -> str:
        n_spikes = sum(t.size for t in self.train)
        return (
            f"SpikeData(N={self.N}, spikes={n_spikes}, length={self.length:g} ms, "
            f"start_time={self.start_time:g} ms)"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SpikeData):
            return NotImplemented
        return (
            self.N == other.N
            and self.length == other.length
            and self.start_time == other.start_time
            and all(np.array_equal(a, b) for a, b in zip(self.train, other.train, strict=True))
            and _values_equal(self.neuron_attributes, other.neuron_attributes)
            and _values_equal(self.metadata, other.metadata)
            and _values_equal(self.raw_data, other.raw_data)
            and _values_equal(self.raw_time, other.raw_time)
        )

    # ------------------------------------------------------------------ views
    def idces_times(self) -> tuple[NDArray[np.int64], FloatArray]:
        """Return every spike as (unit index, time in ms), sorted by time.

        Spikes at the same time keep unit order.
        """
        counts = np.array([t.size for t in self.train], dtype=np.int64)
        idces = np.repeat(np.arange(self.N, dtype=np.int64), counts)
        times = np.concatenate(self.train) if self.N else np.empty(0, dtype=np.float64)
        order = np.argsort(times, kind="stable")
        return idces[order], times[order]

    def _bin_counts(self, bin_size: float) -> tuple[NDArray[np.int64], NDArray[np.int64], int]:
        bin_size = _finite_float(bin_size, "bin_size")
        if bin_size <= 0:
            raise InvalidSpikeDataError(f"bin_size must be positive, got {bin_size!r}")
        # Round away float noise: 30 bins of 0.1 ms make a length of 3.0000000000000004.
        n_bins = math.ceil(round(self.length / bin_size, 9))
        idces, times = self.idces_times()
        if idces.size:
            n_bins = max(n_bins, 1)
        bins = np.floor((times - self.start_time) / bin_size).astype(np.int64)
        np.clip(bins, 0, max(n_bins - 1, 0), out=bins)  # a spike at the very end
        return idces, bins, n_bins

    def raster(self, bin_size: float = 1.0) -> NDArray[np.int64]:
        """Dense spike counts, units x ``ceil(length / bin_size)`` bins from ``start_time``."""
        idces, bins, n_bins = self._bin_counts(bin_size)
        counts = np.zeros((self.N, n_bins), dtype=np.int64)
        np.add.at(counts, (idces, bins), 1)
        return counts

    def sparse_raster(self, bin_size: float = 1.0) -> sparse.csr_matrix:
        """Return the counts of :meth:`raster` as a ``scipy.sparse.csr_matrix``."""
        from scipy import sparse

        idces, bins, n_bins = self._bin_counts(bin_size)
        data = np.ones(idces.size, dtype=np.int64)
        matrix = sparse.csr_matrix((data, (idces, bins)), shape=(self.N, n_bins))
        matrix.sum_duplicates()
        return matrix

    def rates(self, unit: str = "kHz") -> FloatArray:
        """Mean firing rate of each unit over the recording length.

        Parameters
        ----------
        unit : str, default: "kHz"
            ``'kHz'`` (spikes per ms) or ``'Hz'`` (spikes per second).

        Returns
        -------
        numpy.ndarray
            One rate per unit; NaN for every unit when the length is 0.
        """
        scale = {"kHz": 1.0, "Hz": 1000.0}
        if unit not in scale:
            raise ValueError(f"unknown rate unit {unit!r}: use 'Hz' or 'kHz'")
        counts = np.array([t.size for t in self.train], dtype=np.float64)
        if self.length <= 0:
            return np.full(self.N, np.nan)
        return counts / self.length * scale[unit]

    def subset(self, units: Iterable[Any], by: str | None = None) -> SpikeData:
        """Keep only some units, in the order given.

        Parameters
        ----------
        units : iterable
            Unit indices, or values of the neuron attribute ``by``.
        by : str | None, default: None
            Select units whose attribute ``by`` (e.g. ``"unit_id"``) is in ``units``.

        Raises
        ------
        ValueError
            An index out of range, or a value of ``by`` that no unit has.
        """
        wanted = list(units)
        if by is not None:
            values = self.get_neuron_attribute(by)
            position = {value: index for index, value in enumerate(values)}
            missing = [value for value in wanted if value not in position]
            if missing:
                raise ValueError(f"no unit has {by} in {missing}")
            indices = [position[value] for value in wanted]
        else:
            indices = [int(index) for index in wanted]
            bad = [index for index in indices if not -self.N <= index < self.N]
            if bad:
                raise ValueError(f"unit indices {bad} are out of range for N={self.N}")
        attributes = (
            None
            if self.neuron_attributes is None
            else [dict(self.neuron_attributes[i]) for i in indices]
        )
        return SpikeData(
            [self.train[i] for i in indices],
            length=self.length,
            start_time=self.start_time,
            neuron_attributes=attributes,
            metadata=self.metadata,
            raw_data=self.raw_data,
            raw_time=self.raw_time,
        )

    def subtime(self, start: float | None, end: float | None) -> SpikeData:
        """Keep the spikes in ``[start, end)`` (ms); times stay absolute.

        The result starts at ``start`` and lasts ``end - start``. ``None`` means the
        recording's own start or end. Raw samples in the window are kept too.

        Raises
        ------
        ValueError
            If ``end`` is before ``start``.
        """
        lo = self.start_time if start is None else float(start)
        hi = self.start_time + self.length if end is None else float(end)
        if hi < lo:
            raise ValueError(f"subtime end {hi} is before start {lo}")
        trains = [t[(t >= lo) & (t < hi)] for t in self.train]
        raw_data, raw_time = self.raw_data, self.raw_time
        if raw_data is not None and raw_time is not None:
            keep = (raw_time >= lo) & (raw_time < hi)
            raw_data, raw_time = raw_data[:, keep], raw_time[keep]
        return SpikeData(
            trains,
            length=hi - lo,
            start_time=lo,
            neuron_attributes=self.neuron_attributes,
            metadata=self.metadata,
            raw_data=raw_data,
            raw_time=raw_time,
        )

    # ------------------------------------------------------------------ attributes
    def get_neuron_attribute(self, key: str, default: Any = None) -> list[Any]:
        """Return attribute ``key`` of every unit, ``default`` where a unit lacks it."""
        if self.neuron_attributes is None:
            return [default] * self.N
        return [attributes.get(key, default) for attributes in self.neuron_attributes]

    def set_neuron_attribute(self, key: str, values: Sequence[Any]) -> None:
        """Set attribute ``key`` of every unit from ``values`` (one value per unit).

        Raises
        ------
        ValueError
            If ``values`` does not hold exactly N values.
        """
        if len(values) != self.N:
            raise ValueError(
                f"set_neuron_attribute({key!r}) needs {self.N} values, got {len(values)}"
            )
        if self.neuron_attributes is None:
            self.neuron_attributes = [{} for _ in range(self.N)]
        for attributes, value in zip(self.neuron_attributes, values, strict=True):
            attributes[key] = value

    # ------------------------------------------------------------------ validation
    def _checked_length(self, length: float | None) -> float:
        spiking = [t for t in self.train if t.size]
        first = min((t[0] for t in spiking), default=None)
        last = max((t[-1] for t in spiking), default=None)
        if first is not None and first < self.start_time:
            raise InvalidSpikeDataError(
                f"a spike at {first} ms lies before start_time={self.start_time} ms"
            )
        if length is None:
            return 0.0 if last is None else float(last) - self.start_time
        value = _finite_float(length, "length")
        if value < 0:
            raise InvalidSpikeDataError(f"length must be >= 0 ms, got {length!r}")
        if last is not None and last > self.start_time + value:
            raise InvalidSpikeDataError(
                f"a spike at {last} ms lies after the end of the recording "
                f"(start_time {self.start_time} + length {value} ms)"
            )
        return value


def group_by_unit(
    unit_of_spike: NDArray[Any], times: FloatArray, n_units: int
) -> tuple[FloatArray, NDArray[np.int64]]:
    """Order spike times unit by unit, keeping each unit's spikes in input order.

    One linear pass: scipy's COO -> CSR conversion is a stable counting sort by row.

    Returns
    -------
    tuple of numpy.ndarray
        The grouped times and each unit's cumulative end offset (the input of
        :meth:`SpikeData.from_flat`).
    """
    n_spikes = times.size
    if n_units == 0:
        return np.empty(0, dtype=np.float64), np.empty(0, dtype=np.int64)
    position = np.arange(n_spikes, dtype=np.int32 if n_spikes < 2**31 else np.int64)
    from scipy import sparse

    grouped = sparse.csr_array(
        (times, (np.asarray(unit_of_spike), position)), shape=(n_units, max(n_spikes, 1))
    )
    return grouped.data, grouped.indptr[1:].astype(np.int64)


def _as_train(times: ArrayLike, index: int) -> FloatArray:
    array = np.asarray(times, dtype=np.float64)
    if array.ndim != 1:
        raise InvalidSpikeDataError(f"spike train {index} must be 1-D, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise InvalidSpikeDataError(f"spike train {index} holds NaN or infinite times")
    if array.size > 1 and np.any(array[1:] < array[:-1]):
        return np.sort(array)
    return array


def _scaled_steps_down(flat: FloatArray, scale: float) -> NDArray[np.intp]:
    """Scale ``flat`` in place; return the ``i`` where ``flat[i] < flat[i - 1]``.

    Raises on NaN or infinite values. One pass over cache-sized blocks instead of several
    over the whole array, which for millions of spikes fits in no cache.
    """
    steps = []
    previous = -math.inf
    for start in range(0, flat.size, _CHECK_BLOCK):
        block = flat[start : start + _CHECK_BLOCK]
        if scale != 1.0:
            block *= scale
        # A finite sum proves every value finite; only a non-finite one needs a closer look.
        if not math.isfinite(np.add.reduce(block)) and not np.isfinite(block).all():
            raise InvalidSpikeDataError("spike times hold NaN or infinite values")
        if block[0] < previous:
            steps.append(np.array([start]))
        down = np.flatnonzero(block[1:] < block[:-1])
        if down.size:
            steps.append(down + (start + 1))
        previous = block[-1]
    return np.concatenate(steps) if steps else np.empty(0, dtype=np.intp)


def _finite_float(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidSpikeDataError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise InvalidSpikeDataError(f"{name} must be finite, got {value!r}")
    return number


def _checked_attributes(
    attributes: Sequence[Mapping[str, Any]] | None, n_units: int
) -> list[dict[str, Any]] | None:
    if attributes is None:
        return None
    if isinstance(attributes, Mapping) or isinstance(attributes, str):
        raise InvalidSpikeDataError("neuron_attributes must be a list with one dict per unit")
    checked = list(attributes)
    if len(checked) != n_units:
        raise InvalidSpikeDataError(
            f"neuron_attributes has {len(checked)} entries but there are N={n_units} units"
        )
    for index, entry in enumerate(checked):
        if not isinstance(entry, Mapping):
            raise InvalidSpikeDataError(
                f"neuron_attributes[{index}] must be a dict, got {type(entry).__name__}"
            )
    return [dict(entry) for entry in checked]


def _checked_raw(
    raw_data: ArrayLike | None, raw_time: ArrayLike | None
) -> tuple[NDArray[Any] | None, FloatArray | None]:
    data = None if raw_data is None else np.asarray(raw_data)
    time = None if raw_time is None else np.asarray(raw_time, dtype=np.float64)
    if data is not None and time is not None:
        if time.ndim != 1 or data.shape[-1] != time.size:
            raise InvalidSpikeDataError(
                f"raw_time has {time.size} samples but raw_data has shape {data.shape}; "
                "give one time per raw sample (raw_data is channels x samples)"
            )
    return data, time


def _values_equal(a: Any, b: Any) -> bool:
    """Compare nested dicts/lists that may hold numpy arrays."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray | list | tuple)
            and isinstance(b, np.ndarray | list | tuple)
            and np.array_equal(np.asarray(a), np.asarray(b))
        )
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_values_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_values_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)
