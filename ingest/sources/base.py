"""The seam between the command line, the sources and the writer.

A source turns SRC into one :class:`~ingest.plan.IngestPlan` per cube, listing
and reading metadata only. It takes an options dataclass (its own subclass of
:class:`SourceOptions`), never an argparse namespace: the CLI builds the
options from the arguments (:meth:`Source.options_from_args`), Python callers
build them directly, as xarray's backends take keyword options.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from cubes.errors import ArgumentError  # its home; importable from here as before
from ingest.codecs import CODEC_NAMES

if TYPE_CHECKING:
    from ingest.plan import IngestPlan

__all__ = ["ON_ERROR", "ArgumentError", "Source", "SourceOptions"]

ON_ERROR = ("fail", "skip")


@dataclass(frozen=True)
class SourceOptions:
    """What every source takes.

    Attributes
    ----------
    storage_options
        fsspec options for SRC (endpoint, ``anon`` …); credentials from the
        standard AWS chain unless given here.
    endpoint_url
        The S3 endpoint for other URLs the source reads (tables, maps).
    on_error
        ``"fail"``: a bad input stops the job; ``"skip"``: it is left out,
        marked absent and listed in the quality report.
    codec
        The codec of the cube's data, a name in :data:`ingest.codecs.CODECS`;
        None: the default for the data's dtype for a new cube, and the codec it
        was written with for a cube being resumed or appended to.
    """

    storage_options: dict[str, Any] = field(default_factory=dict)
    endpoint_url: str | None = None
    on_error: str = "fail"
    codec: str | None = None

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR:
            raise ArgumentError(
                f"on_error={self.on_error!r}: expected one of {', '.join(ON_ERROR)}."
            )
        if self.codec is not None and self.codec not in CODEC_NAMES:
            raise ArgumentError(
                f"codec={self.codec!r}: expected one of {', '.join(CODEC_NAMES)} (docs/codecs.md)."
            )


@runtime_checkable
class Source(Protocol):
    """One source format: ``python -m ingest <name> SRC DEST``.

    Attributes
    ----------
    name, help
        The sub-command and its one-line help.
    examples
        Two or three command lines shown by ``--help``.
    """

    name: str
    help: str
    examples: tuple[str, ...]

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the source's own options to its sub-command."""

    def options_from_args(
        self, args: argparse.Namespace, storage_options: dict[str, Any]
    ) -> SourceOptions:
        """The source's options from parsed arguments; :class:`ArgumentError` if unusable."""

    def plan(self, src: str, dest: str, options: Any) -> list[IngestPlan]:
        """One plan per cube to write (a batch of plates: several); reads metadata only."""

    # Optional: ``add_commands(subparsers)`` adds the source's own sub-commands
    # (``synth-plate``, ``synth-climate``) to ``python -m ingest``.
