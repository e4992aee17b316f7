"""deployments/prefect.yaml: every entrypoint imports as a real flow, and serving builds them.

`prefect deploy` against a real server, runs by a worker and `spikelab serve` beside it are
tested end to end in tests/test_deploy_folder.py.
"""

import inspect

import pytest
import yaml
from prefect.flows import Flow, load_flow_from_entrypoint

from spikelab.config import CONFIG_DIR, IblRegionsConfig, load_config
from spikelab.deployments import PREFECT_FILE, deployment_specs


def test_every_entrypoint_is_a_real_flow_with_valid_parameters():
    specs = deployment_specs()
    assert {spec["name"] for spec in specs} >= {"nightly-dandisets", "manual-dandiset"}
    for spec in specs:
        flow = load_flow_from_entrypoint(spec["entrypoint"], use_placeholder_flow=False)
        assert isinstance(flow, Flow), spec["name"]
        accepted = inspect.signature(flow.fn).parameters
        assert set(spec.get("parameters") or {}) <= set(accepted), spec["name"]


def test_nightly_deployment_is_scheduled():
    nightly = next(s for s in deployment_specs() if s["name"] == "nightly-dandisets")
    assert nightly["schedules"] == [{"cron": "0 3 * * *", "timezone": "UTC"}]


def test_one_ibl_deployment_per_region_set():
    region_sets = load_config(CONFIG_DIR / "ibl_regions.yaml", IblRegionsConfig).region_sets
    deployed = {
        spec["name"].removeprefix("ibl-"): spec["parameters"]
        for spec in deployment_specs()
        if spec["entrypoint"] == "spikelab.flows.ibl.ingest_ibl_region"
    }
    assert set(deployed) == set(region_sets)
    for name, region_set in region_sets.items():
        assert deployed[name] == region_set.model_dump(exclude_none=True), name


def test_serve_builds_the_same_deployments(monkeypatch):
    import prefect

    from spikelab.deployments import serve_all

    served = []
    monkeypatch.setattr(prefect, "serve", lambda *deployments: served.extend(deployments))
    serve_all()
    by_name = {deployment.name.removesuffix("-served"): deployment for deployment in served}
    assert set(by_name) == {spec["name"] for spec in deployment_specs()}
    # other names than `prefect deploy` registers, so serving never rewrites those
    assert all(deployment.name.endswith("-served") for deployment in served)
    # module-path entrypoints: nothing depends on the folder `spikelab serve` started in
    assert {d.entrypoint for d in served} == {s["entrypoint"] for s in deployment_specs()}
    assert all(d.storage is None and d._path is None for d in served)
    nightly = by_name["nightly-dandisets"]
    assert [s.schedule.cron for s in nightly.schedules] == ["0 3 * * *"]
    assert by_name["ibl-visual"].parameters["regions"] == ["VISp", "VISl", "VISam"]
    assert by_name["manual-files"].schedules == []


def test_deploy_records_no_folder_of_the_operator():
    """Module-path entrypoints, and one pull step into $HOME, resolved when a run starts."""
    content = yaml.safe_load(PREFECT_FILE.read_text())
    assert all(":" not in spec["entrypoint"] for spec in content["deployments"])
    assert content["pull"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $HOME }}"}}
    ]
    assert all("pull" not in spec for spec in content["deployments"])


def test_deployments_take_the_lake_from_spikelab_lake():
    assert all("lake" not in (spec.get("parameters") or {}) for spec in deployment_specs())
    assert "SPIKELAB_LAKE" in PREFECT_FILE.read_text()


@pytest.mark.parametrize(
    ("value", "accepted"),
    [("/data/lake", True), ("s3://bucket/lake", True), ("relative/lake", False), (None, True)],
)
def test_serve_refuses_a_relative_spikelab_lake(monkeypatch, value, accepted, capsys):
    import prefect

    from spikelab.cli import run
    from spikelab.deployments import check_lake_variable

    if value is None:
        monkeypatch.delenv("SPIKELAB_LAKE", raising=False)
    else:
        monkeypatch.setenv("SPIKELAB_LAKE", value)
    served = []
    monkeypatch.setattr(prefect, "serve", lambda *deployments: served.extend(deployments))
    if accepted:
        assert check_lake_variable() == value
        return
    assert run(["serve"]) == 2
    assert "SPIKELAB_LAKE=relative/lake is a relative folder" in capsys.readouterr().err
    assert served == []


def test_the_nightly_never_runs_twice_at_once():
    nightly = next(s for s in deployment_specs() if s["name"] == "nightly-dandisets")
    assert nightly["concurrency_limit"] == 1


def test_serving_keeps_the_nightly_concurrency_limit(monkeypatch):
    import prefect

    from spikelab.deployments import serve_all

    served = []
    monkeypatch.setattr(prefect, "serve", lambda *deployments: served.extend(deployments))
    serve_all()
    limits = {d.name: d.concurrency_limit for d in served}
    assert limits["nightly-dandisets-served"] == 1
    assert limits["manual-dandiset-served"] is None


def parameter_schemas():
    """Each deployment's name and its flow's parameter schema, as the Prefect UI gets it."""
    for spec in deployment_specs():
        flow = load_flow_from_entrypoint(spec["entrypoint"], use_placeholder_flow=False)
        yield spec, flow.parameters.model_dump()


@pytest.mark.parametrize("name", ["nightly-dandisets", "manual-dandiset"])
def test_dandi_deployment_parameters_are_typed_for_the_ui(name):
    (schema,) = [schema for spec, schema in parameter_schemas() if spec["name"] == name]
    properties = schema["properties"]
    bounded = {"maximum": 256, "minimum": 1, "type": "integer"}
    assert properties["concurrency"]["anyOf"][0] == bounded
    if name == "manual-dandiset":
        assert properties["transfer"]["enum"] == ["stream", "download"]
        return
    assert properties["task_runner"]["enum"] == ["threads", "dask"]
    entry = schema["definitions"]["DandisetEntry"]  # a form per dandiset, not free JSON
    assert properties["dandisets"]["anyOf"][0]["items"] == {"$ref": "#/definitions/DandisetEntry"}
    assert entry["properties"]["transfer"]["enum"] == ["stream", "download"]
    assert entry["required"] == ["id"]


def test_every_deployment_parameter_has_a_type_and_its_values_validate():
    from prefect.utilities.schema_tools import validate

    for spec, schema in parameter_schemas():
        for name, field in schema["properties"].items():
            assert "type" in field or "anyOf" in field or "$ref" in field, (spec["name"], name)
        validate(spec.get("parameters") or {}, schema, raise_on_error=True, ignore_required=True)


@pytest.mark.parametrize(
    ("parameters", "wrong"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"task_runner": "ray"}, "task_runner"),
        ({"dandisets": [{"id": "000006", "transfer": "ftp"}]}, "transfer"),
    ],
)
def test_the_ui_schema_refuses_bad_nightly_values(parameters, wrong):
    from prefect.utilities.schema_tools import ValidationError, validate

    (schema,) = [s for spec, s in parameter_schemas() if spec["name"] == "nightly-dandisets"]
    with pytest.raises(ValidationError, match=wrong):
        validate(parameters, schema, raise_on_error=True)
