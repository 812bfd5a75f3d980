"""Where cubes and sources live: URLs, storage options, stores and storage errors.

Local paths and ``file://`` URLs use the local filesystem; ``s3://`` URLs use
s3fs with the standard AWS credential chain. The endpoint comes from the
argument, then ``storage_options["endpoint_url"]``, then ``AWS_ENDPOINT_URL_S3``
or ``AWS_ENDPOINT_URL``. Anonymous access happens only when asked for.
Credentials are never logged, and never appear in an error message.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
from collections.abc import Iterator
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from cubes.errors import CubeError, SchemaError, SourceNotFoundError, StorageError

__all__ = [
    "check_location",
    "filesystem",
    "group_array",
    "is_local",
    "join_url",
    "probe_options",
    "resolve_storage_options",
    "storage_errors",
    "zarr_store",
]

logger = logging.getLogger(__name__)

# Transient errors (500, 503 SlowDown, throttling, resets, timeouts) are retried by
# botocore's "standard" mode: exponential backoff with full jitter, capped at 20 s, at
# most 8 attempts. 4xx such as 403 and 404 are not retried. check_location() probes a
# location with 2 attempts, so an unreachable endpoint or a missing bucket fails fast.
_S3_CONFIG = {
    "connect_timeout": 10,
    "read_timeout": 120,
    "retries": {"max_attempts": 8, "mode": "standard"},
}
_PROBE_RETRIES = {"max_attempts": 2, "mode": "standard"}


def _protocol(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else "file"


def is_local(url: str) -> bool:
    """True for local paths and ``file://`` URLs."""
    return _protocol(url) in ("file", "local")


def join_url(url: str, *parts: str) -> str:
    """Join path parts to a local path or URL with ``/``."""
    if is_local(url):
        return os.path.join(_strip_file(url), *parts)
    return posixpath.join(url.rstrip("/"), *parts)


def _strip_file(url: str) -> str:
    return url[len("file://") :] if url.startswith("file://") else url


