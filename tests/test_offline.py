"""An archive that cannot be reached fails at once, in one line; flaky answers keep retries.

A name that does not resolve (offline, or a wrong name) and a refused connection are not
worth asking again soon: the listing fails in well under the retry budget, naming the
host. 503, 429 and connection resets are still retried. Real sockets only: a port bound
on 127.0.0.1 that does not listen refuses, and ``.invalid`` names never resolve.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import requests

from spikelab.exceptions import HostUnreachableError, RemoteError
from spikelab.http import RetryPolicy, new_session, unreachable
from spikelab.loaders import list_dandi_assets
from spikelab.loaders.dandi import DandiClient, download_asset
from spikelab.tasks._policy import is_transient
from spikelab.testing import DandiStandIn

DANDISET = "000006"
# Without the early stop, 5 tries with 0.5 s doubling backoff take at least 3.75 s.
FAST_SECONDS = 2.0


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port on 127.0.0.1 that is bound but not listening: connections are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]


@pytest.fixture
def archive(tmp_path) -> Iterator[DandiStandIn]:
    with DandiStandIn(tmp_path) as server:
        server.add_asset(DANDISET, "sub-01/sub-01_ecephys.nwb", b"x" * 4096)
        yield server


def _listing_error(api_base: str) -> tuple[HostUnreachableError, float]:
    start = time.monotonic()
    with pytest.raises(HostUnreachableError) as raised:
        list(list_dandi_assets(DANDISET, api_base=api_base))
    return raised.value, time.monotonic() - start


def test_a_refused_connection_fails_the_listing_at_once(refused_port):
    error, elapsed = _listing_error(f"http://127.0.0.1:{refused_port}/api")
    assert elapsed < FAST_SECONDS
    message = str(error)
    assert message.startswith(f"cannot reach 127.0.0.1:{refused_port}: the connection was refused")
    assert "\n" not in message and "Errno" not in message
    assert not is_transient(error)  # nor does Prefect retry the task
    assert isinstance(error, RemoteError) and error.status is None


def test_a_name_that_does_not_resolve_fails_the_listing_at_once():
    error, elapsed = _listing_error("https://nonexistent.invalid/api")
    assert elapsed < FAST_SECONDS
    message = str(error)
    assert message.startswith("cannot reach nonexistent.invalid: its name does not resolve (")
    assert "check the host name and the network connection" in message
    assert "\n" not in message
    assert not is_transient(error)


@pytest.mark.parametrize("host", ["nonexistent.invalid", "127.0.0.1:{port}"])
def test_raw_unreachable_errors_are_not_transient(host, refused_port):
    """Other clients of the HTTP layer raise requests' own error: Prefect must not retry it."""
    url = f"http://{host.format(port=refused_port)}/x"
    start = time.monotonic()
    with (
        new_session(RetryPolicy(5, 0.5)) as session,
        pytest.raises(requests.ConnectionError) as raised,
    ):
        session.get(url, timeout=5)
    assert time.monotonic() - start < FAST_SECONDS
    assert unreachable(raised.value) is not None
    assert not is_transient(raised.value)


def test_a_reset_or_a_timeout_is_still_transient():
    reset = requests.ConnectionError(ConnectionResetError(104, "Connection reset by peer"))
    assert unreachable(reset) is None and is_transient(reset)
    assert is_transient(requests.ConnectTimeout("timed out"))
    # spikelab's own HTTP layer has retried what it raises: not retried again
    assert not is_transient(RemoteError("GET x answered HTTP 503 after 5 attempts", status=503))


@pytest.mark.parametrize("kind", ["503", "429"])
def test_busy_answers_are_still_retried(archive, kind):
    archive.inject(kind, times=2, match="/assets/")
    listed = list(list_dandi_assets(DANDISET, api_base=archive.api_base))
    assert [asset["path"] for asset in listed] == ["sub-01/sub-01_ecephys.nwb"]
    assert archive.count("api", "GET", match=f"/dandisets/{DANDISET}/") == 3


def test_a_connection_reset_is_still_retried(archive, tmp_path):
    (asset_id,) = [
        asset["asset_id"] for asset in list_dandi_assets(DANDISET, api_base=archive.api_base)
    ]
    archive.inject("reset", match="/blobs/")
    with DandiClient(archive.api_base, backoff_seconds=0.01) as client:
        record = client.describe(asset_id)
        target = download_asset(client, client.blob_url(asset_id), record, tmp_path / "a.nwb")
    assert target.read_bytes() == b"x" * 4096
    assert archive.count("blob", "GET") == 2


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("host", ["nonexistent.invalid", "127.0.0.1:{port}"])
def test_ingest_dandi_offline_prints_one_line_soon(tmp_path, capfd, refused_port, host):
    from spikelab.cli import run

    shown = host.format(port=refused_port)
    argv = ["ingest", "dandi", DANDISET, "--api-base", f"http://{shown}/api"]
    start = time.monotonic()
    assert run([*argv, "--lake", str(tmp_path / "lake")]) == 1
    elapsed = time.monotonic() - start
    err = capfd.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"spikelab: error: cannot reach {shown}: ")
    assert "Error" not in err[-1]  # neither FlowRunError nor the class of the cause
    assert elapsed < 10  # a flow run on the harness; before: 20 tries over about a minute
