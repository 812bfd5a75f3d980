"""A loader's resume state: its position, and what a resuming loader must match.

``CubeLoader.state_dict()`` returns :func:`position_state`;
``load_state_dict()`` checks a saved one with :func:`check_state`, which names
what differs (the cubes, variables, channels, windows; the seed, batch size,
world size …) rather than resuming on other samples.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from cubes.errors import SchemaError

if TYPE_CHECKING:
    from loaders.dataset import CubeBatchDataset

__all__ = ["STATE_FORMAT", "check_state", "position_state"]

STATE_FORMAT = 1
# What a state must share with the loader it resumes: the same samples in the same order.
_MUST_MATCH = (
    "dataset",
    "samples",
    "seed",
    "shuffle",
    "shuffle_buffer",
    "batch_size",
    "world_size",
    "drop_last",
    "uneven",
)


def position_state(dataset: CubeBatchDataset, epoch: int, batch: int) -> dict[str, Any]:
    """A resumable state: the position and what the resuming loader must match."""
    return {
        "format": STATE_FORMAT,
        "epoch": epoch,
        "batch": batch,
        "batches": len(dataset),
        "dataset": dataset.fingerprint(),
        "samples": dataset.n_samples,
        "seed": dataset.seed,
        "shuffle": dataset.shuffle,
        "shuffle_buffer": dataset.shuffle_buffer,
        "batch_size": dataset.batch_size,
        "world_size": dataset.world_size,
        "rank": dataset.rank,
        "drop_last": dataset.drop_last,
        "uneven": dataset.uneven,
        "config": json.loads(json.dumps(dataset.config())),
    }


def check_state(dataset: CubeBatchDataset, state: Mapping[str, Any]) -> None:
    """Raise :class:`SchemaError` naming what differs when ``state`` is not for ``dataset``."""
    mine = position_state(dataset, 0, 0)
    missing = [k for k in ("epoch", "batch", *_MUST_MATCH) if k not in state]
    if missing or state.get("format") != STATE_FORMAT:
        raise SchemaError(
            f"Not a CubeLoader state (format {state.get('format')!r}, missing {missing}); "
            "pass what CubeLoader.state_dict() returned."
        )
    saved_config, my_config = state.get("config"), mine["config"]
    if isinstance(saved_config, Mapping) and saved_config != my_config:
        keys = sorted(set(saved_config) | set(my_config))
        differ = [k for k in keys if saved_config.get(k) != my_config.get(k)]
        saved = "; ".join(f"{k}={saved_config.get(k)!r}" for k in differ)
        now = "; ".join(f"{k}={my_config.get(k)!r}" for k in differ)
        raise SchemaError(
            f"Cannot resume: the state is for another dataset ({saved}); this one has {now}. "
            "Build the dataset with the same cubes, variables, channels and windows, or start "
            "afresh without load_state_dict()."
        )
    differ = [k for k in _MUST_MATCH if state[k] != mine[k]]
    if differ:
        saved = ", ".join(f"{k}={state[k]!r}" for k in differ)
        now = ", ".join(f"{k}={mine[k]!r}" for k in differ)
        raise SchemaError(
            f"Cannot resume: the state was saved with {saved}; this loader has {now}. Build the "
            "dataset with the same cubes, channels, windows, seed, shuffle, batch_size, "
            "drop_last, uneven and world_size, or start afresh without load_state_dict()."
        )
    if not 0 <= int(state["batch"]) <= len(dataset) or int(state["epoch"]) < 0:
        raise SchemaError(
            f"Cannot resume at epoch {state['epoch']}, batch {state['batch']}: an epoch has "
            f"{len(dataset)} batches on this rank."
        )
