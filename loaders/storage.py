"""Where :class:`loaders.reader.CubeReader` gets its bytes: obstore or fsspec.

obstore (Rust, requests off the GIL) serves local paths and ``s3://`` with the
storage options it can map (endpoint, credentials, anonymous access, timeouts,
retries); fsspec serves everything else. ``backend="auto"`` takes
:data:`DEFAULT_BACKEND` where it can, chosen by ``benchmarks/loader_speed.py``.
obstore's runtime does not survive ``fork``: a process forked after the parent
used it reads with fsspec (forkserver and spawn workers are unaffected).
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from cubes.errors import SchemaError, StorageError
from cubes.store import filesystem, is_local

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig, S3Config

__all__ = [
    "BACKEND_ENV",
    "DEFAULT_BACKEND",
    "FsspecStorage",
    "ObstoreStorage",
    "Storage",
    "choose_backend",
    "map_file",
]

logger = logging.getLogger(__name__)

DEFAULT_BACKEND = "obstore"
"""What ``backend="auto"`` uses where it can (decided by the loader benchmark)."""
BACKEND_ENV = "CELLCUBES_READ_BACKEND"
"""Environment variable that overrides ``backend="auto"``: ``obstore``, ``fsspec`` or ``auto``."""

Buffer = Any  # bytes, memoryview or obstore.Bytes: anything with the buffer protocol

# Options that obstore's S3Store gets another way, or that only tune fsspec's caches.
_IGNORED = {
    "skip_instance_cache",
    "use_listings_cache",
    "listings_expiry_time",
    "max_paths",
    "default_block_size",
    "default_fill_cache",
    "default_cache_type",
}
# The process whose requests started obstore's runtime: a child forked from it cannot use
# obstore (tokio's threads do not survive fork; requests would hang), so it reads with fsspec.
_OBSTORE_PID: list[int | None] = [None]
_MAPPED = {"endpoint_url", "key", "secret", "token", "anon", "profile", "requester_pays"}
_MAPPED_CLIENT = {"region_name", "endpoint_url"}
_MAPPED_CONFIG = {"connect_timeout", "read_timeout", "retries"}


class Storage:
    """Reads objects under the cube's root. ``None``: the object does not exist."""

    def get(self, key: str, byte_range: tuple[int, int | None] | None) -> Buffer | None:
        raise NotImplementedError

    def get_ranges(self, key: str, spans: list[tuple[int, int]]) -> list[Buffer] | None:
        raise NotImplementedError


class ObstoreStorage(Storage):
    """obstore: requests from Rust threads, off the GIL; ``get_ranges`` concurrently.

    Local files are mapped into memory instead (:func:`map_file`): decoding
    then reads the page cache in place, with no copy.
    """

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        self.url = url
        self.store = _obstore_store(url, options)
        self._root = _local_root(url) if is_local(url) else None

    def get(self, key: str, byte_range: tuple[int, int | None] | None) -> Buffer | None:
        import obstore

        if self._root is not None:
            return map_file(os.path.join(self._root, key), byte_range)

        _OBSTORE_PID[0] = _OBSTORE_PID[0] or os.getpid()
        try:
            with self._errors(key):
                if byte_range is None:
                    return obstore.get(self.store, key).bytes()
                start, end = byte_range
                if end is None:
                    return obstore.get(
                        self.store, key, options={"range": {"suffix": -start}}
                    ).bytes()
                return obstore.get_range(self.store, key, start=start, end=end)
        except FileNotFoundError:
            return None

    def get_ranges(self, key: str, spans: list[tuple[int, int]]) -> list[Buffer] | None:
        import obstore

        if self._root is not None:
            whole = map_file(os.path.join(self._root, key), None)
            return None if whole is None else [whole[s:e] for s, e in spans]
        starts, ends = [s for s, _ in spans], [e for _, e in spans]
        _OBSTORE_PID[0] = _OBSTORE_PID[0] or os.getpid()
        try:
            with self._errors(key):  # coalesce=0: the ranges are merged already
                return list(
                    obstore.get_ranges(self.store, key, starts=starts, ends=ends, coalesce=0)
                )
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        """obstore's own errors as :class:`StorageError` naming the object."""
        from obstore.exceptions import BaseError

        try:
            yield
        except BaseError as exc:
            message = str(exc).splitlines()[0] if str(exc) else ""
            raise StorageError(
                f"Reading {self.url}/{key} failed ({type(exc).__name__}: {message}). Check the "
                f"endpoint, the credentials and the URL, or set {BACKEND_ENV}=fsspec."
            ) from exc


class FsspecStorage(Storage):
    """fsspec (s3fs, local): ``cat_ranges`` runs the ranges concurrently on s3fs's loop."""

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        self.fs, root = filesystem(url, options)
        self.root = root.rstrip("/")

    def get(self, key: str, byte_range: tuple[int, int | None] | None) -> Buffer | None:
        start, end = (0, None) if byte_range is None else byte_range
        try:  # start=0: one GET (without a range s3fs sends a HEAD first)
            return self.fs.cat_file(f"{self.root}/{key}", start=start, end=end)
        except FileNotFoundError:
            return None

    def get_ranges(self, key: str, spans: list[tuple[int, int]]) -> list[Buffer] | None:
        path = f"{self.root}/{key}"
        try:
            return list(
                self.fs.cat_ranges(
                    [path] * len(spans),
                    [s for s, _ in spans],
                    [e for _, e in spans],
                    on_error="raise",
                )
            )
        except FileNotFoundError:
            return None


