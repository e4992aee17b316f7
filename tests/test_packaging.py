"""The package installs and imports as a wheel too, and the code passes its static checks."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SUBPACKAGES = [
    "spikelab",
    "spikelab.io",
    "spikelab.loaders",
    "spikelab.tasks",
    "spikelab.flows",
    "spikelab.testing",
    "spikelab.data_loaders.data_loaders",
]


@pytest.fixture(scope="module")
def unpacked_wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    source = out / "source"  # build from a copy: setuptools writes build/ into the tree
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "tests")
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("spikelab-*.whl")
    target = out / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    return target


def test_wheel_imports_every_subpackage_from_itself(unpacked_wheel, tmp_path):
    code = (
        "import importlib, sys\n"
        f"for name in {SUBPACKAGES!r}:\n"
        "    module = importlib.import_module(name)\n"
        "    print(module.__file__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(unpacked_wheel), "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    files = result.stdout.split()
    assert len(files) == len(SUBPACKAGES)
    assert all(file.startswith(str(unpacked_wheel)) for file in files), files


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy", "spikelab", "loaders", "flows", "tasks"],
    ],
    ids=["ruff", "ruff-format", "mypy"],
)
def test_static_checks_pass(command):
    tool = Path(sys.executable).parent / command[0]
    result = subprocess.run([str(tool), *command[1:]], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
