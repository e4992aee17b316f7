import h5py
import numpy as np
import pytest
from scipy import signal

from spikelab.detect import bandpass_sos, detect_threshold_crossings, settle_samples
from spikelab.loaders import load_spikedata_from_hdf5_raw_thresholded

FS = 20000.0


@pytest.fixture(scope="module")
def recording():
    """Three channels of noise; spikes injected on channels 0 (negative) and 1 (positive)."""
    rng = np.random.default_rng(0)
    n = 40000
    traces = rng.normal(0.0, 1.0, size=(3, n))
    spike_starts = np.arange(1500, n - 1500, 2500)
    waveform = -25.0 * np.hanning(12)
    for start in spike_starts:
        traces[0, start : start + 12] += waveform
        traces[1, start + 40 : start + 52] -= waveform
    return traces, spike_starts


def write(tmp_path, traces, name="raw.h5", attrs=None):
    path = tmp_path / name
    with h5py.File(path, "w") as handle:
        handle.create_dataset("acq/traces", data=traces)
        handle.attrs.update(attrs or {})
    return path


def test_detects_injected_spikes_one_unit_per_channel(tmp_path, recording):
    traces, starts = recording
    sd = load_spikedata_from_hdf5_raw_thresholded(write(tmp_path, traces), "acq/traces", fs_Hz=FS)
    assert sd.N == 3  # channel 2 has no spikes but is still a unit
    assert sd.train[2].size == 0
    assert sd.get_neuron_attribute("electrode") == [0, 1, 2]
    for channel, offset in ((0, 0), (1, 40)):
        spike_ms = (starts + offset) / FS * 1000.0
        detected = sd.train[channel]
        # the filter's ringing may add an event next to a spike, never one far from it
        nearest = np.abs(detected[:, None] - (spike_ms[None, :] + 0.3)).min(axis=1)
        assert np.all(nearest < 0.6)
        hits = np.abs(spike_ms[:, None] + 0.3 - detected[None, :]).min(axis=1)
        assert np.all(hits < 0.6)
        assert starts.size <= detected.size <= starts.size + 2
    assert sd.length == pytest.approx(traces.shape[1] / FS * 1000.0)
    assert sd.metadata["fs_Hz"] == FS
    assert sd.metadata["format"] == "hdf5_raw_thresholded"


def test_direction_up_and_down(tmp_path, recording):
    traces, starts = recording
    path = write(tmp_path, traces)
    up = load_spikedata_from_hdf5_raw_thresholded(
        path, "acq/traces", fs_Hz=FS, direction="up", filter=False
    )
    down = load_spikedata_from_hdf5_raw_thresholded(
        path, "acq/traces", fs_Hz=FS, direction="down", filter=False
    )
    assert up.train[0].size == 0 and up.train[1].size == starts.size
    assert down.train[0].size == starts.size and down.train[1].size == 0


def test_exact_crossings_without_filter(tmp_path):
    trace = np.zeros((1, 100))
    trace[0, [10, 11, 12, 50, 70]] = [9.0, 9.0, 9.0, -9.0, 9.0]
    path = write(tmp_path, trace)
    threshold = 1.0 * trace[0].std()
    rising = load_spikedata_from_hdf5_raw_thresholded(
        path, "acq/traces", fs_Hz=1000.0, threshold_sigma=1.0, filter=False
    )
    assert rising.train[0].tolist() == [10.0, 50.0, 70.0]
    assert rising.neuron_attributes[0]["threshold"] == pytest.approx(threshold)
    every = load_spikedata_from_hdf5_raw_thresholded(
        path, "acq/traces", fs_Hz=1000.0, threshold_sigma=1.0, filter=False, hysteresis=False
    )
    assert every.train[0].tolist() == [10.0, 11.0, 12.0, 50.0, 70.0]


