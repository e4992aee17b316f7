"""Brain regions: the Allen CCF 2017 ontology table, the alias table and the label mapper."""

import csv
import dataclasses
import inspect
import json
import subprocess
import sys
import time
from contextlib import nullcontext as does_not_raise
from pathlib import Path

import pytest

from spikelab.brain_regions import (
    ALIASES_ENV,
    ONTOLOGY_COLUMNS,
    REGION_MATCHES,
    AliasTable,
    RegionMapper,
    RegionMatch,
    _name_key,
    map_labels,
    ontology_schema,
    ontology_table,
)
from spikelab.exceptions import FileFormatError

pytest.importorskip("iblatlas")

CORPUS = Path(__file__).with_name("region_strings.csv")
with CORPUS.open(encoding="utf-8", newline="") as corpus_file:
    CORPUS_ROWS = list(csv.DictReader(corpus_file))

VISP = 385
HPF = 1089


@pytest.fixture(scope="module")
def ontology():
    return ontology_table()


@pytest.fixture(scope="module")
def packaged_aliases(monkeypatch_module):
    return AliasTable.load()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(ALIASES_ENV, raising=False)
        yield patch


@pytest.fixture(scope="module")
def mapper(ontology, packaged_aliases):
    return RegionMapper(ontology, packaged_aliases)


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(ALIASES_ENV, raising=False)


def by_acronym(ontology):
    return {row["acronym"]: row for row in ontology.to_pylist()}


# ------------------------------------------------------------------------------ the corpus


def test_corpus_is_large_and_covers_every_kind():
    assert len(CORPUS_ROWS) >= 40
    kinds = {row["expected_match"] for row in CORPUS_ROWS}
    assert kinds == {"acronym", "acronym_nocase", "name", "alias", "ambiguous", "none", "species"}
    assert all(row["seen_in"].strip() for row in CORPUS_ROWS)
    assert kinds <= set(REGION_MATCHES)


@pytest.mark.parametrize(
    "row", CORPUS_ROWS, ids=[f"{r['label']!r}|{r['species'] or '-'}" for r in CORPUS_ROWS]
)
def test_corpus_row_maps_as_expected(mapper, row):
    match = mapper.map_label(row["label"], row["species"] or None)
    assert (match.region or "", match.region_match) == (
        row["expected_acronym"],
        row["expected_match"],
    ), row["seen_in"]
    assert match.mapped == bool(row["expected_acronym"])
    if match.mapped:
        assert match.region_beryl and match.region_cosmos
    else:
        assert (match.region_id, match.region_beryl, match.region_cosmos) == (None, None, None)


# ------------------------------------------------------------------------------ the ontology


def test_ontology_table_schema_and_size(ontology):
    assert tuple(ontology.column_names) == ONTOLOGY_COLUMNS
    assert ontology.schema.remove_metadata() == ontology_schema()
    assert ontology.schema.metadata[b"iblatlas_version"]
    assert ontology.num_rows == 1327  # the positive (non-lateralised) half, void excluded
    ids = ontology.column("id").to_pylist()
    assert len(set(ids)) == len(ids) and min(ids) > 0
    assert len(set(ontology.column("acronym").to_pylist())) == len(ids)


def test_ontology_tree_is_consistent(ontology):
    rows = {row["id"]: row for row in ontology.to_pylist()}
    root = [row for row in rows.values() if row["parent_id"] is None]
    assert [r["acronym"] for r in root] == ["root"] and root[0]["depth"] == 0
    for row in rows.values():
        assert row["ancestors"][0] == 997 and row["ancestors"][-1] == row["id"]
        assert row["depth"] == len(row["ancestors"]) - 1
        assert row["ancestor_acronyms"] == [rows[a]["acronym"] for a in row["ancestors"]]
        if row["parent_id"] is not None:
            assert row["ancestors"][:-1] == rows[row["parent_id"]]["ancestors"]


def test_every_visp_layer_is_below_visp_and_ca1_below_hpf(ontology):
    rows = by_acronym(ontology)
    layers = ["VISp1", "VISp2/3", "VISp4", "VISp5", "VISp6a", "VISp6b"]
    for layer in layers:
        assert VISP in rows[layer]["ancestors"], layer
        assert rows[layer]["beryl"] == "VISp" and rows[layer]["cosmos"] == "Isocortex"
    assert HPF in rows["CA1"]["ancestors"] and "HPF" in rows["CA1"]["ancestor_acronyms"]
    assert "HPF" in rows["CA1sp"]["ancestor_acronyms"]
    assert (rows["DG-mo"]["beryl"], rows["DG-mo"]["cosmos"]) == ("DG", "HPF")
    assert rows["HPF"]["beryl"] == "root"  # Beryl has no group for HPF itself


