import ast
import inspect
import os
import pickle
import re
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest

import spikelab.data_loaders.data_loaders as upstream
import spikelab.loaders.pickle as pickle_loader
from spikelab.exceptions import UnpicklingWarning
from spikelab.io import export_to_pickle
from spikelab.io.atomic import atomic_write
from spikelab.loaders import LOADERS, load_spikedata_from_pickle
from spikelab.spikedata import SpikeData

BUCKET = "spikelab-test"
TRUST = "a pickle can run any code it holds, so load only pickles from sources you trust"
REMOTE_WARNING = f"from S3: {TRUST}"


def load_local(path):
    """Load a local pickle, checking that the load warned (the warning is tested below)."""
    with pytest.warns(UnpicklingWarning, match=re.escape(f"unpickling {path}: {TRUST}")):
        return load_spikedata_from_pickle(path)


def documented_defaults(function):
    """Map each ``name : type, default: X`` line of a numpydoc Parameters section to X."""
    pattern = re.compile(r"^(\w+) : [^\n]*?, default: (.+)$", re.MULTILINE)
    return {
        name: ast.literal_eval(text) for name, text in pattern.findall(inspect.getdoc(function))
    }


@pytest.fixture
def sd():
    return SpikeData(
        [[-2.0, 0.5, 7.25], [], [3.0]],
        length=12.0,
        start_time=-4.0,
        neuron_attributes=[
            {"unit_id": 3, "electrode": 17, "location": [10.0, 40.0]},
            {"unit_id": 8, "template": np.array([[0.0, -1.0], [0.5, 2.0]])},
            {"unit_id": 21, "location": [5.5]},
        ],
        metadata={"source_file": "rec.h5", "fs_Hz": 30000.0, "gains": np.array([0.195, 1.0])},
        raw_data=np.arange(6, dtype=np.int16).reshape(2, 3),
        raw_time=[-4.0, 0.0, 4.0],
    )


