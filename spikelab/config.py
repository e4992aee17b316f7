"""Configuration files of the pipeline (``configs/*.yaml``), read into pydantic models.

The defaults ship inside the package (``spikelab.configs``, edited in the repository's
top-level ``configs/`` folder), so they are found from an installed wheel as well.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path
from typing import Annotated, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from spikelab.choices import Transfer
from spikelab.cores import cpu_slots
from spikelab.ids import normalize_dandiset_id, normalize_version

CONFIG_DIR = Path(str(files("spikelab.configs")))
Model = TypeVar("Model", bound=BaseModel)
CONCURRENCY_ENV = "SPIKELAB_CONCURRENCY"
MAX_CONCURRENCY = 256
# A flow parameter the Prefect UI shows as a bounded number (None: the default).
Concurrency = Annotated[int, Field(ge=1, le=MAX_CONCURRENCY)]


def default_concurrency() -> int:
    """Assets in flight at once when nothing says otherwise: 16 per core, 32 to 128.

    Remote reads mostly wait on the link (a DANDI asset costs a few round trips of
    100-200 ms), so many assets are read at once; the CPU-bound steps stay bounded by
    :func:`cpu_slots`.
    """
    return min(128, max(32, 16 * cpu_slots()))


def resolve_concurrency(concurrency: int | None = None) -> int:
    """The number of assets a run reads at once.

    ``concurrency`` when given, else ``$SPIKELAB_CONCURRENCY``, else
    :func:`default_concurrency`.

    Raises
    ------
    ValueError
        The value (or the environment variable) is not a whole number from 1 to 256.
    """
    where = "concurrency"
    value: object = concurrency
    if value is None and os.environ.get(CONCURRENCY_ENV):
        where, value = CONCURRENCY_ENV, os.environ[CONCURRENCY_ENV]
    if value is None:
        return default_concurrency()
    try:
        number = int(str(value))
    except ValueError:
        number = 0
    if not 1 <= number <= MAX_CONCURRENCY or isinstance(value, bool):
        raise ValueError(
            f"{where}={value!r} is not a whole number from 1 to {MAX_CONCURRENCY}: set how "
            f"many assets a run reads at once (default {default_concurrency()} here)"
        )
    return number


class DandisetEntry(BaseModel):
    """One dandiset of the nightly run."""

    model_config = ConfigDict(extra="forbid")

    id: str
    version: str = "draft"
    path_glob: str = "*.nwb"
    max_assets: int | None = Field(default=None, ge=1)
    transfer: Transfer = "stream"

    @field_validator("id", mode="before")
    @classmethod
    def _six_digits(cls, value: object) -> str:
        return normalize_dandiset_id(str(value))

    @field_validator("version", mode="before")
    @classmethod
    def _known_version(cls, value: object) -> str:
        return normalize_version(str(value))


class DandisetsConfig(BaseModel):
    """``configs/dandisets.yaml``: the dandisets the nightly run ingests."""

    model_config = ConfigDict(extra="forbid")

    dandisets: list[DandisetEntry] = Field(min_length=1)


class RegionSet(BaseModel):
    """A named set of Beryl regions and the probe filters for it."""

    model_config = ConfigDict(extra="forbid")

    regions: list[str] = Field(min_length=1)
    min_units: int = Field(default=0, ge=0)
    min_fraction_in_target: float = Field(default=0.0, ge=0.0, le=1.0)
    max_probes: int | None = Field(default=None, ge=1)


class IblRegionsConfig(BaseModel):
    """``configs/ibl_regions.yaml``: region sets by name."""

    model_config = ConfigDict(extra="forbid")

    region_sets: dict[str, RegionSet] = Field(min_length=1)


def default_config_path(name: str = "dandisets.yaml") -> Path:
    """The packaged default config ``name`` (``dandisets.yaml`` or ``ibl_regions.yaml``)."""
    return CONFIG_DIR / name


def load_config(path: str | os.PathLike[str], model: type[Model]) -> Model:
    """Read a YAML file into ``model``.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        Bad YAML, or a field that breaks the model; the message names the file and field.
    """
    location = Path(path)
    if not location.is_file():
        raise FileNotFoundError(f"config file not found: {location}")
    try:
        content = yaml.safe_load(location.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{location}: not valid YAML ({error})") from None
    try:
        return model.model_validate(content)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or '(top level)'}: {problem['msg']}"
            for problem in error.errors()
        )
        raise ValueError(f"{location}: {problems}") from None
