"""Checks made before anything is written: argument values, inputs that must exist, DEST.

A mistake found here costs the user one line on stderr and exit status 2; the
same mistake found by the writer costs a traceback and, often, an incomplete
cube to clean up. The argparse ``type=`` factories (:func:`int_at_least`,
:func:`float_above`, :func:`matching`, :func:`endpoint_url`; the first and last
shared with ``python -m cubes`` from :mod:`cubes._cli`) check a value as it is
parsed; :func:`check_exists` and :func:`check_batch_dest` look at the storage,
once, before the writer starts.

This module imports only ``cubes``, so that sources may use it.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import posixpath
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from cubes._cli import endpoint_url, int_at_least
from cubes.errors import CubeExistsError, SourceNotFoundError
from cubes.store import filesystem, join_url, storage_errors

if TYPE_CHECKING:
    from ingest.plan import IngestPlan

__all__ = [
    "check_batch_dest",
    "check_exists",
    "endpoint_url",
    "float_above",
    "int_at_least",
    "matching",
]


def float_above(minimum: float) -> Callable[[str], float]:
    """An argparse ``type=``: a finite number above ``minimum``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > minimum):
            raise argparse.ArgumentTypeError(
                f"got {text!r}; expected a finite number above {minimum:g}"
            )
        return value

    return parse


def matching(pattern: str, expected: str) -> Callable[[str], str]:
    """An argparse ``type=``: a string that matches ``pattern`` whole; ``expected`` says what."""
    compiled = re.compile(pattern)

    def parse(text: str) -> str:
        if not compiled.fullmatch(text):
            raise argparse.ArgumentTypeError(f"got {text!r}; expected {expected}")
        return text

    return parse


def check_exists(
    url: str,
    storage_options: dict[str, Any] | None,
    *,
    what: str,
    remedy: str,
    file: bool = False,
) -> None:
    """Raise :class:`SourceNotFoundError` if ``url`` does not exist (or, with ``file``, is a dir).

    Parameters
    ----------
    url
        Local path or URL, as the user gave it (named as such in the message).
    storage_options
        fsspec options for ``url``.
    what
        How the message names it: ``"SRC"``, ``"--load-data"`` …
    remedy
        The sentence that ends the message.
    file
        The input must be a file, not a folder.

    Raises
    ------
    SourceNotFoundError
        ``"--load-data tables/ld.csv does not exist (did you mean tables/load_data.csv?).
        Check the path …"``
    """
    fs, path = filesystem(url, storage_options)
    with storage_errors(url, storage_options):
        if not fs.exists(path):
            raise SourceNotFoundError(
                f"{what} {url} does not exist{_did_you_mean(fs, path, url)}. {remedy}"
            )
        if file and fs.isdir(path):
            raise SourceNotFoundError(f"{what} {url} is a folder, not a file. {remedy}")


def _did_you_mean(fs: Any, path: str, url: str) -> str:
    """`` (did you mean …?)`` naming the nearest names beside ``path``, or ``""``."""
    path = path.replace("\\", "/").rstrip("/")
    parent, name = posixpath.split(path)
    given = url.rstrip("/\\")
    if not parent or not name or not given.endswith(name):
        return ""
    try:
        beside = [posixpath.basename(p.rstrip("/")) for p in fs.ls(parent, detail=False)]
    except Exception:  # noqa: BLE001 - only a hint: a parent we cannot list gives none
        return ""
    close = difflib.get_close_matches(name, beside, n=2, cutoff=0.6)
    if not close:
        return ""
    return f" (did you mean {' or '.join(given[: -len(name)] + c for c in close)}?)"


def check_batch_dest(
    src: str, dest: str, plans: Sequence[IngestPlan], storage_options: dict[str, Any]
) -> None:
    """Refuse to write a batch (plans to ``DEST/<plate>.zarr``) into a DEST that is a cube.

    A batch's DEST is a prefix that holds one cube per plate and an index of
    them; a cube holding other cubes would be neither. This happens when a
    plate is added beside the one that SRC held when DEST was written.

    Raises
    ------
    CubeExistsError
        DEST holds a cube (a ``zarr.json``) and ``plans`` are a batch. The
        message names DEST, the plates and the remedies; ``--overwrite`` is not
        one (it replaces the plates' cubes, never the cube at DEST).
    """
    if all(plan.dest == dest for plan in plans):
        return
    fs, path = filesystem(join_url(dest, "zarr.json"), storage_options)
    with storage_errors(dest, storage_options):
        if not fs.exists(path):
            return
        held = _cube_plate(fs.cat_file(path))
    plates = [
        posixpath.basename(plan.dest.replace("\\", "/")).removesuffix(".zarr") for plan in plans
    ]
    listed = ", ".join(plates[:5]) + (", …" if len(plates) > 5 else "")
    raise CubeExistsError(
        f"{dest} holds the cube of {held}, but SRC {src} holds a batch of plates ({listed} in "
        "this run): a batch is written as one cube per plate under a DEST prefix "
        f"(DEST/<plate>.zarr), never inside a cube. Give the batch a new DEST prefix (e.g. "
        f"{_sibling(dest, 'plates')}), or point SRC at the one plate's own folder to update "
        f"{dest} (with --plates, SRC is still a batch). --overwrite does not replace a cube "
        f"with a batch: remove {dest} first for that."
    )


def _cube_plate(metadata: bytes) -> str:
    """``"plate X"`` from a cube's ``zarr.json``, or ``"a plate"``."""
    try:
        plate = json.loads(metadata).get("attributes", {}).get("plate")
    except ValueError:
        plate = None
    return f"plate {plate}" if plate else "a plate"


def _sibling(url: str, name: str) -> str:
    """``…/plate.zarr`` -> ``…/plates/``: a prefix beside ``url``."""
    parent = url.rstrip("/\\")[: -len(posixpath.basename(url.rstrip("/\\").replace("\\", "/")))]
    return f"{parent}{name}/"
