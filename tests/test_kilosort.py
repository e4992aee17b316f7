"""KiloSort / Phy folders: spike grouping, labels, the channel ladder, locations, errors."""

import numpy as np
import pytest

from spikelab.loaders import kilosort
from spikelab.loaders.kilosort import load_spikedata_from_kilosort
from spikelab.spikedata import SpikeData

# 1000 / 32 kHz = 0.03125 ms is exact in binary, so sample -> ms conversions compare exactly.
FS = 32_000.0
GUESS = (
    r"cluster ids are not sequential \(not 0\.\.\d+\), so reading each cluster's channel .* guess"
)


def ms(samples):
    # samples * 1000 is an exact integer and the quotient is representable: no rounding
    return np.asarray(samples, dtype=np.float64) * 1000.0 / FS


def write_tsv(path, header, rows):
    lines = ["\t".join(header)] + ["\t".join(str(cell) for cell in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def make_folder(root, times, clusters, **arrays):
    """Write spike_times.npy / spike_clusters.npy and any ``name=array`` as ``name.npy``."""
    root.mkdir(parents=True, exist_ok=True)
    if times is not None:
        np.save(root / "spike_times.npy", np.asarray(times))
    if clusters is not None:
        np.save(root / "spike_clusters.npy", np.asarray(clusters))
    for name, value in arrays.items():
        np.save(root / f"{name}.npy", np.asarray(value))
    return root


def load(folder, **kwargs):
    kwargs.setdefault("fs_Hz", FS)
    return load_spikedata_from_kilosort(folder, **kwargs)


def attrs(sd, key):
    return [unit.get(key) for unit in sd.neuron_attributes]


# Cluster 3 is noise, 2 is mua. Spikes are out of time order, as after a Phy merge.
PHY_TIMES = np.array([[640], [96], [3200], [32], [320], [1600], [64], [960]], dtype=np.uint64)
PHY_CLUSTERS = np.array([5, 0, 3, 2, 0, 5, 3, 0], dtype=np.int32)
PHY_TRAINS = {0: [96, 320, 960], 2: [32], 3: [64, 3200], 5: [640, 1600]}
PHY_POSITIONS = np.array([[0.0, 0.0], [0.0, 20.0], [16.0, 40.0], [16.0, 60.0], [32.0, 80.0]])


@pytest.fixture
def phy_folder(tmp_path):
    """A curated Phy folder: ids 0, 2, 3, 5; every file Phy writes."""
    root = make_folder(
        tmp_path / "phy",
        PHY_TIMES,
        PHY_CLUSTERS,
        channel_map=np.arange(6, dtype=np.int32),
        channel_positions=PHY_POSITIONS,
    )
    write_tsv(
        root / "cluster_group.tsv",
        ["cluster_id", "group"],
        [[0, "good"], [2, "mua"], [3, "noise"], [5, "good"]],
    )
    write_tsv(
        root / "cluster_info.tsv",
        ["cluster_id", "Amplitude", "ch", "depth", "fr", "group", "KSLabel", "n_spikes"],
        [
            [0, 41.5, 4, 80.0, 1.5, "good", "good", 3],
            [2, 12.0, 1, 20.0, 0.5, "mua", "mua", 1],
            [3, 3.0, 0, 0.0, 1.0, "noise", "good", 2],
            [5, 30.0, 2, 40.0, 1.0, "good", "mua", 2],
        ],
    )
    write_tsv(
        root / "cluster_KSLabel.tsv",
        ["cluster_id", "KSLabel"],
        [[0, "good"], [2, "mua"], [3, "good"], [5, "mua"]],
    )
    return root


# ---------------------------------------------------------------- spikes, order, metadata


def test_trains_in_ms_by_ascending_cluster_id(phy_folder):
    sd = load(phy_folder)
    assert isinstance(sd, SpikeData)
    assert sd.N == 3
    for train, cluster_id in zip(sd.train, [0, 2, 5], strict=True):
        np.testing.assert_array_equal(train, ms(PHY_TRAINS[cluster_id]))
    assert sd.train[0].tolist() == [3.0, 10.0, 30.0]
    assert sd.length == 50.0  # last spike kept: cluster 5 at 1600 samples
    assert sd.start_time == 0.0


def test_metadata(phy_folder):
    sd = load(phy_folder)
    assert sd.metadata == {
        "source_file": str(phy_folder),
        "format": "kilosort",
        "fs_Hz": FS,
        "cluster_ids": [0, 2, 5],
        "label_source": ["cluster_group.tsv"],
        "clusters_file": "spike_clusters.npy",
    }
    assert all(type(cluster_id) is int for cluster_id in sd.metadata["cluster_ids"])


def test_unit_attributes(phy_folder):
    sd = load(phy_folder)
    assert attrs(sd, "unit_id") == [0, 2, 5]
    assert all(type(unit_id) is int for unit_id in attrs(sd, "unit_id"))
    assert attrs(sd, "label") == ["good", "mua", "good"]
    assert attrs(sd, "label_source") == ["cluster_group.tsv"] * 3
    assert attrs(sd, "electrode") == [4, 1, 2]  # the TSV's ch column
    assert attrs(sd, "location") == [[32.0, 80.0], [0.0, 20.0], [16.0, 40.0]]
    # the other cluster_info.tsv columns ride along; the cluster's own label wins over KSLabel
    first = sd.neuron_attributes[0]
    assert first["Amplitude"] == 41.5
    assert first["depth"] == 80.0
    assert first["n_spikes"] == 3
    assert sd.neuron_attributes[2]["KSLabel"] == "mua"
    assert "group" not in first and "cluster_id" not in first and "ch" not in first


def test_include_noise_keeps_noise_cluster(phy_folder):
    sd = load(phy_folder, include_noise=True)
    assert sd.metadata["cluster_ids"] == [0, 2, 3, 5]
    assert attrs(sd, "label") == ["good", "mua", "noise", "good"]
    np.testing.assert_array_equal(sd.train[2], ms([64, 3200]))
    assert sd.length == 100.0
    assert attrs(sd, "electrode") == [4, 1, 0, 2]
    # unit index shifts once the noise cluster stays; locations follow the channel, not it
    assert attrs(sd, "location")[2] == [0.0, 0.0]


def test_spike_times_column_vector_as_kilosort_writes_it(tmp_path):
    times = np.array([[10], [20], [30]], dtype=np.uint64)
    root = make_folder(tmp_path / "ks", times, np.array([1, 0, 1], dtype=np.uint32))
    sd = load(root)
    assert sd.metadata["cluster_ids"] == [0, 1]
    np.testing.assert_array_equal(sd.train[0], ms([20]))
    np.testing.assert_array_equal(sd.train[1], ms([10, 30]))


def test_clusters_column_vector(tmp_path):
    root = make_folder(tmp_path / "ks", [10, 20, 30], np.array([[1], [0], [1]]))
    sd = load(root)
    assert [t.tolist() for t in sd.train] == [ms([20]).tolist(), ms([10, 30]).tolist()]


def test_unsorted_spike_times_give_sorted_trains(tmp_path):
    root = make_folder(tmp_path / "ks", [900, 100, 500, 300, 700], [1, 1, 0, 1, 0])
    sd = load(root)
    np.testing.assert_array_equal(sd.train[0], ms([500, 700]))
    np.testing.assert_array_equal(sd.train[1], ms([100, 300, 900]))
    assert all(np.all(np.diff(train) > 0) for train in sd.train)


@pytest.mark.parametrize(
    ("unit", "times", "expected"),
    [
        ("samples", np.array([32, 64, 320], dtype=np.uint64), [1.0, 2.0, 10.0]),
        ("s", np.array([0.001, 0.0025, 0.5]), [1.0, 2.5, 500.0]),
        ("ms", np.array([1.0, 2.5, 500.0]), [1.0, 2.5, 500.0]),
    ],
)
def test_time_units(tmp_path, unit, times, expected):
    root = make_folder(tmp_path / "ks", times, [0, 0, 0])
    sd = load(root, time_unit=unit)
    np.testing.assert_allclose(sd.train[0], expected, rtol=1e-12, atol=0)
    assert sd.length == pytest.approx(expected[-1], rel=1e-12)


def test_samples_at_30khz(tmp_path):
    samples = np.array([1, 29_999, 30_000, 123_456_789], dtype=np.uint64)
    root = make_folder(tmp_path / "ks", samples, [0, 0, 0, 0])
    sd = load(root, fs_Hz=30_000.0)
    np.testing.assert_allclose(sd.train[0], samples / 30_000.0 * 1000.0, rtol=1e-12, atol=0)


def test_seconds_need_no_sampling_rate(tmp_path):
    root = make_folder(tmp_path / "ks", [0.5, 1.0], [0, 0])
    sd = load(root, fs_Hz=None, time_unit="s")
    assert sd.train[0].tolist() == [500.0, 1000.0]
    assert sd.metadata["fs_Hz"] is None


def test_length_default_is_last_spike_and_override_wins(tmp_path):
    root = make_folder(tmp_path / "ks", [32, 3200, 640], [0, 1, 0])
    assert load(root).length == 100.0
    assert load(root, length_ms=250.0).length == 250.0


def test_length_shorter_than_last_spike_is_rejected(tmp_path):
    root = make_folder(tmp_path / "ks", [32, 3200], [0, 1])
    with pytest.raises(ValueError, match=r"ks: a spike at 100\.0 ms lies after the end"):
        load(root, length_ms=50.0)


def test_no_spikes(tmp_path):
    root = make_folder(
        tmp_path / "ks", np.zeros(0, np.uint64), np.zeros(0, np.int32), channel_map=[0, 1]
    )
    sd = load(root)
    assert sd.N == 0
    assert sd.length == 0.0
    assert sd.metadata["cluster_ids"] == []


def test_round_trip(tmp_path):
    rng = np.random.default_rng(7)
    known = {
        0: np.sort(rng.choice(300_000, 40, replace=False)),
        3: np.sort(rng.choice(300_000, 25, replace=False)),
        4: np.array([299_999]),
        11: np.sort(rng.choice(300_000, 60, replace=False)),
    }
    times = np.concatenate(list(known.values())).astype(np.uint64)
    clusters = np.concatenate([np.full(v.size, k, np.int32) for k, v in known.items()])
    order = rng.permutation(times.size)
    root = make_folder(tmp_path / "ks", times[order, None], clusters[order])

    sd = load(root, length_ms=10_000.0)

    assert sd.metadata["cluster_ids"] == sorted(known)
    assert attrs(sd, "unit_id") == sorted(known)
    for train, cluster_id in zip(sd.train, sorted(known), strict=True):
        np.testing.assert_array_equal(train, ms(known[cluster_id]))
    assert sd.length == 10_000.0


def test_cluster_ids_beyond_16_bits(tmp_path):
    root = make_folder(
        tmp_path / "ks", [32, 64, 96, 128], np.array([70_000, 3, 65_535, 4_464], np.int64)
    )
    sd = load(root)
    assert sd.metadata["cluster_ids"] == [3, 4_464, 65_535, 70_000]
    assert [train.tolist() for train in sd.train] == [[2.0], [4.0], [3.0], [1.0]]


def test_spike_templates_used_when_spike_clusters_missing(tmp_path):
    root = make_folder(
        tmp_path / "ks", [32, 64, 96], None, spike_templates=np.array([2, 0, 2], np.uint32)
    )
    sd = load(root)
    assert sd.metadata["clusters_file"] == "spike_templates.npy"
    assert sd.metadata["cluster_ids"] == [0, 2]
    np.testing.assert_array_equal(sd.train[1], ms([32, 96]))


def test_custom_file_names(tmp_path):
    root = tmp_path / "ks"
    root.mkdir()
    np.save(root / "times_curated.npy", np.array([32, 64]))
    np.save(root / "clusters_curated.npy", np.array([0, 0]))
    np.save(root / "map.npy", np.array([7, 8]))
    np.save(root / "pos.npy", np.array([[1.0, 2.0], [3.0, 4.0]]))
    sd = load(
        root,
        spike_times_file="times_curated.npy",
        spike_clusters_file="clusters_curated.npy",
        channel_map_file="map.npy",
        channel_positions_file="pos.npy",
    )
    assert sd.metadata["clusters_file"] == "clusters_curated.npy"
    assert sd.train[0].tolist() == [1.0, 2.0]
    assert attrs(sd, "electrode") == [7]
    assert attrs(sd, "location") == [[1.0, 2.0]]


# ---------------------------------------------------------------- labels


def test_label_files_read_curated_first(tmp_path):
    root = make_folder(tmp_path / "ks", [32, 64, 96, 128, 160], [0, 1, 2, 3, 4])
    # cluster_group.tsv labels 0 and 4; cluster_info.tsv labels 0, 1, 4; KSLabel labels all but 3
    write_tsv(root / "cluster_group.tsv", ["cluster_id", "group"], [[0, "good"], [4, "noise"]])
    write_tsv(
        root / "cluster_info.tsv",
        ["cluster_id", "group"],
        [[0, "noise"], [1, "mua"], [2, ""], [4, "good"]],
    )
    write_tsv(
        root / "cluster_KSLabel.tsv",
        ["cluster_id", "KSLabel"],
        [[0, "noise"], [1, "noise"], [2, "noise"], [4, "good"]],
    )
    sd = load(root, include_noise=True)
    assert attrs(sd, "label") == ["good", "mua", "noise", None, "noise"]
    assert attrs(sd, "label_source") == [
        "cluster_group.tsv",
        "cluster_info.tsv",
        "cluster_KSLabel.tsv",
        None,
        "cluster_group.tsv",
    ]
    assert sd.metadata["label_source"] == [
        "cluster_group.tsv",
        "cluster_info.tsv",
        "cluster_KSLabel.tsv",
    ]
    # without include_noise the curated labels decide: 0 kept though KSLabel says noise
    assert load(root).metadata["cluster_ids"] == [0, 1, 3]


def test_kslabel_alone_drops_noise(tmp_path):
    root = make_folder(tmp_path / "ks", [32, 64, 96], [0, 1, 2])
    write_tsv(
        root / "cluster_KSLabel.tsv",
        ["cluster_id", "KSLabel"],
        [[0, "good"], [1, "noise"], [2, "mua"]],
    )
    sd = load(root)
    assert sd.metadata["cluster_ids"] == [0, 2]
    assert attrs(sd, "label") == ["good", "mua"]
    assert sd.metadata["label_source"] == ["cluster_KSLabel.tsv"]


def test_no_label_files_keeps_every_cluster(tmp_path):
    root = make_folder(tmp_path / "ks", [32, 64, 96], [0, 1, 2])
    sd = load(root)
    assert sd.metadata["cluster_ids"] == [0, 1, 2]
    assert attrs(sd, "label") == [None, None, None]
    assert attrs(sd, "label_source") == [None, None, None]
    assert sd.metadata["label_source"] == []


def test_folder_tsv_without_group_column_keeps_every_cluster(tmp_path):
    root = make_folder(tmp_path / "ks", [32, 64, 96], [0, 1, 2])
    write_tsv(root / "cluster_info.tsv", ["cluster_id", "Amplitude"], [[0, 1.0], [1, 2.0]])
    sd = load(root)
    assert sd.metadata["cluster_ids"] == [0, 1, 2]
    assert attrs(sd, "label") == [None, None, None]
    assert attrs(sd, "Amplitude") == [1.0, 2.0, None]


def test_explicit_tsv_is_used_alone(phy_folder, tmp_path):
    # the folder's files say cluster 3 is noise; the explicit file says only cluster 0 is
    tsv = write_tsv(
        tmp_path / "elsewhere.tsv",
        ["cluster_id", "KSLabel"],
        [[0, "noise"], [2, "good"], [3, "mua"], [5, "good"]],
    )
    with pytest.warns(UserWarning, match=GUESS):
        sd = load(phy_folder, cluster_info_tsv=tsv)
    assert sd.metadata["cluster_ids"] == [2, 3, 5]
    assert attrs(sd, "label") == ["good", "mua", "good"]
    assert attrs(sd, "label_source") == ["elsewhere.tsv"] * 3
    assert sd.metadata["label_source"] == ["elsewhere.tsv"]
    # the folder's cluster_info.tsv is ignored too: no ch (so channel_map[cluster_id] is used,
    # with a warning since ids 0, 2, 3, 5 are not contiguous) and no extra columns from it
    assert attrs(sd, "electrode") == [2, 3, 5]
    assert "Amplitude" not in sd.neuron_attributes[0]


def test_explicit_tsv_group_column_and_ch(tmp_path):
    root = make_folder(tmp_path / "ks", [32, 64, 96], [0, 1, 2], channel_map=[5, 6, 7])
    tsv = write_tsv(
        tmp_path / "info.tsv",
        ["cluster_id", "ch", "group", "KSLabel"],
        [[0, 2, "good", "noise"], [1, 0, "noise", "good"], [2, 1, "mua", "mua"]],
    )
    sd = load(root, cluster_info_tsv=str(tsv))
    assert sd.metadata["cluster_ids"] == [0, 2]
    assert attrs(sd, "label") == ["good", "mua"]
    assert attrs(sd, "electrode") == [2, 1]


def test_explicit_tsv_relative_to_folder(phy_folder):
    with pytest.warns(UserWarning, match=GUESS):
        sd = load(phy_folder, cluster_info_tsv="cluster_KSLabel.tsv")
    # KSLabel calls cluster 3 good, so it is kept; the curated cluster_group.tsv is not read
    assert sd.metadata["cluster_ids"] == [0, 2, 3, 5]
    assert attrs(sd, "label") == ["good", "mua", "good", "mua"]
    assert sd.metadata["label_source"] == ["cluster_KSLabel.tsv"]


def test_explicit_tsv_without_label_column_keeps_every_cluster(phy_folder, tmp_path):
    tsv = write_tsv(tmp_path / "amp.tsv", ["cluster_id", "Amplitude"], [[3, 9.5]])
    with pytest.warns(UserWarning, match=GUESS):
        sd = load(phy_folder, cluster_info_tsv=tsv)
    assert sd.metadata["cluster_ids"] == [0, 2, 3, 5]
    assert attrs(sd, "label") == [None] * 4
    assert sd.neuron_attributes[2]["Amplitude"] == 9.5
    assert sd.metadata["label_source"] == []


def test_missing_explicit_tsv_keeps_every_cluster(phy_folder, tmp_path):
    missing = tmp_path / "no_such.tsv"
    (phy_folder / "channel_map.npy").unlink()  # only the TSV warning, no channel guess
    with pytest.warns(UserWarning, match=r"no_such\.tsv not found; keeping every cluster"):
        sd = load(phy_folder, cluster_info_tsv=missing)
    assert sd.metadata["cluster_ids"] == [0, 2, 3, 5]
    assert attrs(sd, "label") == [None] * 4


@pytest.mark.parametrize("name", ["cluster_group.tsv", "cluster_info.tsv", "cluster_KSLabel.tsv"])
def test_empty_label_file_in_folder(tmp_path, name):
    root = make_folder(tmp_path / "ks", [32], [0])
    (root / name).write_bytes(b"")
    with pytest.raises(ValueError, match=rf"{name} is empty \(0 bytes\)"):
        load(root)


def test_empty_explicit_tsv(phy_folder, tmp_path):
    empty = tmp_path / "blank.tsv"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"blank\.tsv is empty"):
        load(phy_folder, cluster_info_tsv=empty)


@pytest.mark.parametrize("content", [b"\n\n", b"\xff\xfe\x00bad"])
def test_unreadable_tsv_names_the_file(phy_folder, content):
    (phy_folder / "cluster_group.tsv").write_bytes(content)
    with pytest.raises(ValueError, match=r"cluster_group\.tsv cannot be read as a TSV"):
        load(phy_folder)


def test_tsv_without_id_column_warns_and_keeps_every_cluster(phy_folder, tmp_path):
    tsv = write_tsv(tmp_path / "noid.tsv", ["unit", "group"], [[3, "noise"]])
    with pytest.warns(UserWarning) as seen:
        sd = load(phy_folder, cluster_info_tsv=tsv)
    messages = [str(w.message) for w in seen]
    assert any(
        "noid.tsv has no cluster_id (or id) column" in m and "['unit', 'group']" in m
        for m in messages
    )  # names the file and the columns it has
    assert any("not sequential" in m for m in messages)  # no ch column: the map is a guess
    assert sd.metadata["cluster_ids"] == [0, 2, 3, 5]  # noise cluster 3 kept: no labels
    expected = [ms(PHY_TRAINS[c]).tolist() for c in (0, 2, 3, 5)]
    assert [train.tolist() for train in sd.train] == expected
    assert attrs(sd, "label") == [None] * 4


def test_folder_tsv_without_id_column_is_ignored_with_a_warning(phy_folder):
    write_tsv(phy_folder / "cluster_group.tsv", ["unit", "group"], [[0, "noise"]])
    with pytest.warns(UserWarning, match=r"cluster_group\.tsv has no cluster_id"):
        sd = load(phy_folder)
    # the labels then come from cluster_info.tsv, which still drops noise cluster 3
    assert sd.metadata["cluster_ids"] == [0, 2, 5]
    assert attrs(sd, "label_source") == ["cluster_info.tsv"] * 3


@pytest.mark.parametrize(
    ("column", "cell", "shown"), [("cluster_id", "abc", "'abc'"), ("id", "2.5", "2.5")]
)
def test_tsv_ids_that_are_not_integers(phy_folder, tmp_path, column, cell, shown):
    tsv = write_tsv(tmp_path / "bad.tsv", [column, "group"], [[0, "good"], [cell, "noise"]])
    with pytest.raises(
        ValueError,
        match=rf"bad\.tsv: column '{column}' must hold whole-number cluster ids, but "
        rf"row 2 holds {shown}",
    ):
        load(phy_folder, cluster_info_tsv=tsv)


def test_tsv_ids_with_an_empty_cell(phy_folder):
    write_tsv(phy_folder / "cluster_group.tsv", ["cluster_id", "group"], [[0, "good"], ["", "mua"]])
    with pytest.raises(ValueError, match=r"cluster_group\.tsv: column 'cluster_id' .* row 2"):
        load(phy_folder)


def test_tsv_channel_that_is_not_a_number(phy_folder):
    write_tsv(phy_folder / "cluster_info.tsv", ["cluster_id", "ch"], [[0, 4], [2, "A7"]])
    with pytest.raises(ValueError, match=r"cluster_info\.tsv: column 'ch' .* cluster 2 has 'A7'"):
        load(phy_folder)


def test_old_phy_id_column(tmp_path):
    root = make_folder(tmp_path / "ks", [32, 64], [0, 1])
    write_tsv(root / "cluster_info.tsv", ["id", "group"], [[0, "noise"], [1, "good"]])
    sd = load(root)
    assert sd.metadata["cluster_ids"] == [1]


# ---------------------------------------------------------------- channel ladder


def template_bank(n_templates, n_channels, peaks):
    """Templates (templates x samples x channels) whose largest swing is on ``peaks[t]``.

    A neighbouring channel carries the largest positive value, so only the peak-to-peak
    amplitude (not the maximum) picks ``peaks[t]``.
    """
    bank = np.zeros((n_templates, 6, n_channels), dtype=np.float32)
    bank[:, 2, :] = -0.5
    for template, peak in enumerate(peaks):
        bank[template, 2, peak] = -8.0
        bank[template, 4, peak] = 2.0
        bank[template, 3, (peak + 1) % n_channels] = 3.0
    return bank


def test_tsv_ch_beats_template_and_channel_map(tmp_path):
    root = make_folder(
        tmp_path / "ks",
        [32, 64],
        [0, 1],
        channel_map=[10, 11, 12, 13],
        templates=template_bank(2, 4, [3, 3]),
    )
    write_tsv(root / "cluster_info.tsv", ["cluster_id", "ch"], [[0, 2], [1, ""]])
    sd = load(root)
    # cluster 0 from the TSV; cluster 1's ch cell is empty, so its template decides
    assert attrs(sd, "electrode") == [2, 13]


def test_dominant_template_peak_through_channel_map(tmp_path):
    # cluster 7 (a merge) has 3 spikes from template 1 and one from template 0
    root = make_folder(
        tmp_path / "ks",
        [32, 64, 96, 128, 160],
        [7, 7, 7, 7, 2],
        spike_templates=np.array([1, 0, 1, 1, 2], np.uint32),
        templates=template_bank(3, 4, [0, 3, 1]),
        channel_map=np.array([20, 21, 22, 23], np.int32),
    )
    sd = load(root)
    assert sd.metadata["cluster_ids"] == [2, 7]
    assert attrs(sd, "electrode") == [21, 23]
    assert all(type(electrode) is int for electrode in attrs(sd, "electrode"))


def test_uncurated_template_is_cluster_id(tmp_path):
    # no spike_templates.npy: cluster id = template id
    root = make_folder(
        tmp_path / "ks",
        [32, 64],
        [0, 1],
        templates=template_bank(2, 3, [2, 0]),
        channel_map=[5, 6, 7],
    )
    assert attrs(load(root), "electrode") == [7, 5]


def test_template_peak_without_channel_map(tmp_path):
    root = make_folder(tmp_path / "ks", [32, 64], [0, 1], templates=template_bank(2, 3, [1, 2]))
    assert attrs(load(root), "electrode") == [1, 2]


def test_two_d_templates_skipped_with_warning(tmp_path):
    root = make_folder(
        tmp_path / "ks",
        [32, 64],
        [0, 1],
        templates=np.ones((2, 4), np.float32),
        channel_map=[5, 6, 7],
    )
    with pytest.warns(UserWarning, match=r"Templates fallback skipped: .*shape \(2, 4\)"):
        sd = load(root)
    assert attrs(sd, "electrode") == [5, 6]  # channel_map[cluster_id]


def test_corrupt_templates_only_warn(tmp_path):
    root = make_folder(tmp_path / "ks", [32, 64], [0, 1], channel_map=[5, 6, 7])
    (root / "templates.npy").write_bytes(b"not an npy file")
    with pytest.warns(UserWarning, match=r"ignoring unreadable .*templates\.npy"):
        sd = load(root)
    assert attrs(sd, "electrode") == [5, 6]


def test_spike_templates_of_wrong_length_only_warn(tmp_path):
    root = make_folder(
        tmp_path / "ks",
        [32, 64],
        [0, 1],
        spike_templates=np.array([0, 1, 1], np.uint32),
        templates=template_bank(2, 3, [2, 2]),
        channel_map=[5, 6, 7],
    )
    with pytest.warns(
        UserWarning, match=r"ignoring .*spike_templates\.npy .* 3 entries but there are 2 spikes"
    ):
        sd = load(root)
    assert attrs(sd, "electrode") == [5, 6]


def test_template_peak_past_channel_map_falls_back(tmp_path):
    root = make_folder(
        tmp_path / "ks",
        [32, 64],
        [0, 1],
        templates=template_bank(2, 6, [5, 0]),
        channel_map=[5, 6, 7],
    )
    # cluster 0 peaks on channel index 5, which the map lacks: channel_map[0] instead
    assert attrs(load(root), "electrode") == [5, 5]


def test_channel_map_by_cluster_id_when_ids_are_contiguous(tmp_path):
    root = make_folder(
        tmp_path / "ks", [32, 64, 96], [2, 0, 1], channel_map=np.array([[9], [4], [6]])
    )
    sd = load(root)  # ids are 0..2: no warning (warnings are errors here)
    assert attrs(sd, "electrode") == [9, 4, 6]


def test_channel_map_by_cluster_id_warns_when_ids_have_gaps(tmp_path):
    root = make_folder(tmp_path / "ks", [32, 64], [0, 2], channel_map=[9, 4, 6])
    with pytest.warns(UserWarning, match=r"cluster ids are not sequential \(not 0\.\.1\).*guess"):
        sd = load(root)
    assert attrs(sd, "electrode") == [9, 6]


def test_dropping_noise_does_not_make_ids_look_non_contiguous(tmp_path):
    root = make_folder(tmp_path / "ks", [32, 64, 96], [0, 1, 2], channel_map=[9, 4, 6])
    write_tsv(root / "cluster_group.tsv", ["cluster_id", "group"], [[1, "noise"]])
    sd = load(root)  # the sort's ids are 0..2; no warning
    assert sd.metadata["cluster_ids"] == [0, 2]
    assert attrs(sd, "electrode") == [9, 6]


def test_cluster_past_end_of_channel_map(tmp_path):
    root = make_folder(tmp_path / "ks", [32, 64, 96], [0, 1, 9], channel_map=[3, 4])
    with pytest.warns(UserWarning) as record:
        sd = load(root)
    messages = [str(w.message) for w in record]
    assert any("cluster 9 is past the end of channel_map.npy (2 channels)" in m for m in messages)
    assert any("cluster ids are not sequential (not 0..2)" in m for m in messages)
    assert len(messages) == 2
    assert attrs(sd, "electrode") == [3, 4, None]
    assert "electrode" not in sd.neuron_attributes[2]


@pytest.mark.parametrize("content", [b"", b"garbage bytes", b"\x93NUMPY\x01\x00"])
def test_corrupt_channel_map_only_warns(tmp_path, content):
    root = make_folder(tmp_path / "ks", [32, 64], [0, 1])
    (root / "channel_map.npy").write_bytes(content)
    with pytest.warns(UserWarning, match=r"ignoring unreadable .*channel_map\.npy"):
        sd = load(root)
    assert sd.metadata["cluster_ids"] == [0, 1]
    assert attrs(sd, "electrode") == [None, None]


def test_no_channel_information(tmp_path):
    root = make_folder(tmp_path / "ks", [32], [0])
    (unit,) = load(root).neuron_attributes
    assert unit == {"unit_id": 0, "label": None, "label_source": None}


# ---------------------------------------------------------------- locations


def test_location_from_channel_row(tmp_path):
    positions = np.array([[0.0, 0.0, 1.0], [5.0, 10.0, 1.0], [5.0, 30.0, 2.0], [0.0, 40.0, 2.0]])
    root = make_folder(
        tmp_path / "ks", [32, 64], [0, 1], channel_map=[3, 2], channel_positions=positions
    )
    sd = load(root)
    assert attrs(sd, "electrode") == [3, 2]
    assert attrs(sd, "location") == [[0.0, 40.0, 2.0], [5.0, 30.0, 2.0]]


def test_location_by_unit_index_without_channel_map(tmp_path):
    root = make_folder(
        tmp_path / "ks",
        [32, 64, 96, 128],
        [0, 2, 5, 3],
        channel_positions=[[0.0, 1.0], [0.0, 2.0], [0.0, 3.0], [0.0, 4.0]],
    )
    write_tsv(root / "cluster_group.tsv", ["cluster_id", "group"], [[3, "noise"]])
    sd = load(root)
    assert sd.metadata["cluster_ids"] == [0, 2, 5]
    assert attrs(sd, "electrode") == [None, None, None]
    # unit index, not cluster id: cluster 5 is unit 2
    assert attrs(sd, "location") == [[0.0, 1.0], [0.0, 2.0], [0.0, 3.0]]


def test_location_by_unit_index_when_channel_row_missing(tmp_path):
    root = make_folder(tmp_path / "ks", [32, 64], [0, 1], channel_positions=[[1.0], [2.0]])
    write_tsv(root / "cluster_info.tsv", ["cluster_id", "ch"], [[0, 1], [1, 40]])
    sd = load(root)
    assert attrs(sd, "electrode") == [1, 40]
    assert attrs(sd, "location") == [[2.0], [2.0]]  # [x]; cluster 1 has no row 40


def test_no_location_when_no_row_fits(tmp_path):
    root = make_folder(tmp_path / "ks", [32, 64], [0, 1], channel_positions=[[1.0, 2.0]])
    sd = load(root)
    assert attrs(sd, "location") == [[1.0, 2.0], None]


def test_corrupt_channel_positions_only_warn(tmp_path):
    root = make_folder(tmp_path / "ks", [32], [0], channel_map=[4])
    (root / "channel_positions.npy").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"ignoring unreadable .*channel_positions\.npy"):
        sd = load(root)
    assert attrs(sd, "electrode") == [4]
    assert attrs(sd, "location") == [None]


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"time_unit": "us"}, "unknown time unit 'us'"),
        ({"time_unit": "samples", "fs_Hz": None}, "fs_Hz is required"),
        ({"time_unit": "samples", "fs_Hz": 0.0}, "fs_Hz must be positive"),
        ({"time_unit": "samples", "fs_Hz": float("nan")}, "fs_Hz must be positive"),
    ],
)
def test_bad_unit_or_rate_before_any_file_is_read(tmp_path, monkeypatch, kwargs, message):
    def no_reading(*args, **kwargs):
        raise AssertionError("a file was read")

    monkeypatch.setattr(kilosort.np, "load", no_reading)
    with pytest.raises(ValueError, match=message):
        load(tmp_path / "does_not_exist", **kwargs)


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="KiloSort folder not found: .*nowhere"):
        load(tmp_path / "nowhere")


