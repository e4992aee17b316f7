"""Content ids of local inputs: a file's is its bytes' sha256, as ``sha256sum`` prints it."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from spikelab.demo_data import write_hdf5, write_kilosort
from spikelab.flows import ingest_files
from spikelab.io.delta_lake import assets_index
from spikelab.tasks._policy import file_identity

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_byte_identical_files_share_a_content_id_that_sha256sum_finds(tmp_path):
    (tmp_path / "a").mkdir()
    first = write_hdf5(tmp_path / "a" / "s.h5", np.random.default_rng(9))
    second = tmp_path / "b" / "copy.h5"
    second.parent.mkdir()
    shutil.copyfile(first, second)
    lake = str(tmp_path / "lake")
    ingest_files([str(first), str(second)], lake=lake)
    sha256 = hashlib.sha256(first.read_bytes()).hexdigest()  # what sha256sum prints
    ids = {key[2]: state.content_id for key, state in assets_index(lake).items()}
    assert ids["s.h5"] == ids["copy.h5"] and f":sha256:{sha256}:" in ids["s.h5"]
    manifest = json.loads((Path(lake) / "manifests/source=files/dataset=a/s.h5.json").read_text())
    assert manifest["input"]["sha256"] == sha256


def test_a_folder_is_identified_by_its_files_names_and_digests(tmp_path):
    folder = write_kilosort(tmp_path / "ks", np.random.default_rng(2))
    files = sorted(p for p in folder.iterdir() if p.is_file())
    lines = "".join(f"{p.name} {hashlib.sha256(p.read_bytes()).hexdigest()}\n" for p in files)
    assert file_identity(files) == f"sha256:{hashlib.sha256(lines.encode()).hexdigest()}"
    (folder / "cluster_group.tsv").write_text("cluster_id\tgroup\n0\tgood\n")
    assert file_identity(files) != f"sha256:{hashlib.sha256(lines.encode()).hexdigest()}"
