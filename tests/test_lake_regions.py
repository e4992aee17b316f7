"""The lake answers in brain regions: real region strings and IBL atlas ids, one query.

NWB files whose electrodes carry the region strings of ``region_strings.csv`` (as real
conversions write them; each row says where it was seen) go through ``ingest files``, IBL
probes through the IBL-region flow (Allen ids on their channels), into one lake. A query by
region must then return exactly the units whose expected structure lies in that region's
subtree, the subtree taken from iblatlas itself, not from the lake.
"""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from ibl_cache import build_ibl_cache, units_table

pytest.importorskip("iblatlas")
pynwb = pytest.importorskip("pynwb")

from iblatlas.regions import BrainRegions  # noqa: E402
from nwb_fixtures import labelled_units_file  # noqa: E402
from pynwb import NWBHDF5IO  # noqa: E402
from pynwb.file import Subject  # noqa: E402

from spikelab.cli import run  # noqa: E402
from spikelab.flows import ingest_files, ingest_ibl_region  # noqa: E402
from spikelab.io.delta_lake import open_table, units_uri  # noqa: E402
from spikelab.io.lake import connect  # noqa: E402
from spikelab.io.lake_remap import remap  # noqa: E402
from spikelab.lake_queries import find_units, region_rows  # noqa: E402

pytestmark = pytest.mark.usefixtures("prefect_harness")

with (Path(__file__).parent / "region_strings.csv").open() as table:
    # pynwb refuses an electrode with an empty location: that row is for the mapper's own tests
    CORPUS = [row for row in csv.DictReader(table) if row["label"]]
FILES = {  # one NWB file per species the corpus names (None: a file with no subject)
    "Mus musculus": ("mouse.nwb", "P90D", "F"),
    "Rattus norvegicus": ("rat.nwb", "P12W", "M"),
    "Macaca mulatta": ("macaque.nwb", "P5Y", "M"),
    "Homo sapiens": ("human.nwb", "P40Y", "F"),
    None: ("nosubject.nwb", None, None),
}


def write_corpus_file(path: Path, species: str | None, rows: list[tuple[int, dict]]) -> None:
    _, age, sex = FILES[species]
    subject = None
    if species is not None:
        subject = Subject(subject_id=f"sub-{path.stem}", species=species, sex=sex, age=age)
    labelled_units_file(
        path,
        {index: row["label"] for index, row in rows},
        subject=subject,
        identifier=f"session-{path.stem}",
        session_description=f"region strings, {species}",
    )


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    folder = tmp_path_factory.mktemp("labs")
    groups: dict[str | None, list[tuple[int, dict]]] = {}
    for index, row in enumerate(CORPUS):
        groups.setdefault(row["species"] or None, []).append((index, row))
    paths = []
    for species, rows in groups.items():
        path = folder / FILES[species][0]
        write_corpus_file(path, species, rows)
        paths.append(str(path))
    root = str(tmp_path_factory.mktemp("lake") / "lake")
    summary = ingest_files(paths, lake=root)
    assert summary["counts"]["ok"] == len(paths)
    cache = build_ibl_cache(tmp_path_factory.mktemp("one-cache"))
    table_path = tmp_path_factory.mktemp("bwm") / "units.pqt"
    units_table(cache.eids).to_parquet(table_path)
    ingest_ibl_region(
        ["MOs", "MOp"],
        min_units=2,
        lake=root,
        one_cache_dir=str(cache.root),
        units_table_path=str(table_path),
    )
    return root


def subtree(acronym: str) -> set[str]:
    regions = BrainRegions()
    return set(regions.descendants(regions.acronym2id(acronym))["acronym"])


def expected_nwb_units(region: str) -> set[str]:
    inside = subtree(region)
    return {str(i) for i, row in enumerate(CORPUS) if row["expected_acronym"] in inside}


def found(lake, **query):
    frame = find_units(lake, columns=["region_match"], **query)
    return frame


