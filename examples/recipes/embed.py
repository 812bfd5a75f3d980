"""A per-field embedding with a tiny torch CNN -> a derived cube ``(well, field, feature)``.

::

    python -m ingest recipe plate.zarr embeddings.zarr --recipe examples/recipes/embed.py
    python -c "import cubes; print(cubes.open_cube('embeddings.zarr'))"

The network's weights come from a fixed seed (stand-in for a trained model:
load yours once per process the same way). Each field is standardised per
channel, downsampled to 64x64 and embedded in ``FEATURES`` numbers.
"""

from __future__ import annotations

import functools
import threading

import numpy as np
import torch
import xarray as xr
from torch import nn

FEATURES = 16
SIZE = 64


_LOCK = threading.Lock()


def model() -> nn.Module:
    """The CNN, built once per process under a lock (threads share it; inference only)."""
    with _LOCK:
        return _build()


@functools.cache
def _build() -> nn.Module:
    torch.manual_seed(0)  # the same weights in every process: fixed seed, built by one thread
    net = nn.Sequential(
        nn.LazyConv2d(16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, FEATURES),
    )
    with torch.no_grad():
        net(torch.zeros(1, 8, SIZE, SIZE))  # materialise the lazy layer
    return net.eval()


def recipe(ds: xr.Dataset) -> xr.Dataset:
    """One field -> ``embedding (feature)``."""
    images = ds["images"].values.astype(np.float32)  # (channel, y, x)
    mean = images.mean(axis=(1, 2), keepdims=True)
    std = images.std(axis=(1, 2), keepdims=True) + 1e-6
    x = torch.from_numpy((images - mean) / std)[None]
    x = nn.functional.interpolate(x, size=(SIZE, SIZE), mode="area")
    if x.shape[1] != 8:  # the network takes 8 channels: pad or cut
        x = nn.functional.pad(x, (0, 0, 0, 0, 0, max(0, 8 - x.shape[1])))[:, :8]
    with torch.no_grad():
        vector = model()(x)[0].numpy()
    return xr.Dataset({"embedding": ("feature", vector)}, coords={"feature": np.arange(FEATURES)})
