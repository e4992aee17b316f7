"""SpikeData pickles, local or on S3."""

from __future__ import annotations

import os
import pickle
import tempfile
import warnings
from pathlib import Path

from spikelab._optional import import_optional
from spikelab.exceptions import UnpicklingWarning
from spikelab.loaders._common import existing_file
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
    you trust. Every load warns (:class:`~spikelab.exceptions.UnpicklingWarning`, a
    ``UserWarning``) naming the file, and remote loads also need ``allow_remote=True``.

    Parameters
    ----------
    filepath : str or PathLike
        Local path, or ``s3://bucket/key``.
    allow_remote : bool, default: False
        Opt in to S3 URLs.
    aws_access_key_id : str | None, default: None
        AWS access key ID for S3. Credentials and region are handed to boto3 and nothing
        else; those left as None come from boto3's own lookup (environment, config files,
        instance role). The endpoint follows the standard ``AWS_ENDPOINT_URL`` variable.
    aws_secret_access_key : str | None, default: None
        AWS secret access key for S3.
    aws_session_token : str | None, default: None
        AWS session token, for temporary credentials.
    region_name : str | None, default: None
        AWS region of the bucket.

    Returns
    -------
    SpikeData

    Raises
    ------
    ValueError
        An S3 URL without ``allow_remote=True``, an S3 URL without bucket or key, a file
        that is not a readable pickle, or a pickle that holds no SpikeData.
    FileNotFoundError
        The local file, or the S3 bucket or object, does not exist.
    ImportError
        boto3 is missing for an S3 URL (``pip install 'spikelab[s3]'``).
    botocore.exceptions.ClientError
        Any other S3 error (access denied ...), as boto3 raises it.

    Warns
    -----
    UnpicklingWarning
        On every load, local or S3, naming the file, so the risk shows up in batch-job
        logs. Silence it for files you trust with
        ``warnings.simplefilter("ignore", spikelab.exceptions.UnpicklingWarning)``.
    """
    location = os.fspath(filepath)
    if location.startswith("s3://"):
        if not allow_remote:
            raise ValueError(
                f"refusing to unpickle the remote file {location}: pickles can run code. "
                "Pass allow_remote=True if you trust its source"
            )
        bucket, key = _split_s3_url(location)
        _warn_unpickling(f"{location} from S3")
        with tempfile.TemporaryDirectory(prefix="spikelab-pickle-") as folder:
            local = Path(folder) / "download.pkl"
            _download_s3(
                bucket,
                key,
                local,
                aws_access_key_id=aws_access_key_id,
                aws_secret_access_key=aws_secret_access_key,
                aws_session_token=aws_session_token,
                region_name=region_name,
            )
            return _unpickle(local, location)
    path = existing_file(location, "pickle file")
    _warn_unpickling(location)
    return _unpickle(path, location)


def _warn_unpickling(shown_as: str) -> None:
    warnings.warn(
        f"unpickling {shown_as}: a pickle can run any code it holds, so load only pickles "
        "from sources you trust",
        UnpicklingWarning,
        stacklevel=3,  # the caller of load_spikedata_from_pickle, for batch-job logs
    )


def _unpickle(path: Path, shown_as: str) -> SpikeData:
    with path.open("rb") as handle:
        try:
            value = pickle.load(handle)
        except (pickle.UnpicklingError, EOFError, ValueError) as error:
            raise ValueError(f"{shown_as} is not a readable pickle ({error})") from error
    if not isinstance(value, SpikeData):
        raise ValueError(
            f"{shown_as} holds a {type(value).__name__}, not a SpikeData: "
            "load_spikedata_from_pickle reads files written by export_to_pickle"
        )
    return value


def _split_s3_url(url: str) -> tuple[str, str]:
    """Return the bucket and key of ``s3://bucket/key``, or raise ValueError naming ``url``."""
    # Split by hand: urlparse would cut a key at "?" or "#", both legal in S3 keys.
    bucket, _, key = url.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise ValueError(f"an S3 URL must look like s3://bucket/key, got {url}")
    return bucket, key


def _download_s3(bucket: str, key: str, destination: Path, **credentials: str | None) -> None:
    """Download ``s3://bucket/key`` to ``destination``; credentials go to boto3 only."""
    boto3 = import_optional("boto3", "s3")
    client = boto3.client("s3", **{name: value for name, value in credentials.items() if value})
    try:
        client.download_file(bucket, key, str(destination))
    except client.exceptions.ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code in ("404", "NoSuchKey", "NoSuchBucket"):
            raise FileNotFoundError(f"pickle not found on S3: s3://{bucket}/{key}") from error
        raise
