"""One writer per destination: a lease object beside the cube (``plate.zarr`` -> ``plate.lock``).

Taken with an exclusive create (S3 conditional write ``If-None-Match: *``;
``O_EXCL`` on local disk), kept alive by a heartbeat, released at the end. A
second job finds it and is refused with who holds it. A lease whose heartbeat
is older than its duration, or whose process on this host is gone (``kill -9``),
belongs to a job that died: it is taken over (deleted, then created exclusively
again, so two late-comers cannot both win).
Heartbeats compare wall clocks: hosts sharing a DEST need roughly synced clocks.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from cubes.errors import CubeError
from cubes.store import filesystem, is_local, storage_errors

__all__ = ["LEASE_SECONDS", "DestinationLockedError", "WriterLock", "lock_url"]

logger = logging.getLogger(__name__)

LEASE_SECONDS = 120.0


class DestinationLockedError(CubeError, RuntimeError):
    """Another job is writing the destination."""


def lock_url(dest: str, part: str | None = None) -> str:
    """``…/plate.zarr`` -> ``…/plate.lock``; ``…/plate.<part>.lock`` for a slice of an array job."""
    stem = dest.rstrip("/")
    stem = stem[: -len(".zarr")] if stem.endswith(".zarr") else stem
    return f"{stem}.{part}.lock" if part else f"{stem}.lock"


def _dead_here(holder: dict[str, Any]) -> bool:
    """True if the holder ran on this host and its process no longer exists (killed)."""
    if holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder.get("pid", 0)), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, OverflowError):
        return False
    return False


class WriterLock:
    """``with WriterLock(dest, options):`` — hold the destination's lease while writing.

    ``part`` names one slice of an array job: slices of one job write one DEST
    together, each holding its own lease (two copies of one slice are refused).
    """

    def __init__(
        self,
        dest: str,
        options: dict[str, Any],
        *,
        lease: float = LEASE_SECONDS,
        part: str | None = None,
    ):
        self.dest, self.options, self.lease = dest, options, lease
        self.url = lock_url(dest, part)
        self.fs, self.path = filesystem(self.url, options)
        self.owner = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        return json.dumps(
            {
                "owner": self.owner,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "heartbeat": time.time(),
                "lease_seconds": self.lease,
            }
        ).encode()

    def _create(self) -> None:
        """Exclusive create; FileExistsError if the lock is there."""
        if is_local(self.url):
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            with os.fdopen(fd, "wb") as fh:
                fh.write(self._body())
        else:
            self.fs.pipe_file(self.path, self._body(), mode="create")

    def _read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.fs.cat_file(self.path))
        except FileNotFoundError:
            return None
        except ValueError:  # a torn write of a dead job: treat as expired
            return {"heartbeat": 0.0, "lease_seconds": 0.0}

    def acquire(self) -> None:
        """Take the lease, or take over an expired one; else DestinationLockedError."""
        with storage_errors(self.url, self.options):
            try:
                self._create()
                return
            except FileExistsError:
                other = self._read()
            if other is not None:
                age = time.time() - float(other.get("heartbeat", 0.0))
                alive = age < float(other.get("lease_seconds", self.lease)) and not _dead_here(
                    other
                )
                if alive:
                    raise DestinationLockedError(
                        f"{self.dest} is being written by another ingest (host "
                        f"{other.get('host', '?')}, pid {other.get('pid', '?')}, last heartbeat "
                        f"{age:.0f} s ago; lock {self.url}). Wait for it to finish; if it died, "
                        f"its lock expires {other.get('lease_seconds', self.lease):.0f} s after "
                        "its last heartbeat and the next run takes over."
                    )
                logger.warning(
                    "Taking over the expired lock %s (%.0f s old, or its process is gone)",
                    self.url,
                    age,
                )
                self.fs.rm(self.path)
            try:
                self._create()
            except FileExistsError:
                raise DestinationLockedError(
                    f"{self.dest}: another ingest took over the expired lock {self.url} first."
                ) from None

    def _beat(self) -> None:
        while not self._stop.wait(self.lease / 4):
            try:
                current = self._read()
                if current is None or current.get("owner") != self.owner:
                    logger.error("Lost the lock %s to another job", self.url)
                    return
                self.fs.pipe_file(self.path, self._body())
            except Exception:  # noqa: BLE001 - a missed beat is retried at the next one
                logger.warning("Heartbeat of %s failed", self.url, exc_info=True)

    def release(self) -> None:
        """Stop the heartbeat and delete the lock if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with storage_errors(self.url, self.options):
            current = self._read()
            if current is not None and current.get("owner") == self.owner:
                self.fs.rm(self.path)

    def __enter__(self) -> WriterLock:
        self.acquire()
        self._thread = threading.Thread(target=self._beat, name="lock-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
