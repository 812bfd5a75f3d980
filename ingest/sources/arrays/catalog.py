"""Numbering the samples of an ``arrays`` source: the catalog planning builds.

:func:`plan_samples` takes each file's :class:`~.headers.FileHeader` (in listed order),
checks that every sample has the same variables, and gives each file its range of
samples (:class:`FileSamples`) in an :class:`ArraysCatalog`.

This module is also the reading half's one import point: it re-exports the listing
(:mod:`.listing`), header (:mod:`.headers`) and whole-file (:mod:`.files`) functions, so
``from ingest.sources.arrays.catalog import read_file`` keeps working.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from cubes.errors import SchemaError
from ingest.sources.arrays.files import read_file
from ingest.sources.arrays.formats import ARRAY_SUFFIXES, DATA_VARIABLE
from ingest.sources.arrays.headers import ArraySpec, FileHeader, read_header
from ingest.sources.arrays.listing import ArrayListing, list_array_files

__all__ = [
    "ARRAY_SUFFIXES",
    "DATA_VARIABLE",
    "ArrayListing",
    "ArraySpec",
    "ArraysCatalog",
    "FileHeader",
    "FileSamples",
    "list_array_files",
    "plan_samples",
    "read_file",
    "read_header",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileSamples:
    """The samples ``[start, stop)`` of the cube that come from one file."""

    url: str
    size: int
    start: int
    stop: int


@dataclass(frozen=True)
class ArraysCatalog:
    """The samples of a set of array files and the variables every sample has.

    Attributes
    ----------
    variables
        ``{name: ArraySpec(sample_shape, dtype)}``, in the first file's order.
    files
        Each file with its sample range, in sample order.
    batched
        Whether each file is a batch along its first axis (else one sample).
    fingerprint
        sha256 of the files' URLs, sizes, shapes and dtypes: equal for an unchanged source.
    """

    variables: dict[str, ArraySpec]
    files: tuple[FileSamples, ...]
    batched: bool
    fingerprint: str

    @property
    def n_samples(self) -> int:
        """Total number of samples."""
        return self.files[-1].stop if self.files else 0

    def source_file(self) -> np.ndarray:
        """The URL of each sample's file (the ``source_file`` coord), one per sample."""
        urls = np.array([f.url for f in self.files], dtype=str)
        return np.repeat(urls, [f.stop - f.start for f in self.files])


def plan_samples(
    headers: Sequence[FileHeader], *, batched: bool | Literal["auto"] = False
) -> ArraysCatalog:
    """Number the samples of the files and check that they all have the same variables.

    Parameters
    ----------
    headers
        One :class:`FileHeader` per file, in sample order (as listed).
    batched
        ``False``: each file is one sample. ``True``: each file is a batch along the first
        axis of every variable (which must agree within the file). ``"auto"``: one sample
        per file if that reading fits every file, else batches if that one fits.

    Returns
    -------
    ArraysCatalog

    Raises
    ------
    SchemaError
        A file lacks a variable or has an extra one, or a variable's per-sample shape or
        dtype differs from the first file's; the message names the file and the variable.
    """
    if not headers:
        raise SchemaError("No array files to plan. List SRC first (list_array_files).")
    if batched != "auto":
        return _plan(headers, bool(batched))
    try:
        return _plan(headers, False)
    except SchemaError as single:
        try:
            catalog = _plan(headers, True)
        except SchemaError as as_batches:
            raise SchemaError(
                f"{single}\nRead as batches along the first axis, the files do not fit "
                f"either: {as_batches}"
            ) from None
    logger.info("Files differ in their first axis only: read as batches along it")
    return catalog


def _plan(headers: Sequence[FileHeader], batched: bool) -> ArraysCatalog:
    first = headers[0]
    count, reference = _sample_specs(first, batched)
    files, start = [FileSamples(first.url, first.size, 0, count)], count
    for header in headers[1:]:
        count, specs = _sample_specs(header, batched)
        _check_matches(header, specs, first.url, reference, batched)
        files.append(FileSamples(header.url, header.size, start, start + count))
        start += count
    return ArraysCatalog(
        variables=reference,
        files=tuple(files),
        batched=batched,
        fingerprint=_fingerprint(headers, batched),
    )


def _sample_specs(header: FileHeader, batched: bool) -> tuple[int, dict[str, ArraySpec]]:
    """Samples in the file and each variable's per-sample spec (native byte order)."""
    if not header.variables:
        raise SchemaError(f"{header.url} holds no arrays. Remove it, or write its arrays again.")
    if not batched:
        return 1, {k: ArraySpec(v.shape, _native(v.dtype)) for k, v in header.variables.items()}
    lengths = {k: (v.shape[0] if v.shape else None) for k, v in header.variables.items()}
    if None in lengths.values() or len(set(lengths.values())) > 1:
        found = ", ".join(f"'{k}' {v.shape}" for k, v in header.variables.items())
        raise SchemaError(
            f"{header.url} is not a batch: its variables do not share a first axis ({found}). "
            "In batched mode every variable's first axis counts the file's samples; fix the "
            "file, or read each file as one sample (drop --batched)."
        )
    specs = {k: ArraySpec(v.shape[1:], _native(v.dtype)) for k, v in header.variables.items()}
    return int(next(iter(lengths.values())) or 0), specs


def _native(dtype: np.dtype) -> np.dtype:
    return dtype.newbyteorder("=") if dtype.byteorder in "<>" else dtype


def _check_matches(
    header: FileHeader,
    specs: dict[str, ArraySpec],
    first_url: str,
    reference: dict[str, ArraySpec],
    batched: bool,
) -> None:
    missing = [k for k in reference if k not in specs]
    extra = [k for k in specs if k not in reference]
    if missing or extra:
        has = f"lacks {missing}" if missing else f"has {extra} besides"
        raise SchemaError(
            f"{header.url} {has} the variables of the first file {first_url} "
            f"({list(reference)}). Every file must hold the same keys: fix or remove "
            f"{header.url}."
        )
    for name, ref in reference.items():
        got = specs[name]
        if got != ref:
            hint = (
                "" if batched else " If the files are batches along the first axis, pass --batched."
            )
            raise SchemaError(
                f"{header.url}: variable '{name}' is {got.shape} {got.dtype} per sample; the "
                f"first file {first_url} has {ref.shape} {ref.dtype}. Every sample must share "
                f"each variable's shape and dtype: convert or remove {header.url}.{hint}"
            )


def _fingerprint(headers: Sequence[FileHeader], batched: bool) -> str:
    """sha256 of the URLs, sizes, shapes and dtypes (and the batched flag)."""
    described = [
        [h.url, h.size, {k: [list(v.shape), v.dtype.str] for k, v in h.variables.items()}]
        for h in headers
    ]
    text = json.dumps({"batched": batched, "files": described}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()
