"""Brain regions: the Allen CCF 2017 ontology as an Arrow table, and text labels mapped onto it.

Three public pieces, none of which touches the lake:

- :func:`ontology_table` builds the Allen Mouse Brain CCF 2017 structure tree (with IBL's
  Beryl and Cosmos groupings) from ``iblatlas``, once; the lake stores it, so later queries
  never import iblatlas. A subtree query is ``list_contains(ancestors, <id>)``.
- :class:`AliasTable` is the curated list of lab abbreviations and placeholders
  (``spikelab/region_aliases.csv``, plus an optional user file), with a ``version`` that
  manifests record.
- :class:`RegionMapper`, built from those two, maps a free-text location label (and the
  subject's species) or an Allen atlas id to a :class:`RegionMatch`.

How a label is mapped (``RegionMatch.region_match`` says which step decided)
---------------------------------------------------------------------------
0. An empty label or a placeholder (alias kind ``none``: "unknown", "brain area",
   "See electrode locations", "nan", ...) → ``none``. A species that is known and not a
   rodent (Macaca mulatta, Homo sapiens, ...) → ``species``: never mapped.
1. ``acronym``: an exact Allen acronym (``CA1``, ``VISp5``, ``MOs2/3``, ``ts``). With an
   unknown species, a label the alias table marks ``primate_collision`` (``V4``, ``MT``,
   ``VL``, ``CN``, ``PMd``, ``LIP``, ``IT``...) is ``ambiguous`` instead: Allen's ``V4`` is the
   fourth ventricle, a macaque's V4 a visual area.
2. ``alias``: the alias table (case-insensitive). Aliases of kind ``ambiguous`` (``mPFC``,
   ``amygdala``, ``SC``) give ``ambiguous`` with no region.
3. ``acronym_nocase``: an Allen acronym ignoring case (``ca1``, ``visp``), when exactly one
   matches; two (``cm``/``CM``, ``ipf``/``IPF``) give ``ambiguous``.
4. ``name``: an Allen structure name ignoring case and punctuation ("Field CA1", IBL's
   "Anterior cingulate area dorsal part layer 5", Allen's "..., Layer 5").

   The alias table is consulted *before* the case-insensitive steps, not after as a last
   resort: a curated entry beats a guess. The case in point is ``TS`` (tail of striatum,
   alias → ``CP``), which ignoring case is Allen ``ts``, the solitary tract; likewise ``EC``
   (entorhinal cortex, not ``ec`` the external capsule) and ``HC`` (hippocampus, not ``hc``
   the hippocampal commissures). The packaged table has no alias equal to an Allen name or
   exact acronym other than its primate collisions (a test checks it), so for it the order
   only decides these case-folded collisions.
5. A trailing layer ("VISp layer 5", "V1 L2/3", "M1 layer 5"): the rest is mapped as above,
   then the layer structure (``VISp5``, ``VISp2/3``, ``MOp5``) is taken when Allen has one,
   else the rest's structure; the match kind is the rest's.
6. Qualifiers are stripped and steps 1-5 retried: "Name (ABBR)" and "ABBR (right)" (the part
   in brackets that maps wins, else the other part), coordinates ("AP -2.0", "x=1.2 mm"),
   hemisphere ("left", "right", "contralateral", "_L"), position words ("dorsal",
   "ventral", "anterior", ...) and a one-letter position prefix on an acronym or alias
   (``dCA1``, ``vHPC``). A label that names several structures ("CA1, CA3", "DG/CA3") is
   ``ambiguous``.
7. Anything else → ``none``.

Species rules: ``Mus musculus`` is mapped; ``Rattus norvegicus`` is mapped by homology onto the
mouse atlas and says so (``RegionMatch.homology`` is True); any other species that is given
→ ``species``. A missing or unknown species is mapped as a mouse (most DANDI ecephys is
mouse), except primate-collision labels, which are ``ambiguous``.

The first mapping of a (label, species) pair costs well under a millisecond; repeats are
served from a per-mapper cache.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from spikelab.exceptions import FileFormatError
from spikelab.session_fields import normalise_species

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "ALIAS_KINDS",
    "ALIASES_ENV",
    "ONTOLOGY_COLUMNS",
    "REGION_MATCHES",
    "AliasEntry",
    "AliasTable",
    "RegionMapper",
    "RegionMatch",
    "map_labels",
    "ontology_schema",
    "ontology_table",
]

RegionMatchKind = Literal[
    "atlas_id", "acronym", "acronym_nocase", "name", "alias", "ambiguous", "none", "species"
]
#: Every value of ``RegionMatch.region_match``. ``species`` (beyond the design's list) marks a
#: label left unmapped because the subject is not a rodent.
REGION_MATCHES: tuple[RegionMatchKind, ...] = (
    "atlas_id",
    "acronym",
    "acronym_nocase",
    "name",
    "alias",
    "ambiguous",
    "none",
    "species",
)

AliasKind = Literal["alias", "ambiguous", "primate_collision", "none"]
ALIAS_KINDS: tuple[AliasKind, ...] = ("alias", "ambiguous", "primate_collision", "none")

#: Environment variable naming user alias files (``os.pathsep``-separated) when
#: :meth:`AliasTable.load` gets no ``extra``.
ALIASES_ENV = "SPIKELAB_REGION_ALIASES"

_PACKAGED_ALIASES = "region_aliases.csv"

#: Columns of :func:`ontology_table`, in order.
ONTOLOGY_COLUMNS: tuple[str, ...] = (
    "id",
    "acronym",
    "name",
    "parent_id",
    "beryl",
    "cosmos",
    "depth",
    "ancestors",
    "ancestor_acronyms",
)


# --------------------------------------------------------------------------------------------
# The ontology table


def ontology_schema() -> pa.Schema:
    """Return the Arrow schema of :func:`ontology_table` (columns :data:`ONTOLOGY_COLUMNS`)."""
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("acronym", pa.string(), nullable=False),
            pa.field("name", pa.string(), nullable=False),
            pa.field("parent_id", pa.int64()),
            pa.field("beryl", pa.string()),
            pa.field("cosmos", pa.string()),
            pa.field("depth", pa.int32(), nullable=False),
            pa.field("ancestors", pa.list_(pa.int64()), nullable=False),
            pa.field("ancestor_acronyms", pa.list_(pa.string()), nullable=False),
        ]
    )


def ontology_table() -> pa.Table:
    """Build the Allen Mouse Brain CCF 2017 structure tree as an Arrow table.

    One row per structure: the 1,327 positive ids of ``iblatlas.regions.BrainRegions`` (its
    negative ids are the same structures lateralised for the left hemisphere, and id 0 is
    ``void``, outside the brain; neither is a structure of its own). Takes about half a
    second, offline.

    Returns
    -------
    pyarrow.Table
        Columns (schema :func:`ontology_schema`): ``id`` (Allen structure id), ``acronym``,
        ``name`` (as IBL writes it: Allen's name with commas removed), ``parent_id`` (null for
        ``root``), ``beryl`` and ``cosmos`` (acronyms of the structure's Beryl and Cosmos
        groups; ``root`` where the grouping has no group for it, e.g. Beryl of ``HPF``),
        ``depth`` (the level in the tree, ``root`` is 0), ``ancestors`` (ids from ``root``
        down to the structure itself) and ``ancestor_acronyms`` (the same as acronyms).
        The schema metadata records ``source`` and ``iblatlas_version``.

    Raises
    ------
    ImportError
        If iblatlas is not installed; the message names ``pip install 'spikelab[ibl]'``.

    Examples
    --------
    Units in CA1 and every structure below it, in DuckDB::

        SELECT u.* FROM units u JOIN regions r ON u.region_id = r.id
        WHERE list_contains(r.ancestors, 382)
    """
    import numpy as np
    import pyarrow as pa

    from spikelab._optional import import_optional

    regions = import_optional("iblatlas.regions", "ibl")
    brain_regions = regions.BrainRegions()
    keep = brain_regions.id > 0
    ids = brain_regions.id[keep].astype(np.int64)
    acronyms = [str(a) for a in brain_regions.acronym[keep]]
    names = [str(n) for n in brain_regions.name[keep]]
    parents = brain_regions.parent[keep]
    levels = brain_regions.level[keep]
    beryl = [str(a) for a in brain_regions.id2acronym(ids, mapping="Beryl")]
    cosmos = [str(a) for a in brain_regions.id2acronym(ids, mapping="Cosmos")]

    parent_of: dict[int, int | None] = {
        int(i): (None if np.isnan(p) else int(p)) for i, p in zip(ids, parents, strict=True)
    }
    acronym_of = dict(zip((int(i) for i in ids), acronyms, strict=True))
    ancestors: list[list[int]] = []
    for structure in parent_of:
        path = [structure]
        parent = parent_of[structure]
        while parent is not None:
            if parent not in parent_of or len(path) > len(parent_of):
                raise ValueError(
                    f"iblatlas BrainRegions: structure {structure} ({acronym_of[structure]}) "
                    f"has a parent chain that leaves the tree at {parent}; check the "
                    "installed iblatlas version"
                )
            path.append(parent)
            parent = parent_of[parent]
        ancestors.append(path[::-1])

    schema = ontology_schema().with_metadata(
        {
            "source": "Allen Mouse Brain CCF 2017 via iblatlas.regions.BrainRegions",
            "iblatlas_version": _iblatlas_version(),
        }
    )
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "acronym": acronyms,
            "name": names,
            "parent_id": pa.array(list(parent_of.values()), pa.int64()),
            "beryl": beryl,
            "cosmos": cosmos,
            "depth": pa.array(levels.astype(np.int32), pa.int32()),
            "ancestors": ancestors,
            "ancestor_acronyms": [[acronym_of[a] for a in path] for path in ancestors],
        },
        schema=schema,
    )


def _iblatlas_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("iblatlas")
    except PackageNotFoundError:
        return "unknown"


# --------------------------------------------------------------------------------------------
# The alias table


def _fold(text: str) -> str:
    """Key of a label for case-insensitive lookups: case-folded, spaces collapsed."""
    return " ".join(text.split()).casefold()


@dataclass(frozen=True, slots=True)
class AliasEntry:
    """One line of an alias file.

    Attributes
    ----------
    alias : str
        The label as written in the file.
    acronym : str | None
        The Allen acronym it maps to (kind ``alias``; optional for ``primate_collision``).
    kind : {"alias", "ambiguous", "primate_collision", "none"}
        What the label is: see :class:`AliasTable`.
    reason : str
        Why (shown to people reading the table).
    source : str
        The file the entry comes from.
    line : int
        Its line number in that file.
    """

    alias: str
    acronym: str | None
    kind: AliasKind
    reason: str
    source: str
    line: int


class AliasTable:
    """The curated labels a :class:`RegionMapper` looks up: abbreviations and placeholders.

    Each entry has a ``kind``: ``alias`` maps the label to an Allen acronym (``V1`` → ``VISp``);
    ``ambiguous`` marks a label naming several structures (``mPFC``); ``primate_collision``
    marks a primate area name (``V4``, ``MT``) that is never mapped when the species is
    unknown; ``none`` marks a placeholder ("unknown", "brain area").

    A file has the columns ``alias, acronym, kind, reason`` (``kind`` may be left out: it is
    then ``alias`` when ``acronym`` is given, else ``ambiguous``); lines starting with ``#``
    are comments. Aliases are matched ignoring case and repeated spaces.

    Parameters
    ----------
    entries : Iterable[AliasEntry]
        The entries, in order; a later entry for the same alias replaces an earlier one.
    sources : tuple[str, ...]
        Names of the files the entries came from, in order.
    version : str
        A short digest identifying the combined contents.

    Attributes
    ----------
    sources : tuple[str, ...]
        The files read, in order (the packaged one is ``spikelab/region_aliases.csv``).
    version : str
        The first 12 hex digits of a sha256 over every source's name and contents; a
        manifest records it beside the mapped labels.
    """

    def __init__(self, entries: Iterable[AliasEntry], sources: tuple[str, ...], version: str):
        self._entries: dict[str, AliasEntry] = {}
        for entry in entries:
            self._entries[_fold(entry.alias)] = entry
        self.sources = sources
        self.version = version

    @classmethod
    def load(cls, extra: str | os.PathLike[str] | None = None) -> AliasTable:
        """Read the packaged alias table, then a user file whose entries override it.

        Parameters
        ----------
        extra : str | os.PathLike | None, default: None
            A user alias file. When None, the files named by the ``SPIKELAB_REGION_ALIASES``
            environment variable (``os.pathsep``-separated) are read instead, if it is set.

        Returns
        -------
        AliasTable

        Raises
        ------
        FileNotFoundError
            If a user file does not exist.
        spikelab.exceptions.FileFormatError
            If a file breaks the format; the message names the file and the line.
        """
        from importlib.resources import files

        packaged = files("spikelab").joinpath(_PACKAGED_ALIASES).read_text(encoding="utf-8")
        texts: list[tuple[str, str]] = [(f"spikelab/{_PACKAGED_ALIASES}", packaged)]
        if extra is not None:
            paths = [Path(extra)]
            origin = "the alias file given"
        else:
            paths = [Path(p) for p in os.environ.get(ALIASES_ENV, "").split(os.pathsep) if p]
            origin = f"${ALIASES_ENV}"
        for path in paths:
            if not path.is_file():
                raise FileNotFoundError(
                    f"region alias file {path} (from {origin}) does not exist: "
                    "give the path of a CSV file with columns alias, acronym, kind, reason"
                )
            texts.append((str(path), path.read_text(encoding="utf-8")))
        return cls.from_texts(texts)

    @classmethod
    def from_texts(cls, texts: Iterable[tuple[str, str]]) -> AliasTable:
        """Build a table from ``(source name, CSV text)`` pairs, later ones overriding.

        Raises
        ------
        spikelab.exceptions.FileFormatError
            If a text breaks the format; the message names the source and the line.
        """
        texts = list(texts)
        entries: list[AliasEntry] = []
        digest = hashlib.sha256()
        for source, text in texts:
            entries.extend(_parse_alias_csv(source, text))
            digest.update(source.encode() + b"\0" + text.encode() + b"\0")
        return cls(entries, tuple(s for s, _ in texts), digest.hexdigest()[:12])

    def get(self, label: str) -> AliasEntry | None:
        """Return the entry for ``label`` (ignoring case and repeated spaces), or None."""
        return self._entries.get(_fold(label))

    def __iter__(self) -> Iterator[AliasEntry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"AliasTable({len(self)} entries, version={self.version!r}, sources={self.sources})"


def _parse_alias_csv(source: str, text: str) -> list[AliasEntry]:
    def fail(line: int, rule: str) -> FileFormatError:
        return FileFormatError(f"region alias file {source}, line {line}: {rule}")

    numbered = [
        (n, line)
        for n, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not numbered:
        raise FileFormatError(
            f"region alias file {source} is empty: it needs a header line "
            "'alias,acronym,kind,reason' and one line per alias"
        )
    rows = csv.reader(io.StringIO("\n".join(line for _, line in numbered)))
    header_line = numbered[0][0]
    header = [h.strip() for h in next(rows)]
    missing = [c for c in ("alias", "acronym", "reason") if c not in header]
    unknown = [c for c in header if c not in ("alias", "acronym", "kind", "reason")]
    if missing or unknown:
        raise fail(
            header_line,
            f"the header is {','.join(header)!r}; it must name the columns alias, acronym, "
            "reason and optionally kind"
            + (f" (missing: {', '.join(missing)})" if missing else "")
            + (f" (unknown: {', '.join(unknown)})" if unknown else ""),
        )
    entries: list[AliasEntry] = []
    seen: dict[str, int] = {}
    for (number, _), row in zip(numbered[1:], rows, strict=True):
        if len(row) != len(header):
            raise fail(number, f"{len(row)} fields where the header has {len(header)}")
        values = {column: value.strip() for column, value in zip(header, row, strict=True)}
        alias, acronym = values["alias"], values["acronym"] or None
        kind = values.get("kind") or ("alias" if acronym else "ambiguous")
        if not alias:
            raise fail(number, "the alias is empty")
        if kind not in ALIAS_KINDS:
            raise fail(number, f"kind {kind!r} is not one of {', '.join(ALIAS_KINDS)}")
        if kind == "alias" and acronym is None:
            raise fail(number, f"alias {alias!r} has kind alias but no acronym to map to")
        if kind in ("ambiguous", "none") and acronym is not None:
            raise fail(number, f"alias {alias!r} has kind {kind} but an acronym ({acronym})")
        if not values["reason"]:
            raise fail(number, f"alias {alias!r} has no reason: say why it maps where it does")
        key = _fold(alias)
        if key in seen:
            raise fail(number, f"alias {alias!r} is already on line {seen[key]}")
        seen[key] = number
        entries.append(
            AliasEntry(alias, acronym, kind, values["reason"], source, number)  # type: ignore[arg-type]
        )
    return entries


# --------------------------------------------------------------------------------------------
# Mapping


@dataclass(frozen=True, slots=True)
class RegionMatch:
    """Where a location label (or atlas id) lands in the Allen CCF 2017 tree.

    Attributes
    ----------
    region_id : int | None
        Allen structure id; None when unmapped.
    region : str | None
        Allen acronym.
    region_beryl : str | None
        Acronym of the structure's Beryl group.
    region_cosmos : str | None
        Acronym of the structure's Cosmos group.
    region_match : str
        How it was decided, one of :data:`REGION_MATCHES`.
    homology : bool, default: False
        True when a rat label was mapped onto the mouse atlas by homology.
    """

    region_id: int | None
    region: str | None
    region_beryl: str | None
    region_cosmos: str | None
    region_match: RegionMatchKind
    homology: bool = False

    @property
    def mapped(self) -> bool:
        """True when the match names a structure."""
        return self.region_id is not None


_Rule = Literal["mouse", "rat", "unknown", "other"]

_MOUSE = "Mus musculus"
_RAT = "Rattus norvegicus"

_LAYER = re.compile(
    r"^(?P<base>.+?)(?:[\s,_]+(?:layer|lyr|l)\s*|\s*layer\s*)"
    r"(?P<layer>[1-6](?:/[1-6])?[ab]?)$",
    re.IGNORECASE,
)
_BRACKETS = re.compile(r"^(?P<before>[^(\[]*)[(\[](?P<inside>[^)\]]*)[)\]](?P<after>.*)$")
_COORDINATE = re.compile(
    r"\b(?:ap|ml|dv|x|y|z)\s*[:=]?\s*[-+]?\d+(?:\.\d+)?\s*(?:mm|um|µm)?(?=$|[\s,;)])",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"(?<![\w/])[-+]?\d+(?:\.\d+)?\s*(?:mm|um|µm)(?![\w/])", re.IGNORECASE)
_HEMISPHERE = re.compile(
    r"(?:\b(?:left|right|lh|rh|contralateral|ipsilateral|contra|ipsi|bilateral|"
    r"hemisphere|hemi|side)\b|_(?:l|r)\b|^(?:l|r)_|\s(?:l|r)$)",
    re.IGNORECASE,
)
_POSITION = re.compile(
    r"\b(?:dorsal|ventral|anterior|posterior|medial|lateral|rostral|caudal|intermediate|"
    r"superficial|deep|part|of|the|area|region)\b",
    re.IGNORECASE,
)
_SEVERAL = re.compile(r"\s*(?:[,;+&]|/(?![1-6]\b)|\band\b)\s*", re.IGNORECASE)
_QUALIFIER_ONLY = re.compile(
    r"^(?:left|right|l|r|lh|rh|contralateral|ipsilateral|contra|ipsi|bilateral|"
    r"(?:left|right) hemisphere|[-+\d.,;:=\s]|ap|ml|dv|mm|um|x|y|z)*$",
    re.IGNORECASE,
)


def _name_key(text: str) -> str:
    """Key of a structure name: lower case, apostrophes dropped, other punctuation a space."""
    text = text.lower().replace("'", "").replace("\u2019", "")
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text).split())


def _nocase_key(text: str) -> str:
    return " ".join(text.replace(",", " ").split()).casefold()


class RegionMapper:
    """Map location labels and atlas ids onto the Allen CCF 2017 tree.

    Built from the table :func:`ontology_table` returns (or the lake's copy of it), so it
    needs no iblatlas. Lookup dicts are built once; results are cached per (label, species).
    The mapping rules are in the module docstring.

    Parameters
    ----------
    ontology : pyarrow.Table
        The ontology table; at least the columns ``id``, ``acronym``, ``name``, ``beryl``,
        ``cosmos``.
    aliases : AliasTable | None, default: None
        The alias table; None loads the default (:meth:`AliasTable.load`).

    Raises
    ------
    ValueError
        If the ontology table lacks a column.
    spikelab.exceptions.FileFormatError
        If an alias maps to an acronym the ontology does not have (names the file and line).

    Examples
    --------
    >>> mapper = RegionMapper(ontology_table())  # doctest: +SKIP
    >>> mapper.map_label("V1 layer 5", "Mus musculus")  # doctest: +SKIP
    RegionMatch(region_id=778, region='VISp5', region_beryl='VISp', region_cosmos='Isocortex',
                region_match='alias', homology=False)
    """

    def __init__(self, ontology: pa.Table, aliases: AliasTable | None = None):
        needed = ("id", "acronym", "name", "beryl", "cosmos")
        missing = [c for c in needed if c not in ontology.column_names]
        if missing:
            raise ValueError(
                f"the ontology table lacks the column(s) {', '.join(missing)}: build it with "
                "spikelab.brain_regions.ontology_table()"
            )
        self.aliases = aliases if aliases is not None else AliasTable.load()
        columns = {c: ontology.column(c).to_pylist() for c in needed}
        self._structures: dict[int, tuple[str, str | None, str | None]] = {}
        self._by_acronym: dict[str, int] = {}
        self._by_nocase: dict[str, list[int]] = {}
        self._by_name: dict[str, int] = {}
        for i, acronym, name, beryl, cosmos in zip(*columns.values(), strict=True):
            self._structures[int(i)] = (acronym, beryl, cosmos)
            self._by_acronym[acronym] = int(i)
            self._by_nocase.setdefault(_nocase_key(acronym), []).append(int(i))
            self._by_name.setdefault(_name_key(name), int(i))
        for entry in self.aliases:
            if entry.acronym is not None and entry.acronym not in self._by_acronym:
                raise FileFormatError(
                    f"region alias file {entry.source}, line {entry.line}: alias "
                    f"{entry.alias!r} maps to {entry.acronym!r}, which is not an acronym of "
                    "the Allen CCF 2017 ontology; use an Allen acronym (case matters)"
                )
        self._cache: dict[tuple[str | None, _Rule], RegionMatch] = {}

    # -- public -----------------------------------------------------------------------------

    def map_atlas_id(self, atlas_id: int) -> RegionMatch:
        """Map an Allen structure id (IBL channel and cluster ``atlas_id``).

        Negative ids (IBL's lateralised left-hemisphere ids) map to their positive
        structure; 0 (``void``, outside the brain) and unknown ids give ``none``.

        Parameters
        ----------
        atlas_id : int
            The Allen structure id.

        Returns
        -------
        RegionMatch
            With ``region_match`` ``atlas_id``, or ``none``.
        """
        structure = abs(int(atlas_id))
        if structure not in self._structures:
            return _NONE
        return self._match(structure, "atlas_id", False)

    def map_label(self, label: str | None, species: str | None = None) -> RegionMatch:
        """Map a free-text location label, given the subject's species.

        Parameters
        ----------
        label : str | None
            The label as the file writes it (electrode ``location``, ``brain_region``...).
        species : str | None, default: None
            The subject's species in any form :func:`spikelab.session_fields.normalise_species`
            accepts; None or a placeholder means unknown.

        Returns
        -------
        RegionMatch
            See the module docstring for the rules and ``region_match`` values.
        """
        rule = _species_rule(species)
        key = (label, rule)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._map_uncached(label, rule)
            self._cache[key] = cached
        return cached

    def map_labels(
        self, labels: Iterable[str | None], species: str | None = None
    ) -> dict[str | None, RegionMatch]:
        """Map each distinct label once.

        Parameters
        ----------
        labels : Iterable[str | None]
            Labels, repeats allowed (a units table's location column).
        species : str | None, default: None
            The subject's species, as for :meth:`map_label`.

        Returns
        -------
        dict[str | None, RegionMatch]
            One entry per distinct label.
        """
        return {label: self.map_label(label, species) for label in dict.fromkeys(labels)}

    # -- internals ------------------------------------------------------------------------

    def _match(self, structure: int, kind: RegionMatchKind, homology: bool) -> RegionMatch:
        acronym, beryl, cosmos = self._structures[structure]
        return RegionMatch(structure, acronym, beryl, cosmos, kind, homology)

    def _map_uncached(self, label: str | None, rule: _Rule) -> RegionMatch:
        if label is None:
            return _NONE
        text = " ".join(str(label).strip().strip("\"'`").split())
        if not text:
            return _NONE
        entry = self.aliases.get(text)
        if entry is not None and entry.kind == "none":
            return _NONE
        if rule == "other":
            return _SPECIES
        found = self._resolve(text, rule) or self._resolve_stripped(text, rule)
        if found is None:
            return _NONE
        structure, kind = found
        if structure is None:
            return _NONE if kind == "none" else _AMBIGUOUS
        return self._match(structure, kind, rule == "rat")

    def _resolve(self, text: str, rule: _Rule) -> tuple[int | None, RegionMatchKind] | None:
        """Steps 1-5 on one form of the label; None when nothing decides."""
        found = self._resolve_plain(text, rule)
        if found is not None:
            return found
        layered = _LAYER.match(text)
        if layered is None:
            return None
        base = self._resolve_plain(layered["base"].strip(" ,_-"), rule)
        if base is None or base[0] is None:
            return base
        acronym = self._structures[base[0]][0]
        layer = layered["layer"].lower()
        tries = [layer] + (["2/3"] if layer in ("2", "3") else [])
        for candidate in tries:
            structure = self._by_acronym.get(acronym + candidate)
            if structure is not None:
                return structure, base[1]
        return base

    def _resolve_plain(self, text: str, rule: _Rule) -> tuple[int | None, RegionMatchKind] | None:
        entry = self.aliases.get(text)
        if entry is not None and entry.kind == "primate_collision" and rule == "unknown":
            return None, "ambiguous"
        structure = self._by_acronym.get(text)
        if structure is not None:
            return structure, "acronym"
        if entry is not None:
            if entry.kind == "ambiguous":
                return None, "ambiguous"
            if entry.kind == "none":
                return None, "none"
            if entry.acronym is not None:
                return self._by_acronym[entry.acronym], "alias"
        candidates = self._by_nocase.get(_nocase_key(text), [])
        if len(candidates) == 1:
            return candidates[0], "acronym_nocase"
        if len(candidates) > 1:
            return None, "ambiguous"
        structure = self._by_name.get(_name_key(text))
        if structure is not None:
            return structure, "name"
        return None

    def _resolve_stripped(
        self, text: str, rule: _Rule
    ) -> tuple[int | None, RegionMatchKind] | None:
        """Step 6: strip qualifiers, retry; several structures named → ambiguous."""
        bracketed = _BRACKETS.match(text)
        if bracketed is not None:
            inside = bracketed["inside"].strip()
            outside = f"{bracketed['before']} {bracketed['after']}".strip(" ,;-")
            parts = [outside] if _QUALIFIER_ONLY.match(inside) else [inside, outside]
            results = [self._resolve_all(part, rule) for part in parts if part]
            for result in results:
                if result is not None and result[0] is not None:
                    return result
            return next((r for r in results if r is not None), None)
        return self._resolve_all(text, rule)

    def _resolve_all(self, text: str, rule: _Rule) -> tuple[int | None, RegionMatchKind] | None:
        forms: list[str] = []
        current = text
        for pattern in (_COORDINATE, _NUMBER, _HEMISPHERE, _POSITION):
            current = " ".join(pattern.sub(" ", current).replace("_", " ").split()).strip(" ,;:-")
            forms.append(current)
        for form in dict.fromkeys(forms):
            if not form:
                return None, "none"
            found = self._resolve(form, rule)
            if found is not None:
                return found
            if len(form) > 2 and form[0] in "dvi" and not form[1].islower():
                found = self._resolve_plain(form[1:], rule)  # dCA1, vHPC, iCA1
                if found is not None and found[1] != "acronym_nocase":
                    return found
        parts = [p for p in _SEVERAL.split(forms[-1]) if p]
        if len(parts) > 1:
            results = [self._resolve(p, rule) for p in parts]
            structures = {r[0] for r in results if r is not None and r[0] is not None}
            if len(structures) > 1 or any(r is not None and r[0] is None for r in results):
                return None, "ambiguous"
            if len(structures) == 1 and all(r is not None for r in results):
                return results[0]
        return None


_NONE = RegionMatch(None, None, None, None, "none")
_AMBIGUOUS = RegionMatch(None, None, None, None, "ambiguous")
_SPECIES = RegionMatch(None, None, None, None, "species")


def _species_rule(species: str | None) -> _Rule:
    normalised = normalise_species(species)
    if normalised is None:
        return "unknown"
    if normalised == _MOUSE:
        return "mouse"
    if normalised == _RAT:
        return "rat"
    return "other"


_default_mapper: RegionMapper | None = None


def map_labels(
    labels: Iterable[str | None],
    species: str | None = None,
    mapper: RegionMapper | None = None,
) -> dict[str | None, RegionMatch]:
    """Map each distinct label once, with ``mapper`` or a default one.

    Parameters
    ----------
    labels : Iterable[str | None]
        Labels, repeats allowed.
    species : str | None, default: None
        The subject's species (see :meth:`RegionMapper.map_label`).
    mapper : RegionMapper | None, default: None
        The mapper to use. None builds (once per process) one from :func:`ontology_table`
        and :meth:`AliasTable.load`, which imports iblatlas; the lake passes a mapper built
        from its stored regions table instead.

    Returns
    -------
    dict[str | None, RegionMatch]
        One entry per distinct label.
    """
    global _default_mapper
    if mapper is None:
        if _default_mapper is None:
            _default_mapper = RegionMapper(ontology_table(), AliasTable.load())
        mapper = _default_mapper
    return mapper.map_labels(labels, species)
