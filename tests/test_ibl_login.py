"""The public IBL server needs each user's own account: a missing one is a configuration error."""

import time

import pytest

pytest.importorskip("one.api")

from spikelab.cli import run  # noqa: E402
from spikelab.exceptions import IblLoginError  # noqa: E402
from spikelab.loaders.ibl import alyx_login  # noqa: E402


@pytest.fixture
def no_login(monkeypatch, tmp_path):
    """A machine where ONE never stored a login (its parameters live under $HOME)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SPIKELAB_ALYX_USERNAME", raising=False)
    monkeypatch.delenv("SPIKELAB_ALYX_PASSWORD", raising=False)


@pytest.mark.usefixtures("no_login")
def test_ingest_ibl_without_an_account_exits_2_at_once_saying_what_to_do(capsys):
    started = time.monotonic()
    assert run(["ingest", "ibl", "--regions", "MOs", "--lake", "unused"]) == 2
    err = capsys.readouterr().err
    assert time.monotonic() - started < 10  # no Prefect server, no network
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "openalyx.internationalbrainlab.org/signup" in err and "SPIKELAB_ALYX_USERNAME" in err


@pytest.mark.usefixtures("no_login")
def test_the_login_comes_from_the_environment(monkeypatch):
    with pytest.raises(IblLoginError, match="needs an account"):
        alyx_login()
    monkeypatch.setenv("SPIKELAB_ALYX_USERNAME", "a-neuroscientist")
    assert alyx_login() == "a-neuroscientist"