def choose_backend(url: str, options: dict[str, Any], backend: str) -> str:
    if backend not in ("auto", "obstore", "fsspec"):
        raise SchemaError(f"backend={backend!r} is not one of 'auto', 'obstore', 'fsspec'.")
    wanted = backend
    if backend == "auto":
        wanted = os.environ.get(BACKEND_ENV, "").strip().lower() or "auto"
        if wanted not in ("auto", "obstore", "fsspec"):
            raise SchemaError(
                f"{BACKEND_ENV}={wanted!r} is not one of 'auto', 'obstore', 'fsspec'; "
                "fix or unset it."
            )
        wanted = DEFAULT_BACKEND if wanted == "auto" else wanted
    if wanted == "fsspec":
        return "fsspec"
    problems = _obstore_problems(url, options)
    if _OBSTORE_PID[0] not in (None, os.getpid()):
        problems.append(
            "its runtime, started in the parent process before this one was forked (tokio "
            "cannot be used across fork; start workers with forkserver or spawn)"
        )
    if not problems:
        return "obstore"
    if backend == "obstore":
        raise SchemaError(
            f"The obstore backend cannot read {url}: it cannot use {problems}. "
            "Use backend='fsspec' (or 'auto')."
        )
    log = logger.warning if _OBSTORE_PID[0] not in (None, os.getpid()) else logger.debug
    log("Reading %s with fsspec: obstore cannot use %s", url, problems)
    return "fsspec"


def _obstore_problems(url: str, options: dict[str, Any]) -> list[str]:
    """What obstore cannot serve: the URL scheme or option names (never values)."""
    if is_local(url):
        return []
    scheme = url.split("://", 1)[0]
    if scheme not in ("s3", "s3a"):
        return [f"{scheme}:// URLs"]
    problems = [
        k for k in options if k not in _MAPPED | _IGNORED | {"client_kwargs", "config_kwargs"}
    ]
    problems += [
        f"client_kwargs.{k}" for k in options.get("client_kwargs", {}) if k not in _MAPPED_CLIENT
    ]
    problems += [
        f"config_kwargs.{k}" for k in options.get("config_kwargs", {}) if k not in _MAPPED_CONFIG
    ]
    return problems


def map_file(path: str, byte_range: tuple[int, int | None] | None) -> memoryview | None:
    """A local file's bytes (``byte_range``: ``(start, end)`` or a suffix ``(-n, None)``),
    mapped read-only (``None``: no such file). The pages are mapped at once
    (``MAP_POPULATE`` where there is one): no fault per page while decoding.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return memoryview(b"")
            if hasattr(mmap, "MAP_POPULATE"):
                flags = mmap.MAP_SHARED | mmap.MAP_POPULATE
                mapped = mmap.mmap(f.fileno(), 0, flags=flags, prot=mmap.PROT_READ)
            else:
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (FileNotFoundError, IsADirectoryError):
        return None
    view = memoryview(mapped)  # keeps the mapping alive as long as a view of it lives
    if byte_range is None:
        return view
    start, end = byte_range
    return view[max(0, size + start) :] if end is None else view[start:end]


def _local_root(url: str) -> str:
    return os.path.abspath(url[len("file://") :] if url.startswith("file://") else url)


def _obstore_store(url: str, options: dict[str, Any]) -> Any:
    from obstore.store import LocalStore, S3Store

    if is_local(url):
        return LocalStore(prefix=_local_root(url))
    bucket, _, prefix = url.split("://", 1)[1].partition("/")
    client_kwargs, config_kwargs = (
        options.get("client_kwargs", {}),
        options.get("config_kwargs", {}),
    )
    config: dict[str, Any] = {}
    client: dict[str, Any] = {
        "connect_timeout": timedelta(seconds=config_kwargs.get("connect_timeout", 10)),
        "timeout": timedelta(seconds=config_kwargs.get("read_timeout", 120)),
    }
    endpoint = options.get("endpoint_url") or client_kwargs.get("endpoint_url")
    if endpoint:
        config["endpoint"] = endpoint.rstrip("/")
        client["allow_http"] = endpoint.startswith("http://")
    if client_kwargs.get("region_name"):
        config["region"] = client_kwargs["region_name"]
    if options.get("requester_pays"):
        config["request_payer"] = True
    provider = _obstore_credentials(options, config)
    retries = config_kwargs.get("retries", {}).get("max_attempts")
    retry = {"max_retries": max(0, int(retries) - 1)} if retries else None
    return S3Store(
        bucket,
        prefix=prefix.strip("/") or None,
        config=cast("S3Config", config),
        client_options=cast("ClientConfig", client),
        retry_config=cast("RetryConfig | None", retry),
        credential_provider=provider,
    )


def _obstore_credentials(options: dict[str, Any], config: dict[str, Any]) -> Any:
    """Put the options' credentials in ``config``; else a provider for the AWS chain, or None."""
    if options.get("anon"):
        config["skip_signature"] = True
    elif options.get("key") or options.get("secret"):
        config["access_key_id"] = options.get("key")
        config["secret_access_key"] = options.get("secret")
        if options.get("token"):
            config["session_token"] = options["token"]
    elif options.get("profile") or not os.environ.get("AWS_ACCESS_KEY_ID"):
        return _boto3_credentials(options.get("profile"))
    return None  # obstore reads AWS_ACCESS_KEY_ID & co. from the environment itself


def _boto3_credentials(profile: str | None) -> Any:
    """The AWS credential chain (profiles, SSO, config files) as an obstore provider, or None."""
    try:
        import boto3
        from obstore.auth.boto3 import Boto3CredentialProvider
    except ImportError:  # obstore then uses its own chain (environment, instance role)
        return None
    try:
        return Boto3CredentialProvider(boto3.Session(profile_name=profile))
    except ValueError:  # no credentials found: obstore tries its own chain
        return None