@pytest.mark.parametrize("filter_option", [True, False, {"highcut": 3000.0}])
@pytest.mark.parametrize("hysteresis", [True, False])
def test_chunked_equals_whole_array(tmp_path, recording, filter_option, hysteresis):
    traces, _ = recording
    path = write(tmp_path, traces)
    kwargs = {
        "fs_Hz": FS,
        "filter": filter_option,
        "hysteresis": hysteresis,
        "threshold_sigma": 4.0,
    }
    whole = load_spikedata_from_hdf5_raw_thresholded(
        path, "acq/traces", chunk_samples=traces.shape[1], **kwargs
    )
    chunked = load_spikedata_from_hdf5_raw_thresholded(
        path, "acq/traces", chunk_samples=997, **kwargs
    )
    assert sum(t.size for t in whole.train) > 0
    assert all(np.array_equal(a, b) for a, b in zip(whole.train, chunked.train, strict=True))
    np.testing.assert_allclose(
        whole.get_neuron_attribute("threshold"),
        chunked.get_neuron_attribute("threshold"),
        rtol=1e-9,
    )


def test_filter_options_change_the_band():
    default = bandpass_sos(FS, True)
    assert default.shape == (3, 6)
    assert not np.array_equal(default, bandpass_sos(FS, {"highcut": 3000.0}))
    assert bandpass_sos(FS, False) is None


def test_highcut_above_nyquist_is_clipped_to_95_percent():
    clipped = bandpass_sos(8000.0, True)  # 6000 Hz asked, Nyquist is 4000 Hz
    expected = signal.butter(3, [300.0, 3800.0], btype="bandpass", fs=8000.0, output="sos")
    np.testing.assert_allclose(clipped, expected, rtol=1e-12)
    # the same band as asking for 3800 Hz outright, and its upper edge really is at 3800 Hz
    np.testing.assert_array_equal(clipped, bandpass_sos(8000.0, {"highcut": 3800.0}))
    _, gain = signal.sosfreqz(clipped, worN=[3800.0], fs=8000.0)
    assert abs(gain[0]) == pytest.approx(2**-0.5, rel=1e-6)  # -3 dB at the cut-off


def test_settle_samples():
    default = bandpass_sos(FS, True)
    assert settle_samples(None) == 1
    assert 10 < settle_samples(default) < FS


@pytest.mark.parametrize(
    ("fs", "kwargs", "match"),
    [
        (0, {}, "positive and finite"),
        (-1.0, {}, "positive and finite"),
        (float("nan"), {}, "positive and finite"),
        (None, {}, "positive, finite"),
        (FS, {"direction": "sideways"}, "direction must be one of"),
        (FS, {"filter": {"bandwidth": 3}}, r"unknown filter options \['bandwidth'\]"),
        (FS, {"filter": {"lowcut": 9000.0}}, "is empty at fs_Hz=20000"),
        (FS, {"threshold_sigma": 0}, "threshold_sigma must be positive"),
    ],
)
def test_bad_arguments(tmp_path, recording, fs, kwargs, match):
    path = write(tmp_path, recording[0][:, :1000])
    with pytest.raises(ValueError, match=match):
        load_spikedata_from_hdf5_raw_thresholded(path, "acq/traces", fs_Hz=fs, **kwargs)


def test_bad_datasets(tmp_path):
    path = write(tmp_path, np.zeros(10))
    with pytest.raises(ValueError, match=r"must be 2-D \(channels, samples\), got shape \(10,\)"):
        load_spikedata_from_hdf5_raw_thresholded(path, "acq/traces", fs_Hz=FS)
    with pytest.raises(KeyError, match="'nope' is not in"):
        load_spikedata_from_hdf5_raw_thresholded(path, "nope", fs_Hz=FS)


def test_detection_accepts_any_window_reader():
    data = np.zeros((2, 30))
    data[1, 5] = 10.0
    found = detect_threshold_crossings(
        lambda a, b: data[:, a:b], 2, 30, 1000.0, threshold_sigma=2.0, filter=False, chunk_samples=4
    )
    assert [s.tolist() for s in found.spike_samples] == [[], [5]]
    assert found.n_samples == 30


