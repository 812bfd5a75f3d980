"""The ``arrays`` sub-command and its options, without the planner's imports.

The command line builds its parser from :class:`ArraysSource` alone; planning
(:mod:`.source`) imports xarray and dask when a job runs.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ingest.sources.base import ON_ERROR, ArgumentError, SourceOptions

if TYPE_CHECKING:
    from ingest.plan import IngestPlan

__all__ = ["ArraysOptions", "ArraysSource"]


@dataclass(frozen=True)
class ArraysOptions(SourceOptions):
    """Options of the ``arrays`` source.

    Attributes
    ----------
    batched
        ``True``: each file is a batch along its first axis; ``False``: one sample per
        file; ``"auto"``: one sample per file if every file fits that, else batches.
    samples_per_shard
        Samples per shard (and per write task); default: the most, up to 256, that keep
        a shard of the largest variable within 32 MiB uncompressed.
    """

    batched: bool | Literal["auto"] = "auto"
    samples_per_shard: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batched not in (True, False, "auto"):
            raise ArgumentError(f"batched={self.batched!r}: expected True, False or 'auto'.")
        if self.samples_per_shard is not None and self.samples_per_shard < 1:
            raise ArgumentError(
                f"--samples-per-shard {self.samples_per_shard}: give a count of 1 or more."
            )


class ArraysSource:
    """The ``arrays`` sub-command (see :class:`ingest.sources.base.Source`)."""

    name = "arrays"
    help = "a folder of .npy/.npz/.pt files (a sample or a batch each) -> (sample, ...) cube"
    examples: tuple[str, ...] = (
        "python -m ingest arrays data/samples/ data/samples.zarr",
        "python -m ingest arrays s3://bucket/batches/ s3://bucket/train.zarr --batched",
        "python -m ingest arrays s3://bucket/pt/ out.zarr --samples-per-shard 64 --on-error skip",
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add this source's options to the ``python -m ingest arrays`` parser."""
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument(
            "--batched",
            dest="batched",
            action="store_const",
            const=True,
            default="auto",
            help="each file is a batch of samples along its first axis (default: detected: "
            "one sample per file if all files share their shapes, else batches)",
        )
        mode.add_argument(
            "--one-sample-per-file",
            dest="batched",
            action="store_const",
            const=False,
            help="each file is one sample, whatever the shapes",
        )
        parser.add_argument(
            "--samples-per-shard",
            type=int,
            default=None,
            metavar="N",
            help="samples per shard and write task (default: up to 256, shards <= 32 MiB)",
        )
        parser.add_argument(
            "--on-error",
            choices=ON_ERROR,
            default="fail",
            help="an unreadable or mismatched file stops the job (fail), or its samples are "
            "marked absent in 'present' and it is listed in the quality report (skip)",
        )

    def options_from_args(
        self, args: argparse.Namespace, storage_options: dict[str, Any]
    ) -> ArraysOptions:
        """The options from parsed arguments; :class:`ArgumentError` for unusable values."""
        return ArraysOptions(
            storage_options=storage_options,
            endpoint_url=args.endpoint_url,
            on_error=args.on_error,
            codec=args.codec,
            batched=args.batched,
            samples_per_shard=args.samples_per_shard,
        )

    def plan(self, src: str, dest: str, options: ArraysOptions) -> list[IngestPlan]:
        """One plan: the cube of every array file under ``src``; see :func:`.source.plan`."""
        from ingest.sources.arrays.source import plan

        return [plan(src, dest, options)]
