"""The package installs and imports as a wheel too, and the code passes its static checks."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
SUBPACKAGES = [
    "spikelab",
    "spikelab.cli",
    "spikelab.io",
    "spikelab.loaders",
    "spikelab.loaders.dandi",
    "spikelab.loaders.nwb",
    "spikelab.loaders.ibl",
    "spikelab.tasks",
    "spikelab.flows",
    "spikelab.testing",
    "spikelab.data_loaders.data_loaders",
]


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory):
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
    return wheel


@pytest.fixture(scope="module")
def unpacked_wheel(built_wheel):
    target = built_wheel.parent / "site"
    with zipfile.ZipFile(built_wheel) as archive:
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


def test_import_layering_contracts_hold(unpacked_wheel, tmp_path):
    """The import-linter contracts of pyproject.toml, over the wheel's single package tree."""
    tool = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(tool), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(unpacked_wheel), "PATH": ""},
        capture_output=True,
        text=True,
    )
    assert "Contracts: 6 kept, 0 broken" in result.stdout, result.stdout + result.stderr


def test_an_installed_wheel_carries_its_configs_and_deployments(built_wheel, tmp_path):
    """Installed outside the checkout, the wheel serves, reads its configs, imports its flows."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(built_wheel)],
        check=True,
        capture_output=True,
    )
    # The dependencies come from this environment's site-packages; its editable spikelab
    # does not (a .pth file in a folder named by another .pth file is not read).
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    deps = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    Path(site, "dependencies.pth").write_text(deps + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PATH": str(venv / "bin"), "HOME": str(tmp_path), "PREFECT_HOME": str(tmp_path)}

    def run_in_venv(*argv):
        return subprocess.run(
            argv, cwd=elsewhere, env=env, capture_output=True, text=True, check=True
        ).stdout

    assert "usage: spikelab serve" in run_in_venv(str(venv / "bin" / "spikelab"), "serve", "--help")
    code = (
        "import spikelab, spikelab.config as c, spikelab.deployments as d\n"
        "from prefect.flows import load_flow_from_entrypoint\n"
        "config = c.load_config(c.default_config_path(), c.DandisetsConfig)\n"
        "print(spikelab.__file__)\n"
        "print(c.default_config_path())\n"
        "print(len(config.dandisets))\n"
        "for spec in d.deployment_specs():\n"
        "    flow = load_flow_from_entrypoint(spec['entrypoint'], use_placeholder_flow=False)\n"
        "    print(spec['name'], flow.name)\n"
    )
    lines = run_in_venv(str(python), "-c", code).splitlines()
    package, config_path, n_dandisets, *deployments = lines
    assert package.startswith(site) and config_path.startswith(site)
    assert int(n_dandisets) >= 1
    names = {
        spec["name"]
        for spec in yaml.safe_load((ROOT / "deployments/prefect.yaml").read_text())["deployments"]
    }
    assert {line.split()[0] for line in deployments} == names


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


def test_the_quick_start_extras_install_everything():
    """``pip install -e '.[all,dev]'`` (the quick start) gets every optional dependency.

    ``all`` names every runtime extra, so each loader's import helper finds its package;
    ``dev`` adds the test and check tools the suite runs (``bench`` only benchmark peers).
    """
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    runtime = set(extras) - {"all", "dev", "bench"}  # bench: the benchmarks' peers
    (everything,) = extras["all"]
    named = everything.removeprefix("spikelab[").removesuffix("]").split(",")
    assert set(named) == runtime
    tools = {requirement.split("[")[0].split(">")[0].split("=")[0] for requirement in extras["dev"]}
    assert {"pytest", "ruff", "mypy"} <= tools
