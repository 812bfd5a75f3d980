"""Shared by the benchmarks: a moto S3 server in its own process, dummy credentials."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def use_dummy_credentials() -> None:
    """Set dummy AWS credentials for moto unless the environment has some."""
    for key, value in DUMMY_CREDENTIALS.items():
        os.environ.setdefault(key, value)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen, str]:
    """moto_server in its own process on 127.0.0.1 (not sharing the GIL with the client)."""
    port = free_port()
    server = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1",
         "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("moto_server did not start")


def copy_objects(s3: Any, keys: list[str], threads: int, bucket: str = "bench") -> None:
    """The plain way to move the bytes: boto3 GET + PUT of each key, ``threads`` at once."""

    def one(key: str) -> None:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        s3.put_object(Bucket=bucket, Key=f"copy/{key}", Body=body)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, keys))


@contextlib.contextmanager
def bench_bucket(name: str = "bench") -> Iterator[Any]:
    """A moto server in its own process with an empty bucket; yields a boto3 client.

    ``AWS_ENDPOINT_URL`` points at it meanwhile, so s3fs, obstore and subprocesses
    (``python -m ingest``) reach it too.
    """
    with moto_bucket(name) as (s3, _):
        yield s3


@contextlib.contextmanager
def moto_bucket(name: str = "bench") -> Iterator[tuple[Any, subprocess.Popen]]:
    """:func:`bench_bucket`, yielding the server's process too (to count its CPU)."""
    import boto3

    server, endpoint = start_moto()
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket=name)
        yield s3, server
    finally:
        server.terminate()
        server.wait()
