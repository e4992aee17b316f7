"""Serve spikelab's deployments from this process, without a work pool (``spikelab serve``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PREFECT_FILE = Path(__file__).resolve().parents[1] / "deployments" / "prefect.yaml"


def deployment_specs(prefect_file: Path = PREFECT_FILE) -> list[dict[str, Any]]:
    """The deployments declared in ``deployments/prefect.yaml``."""
    specs: list[dict[str, Any]] = yaml.safe_load(prefect_file.read_text())["deployments"]
    return specs


def serve_all(prefect_file: Path = PREFECT_FILE) -> None:
    """Serve every deployment of ``prefect_file`` (schedules included) until interrupted."""
    from prefect import serve
    from prefect.flows import load_flow_from_entrypoint

    deployments: list[Any] = []
    for spec in deployment_specs(prefect_file):
        flow: Any = load_flow_from_entrypoint(spec["entrypoint"], use_placeholder_flow=False)
        cron = next((s["cron"] for s in spec.get("schedules", []) if "cron" in s), None)
        deployments.append(
            flow.to_deployment(
                name=spec["name"],
                description=spec.get("description"),
                parameters=spec.get("parameters") or {},
                tags=spec.get("tags") or [],
                cron=cron,
            )
        )
    serve(*deployments)
