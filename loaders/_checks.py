"""Validation of CubeBatchDataset's arguments: each error names the argument and the remedy."""

from __future__ import annotations

import numpy as np
import torch

from cubes.errors import SchemaError
from loaders import order

__all__ = ["check_crop", "check_epoch", "check_normalize", "check_numbers", "distributed"]


def distributed(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is None and world_size is None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    rank = 0 if rank is None else rank
    world_size = 1 if world_size is None else world_size
    if world_size < 1:
        raise SchemaError(f"world_size={world_size}: give the number of ranks, 1 or more.")
    if not 0 <= rank < world_size:
        raise SchemaError(
            f"rank={rank} with world_size={world_size}: rank must be in 0 .. {world_size - 1}. "
            "Pass the process's rank in the job (or initialise torch.distributed first)."
        )
    return rank, world_size


def check_numbers(
    batch_size: int,
    seed: int,
    shuffle_buffer: int | None,
    uneven: str,
    threads: int,
    memory_cache_mb: float,
) -> None:
    if batch_size < 1:
        raise SchemaError(f"batch_size must be at least 1, not {batch_size}.")
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise SchemaError(f"seed={seed!r}: give a non-negative integer.")
    if shuffle_buffer is not None and shuffle_buffer < 1:
        raise SchemaError(
            f"shuffle_buffer={shuffle_buffer}: give a number of samples (1 or more), or None "
            "for 4 * batch_size."
        )
    if uneven not in order.UNEVEN:
        raise SchemaError(
            f"uneven={uneven!r}: give 'pad' (repeat samples so every rank has as many "
            "batches) or 'drop' (drop the last batches)."
        )
    if threads < 1:
        raise SchemaError(f"threads={threads}: give 1 or more concurrent reads.")
    if memory_cache_mb < 0:
        raise SchemaError(f"memory_cache_mb={memory_cache_mb}: give a size in MiB, or 0 for none.")


def check_epoch(epoch: int) -> int:
    if not isinstance(epoch, int | np.integer) or epoch < 0:
        raise SchemaError(f"epoch={epoch!r}: give a non-negative integer.")
    return int(epoch)


NORMALIZE = {False: None, True: "all", "all": "all", "inputs": "inputs"}


def check_normalize(normalize: bool | str) -> str | None:
    """``None`` (no normalisation), ``"all"`` (inputs and targets) or ``"inputs"``."""
    if isinstance(normalize, bool | str) and normalize in NORMALIZE:
        return NORMALIZE[normalize]
    raise SchemaError(
        f"normalize={normalize!r}: give True (inputs and targets), 'inputs' (inputs only) or False."
    )


def check_crop(crop: dict[str, int] | None, window: dict[str, int]) -> dict[str, int] | None:
    if crop is None:
        return None
    unknown = [d for d in crop if d not in window]
    if unknown:
        raise SchemaError(f"random_crop has {unknown}; crop along {list(window)} only.")
    size = {d: int(crop.get(d, window[d])) for d in window}
    for dim in window:
        if not 1 <= size[dim] <= window[dim]:
            raise SchemaError(
                f"random_crop['{dim}'] = {size[dim]}, but each sample's window is "
                f"{window[dim]} pixels along '{dim}' (input_dims); give a crop of 1 to "
                f"{window[dim]}, or a larger input_dims."
            )
    return size