def assert_same_values(loaded, sd):
    """Explicit values, not just __eq__: the loaded object is a full, independent copy."""
    assert type(loaded) is SpikeData
    assert loaded is not sd
    assert loaded == sd
    assert [train.tolist() for train in loaded.train] == [[-2.0, 0.5, 7.25], [], [3.0]]
    assert loaded.length == 12.0
    assert loaded.start_time == -4.0
    assert loaded.get_neuron_attribute("unit_id") == [3, 8, 21]
    assert loaded.neuron_attributes[0] == {"unit_id": 3, "electrode": 17, "location": [10.0, 40.0]}
    np.testing.assert_array_equal(
        loaded.neuron_attributes[1]["template"], [[0.0, -1.0], [0.5, 2.0]]
    )
    assert set(loaded.metadata) == {"source_file", "fs_Hz", "gains"}
    assert loaded.metadata["fs_Hz"] == 30000.0
    np.testing.assert_array_equal(loaded.metadata["gains"], [0.195, 1.0])
    assert loaded.raw_data.dtype == np.int16
    np.testing.assert_array_equal(loaded.raw_data, [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(loaded.raw_time, [-4.0, 0.0, 4.0])


@pytest.fixture
def no_boto3(monkeypatch):
    """Make any attempt to import boto3 fail, so a test proves no S3 call was tried."""
    monkeypatch.setitem(sys.modules, "boto3", None)


# ---------------------------------------------------------------- local round trip


@pytest.mark.parametrize("as_type", [str, Path], ids=["str", "Path"])
def test_round_trip(tmp_path, sd, as_type):
    path = as_type(tmp_path / "sd.pkl")
    export_to_pickle(sd, path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_spikedata_from_pickle(path)
    assert [type(w.message) for w in caught] == [UnpicklingWarning]  # local loads warn too
    assert issubclass(UnpicklingWarning, UserWarning)
    assert str(caught[0].message) == f"unpickling {path}: {TRUST}"
    assert caught[0].filename == __file__  # points at the caller, for batch-job logs
    assert_same_values(loaded, sd)


def test_round_trip_empty_spikedata(tmp_path):
    empty = SpikeData([])
    export_to_pickle(empty, tmp_path / "empty.pkl")
    loaded = load_local(tmp_path / "empty.pkl")
    assert loaded == empty
    assert (loaded.N, loaded.length) == (0, 0.0)
    assert loaded.neuron_attributes is None and loaded.metadata == {}


def test_reads_a_plain_pickle_dump(tmp_path, sd):
    path = tmp_path / "by_hand.pkl"
    path.write_bytes(pickle.dumps(sd, protocol=2))
    assert load_local(path) == sd


def test_export_creates_folders_and_replaces(tmp_path, sd):
    path = tmp_path / "a" / "b" / "sd.pkl"
    export_to_pickle(SpikeData([[1.0]]), path)
    export_to_pickle(sd, path)
    assert load_local(path) == sd
    assert sorted(p.name for p in path.parent.iterdir()) == ["sd.pkl"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_export_respects_umask(tmp_path, sd):
    old_umask = os.umask(0o027)
    try:
        export_to_pickle(sd, tmp_path / "sd.pkl")
    finally:
        os.umask(old_umask)
    assert (tmp_path / "sd.pkl").stat().st_mode & 0o777 == 0o640


def test_export_rejects_non_spikedata(tmp_path):
    with pytest.raises(TypeError, match="export_to_pickle writes SpikeData, got dict"):
        export_to_pickle({"train": [[1.0]]}, tmp_path / "sd.pkl")
    assert list(tmp_path.iterdir()) == []


def test_export_failure_leaves_no_partial_file(tmp_path, sd):
    sd.metadata["callback"] = lambda: None
    path = tmp_path / "sd.pkl"
    with pytest.raises((pickle.PicklingError, AttributeError), match="Can't pickle"):
        export_to_pickle(sd, path)
    assert list(tmp_path.iterdir()) == []


def test_export_failure_keeps_existing_file(tmp_path, sd):
    path = tmp_path / "sd.pkl"
    export_to_pickle(sd, path)
    before = path.read_bytes()
    broken = SpikeData([[1.0]], metadata={"callback": lambda: None})
    with pytest.raises((pickle.PicklingError, AttributeError), match="Can't pickle"):
        export_to_pickle(broken, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["sd.pkl"]
    assert load_local(path) == sd


def test_atomic_write_uses_a_temporary_name_beside_the_destination(tmp_path):
    path = tmp_path / "out.bin"
    with atomic_write(path) as handle:
        handle.write(b"abc")
        (partial,) = tmp_path.iterdir()
        assert partial.name.startswith(".out.bin.") and partial.name.endswith(".part")
        assert not path.exists()
    assert path.read_bytes() == b"abc"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_write_removes_the_temporary_file_on_error(tmp_path):
    path = tmp_path / "out.bin"
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_write(path) as handle:
            handle.write(b"half")
            raise RuntimeError("disk on fire")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        (
            load_spikedata_from_pickle,
            {
                "allow_remote": False,
                "aws_access_key_id": None,
                "aws_secret_access_key": None,
                "aws_session_token": None,
                "region_name": None,
            },
        ),
        (atomic_write, {"mode": "wb"}),
    ],
    ids=["load_spikedata_from_pickle", "atomic_write"],
)
def test_documented_defaults_match_the_signature(function, expected):
    documented = documented_defaults(function)
    assert documented == expected
    parameters = inspect.signature(function).parameters
    assert {name: parameters[name].default for name in documented} == documented


def test_registered_under_both_import_paths():
    assert LOADERS["pickle"] is load_spikedata_from_pickle
    assert upstream.load_spikedata_from_pickle is load_spikedata_from_pickle
    assert upstream.export_to_pickle is export_to_pickle


# ---------------------------------------------------------------- local errors


def test_missing_file(tmp_path):
    path = tmp_path / "absent.pkl"
    with pytest.raises(FileNotFoundError, match=re.escape(f"pickle file not found: {path}")):
        load_spikedata_from_pickle(path)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (pickle.dumps({"train": [[1.0]]}), r"holds a dict, not a SpikeData"),
        (pickle.dumps([SpikeData([[1.0]])]), r"holds a list, not a SpikeData"),
        (pickle.dumps(np.arange(3)), r"holds a ndarray, not a SpikeData"),
        (pickle.dumps(None), r"holds a NoneType, not a SpikeData"),
        (b"", r"is not a readable pickle \(Ran out of input\)"),
        (b"spike_times,unit\n1.0,3\n", r"is not a readable pickle"),
        (pickle.dumps(SpikeData([[1.0]]))[:-8], r"is not a readable pickle"),
        (b"\x80\x63", r"is not a readable pickle \(unsupported pickle protocol: 99\)"),
    ],
    ids=["dict", "list", "ndarray", "none", "empty", "csv", "truncated", "protocol"],
)
def test_not_a_spikedata_pickle(tmp_path, content, match):
    path = tmp_path / "bad.pkl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(str(path)) + " " + match):
        load_local(path)


def test_remote_url_needs_opt_in(no_boto3):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(
            ValueError,
            match=r"refusing to unpickle the remote file s3://bucket/sd\.pkl: pickles can run "
            r"code\. Pass allow_remote=True",
        ):
            load_spikedata_from_pickle("s3://bucket/sd.pkl")
    assert caught == []


@pytest.mark.parametrize("url", ["s3://bucket", "s3://bucket/", "s3:///sd.pkl", "s3://"])
def test_malformed_s3_url(no_boto3, url):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(
            ValueError, match=re.escape(f"an S3 URL must look like s3://bucket/key, got {url}")
        ):
            load_spikedata_from_pickle(url, allow_remote=True)
    assert caught == []


def test_missing_boto3_names_the_extra(no_boto3):
    with pytest.warns(UserWarning, match=REMOTE_WARNING):
        with pytest.raises(ImportError, match=re.escape("pip install 'spikelab[s3]'")) as info:
            load_spikedata_from_pickle("s3://bucket/sd.pkl", allow_remote=True)
    assert isinstance(info.value.__cause__, ImportError)


# ---------------------------------------------------------------- S3, against moto's server


@pytest.fixture
def s3(aws_env, empty_moto):
    """The uploading client, with an empty bucket (moto's state is reset first)."""
    empty_moto.create_bucket(Bucket=BUCKET)
    return empty_moto


@pytest.fixture
def scratch(monkeypatch, tmp_path):
    """Point tempfile at a folder of our own, and record where the loader unpickles from."""
    folder = tmp_path / "scratch"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    seen: list[Path] = []
    real_unpickle = pickle_loader._unpickle

    def spy(path, shown_as):
        assert path.is_file()  # the download is there while it is unpickled
        seen.append(path)
        return real_unpickle(path, shown_as)

    monkeypatch.setattr(pickle_loader, "_unpickle", spy)
    return folder, seen


def assert_download_removed(scratch, expect_download=True):
    folder, seen = scratch
    if expect_download:
        (download,) = seen
        assert download.parent.parent == folder
        assert download.parent.name.startswith("spikelab-pickle-")
    assert list(folder.iterdir()) == []


def test_s3_round_trip(s3, scratch, sd, tmp_path):
    export_to_pickle(sd, tmp_path / "sd.pkl")
    key = "sessions/day 1/run#2?final.pkl"  # "#" and "?" are legal in S3 keys
    s3.upload_file(str(tmp_path / "sd.pkl"), BUCKET, key)
    url = f"s3://{BUCKET}/{key}"
    with pytest.warns(UserWarning) as record:
        loaded = load_spikedata_from_pickle(url, allow_remote=True)
    assert len(record) == 1 and type(record[0].message) is UnpicklingWarning
    assert str(record[0].message) == f"unpickling {url} {REMOTE_WARNING}"
    assert record[0].filename == __file__  # points at the caller, for batch-job logs
    assert_same_values(loaded, sd)
    assert_download_removed(scratch)


def test_s3_object_that_is_not_a_spikedata(s3, scratch):
    s3.put_object(Bucket=BUCKET, Key="other.pkl", Body=pickle.dumps({"train": [[1.0]]}))
    url = f"s3://{BUCKET}/other.pkl"
    with pytest.warns(UserWarning, match=REMOTE_WARNING):
        with pytest.raises(ValueError, match=re.escape(f"{url} holds a dict, not a SpikeData")):
            load_spikedata_from_pickle(url, allow_remote=True)
    assert_download_removed(scratch)


def test_s3_object_that_is_not_a_pickle(s3, scratch):
    s3.put_object(Bucket=BUCKET, Key="notes.txt", Body=b"spike_times,unit\n1.0,3\n")
    url = f"s3://{BUCKET}/notes.txt"
    with pytest.warns(UserWarning, match=REMOTE_WARNING):
        with pytest.raises(ValueError, match=re.escape(f"{url} is not a readable pickle")):
            load_spikedata_from_pickle(url, allow_remote=True)
    assert_download_removed(scratch)


@pytest.mark.parametrize(
    "url", [f"s3://{BUCKET}/absent.pkl", "s3://no-such-bucket/sd.pkl"], ids=["key", "bucket"]
)
def test_s3_missing_object(s3, scratch, url):
    with pytest.warns(UserWarning, match=REMOTE_WARNING):
        with pytest.raises(FileNotFoundError, match=re.escape(f"pickle not found on S3: {url}")):
            load_spikedata_from_pickle(url, allow_remote=True)
    assert_download_removed(scratch, expect_download=False)


@pytest.fixture
def boto3_client_calls(monkeypatch):
    """Record the keyword arguments of every boto3.client call (the real client is built)."""
    import boto3

    calls: list[tuple[tuple, dict]] = []
    real_client = boto3.client

    def recording_client(*args, **kwargs):
        calls.append((args, kwargs))
        return real_client(*args, **kwargs)

    monkeypatch.setattr(boto3, "client", recording_client)
    return calls


def test_s3_explicit_credentials(s3, scratch, sd, monkeypatch, boto3_client_calls):
    import botocore.exceptions

    s3.put_object(Bucket=BUCKET, Key="sd.pkl", Body=pickle.dumps(sd))
    url = f"s3://{BUCKET}/sd.pkl"
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    # Without the environment's keys and without arguments, boto3 finds no credentials ...
    with pytest.warns(UserWarning, match=REMOTE_WARNING):
        with pytest.raises(botocore.exceptions.NoCredentialsError):
            load_spikedata_from_pickle(url, allow_remote=True)
    # ... so this load can only work through the explicit arguments.
    credentials = {
        "aws_access_key_id": "AKIAEXPLICITKEY",
        "aws_secret_access_key": "explicit-secret-value",
        "aws_session_token": "explicit-session-token",
        "region_name": "us-east-1",
    }
    with pytest.warns(UserWarning) as record:
        loaded = load_spikedata_from_pickle(url, allow_remote=True, **credentials)
    assert_same_values(loaded, sd)
    assert boto3_client_calls == [(("s3",), {}), (("s3",), credentials)]
    # The credentials go to boto3 and nowhere else: loaded == sd shows nothing was added to
    # the data, and the warning does not repeat them.
    assert len(record) == 1
    for name in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token"):
        assert credentials[name] not in str(record[0].message)
    assert list(scratch[0].iterdir()) == []


def test_s3_default_credentials_come_from_boto3(s3, scratch, sd, boto3_client_calls):
    s3.put_object(Bucket=BUCKET, Key="sd.pkl", Body=pickle.dumps(sd))
    with pytest.warns(UserWarning, match=REMOTE_WARNING):
        loaded = load_spikedata_from_pickle(f"s3://{BUCKET}/sd.pkl", allow_remote=True)
    assert loaded == sd
    assert boto3_client_calls == [(("s3",), {})]  # no None values forced on boto3


def test_s3_secret_not_in_not_found_error(s3, scratch):
    url = f"s3://{BUCKET}/absent.pkl"
    with pytest.warns(UserWarning, match=REMOTE_WARNING):
        with pytest.raises(FileNotFoundError) as info:
            load_spikedata_from_pickle(
                url,
                allow_remote=True,
                aws_access_key_id="AKIAHIDDEN",
                aws_secret_access_key="s3cr3t",
            )
    assert "AKIAHIDDEN" not in str(info.value) and "s3cr3t" not in str(info.value)