@pytest.mark.parametrize("region", ["HPF", "VISp", "CA1"])
def test_a_region_query_returns_its_whole_subtree_across_sources(lake, region):
    frame = found(lake, regions=[region])
    nwb = frame[frame["source"] == "files"]
    assert set(nwb["unit_id"]) == expected_nwb_units(region)
    ibl = connect(lake).execute(
        "SELECT count(*) FROM units WHERE source = 'ibl' AND region_id IN "
        "(SELECT id FROM regions WHERE list_contains(ancestors, "
        f"(SELECT id FROM regions WHERE acronym = '{region}')))"
    )
    assert (frame["source"] == "ibl").sum() == ibl.fetchone()[0]
    if region in ("HPF", "CA1"):  # the IBL cache puts some channels in CA1 (Allen id 382)
        assert (frame["source"] == "ibl").sum() > 0
        assert set(frame[frame["source"] == "ibl"]["region_match"]) == {"atlas_id"}


def test_each_corpus_string_lands_on_its_expected_structure(lake):
    frame = find_units(lake, source="files", columns=["region_match"])
    by_unit = {row.unit_id: row for row in frame.itertuples()}
    for index, row in enumerate(CORPUS):
        unit = by_unit[str(index)]
        expected = row["expected_acronym"] or None
        region = unit.region if isinstance(unit.region, str) else None
        assert (region, unit.region_match) == (expected, row["expected_match"]), row


def test_names_and_case_are_regions_too(lake):
    by_name = found(lake, regions=["hippocampal formation"])
    by_acronym = found(lake, regions=["HPF"])
    assert list(by_name["unit_id"]) == list(by_acronym["unit_id"])
    assert list(found(lake, regions=["ca1"])["unit_id"]) == list(
        found(lake, regions=["CA1"])["unit_id"]
    )


def test_primate_areas_never_become_mouse_structures(lake):
    frame = find_units(lake, source="files", dataset=None, columns=["species", "region_match"])
    primate = frame[frame["species"].isin(["Macaca mulatta", "Homo sapiens"])]
    assert len(primate) > 0 and primate["region"].isna().all()
    assert set(primate["region_match"]) == {"species"}


def test_sessions_rows_equal_what_pynwb_reads(lake):
    sessions = connect(lake).execute("SELECT * FROM sessions WHERE source = 'files'").df()
    assert len(sessions) == len(FILES)
    for name, _, _ in FILES.values():
        row = sessions[sessions["asset_id"] == name].iloc[0]
        path = Path(json.loads(_manifest(lake, name))["input"]["path"])
        with NWBHDF5IO(str(path), "r") as io:
            nwbfile = io.read()
            subject = nwbfile.subject
            assert row["session_id"] == nwbfile.identifier
            assert row["session_description"] == nwbfile.session_description
            assert row["session_start"].to_pydatetime() == nwbfile.session_start_time
            assert row["units"] == len(nwbfile.units)
            if subject is None:
                assert row[["species", "sex", "age", "subject_id"]].isna().all()
                continue
            assert row["species"] == subject.species
            assert row["sex"] == subject.sex
            assert row["age"] == subject.age
            assert row["subject_id"] == subject.subject_id
    assert sessions.set_index("asset_id").loc["mouse.nwb", "age_days"] == 90.0
    assert sessions.set_index("asset_id").loc["rat.nwb", "age_days"] == 84.0
    ibl = (
        connect(lake).execute("SELECT eid, pid, lab FROM sessions WHERE source = 'ibl'").fetchall()
    )
    assert ibl and all(eid and pid for eid, pid, _ in ibl)


def _manifest(lake, asset):
    return (
        connect(lake)
        .execute(
            "SELECT manifest FROM read_parquet(?) WHERE asset_id = ?",
            [open_table(f"{lake}/tables/assets").file_uris(), asset],
        )
        .fetchone()[0]
    )


def test_the_cli_answers_by_region_species_and_quality(lake, capfd):
    assert run(["lake", "units", "--region", "HPF", "--format", "csv", "--lake", lake]) == 0
    lines = capfd.readouterr().out.strip().splitlines()
    assert len(lines) - 1 == len(found(lake, regions=["HPF"]))
    argv = ["lake", "units", "--region", "HPF", "--species", "mouse", "--format", "csv"]
    assert run([*argv, "--lake", lake]) == 0
    mouse = capfd.readouterr().out.strip().splitlines()[1:]
    assert mouse and all(",files," in f",{line}" or line.startswith("ibl") for line in mouse)
    assert run(["lake", "regions", "--lake", lake]) == 0
    out = capfd.readouterr().out
    assert "labels not mapped" in out and "unknown" in out
    assert run(["lake", "units", "--region", "NotARegion", "--lake", lake]) == 2


