"""Undoing :class:`~loaders.dataset.CubeBatchDataset`'s normalisation, for predictions.

:func:`channel_statistics` finds the mean and std of the channels a tensor
holds (the targets', then the inputs', by variable or label), per cube;
:func:`denormalize` applies them along the channel axis, per sample's cube.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from cubes.errors import SchemaError
from loaders._samples import CubeInfo
from loaders._space import Field, Space

__all__ = ["channel_statistics", "denormalize"]

Values = torch.Tensor | np.ndarray


def _known(stat: np.ndarray | None) -> np.ndarray:
    assert stat is not None  # set for every cube when normalising
    return stat


def channel_statistics(
    space: Space,
    cubes: Sequence[CubeInfo],
    mode: str | None,
    variables: Sequence[str] | None,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(cubes, C)`` mean and std of the channels ``variables`` names, and whether targets'."""
    if mode is None:
        raise SchemaError("denormalize(): this dataset does not normalise (normalize=False).")
    use_targets = bool(space.targets) and mode == "all"
    if variables is None and space.targets and not use_targets:
        raise SchemaError(
            "denormalize(): the targets are not normalised (normalize='inputs'); name the "
            "input channels to undo with variables=[...]."
        )
    groups: list[tuple[tuple[Field, ...], bool]] = [(space.targets, True)] if use_targets else []
    groups.append((space.inputs, False))
    wanted = (
        None
        if variables is None
        else [variables]
        if isinstance(variables, str)
        else list(variables)
    )
    for fields, targets in groups:
        picked = [
            c
            for c, f in enumerate(fields)
            if wanted is None or f.variable in wanted or f.label in wanted
        ]
        found = {f.variable for f in fields} | {f.label for f in fields}
        if picked and (wanted is None or all(v in found for v in wanted)):
            mean = np.stack([_known(c.target_mean if targets else c.mean) for c in cubes])
            std = np.stack([_known(c.target_std if targets else c.std) for c in cubes])
            return mean[:, picked], std[:, picked], targets
    have = list(dict.fromkeys(f.label for fields, _ in groups for f in fields))
    raise SchemaError(f"denormalize(variables={wanted}): not among the normalised channels {have}.")


def denormalize(
    values: Values,
    mean: np.ndarray,
    std: np.ndarray,
    *,
    trailing: int,
    cube: int | torch.Tensor | np.ndarray,
) -> Values:
    """``values * std + mean`` along the channel axis, the one before ``trailing`` dims."""
    channels = mean.shape[-1]
    axis = values.ndim - 1 - trailing
    if axis < 0 or values.shape[axis] != channels:
        raise SchemaError(
            f"denormalize(): values of shape {tuple(values.shape)} have no channel axis of "
            f"{channels} before the {trailing} sample dims; give (..., C, *sample shape)."
        )
    positions = np.asarray(cube.cpu() if isinstance(cube, torch.Tensor) else cube)
    m, s = mean[positions], std[positions]  # (C,) or (N, C)
    shape = [1] * values.ndim
    if m.ndim == 2:
        shape[0] = m.shape[0]
    shape[axis] = channels
    if isinstance(values, torch.Tensor):
        mt = torch.as_tensor(m.reshape(shape), dtype=values.dtype, device=values.device)
        st = torch.as_tensor(s.reshape(shape), dtype=values.dtype, device=values.device)
        return values * st + mt
    dtype = values.dtype
    return values * s.reshape(shape).astype(dtype) + m.reshape(shape).astype(dtype)