def resolve_storage_options(
    url: str,
    storage_options: dict[str, Any] | None = None,
    *,
    endpoint_url: str | None = None,
    anon: bool | None = None,
) -> dict[str, Any]:
    """Storage options for ``url``, completed from arguments and the environment.

    Parameters
    ----------
    url
        Local path or fsspec URL (``s3://bucket/prefix``).
    storage_options
        Options for the fsspec filesystem, taken as given where set.
    endpoint_url
        S3-compatible endpoint; overrides ``storage_options`` and the environment.
    anon
        ``True`` for anonymous (unsigned) access to a public bucket; ``None``
        keeps whatever ``storage_options`` says (default: signed requests).

    Returns
    -------
    dict
        A new dict; the input is not modified.
    """
    options = dict(storage_options or {})
    if _protocol(url) not in ("s3", "s3a"):
        return options
    endpoint = (
        endpoint_url
        or options.get("endpoint_url")
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    if endpoint:
        options["endpoint_url"] = endpoint
    if anon is not None:
        options["anon"] = anon
    config = dict(_S3_CONFIG)
    config.update(options.get("config_kwargs", {}))
    options["config_kwargs"] = config
    return options


def filesystem(url: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """The fsspec filesystem and the path within it for ``url``."""
    if is_local(url):
        return LocalFileSystem(auto_mkdir=True), os.path.abspath(_strip_file(url))
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return fs, path


def zarr_store(url: str, storage_options: dict[str, Any] | None = None, *, read_only: bool) -> Any:
    """A zarr v3 store for ``url``: ``LocalStore`` for local paths, ``FsspecStore`` otherwise."""
    from zarr.storage import FsspecStore, LocalStore

    if is_local(url):
        return LocalStore(os.path.abspath(_strip_file(url)), read_only=read_only)
    options = dict(storage_options or {})
    if _protocol(url) in ("s3", "s3a"):
        # s3fs HEADs every whole-object GET (to split objects over 50 MB into ranged GETs),
        # and a missing key then costs a HEAD and a LIST more: zarr's GETs are one request.
        options.setdefault("max_concurrency", 1)
    return FsspecStore.from_url(url, storage_options=options, read_only=read_only)


def probe_options(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """``storage_options`` for a first request that fails fast: 2 attempts instead of 8.

    An unreachable endpoint or a missing bucket then costs seconds, not a minute
    of retries; later requests keep the usual retries for transient errors.
    """
    probe = dict(storage_options or {})
    if not is_local(url):
        probe["config_kwargs"] = {**probe.get("config_kwargs", {}), "retries": _PROBE_RETRIES}
    return probe


def check_location(url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Raise the platform's error if ``url``'s endpoint or bucket is unusable; else nothing.

    One listing request; a missing prefix inside an existing bucket is fine.
    """
    if is_local(url):
        return
    fs, path = filesystem(url, probe_options(url, storage_options))
    with storage_errors(url, storage_options):
        if hasattr(fs, "call_s3"):  # s3fs: one LIST of at most one key
            bucket, key, _ = fs.split_path(path)
            fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=key, MaxKeys=1)
        else:
            fs.find(path, maxdepth=1)


def group_array(group: Any, name: str) -> Any:
    """The array ``name`` of a zarr group, or :class:`SchemaError` naming what is there instead."""
    import zarr

    node = group.get(name)
    if not isinstance(node, zarr.Array):
        raise SchemaError(
            f"The cube at {group.store} has no array '{name}' (found {type(node).__name__}). "
            "Was it written by 'python -m ingest'?"
        )
    return node


def _endpoint(storage_options: dict[str, Any] | None) -> str:
    return (storage_options or {}).get("endpoint_url") or "the default AWS endpoint"


@contextlib.contextmanager
def storage_errors(url: str, storage_options: dict[str, Any] | None = None) -> Iterator[None]:
    """Turn the storage libraries' errors into :class:`StorageError` / :class:`SourceNotFoundError`.

    The message names ``url`` and the endpoint and suggests a remedy. Errors that
    already are :class:`cubes.errors.CubeError` pass through unchanged.
    """
    try:
        yield
    except CubeError:
        raise
    except Exception as exc:  # noqa: BLE001 - translated below or re-raised
        translated = translate_storage_error(exc, url, storage_options)
        if translated is None:
            raise
        raise translated from exc


def translate_storage_error(
    exc: BaseException, url: str, storage_options: dict[str, Any] | None = None
) -> Exception | None:
    """The platform's error for a storage library's exception, or ``None`` if it is not one."""
    name = type(exc).__name__
    text = str(exc)
    endpoint = _endpoint(storage_options)
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError") or (
        isinstance(exc, ConnectionError) and not is_local(url)
    ):
        return StorageError(
            f"Cannot reach the S3 endpoint {endpoint} for {url} ({name}). Check --endpoint-url "
            "or AWS_ENDPOINT_URL, and that the service is running and reachable."
        )
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return StorageError(
            f"No AWS credentials found to access {url}. Configure the AWS credential chain "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or an instance role), "
            "or pass --anon for a public bucket."
        )
    if isinstance(exc, FileNotFoundError) and "bucket does not exist" in text:
        bucket = url.split("://", 1)[-1].split("/", 1)[0]
        return SourceNotFoundError(
            f"Bucket '{bucket}' does not exist at {endpoint} ({url}). Check the bucket name in "
            "the URL and the endpoint, or create the bucket first."
        )
    if isinstance(exc, PermissionError) and (storage_options or {}).get("anon"):
        return StorageError(
            f"Anonymous access to {url} was denied at {endpoint}: the bucket or object is not "
            "public. Drop --anon to sign requests with your AWS credentials."
        )
    if isinstance(exc, PermissionError):
        return StorageError(
            f"Access to {url} was denied at {endpoint}. Check the credentials' permissions, "
            "or pass --anon if the bucket is public."
        )
    return None
