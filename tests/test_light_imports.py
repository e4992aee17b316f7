"""Light commands import no heavy module: checked in a fresh interpreter, from sys.modules."""

import json
import subprocess
import sys

import pytest

from spikelab.io.delta_lake import Publication, publish
from spikelab.io.units_table import units_arrow_table
from spikelab.lake_queries import find_units
from spikelab.spikedata import SpikeData

HEAVY = ("prefect", "pynwb", "spikeinterface", "matplotlib")
# Runs `code` in a fresh interpreter, then prints which heavy top-level modules it imported.
PROBE = """
import json, sys
{code}
heavy = sorted({{name.split(".")[0] for name in sys.modules}} & set({heavy!r}))
print("HEAVY=" + json.dumps(heavy))
"""


def heavy_modules_after(code: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(code=code, heavy=HEAVY)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("HEAVY="))
    return json.loads(line.removeprefix("HEAVY="))


def cli(argv: list[str]) -> str:
    """Code that runs the command line the way the console script does, keeping the process."""
    return (
        "from spikelab.cli import run\n"
        "try:\n"
        f"    status = run({argv!r})\n"
        "except SystemExit as stop:\n"
        "    status = stop.code\n"
        "assert status in (0, 1), status\n"
    )


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    lake = str(tmp_path_factory.mktemp("light") / "lake")
    sd = SpikeData(
        [[1.0, 2.0], [3.0]],
        length=10.0,
        neuron_attributes=[{"unit_id": 0, "location_label": "CA1"}, {"unit_id": 1}],
    )
    key = ("files", "d", "a")
    units = units_arrow_table(sd, source="files", dataset_id="d", asset_id="a")
    publish(lake, [Publication(key, units, {"status": "ok", "input": {"content_id": "c"}})])
    assert find_units(lake, regions=["CA1"])["unit_id"].tolist() == ["0"]
    return lake


@pytest.mark.parametrize(
    "code",
    [
        "import spikelab",
        "import spikelab.loaders; spikelab.loaders.LOADERS",
        "from spikelab.data_loaders import data_loaders",
        "import spikelab.config, spikelab.lake_queries, spikelab.server, spikelab.cli",
    ],
)
def test_imports_are_light(code):
    assert heavy_modules_after(code) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["ingest", "files", "--help"],
        ["lake", "summary", "--lake", "{lake}"],
        ["lake", "units", "--region", "CA1", "--lake", "{lake}"],
        ["lake", "units", "--format", "csv", "--lake", "{lake}"],
        ["server", "status"],
    ],
    ids=" ".join,
)
def test_light_commands_import_no_heavy_module(argv, lake, tmp_path):
    argv = [arg.format(lake=lake) for arg in argv]
    code = f"import os; os.environ['PREFECT_HOME'] = {str(tmp_path)!r}\n" + cli(argv)
    assert heavy_modules_after(code) == []


def test_config_reads_no_private_loader_module():
    code = "import spikelab.config\nprint(sorted(m for m in sys.modules if 'loaders' in m))"
    result = subprocess.run(
        [sys.executable, "-c", "import sys\n" + code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
