"""A publishing process allocates Arrow memory with the system allocator, unless told otherwise."""

import logging

import pyarrow as pa
import pytest

from spikelab.flows._publish import Publisher
from spikelab.io.arrow_memory import POOL_VARIABLE
from spikelab.io.lake import Lake


@pytest.fixture
def default_pool():
    """Start from mimalloc, pyarrow's default in its wheels; the pool found is put back after."""
    before = pa.default_memory_pool()
    pa.set_memory_pool(pa.mimalloc_memory_pool())
    yield
    pa.set_memory_pool(before)


def test_a_publisher_switches_pyarrow_to_the_system_allocator(tmp_path, monkeypatch, default_pool):
    monkeypatch.delenv(POOL_VARIABLE, raising=False)
    assert pa.default_memory_pool().backend_name == "mimalloc"
    with Publisher(Lake(str(tmp_path)), "run-1", logging.getLogger("test")):
        assert pa.default_memory_pool().backend_name == "system"


def test_a_pool_named_in_the_environment_is_kept(tmp_path, monkeypatch, default_pool):
    monkeypatch.setenv(POOL_VARIABLE, "mimalloc")
    with Publisher(Lake(str(tmp_path)), "run-1", logging.getLogger("test")):
        assert pa.default_memory_pool().backend_name == "mimalloc"
