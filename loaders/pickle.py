"""SpikeData pickles, local or on S3."""

from __future__ import annotations

import os
import pickle
import tempfile
import warnings
from pathlib import Path
from urllib.parse import urlparse

from spikelab.loaders._common import existing_file

from spikelab._optional import import_optional
from spikelab.spikedata import SpikeData


def load_spikedata_from_pickle(
    filepath: str | os.PathLike[str],
    *,
    allow_remote: bool = False,
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
    aws_session_token: str | None = None,
    region_name: str | None = None,
) -> SpikeData:
    """Load a pickled SpikeData from a local path or an ``s3://bucket/key`` URL.

    Unpickling runs whatever code the file holds, before any type check: load only files
    you trust. Remote loads therefore need ``allow_remote=True`` and warn when used.

    Parameters
    ----------
    filepath : str or PathLike
        Local path, or ``s3://bucket/key``.
    allow_remote : bool, default: False
        Opt in to S3 URLs.
    aws_access_key_id, aws_secret_access_key, aws_session_token, region_name : str | None
        Credentials and region for S3, handed only to boto3 (default: boto3's own lookup:
        environment, config files, instance role). The endpoint follows the standard
        ``AWS_ENDPOINT_URL`` variable.

    Returns
    -------
    SpikeData

    Raises
    ------
    ValueError
        An S3 URL without ``allow_remote=True``, or a pickle that holds no SpikeData.
    FileNotFoundError
        The local file does not exist.
    ImportError
        boto3 is missing for an S3 URL.
    """
    location = os.fspath(filepath)
    if location.startswith("s3://"):
        if not allow_remote:
            raise ValueError(
                f"refusing to unpickle the remote file {location}: pickles can run code. "
                "Pass allow_remote=True if you trust its source"
            )
        warnings.warn(
            f"unpickling {location} from S3: only load pickles from sources you trust",
            UserWarning,
            stacklevel=2,
        )
        with tempfile.TemporaryDirectory(prefix="spikelab-pickle-") as folder:
            local = Path(folder) / "download.pkl"
            _download_s3(
                location,
                local,
                aws_access_key_id=aws_access_key_id,
                aws_secret_access_key=aws_secret_access_key,
                aws_session_token=aws_session_token,
                region_name=region_name,
            )
            return _unpickle(local, location)
    return _unpickle(existing_file(location, "pickle file"), location)


def _unpickle(path: Path, shown_as: str) -> SpikeData:
    with path.open("rb") as handle:
        try:
            value = pickle.load(handle)
        except (pickle.UnpicklingError, EOFError) as error:
            raise ValueError(f"{shown_as} is not a readable pickle ({error})") from error
    if not isinstance(value, SpikeData):
        raise ValueError(f"{shown_as} holds a {type(value).__name__}, not a SpikeData")
    return value


def _download_s3(url: str, destination: Path, **credentials: str | None) -> None:
    boto3 = import_optional("boto3", "s3")
    parts = urlparse(url)
    bucket, key = parts.netloc, parts.path.lstrip("/")
    if not bucket or not key:
        raise ValueError(f"an S3 URL must look like s3://bucket/key, got {url}")
    client = boto3.client("s3", **{name: value for name, value in credentials.items() if value})
    try:
        client.download_file(bucket, key, str(destination))
    except client.exceptions.ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code in ("404", "NoSuchKey", "NoSuchBucket"):
            raise FileNotFoundError(f"pickle not found on S3: {url}") from error
        raise