def test_lake_regions_counts_what_units_say(lake):
    mapped, unmapped = region_rows(lake, "cosmos")
    total = (
        connect(lake)
        .execute(  # units with a region, or a label to map
            "SELECT count(*) FROM units WHERE region_id IS NOT NULL OR location_label <> ''"
        )
        .fetchone()[0]
    )
    assert sum(units for _, units, _ in mapped) + sum(row[2] for row in unmapped) == total
    assert dict((region, units) for region, units, _ in mapped)["HPF"] > 0


def test_remap_after_a_new_alias_changes_exactly_its_rows_in_one_version(lake, tmp_path):
    unmapped = {label for label, match, *_ in region_rows(lake)[1] if match == "none" and label}
    label = sorted(unmapped)[0]
    before = find_units(lake, source="files", columns=["region_match"])
    version = open_table(units_uri(lake)).version()
    aliases = tmp_path / "aliases.csv"
    aliases.write_text(f'alias,acronym,kind,reason\n"{label}",MOp,alias,a test\n')
    report = remap(lake, aliases=aliases)
    after = find_units(lake, source="files", columns=["region_match"])
    assert report["version"] == version + 1 == open_table(units_uri(lake)).version()
    changed = after[(before["region"].fillna("") != after["region"].fillna(""))]
    assert set(changed["location_label"]) == {label}
    assert set(changed["region"]) == {"MOp"} and set(changed["region_match"]) == {"alias"}
    assert report["changed"] == len(changed) + 0  # only those rows
    remap(lake)  # back to the packaged table, for the other tests
    restored = find_units(lake, source="files", columns=["region_match"])
    assert list(restored["region"].fillna("")) == list(before["region"].fillna(""))


def test_quality_is_one_scale(lake, tmp_path):
    from spikelab.demo_data import write_kilosort

    folder = write_kilosort(tmp_path / "ks", np.random.default_rng(3))
    ingest_files([str(folder)], lake=lake)
    dataset = folder.parent.name
    frame = find_units(lake, source="files", dataset=dataset, columns=["label"])
    assert len(frame) == 14 and set(frame["quality"]) == {"good", "mua"}  # noise is left out
    assert (frame["quality"] == frame["label"]).all()  # Phy's labels, as the folder says
    good = find_units(lake, source="files", dataset=dataset, good=True)
    assert len(good) == (frame["quality"] == "good").sum() > 0


@pytest.fixture
def fresh_mapper(monkeypatch):
    """The process's mapper is built once: start and end with none, and no user aliases."""
    from spikelab.brain_regions import ALIASES_ENV
    from spikelab.io import brain_columns

    monkeypatch.setenv(ALIASES_ENV, "")  # recorded, so the CLI's setting is undone after
    monkeypatch.delenv(ALIASES_ENV)
    brain_columns.default_mapper.cache_clear()
    yield
    brain_columns.default_mapper.cache_clear()


@pytest.mark.usefixtures("fresh_mapper")
def test_ingest_with_the_users_alias_file_records_it_in_the_manifest(tmp_path, capfd):
    path = tmp_path / "odd" / "session.nwb"
    path.parent.mkdir()
    write_corpus_file(path, "Mus musculus", [(0, {"label": "our M1 bit"})])
    aliases = tmp_path / "aliases.csv"
    aliases.write_text('alias,acronym,kind,reason\n"our M1 bit",MOp,alias,the lab calls it so\n')
    lake = str(tmp_path / "lake")
    argv = ["ingest", "files", str(path), "--lake", lake]
    assert run([*argv, "--region-aliases", str(aliases)]) == 0
    (unit,) = find_units(lake, columns=["region_match"]).itertuples()
    assert (unit.region, unit.region_match) == ("MOp", "alias")
    manifest = json.loads(
        Path(lake, "manifests/source=files/dataset=odd/session.nwb.json").read_text()
    )
    assert str(aliases) in manifest["regions"]["aliases"]
    assert (
        manifest["regions"]["aliases_version"]
        == json.loads(_manifest(lake, "session.nwb"))["regions"]["aliases_version"]
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("alias,acronym,kind,reason\nx,NotAnAcronym,alias,oops\n")
    capfd.readouterr()
    assert run([*argv, "--refresh", "--region-aliases", str(bad)]) == 2
    assert "bad.csv" in capfd.readouterr().err