def test_missing_spike_times(tmp_path):
    root = make_folder(tmp_path / "ks", None, [0])
    with pytest.raises(FileNotFoundError, match=r"KiloSort file not found: .*spike_times\.npy"):
        load(root)


def test_missing_clusters_and_templates(tmp_path):
    root = make_folder(tmp_path / "ks", [32], None)
    with pytest.raises(
        FileNotFoundError, match="neither spike_clusters.npy nor spike_templates.npy found"
    ):
        load(root)


def test_missing_custom_clusters_file(tmp_path):
    root = make_folder(tmp_path / "ks", [32], None, spike_templates=[0])
    with pytest.raises(FileNotFoundError, match=r"KiloSort file not found: .*curated\.npy"):
        load(root, spike_clusters_file="curated.npy")


def test_mismatched_lengths(tmp_path):
    root = make_folder(tmp_path / "ks", [32, 64, 96], [0, 1])
    with pytest.raises(
        ValueError, match="spike_times.npy has 3 spikes but spike_clusters.npy has 2"
    ):
        load(root)


@pytest.mark.parametrize(
    ("times", "unit"),
    [(np.array([32, -1], np.int64), "samples"), (np.array([1.0, -0.5]), "ms")],
)
def test_negative_times(tmp_path, times, unit):
    root = make_folder(tmp_path / "ks", times, [0, 0])
    with pytest.raises(ValueError, match=r"spike_times\.npy holds negative spike times"):
        load(root, time_unit=unit)