def test_long_traces_take_their_noise_from_spaced_windows(monkeypatch):
    from spikelab import detect

    monkeypatch.setattr(detect, "NOISE_WINDOWS", 3)
    rng = np.random.default_rng(5)
    data = rng.normal(0, 1, size=(2, 4000))
    data[:, 1000:3000] *= 10  # loud middle: seen only by the middle window
    reads = []

    def read(start, stop):
        reads.append((start, stop))
        return data[:, start:stop]

    found = detect_threshold_crossings(read, 2, 4000, 1000.0, filter=False, chunk_samples=4000)
    windows = [(0, 500), (1750, 2250), (3500, 4000)]
    assert reads[:3] == [(0, 501), (1749, 2251), (3499, 4000)]  # plus the one-sample margin
    noise = np.concatenate([data[:, a:b] for a, b in windows], axis=1)
    np.testing.assert_allclose(found.thresholds, 5.0 * noise.std(axis=1), rtol=1e-12)


def test_traces_are_not_changed_in_place():
    data = np.zeros((1, 50))
    data[0, 10] = 9.0
    before = data.copy()
    detect_threshold_crossings(
        lambda a, b: data[:, a:b], 1, 50, 1000.0, filter=False, threshold_sigma=1.0
    )
    np.testing.assert_array_equal(data, before)


def spike_trace():
    trace = np.zeros((2, 100))
    trace[0, [10, 50]] = 9.0
    return trace


def test_file_start_time_and_length_are_honoured(tmp_path):
    path = write(tmp_path, spike_trace(), attrs={"start_time": -100.0, "length_ms": 250.0})
    sd = load_spikedata_from_hdf5_raw_thresholded(
        path, "acq/traces", fs_Hz=1000.0, threshold_sigma=1.0, filter=False
    )
    assert sd.start_time == -100.0  # an event-centred window
    assert sd.length == 250.0  # trailing silence after the 100 samples
    assert sd.train[0].tolist() == [-90.0, -50.0]  # sample k lies at start_time + k ms
    assert sd.train[1].size == 0 and sd.N == 2


def test_without_file_attributes_the_samples_give_the_window(tmp_path):
    path = write(tmp_path, spike_trace())
    sd = load_spikedata_from_hdf5_raw_thresholded(
        path, "acq/traces", fs_Hz=1000.0, threshold_sigma=1.0, filter=False
    )
    assert (sd.start_time, sd.length) == (0.0, 100.0)
    assert sd.train[0].tolist() == [10.0, 50.0]


def test_file_length_shorter_than_the_spikes_names_the_file(tmp_path):
    path = write(tmp_path, spike_trace(), attrs={"length_ms": 20.0})
    with pytest.raises(ValueError, match=r"raw\.h5: .*after"):
        load_spikedata_from_hdf5_raw_thresholded(
            path, "acq/traces", fs_Hz=1000.0, threshold_sigma=1.0, filter=False
        )


def test_text_traces_name_the_file_and_dataset(tmp_path):
    path = write(tmp_path, np.array([[b"1", b"2"], [b"3", b"4"]]))
    with pytest.raises(ValueError, match=r"raw\.h5: dataset '/acq/traces' holds text"):
        load_spikedata_from_hdf5_raw_thresholded(path, "acq/traces", fs_Hz=FS)


def test_explicit_start_and_length_win_over_the_file(tmp_path):
    path = write(tmp_path, spike_trace(), attrs={"start_time": -100.0, "length_ms": 250.0})
    sd = load_spikedata_from_hdf5_raw_thresholded(
        path,
        "acq/traces",
        fs_Hz=1000.0,
        threshold_sigma=1.0,
        filter=False,
        start_time_ms=5.0,
        length_ms=120.0,
    )
    assert (sd.start_time, sd.length) == (5.0, 120.0)
    assert sd.train[0].tolist() == [15.0, 55.0]


def test_documented_defaults_match_the_signature():
    import ast
    import inspect
    import re

    doc = inspect.getdoc(load_spikedata_from_hdf5_raw_thresholded)
    pattern = re.compile(r"^(\w+) : [^\n]*?, default: (.+)$", re.MULTILINE)
    documented = {name: ast.literal_eval(text) for name, text in pattern.findall(doc)}
    parameters = inspect.signature(load_spikedata_from_hdf5_raw_thresholded).parameters
    assert {"length_ms", "start_time_ms", "threshold_sigma"} <= set(documented)
    assert {name: parameters[name].default for name in documented} == documented