def test_subtree_query_with_list_contains(ontology):
    duckdb = pytest.importorskip("duckdb")
    regions = ontology  # noqa: F841  (DuckDB reads the local Arrow table by name)
    found = duckdb.sql(
        f"SELECT acronym FROM regions WHERE list_contains(ancestors, {VISP}) ORDER BY acronym"
    ).fetchall()
    assert [a for (a,) in found] == sorted(
        ["VISp", "VISp1", "VISp2/3", "VISp4", "VISp5", "VISp6a", "VISp6b"]
    )


def test_ontology_table_names_the_extra_when_iblatlas_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "iblatlas.regions", None)
    with pytest.raises(ImportError, match=r"pip install 'spikelab\[ibl\]'"):
        ontology_table()


def test_mapper_from_a_stored_table_needs_no_iblatlas(ontology, tmp_path):
    import pyarrow.parquet as pq

    path = tmp_path / "regions.parquet"
    pq.write_table(ontology, path)
    code = (
        "import json, sys\n"
        "import pyarrow.parquet as pq\n"
        "from spikelab.brain_regions import RegionMapper\n"
        f"mapper = RegionMapper(pq.read_table({str(path)!r}))\n"
        "match = mapper.map_label('V1 layer 5', 'Mus musculus')\n"
        "print(json.dumps([match.region, 'iblatlas' in sys.modules]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == ["VISp5", False]


def test_mapper_rejects_a_table_without_its_columns(ontology, packaged_aliases):
    with pytest.raises(ValueError, match="lacks the column.*cosmos.*ontology_table"):
        RegionMapper(ontology.drop_columns(["cosmos"]), packaged_aliases)


# ------------------------------------------------------------------------------ atlas ids


@pytest.mark.parametrize(
    ("atlas_id", "expected"),
    [
        (VISP, ("VISp", "atlas_id")),
        (-VISP, ("VISp", "atlas_id")),
        (778, ("VISp5", "atlas_id")),
        (0, (None, "none")),
        (123456789, (None, "none")),
    ],
)
def test_map_atlas_id(mapper, atlas_id, expected):
    match = mapper.map_atlas_id(atlas_id)
    assert (match.region, match.region_match) == expected


def test_region_match_is_frozen_and_typed(mapper):
    match = mapper.map_atlas_id(778)
    assert match == RegionMatch(778, "VISp5", "VISp", "Isocortex", "atlas_id", False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        match.region = "VISp"  # type: ignore[misc]


# ------------------------------------------------------------------------------ species rules


@pytest.mark.parametrize(
    "species",
    [
        "Mus musculus",
        "mouse",
        "Mus musculus - House mouse",
        "http://purl.obolibrary.org/obo/NCBITaxon_10090",
        "C57BL/6J",
    ],
)
def test_mouse_in_any_spelling_is_mapped_without_homology(mapper, species):
    match = mapper.map_label("CA1", species)
    assert (match.region, match.region_match, match.homology) == ("CA1", "acronym", False)


@pytest.mark.parametrize("species", ["Rattus norvegicus", "rat", "Long Evans", "NCBITaxon_10116"])
def test_rat_is_mapped_by_homology_and_says_so(mapper, species):
    match = mapper.map_label("PrL", species)
    assert (match.region, match.region_match, match.homology) == ("PL", "alias", True)
    assert mapper.map_label("mPFC", species).homology is False  # nothing was mapped


@pytest.mark.parametrize(
    "species", ["Macaca mulatta", "Homo sapiens", "human", "Callithrix jacchus", "Felis catus"]
)
def test_other_species_are_never_mapped(mapper, species):
    for label in ("CA1", "VISp", "V4", "hippocampus", "Primary visual area"):
        assert mapper.map_label(label, species).region_match == "species"
    assert mapper.map_label("unknown", species).region_match == "none"


@pytest.mark.parametrize("species", [None, "", "unknown", "n/a"])
def test_unknown_species_maps_as_mouse_except_primate_collisions(mapper, packaged_aliases, species):
    assert mapper.map_label("CA1", species).region == "CA1"
    assert mapper.map_label("CA1", species).homology is False
    collisions = [e.alias for e in packaged_aliases if e.kind == "primate_collision"]
    assert {"V4", "MT", "VL", "CN", "PMd", "LIP", "IT"} <= set(collisions)
    for label in collisions:
        assert mapper.map_label(label, species).region_match == "ambiguous", label
        assert mapper.map_label(label.lower(), species).region_match == "ambiguous", label


def test_primate_collisions_for_a_mouse_follow_allen(mapper):
    allen = {"V4": "V4", "MT": "MT", "VL": "VL", "CN": "CN", "PMd": "PMd"}
    for label, acronym in allen.items():
        assert mapper.map_label(label, "Mus musculus").region == acronym
    for label in ("LIP", "IT", "FEF"):
        assert mapper.map_label(label, "Mus musculus").region_match == "none"


# ------------------------------------------------------------------------------ label rules


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("TS", ("CP", "alias")),  # the alias beats the case-folded Allen ts (solitary tract)
        ("ts", ("ts", "acronym")),
        ("EC", ("ENT", "alias")),  # not ec, the external capsule
        ("cm", ("cm", "acronym")),
        ("Cm", (None, "ambiguous")),  # folds onto both CM and cm
        ("M1 L2/3", ("MOp2/3", "alias")),
        ("VISp layer 2", ("VISp2/3", "acronym")),
        ("CA1 layer 5", ("CA1", "acronym")),  # no such layer structure: the base stands
        ("CA1, CA3", (None, "ambiguous")),
        ("DG/CA3", (None, "ambiguous")),
        ("dCA1", ("CA1", "acronym")),
        ("vHPC", ("HIP", "alias")),
        ("hpc_L", ("HIP", "alias")),
        ("Superior colliculus (SC)", (None, "ambiguous")),
        ("Ammons horn", ("CA", "name")),
        ("CUL4, 5", ("CUL4 5", "acronym_nocase")),
        ("left", (None, "none")),
        ("  CA1  ", ("CA1", "acronym")),
        ("gibberish", (None, "none")),
        (None, (None, "none")),
    ],
)
def test_label_rules(mapper, label, expected):
    match = mapper.map_label(label, "Mus musculus")
    assert (match.region, match.region_match) == expected