def test_negative_cluster_ids(tmp_path):
    root = make_folder(tmp_path / "ks", [32, 64], np.array([0, -1], np.int32))
    with pytest.raises(ValueError, match=r"spike_clusters\.npy holds negative cluster ids"):
        load(root)


def test_whole_number_float_cluster_ids(tmp_path):
    root = make_folder(tmp_path / "ks", [32, 64, 96], np.array([2.0, 0.0, 2.0]))
    sd = load(root)
    assert sd.metadata["cluster_ids"] == [0, 2]
    assert [train.tolist() for train in sd.train] == [[2.0], [1.0, 3.0]]


@pytest.mark.parametrize(
    "clusters", [np.array([0.5, 1.0]), np.array([0.0, np.nan]), np.array([True, False])]
)
def test_cluster_ids_that_are_not_whole_numbers(tmp_path, clusters):
    root = make_folder(tmp_path / "ks", [32, 64], clusters)
    with pytest.raises(ValueError, match=r"spike_clusters\.npy must hold whole-number cluster ids"):
        load(root)


@pytest.mark.parametrize("content", [b"", b"garbage bytes"])
@pytest.mark.parametrize("name", ["spike_times.npy", "spike_clusters.npy"])
def test_corrupt_spike_files(tmp_path, name, content):
    root = make_folder(tmp_path / "ks", [32], [0])
    (root / name).write_bytes(content)
    with pytest.raises(ValueError, match=rf"{name} is not a valid \.npy file"):
        load(root)


