"""Malformed inputs fail with a named spikelab error that names the input, the rule and the fix.

KiloSort ``params.py`` files that are code or not Python, files whose suffix says no format,
and DANDI asset records with fields of the wrong type or unusable paths.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spikelab.cli.parser import cli_words
from spikelab.exceptions import FileFormatError
from spikelab.loaders.formats import FORMATS, detect_format, kilosort_options

# ------------------------------------------------------------------ KiloSort params.py


def _kilosort_folder(tmp_path: Path, params: str | bytes) -> Path:
    folder = tmp_path / "ks"
    folder.mkdir()
    (folder / "spike_times.npy").write_bytes(b"")
    data = params.encode() if isinstance(params, str) else params
    (folder / "params.py").write_bytes(data)
    return folder


@pytest.mark.parametrize(
    ("params", "line", "problem"),
    [
        ("import os\nsample_rate = float(os.environ['FS'])\n", 2, "is code, not a number"),
        ("dtype = 'int16'\nsample_rate = float(30000)\n", 2, "is code, not a number"),
        ("sample_rate = fs\n", 1, "is code, not a number"),
        ("n = 4\nsample_rate = 15000 * 2\n", 2, "is code, not a number"),
        ("n_channels_dat = 4\nsample_rate = (30000.\n", 2, r"not valid Python \('\(' was"),
        ("sample_rate = 30000.0\nhp_filtered = Fals e\n", 2, "not valid Python"),
        (b"sample_rate = 30000.0\noffset = \xff\n", None, "not valid Python"),
        ("sample_rate = 'fast'\n", 1, "is not a positive, finite number"),
        ("sample_rate = -30000\n", 1, "is not a positive, finite number"),
        ("sample_rate = True\n", 1, "is not a positive, finite number"),
        ("sample_rate = 1e999\n", 1, "is not a positive, finite number"),
    ],
)
def test_params_py_that_is_not_plain_values_is_named(tmp_path, params, line, problem):
    folder = _kilosort_folder(tmp_path, params)
    where = re.escape(str(folder / "params.py")) + (f", line {line}" if line else "")
    with pytest.raises(FileFormatError, match=f"^{where}.*: .*{problem}") as caught:
        kilosort_options(folder)
    message = str(caught.value)
    assert "<ast." not in message and "<unknown>" not in message
    assert "sample_rate = 30000.0" in message  # what to write instead


def test_params_py_code_is_never_run(tmp_path):
    marker = tmp_path / "ran"
    folder = _kilosort_folder(
        tmp_path, f"sample_rate = open({str(marker)!r}, 'w').write('x') or 30000\n"
    )
    with pytest.raises(FileFormatError, match="is code, not a number"):
        kilosort_options(folder)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ("import os\nsample_rate = 30000.\nhp_filtered = False\n", 30000.0),
        ("dat_path = r'C:\\data\\x.bin'\nsample_rate = 25000\n", 25000.0),
    ],
)
def test_params_py_with_a_plain_rate_loads(tmp_path, params, expected):
    assert kilosort_options(_kilosort_folder(tmp_path, params)) == {"fs_Hz": expected}


@pytest.mark.parametrize(
    ("params", "match"),
    [
        (None, r"ks: no params.py; .*sample_rate = 30000.0"),
        ("n = 1\n", r"params.py: no sample_rate"),
    ],
)
def test_missing_sample_rate_names_the_file(tmp_path, params, match):
    folder = _kilosort_folder(tmp_path, "")
    if params is None:
        (folder / "params.py").unlink()
    else:
        (folder / "params.py").write_text(params)
    with pytest.raises(ValueError, match=match):
        kilosort_options(folder)


# ------------------------------------------------------------------ format from the suffix


@pytest.mark.parametrize(
    ("name", "clue"), [("spikes.xyz", "its suffix '.xyz'"), ("spikes", "its name (it has no")]
)
def test_unknown_suffix_names_the_file_and_the_formats(tmp_path, name, clue):
    path = tmp_path / name
    path.write_bytes(b"x")
    with pytest.raises(ValueError) as caught:
        detect_format(path)
    message = str(caught.value)
    assert f"cannot tell the format of {path} from {clue}" in message
    assert ".nwb, .npz" in message
    shown = cli_words(message)  # as `spikelab ingest files` prints it
    assert f"give its format with --format (one of {', '.join(FORMATS[1:])})" in shown
    assert "(--format )" not in shown and "--format --format" not in shown