def test_mapping_is_cached_and_costs_under_a_millisecond(mapper, ontology):
    labels = []
    for row in ontology.to_pylist():
        labels += [row["acronym"].lower(), f"left {row['name']}", f"{row['acronym']} (AP -1.5)"]
    fresh = RegionMapper(ontology, mapper.aliases)
    start = time.perf_counter()
    results = fresh.map_labels(labels, "Mus musculus")
    per_label = (time.perf_counter() - start) / len(results)
    assert per_label < 1e-3, f"{per_label * 1e3:.3f} ms per distinct label"
    assert fresh.map_label(labels[0], "mouse") is results[labels[0]]  # served from the cache


def test_map_labels_maps_each_distinct_label_once(mapper):
    result = map_labels(["CA1", "CA1", None, "V1", "CA1"], "Mus musculus", mapper=mapper)
    assert list(result) == ["CA1", None, "V1"]
    assert result["V1"].region == "VISp" and result[None].region_match == "none"


# ------------------------------------------------------------------------------ alias tables


def test_packaged_aliases_are_clean(ontology, packaged_aliases):
    assert packaged_aliases.sources == ("spikelab/region_aliases.csv",)
    assert len(packaged_aliases.version) == 12
    acronyms = set(ontology.column("acronym").to_pylist())
    folded = {a.casefold(): a for a in acronyms}
    names = {_name_key(n) for n in ontology.column("name").to_pylist()}
    for entry in packaged_aliases:
        assert entry.reason, entry.alias
        assert _name_key(entry.alias) not in names, f"{entry.alias} is an Allen name already"
        if entry.alias in acronyms:
            assert entry.kind == "primate_collision", f"{entry.alias} is an Allen acronym"
    # Aliases that fold onto a different Allen acronym win over it on purpose (module docs).
    folds = {
        e.alias
        for e in packaged_aliases
        if e.alias not in acronyms and e.alias.casefold() in folded
    }
    assert folds == {"TS", "EC", "HC"}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_user_file_overrides_packaged_entries(ontology, tmp_path, no_env):
    user = write(
        tmp_path / "lab.csv",
        "alias,acronym,kind,reason\nV1,VISl,alias,our V1 probe sits in VISl\nHPCd,HIP,alias,ours\n",
    )
    aliases = AliasTable.load(user)
    assert aliases.sources == ("spikelab/region_aliases.csv", str(user))
    assert aliases.version != AliasTable.load().version
    entry = aliases.get("v1")
    assert (entry.acronym, entry.source, entry.line) == ("VISl", str(user), 2)
    mapper = RegionMapper(ontology, aliases)
    assert mapper.map_label("V1", "mouse").region == "VISl"
    assert mapper.map_label("HPCd", "mouse").region == "HIP"
    assert mapper.map_label("M1", "mouse").region == "MOp"  # packaged entries stay