# ---------------------------------------------------------------- unsigned and sparse ids


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64, np.int64])
def test_unsigned_cluster_ids_with_the_template_ladder(tmp_path, dtype):
    """Phy writes spike_clusters as uint32; template peaks must still give the channels."""
    root = make_folder(
        tmp_path / "ks",
        [32, 64, 96, 128],
        np.array([1, 0, 2, 1], dtype=dtype),
        spike_templates=np.array([1, 0, 2, 1], np.int32),
        templates=template_bank(3, 4, [3, 0, 2]),
        channel_map=np.array([10, 11, 12, 13], np.uint32),
    )
    sd = load(root)
    assert sd.metadata["cluster_ids"] == [0, 1, 2]
    assert [train.tolist() for train in sd.train] == [[2.0], [1.0, 4.0], [3.0]]
    assert attrs(sd, "unit_id") == [0, 1, 2]
    assert attrs(sd, "electrode") == [13, 10, 12]


def test_huge_sparse_cluster_ids_are_not_allocated_per_id(tmp_path):
    ids = np.array([4_000_000_000, 7, 2**63 - 1, 7], dtype=np.uint64)
    root = make_folder(tmp_path / "ks", [32, 64, 96, 128], ids)
    sd = load(root)  # no channel map: no channel lookups
    assert sd.metadata["cluster_ids"] == [7, 4_000_000_000, 2**63 - 1]
    assert [train.tolist() for train in sd.train] == [[2.0, 4.0], [1.0], [3.0]]


