"""Serve spikelab's deployments from this process, without a work pool (``spikelab serve``).

Deployments carry no ``lake`` parameter: each flow run writes to the lake the operator
names once, in the ``SPIKELAB_LAKE`` environment variable of the worker (or of
``spikelab serve``), so where ``prefect deploy`` ran never matters.

Served deployments are named ``<name>-served``: a Prefect deployment is known by its flow
and its name, and serving under the names ``prefect deploy`` registered would rewrite those
deployments (their runs would then look for code in a folder that was never recorded). So
both can be registered on one server, each run by what registered it.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from spikelab.io.lake import LAKE_ENV

# Shipped in the package (spikelab.deployment_files); edited in the top-level deployments/.
PREFECT_FILE = Path(str(files("spikelab.deployment_files"))) / "prefect.yaml"
SERVED_SUFFIX = "-served"


def check_lake_variable() -> str | None:
    """The lake ``SPIKELAB_LAKE`` names for deployment runs (None when it is unset).

    Raises
    ------
    ValueError
        ``SPIKELAB_LAKE`` is a relative folder: runs start in folders nobody chose, so it
        must be absolute (or an ``s3://`` URL).
    """
    lake = os.environ.get(LAKE_ENV)
    if lake and "://" not in lake and not os.path.isabs(os.path.expanduser(lake)):
        raise ValueError(
            f"{LAKE_ENV}={lake} is a relative folder; deployment runs start in other "
            f"folders, so set it to an absolute path or an s3:// URL"
        )
    return lake


def deployment_specs(prefect_file: Path = PREFECT_FILE) -> list[dict[str, Any]]:
    """The deployments declared in ``deployments/prefect.yaml``."""
    specs: list[dict[str, Any]] = yaml.safe_load(prefect_file.read_text())["deployments"]
    return specs


def served_name(name: str) -> str:
    """The name ``spikelab serve`` gives the deployment ``prefect deploy`` names ``name``."""
    return f"{name}{SERVED_SUFFIX}"


def serve_all(prefect_file: Path = PREFECT_FILE) -> None:
    """Serve every deployment of ``prefect_file`` (schedules included) until interrupted.

    Each is registered as :func:`served_name` of its name, with a module-path entrypoint
    and the spec's ``concurrency_limit`` (the nightly's is 1), so it neither rewrites what
    ``prefect deploy`` registered nor depends on the folder this process started in.

    Raises
    ------
    ValueError
        ``SPIKELAB_LAKE`` is relative (see :func:`check_lake_variable`).
    """
    check_lake_variable()
    from prefect import serve
    from prefect.deployments.runner import EntrypointType
    from prefect.flows import load_flow_from_entrypoint

    deployments: list[Any] = []
    for spec in deployment_specs(prefect_file):
        flow: Any = load_flow_from_entrypoint(spec["entrypoint"], use_placeholder_flow=False)
        cron = next((s["cron"] for s in spec.get("schedules", []) if "cron" in s), None)
        deployments.append(
            flow.to_deployment(
                name=served_name(spec["name"]),
                description=spec.get("description"),
                parameters=spec.get("parameters") or {},
                tags=spec.get("tags") or [],
                concurrency_limit=spec.get("concurrency_limit"),
                cron=cron,
                entrypoint_type=EntrypointType.MODULE_PATH,
            )
        )
    serve(*deployments)
