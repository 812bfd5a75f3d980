"""Shared by the benchmarks: dummy credentials for the local moto S3 server."""

from __future__ import annotations

import os

DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def use_dummy_credentials() -> None:
    """Set dummy AWS credentials for moto unless the environment has some."""
    for key, value in DUMMY_CREDENTIALS.items():
        os.environ.setdefault(key, value)