def test_kind_column_is_optional_in_user_files(tmp_path, no_env):
    user = write(tmp_path / "lab.csv", "alias,acronym,reason\nvS1,SSp,ours\nPPA,,several\n")
    aliases = AliasTable.load(user)
    assert (aliases.get("vS1").kind, aliases.get("PPA").kind) == ("alias", "ambiguous")


def test_environment_variable_names_the_user_file(tmp_path, monkeypatch):
    user = write(tmp_path / "env.csv", "alias,acronym,kind,reason\nV1,VISl,alias,env\n")
    monkeypatch.setenv(ALIASES_ENV, str(user))
    assert AliasTable.load().get("V1").acronym == "VISl"
    explicit = write(tmp_path / "given.csv", "alias,acronym,kind,reason\nV1,VISal,alias,given\n")
    assert AliasTable.load(explicit).get("V1").acronym == "VISal"  # extra wins over the env


def test_missing_user_file_is_named(tmp_path, monkeypatch):
    missing = tmp_path / "nope.csv"
    with pytest.raises(FileNotFoundError, match="nope.csv.*the alias file given"):
        AliasTable.load(missing)
    monkeypatch.setenv(ALIASES_ENV, str(missing))
    with pytest.raises(FileNotFoundError, match=f"nope.csv.*{ALIASES_ENV}"):
        AliasTable.load()


HEADER = "alias,acronym,kind,reason\n"


@pytest.mark.parametrize(
    ("text", "expectation"),
    [
        (HEADER + "V1,VISp,alias,fine\n", does_not_raise()),
        ("# only a comment\n", pytest.raises(FileFormatError, match="bad.csv is empty")),
        (
            "alias,target,reason\nV1,VISp,x\n",
            pytest.raises(FileFormatError, match="bad.csv, line 1: the header.*missing: acronym"),
        ),
        (
            HEADER + "V1,VISp,maybe,x\n",
            pytest.raises(FileFormatError, match="line 2: kind 'maybe' is not one of"),
        ),
        (HEADER + "V1,,alias,x\n", pytest.raises(FileFormatError, match="line 2: .*no acronym")),
        (
            HEADER + "mPFC,PL,ambiguous,x\n",
            pytest.raises(FileFormatError, match="line 2: .*kind ambiguous but an acronym"),
        ),
        (HEADER + ",VISp,alias,x\n", pytest.raises(FileFormatError, match="line 2: the alias is")),
        (HEADER + "V1,VISp,alias\n", pytest.raises(FileFormatError, match="line 2: 3 fields")),
        (HEADER + "V1,VISp,alias,\n", pytest.raises(FileFormatError, match="line 2: .*no reason")),
        (
            HEADER + "# note\nV1,VISp,alias,x\nv1,VISl,alias,y\n",
            pytest.raises(FileFormatError, match="line 4: alias 'v1' is already on line 3"),
        ),
    ],
)
def test_bad_user_files_name_file_and_line(tmp_path, no_env, text, expectation):
    with expectation:
        AliasTable.load(write(tmp_path / "bad.csv", text))


def test_unknown_acronym_in_user_file_is_named_when_the_mapper_is_built(ontology, tmp_path, no_env):
    user = write(tmp_path / "lab.csv", HEADER + "V1,VISP,alias,typo\n")
    with pytest.raises(FileFormatError, match=r"lab.csv, line 2: alias 'V1' maps to 'VISP'"):
        RegionMapper(ontology, AliasTable.load(user))


def test_bad_file_errors_are_value_errors(tmp_path, no_env):
    with pytest.raises(ValueError):
        AliasTable.load(write(tmp_path / "bad.csv", HEADER + "V1,VISp,maybe,x\n"))


# ------------------------------------------------------------------------------ docstrings


@pytest.mark.parametrize(
    ("function", "parameter", "documented"),
    [
        (AliasTable.load, "extra", "None"),
        (RegionMapper.__init__, "aliases", "None"),
        (RegionMapper.map_label, "species", "None"),
        (map_labels, "mapper", "None"),
        (map_labels, "species", "None"),
    ],
)
def test_documented_defaults_match_signatures(function, parameter, documented):
    default = inspect.signature(function).parameters[parameter].default
    assert repr(default) == documented
    owner = RegionMapper if function is RegionMapper.__init__ else function
    assert f"{parameter} : " in (owner.__doc__ or "")
    assert f"default: {documented}" in (owner.__doc__ or "")