def test_cluster_ids_beyond_int64(tmp_path):
    root = make_folder(tmp_path / "ks", [32, 64], np.array([0, 2**63], dtype=np.uint64))
    with pytest.raises(
        ValueError, match=r"spike_clusters\.npy holds cluster id 9223372036854775808"
    ):
        load(root)


@pytest.mark.parametrize("times", [np.array(["32", "64"]), np.array([b"32", b"64"])])
def test_text_spike_times_name_the_file(tmp_path, times):
    root = make_folder(tmp_path / "ks", times, [0, 1])
    with pytest.raises(ValueError, match=r"spike_times\.npy must hold spike times as numbers"):
        load(root)


def test_tsv_columns_named_like_loader_keys_do_not_overwrite_them(tmp_path):
    root = make_folder(
        tmp_path / "ks",
        [32, 64],
        [0, 1],
        channel_positions=np.array([[0.0, 0.0], [0.0, 20.0]]),
    )
    write_tsv(
        root / "cluster_info.tsv",
        ["cluster_id", "ch", "location", "unit_id", "electrode"],
        [[0, 1, "CA1", "u-a", 5], [1, 0, "DG", "u-b", 6]],
    )
    sd = load(root)
    assert attrs(sd, "unit_id") == [0, 1]
    assert attrs(sd, "electrode") == [1, 0]  # from ch
    assert attrs(sd, "location") == [[0.0, 20.0], [0.0, 0.0]]  # coordinates only
    assert attrs(sd, "location_label") == ["CA1", "DG"]  # the region text
    assert attrs(sd, "tsv_unit_id") == ["u-a", "u-b"]
    assert attrs(sd, "tsv_electrode") == [5, 6]


def test_tsv_text_location_beside_a_location_label_column(tmp_path):
    root = make_folder(tmp_path / "ks", [32], [0])
    write_tsv(
        root / "cluster_info.tsv",
        ["cluster_id", "location", "location_label"],
        [[0, "adn", "AD"]],
    )
    sd = load(root)
    assert sd.neuron_attributes[0]["location_label"] == "AD"
    assert sd.neuron_attributes[0]["tsv_location"] == "adn"
    assert "location" not in sd.neuron_attributes[0]
