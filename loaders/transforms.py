"""Per-sample transforms, run in the reading threads of each worker, before collation.

A sample is a ``(C, H, W)`` float32 numpy array. :class:`SampleTransforms`
applies, in this order:

1. the crop (done by the read itself: only the crop's pixels are read);
2. CLAHE (``clahe=True``), per channel, on the channel scaled to ``[0, 1]``;
3. per-channel normalisation ``(x - mean) / std`` (``normalize=True``);
4. the user's ``transform(sample) -> sample``.

:func:`estimate_statistics` computes the per-channel mean and standard
deviation from a few fields when a cube does not store them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

__all__ = ["STATS_FIELDS", "SampleTransforms", "clahe", "estimate_statistics", "require_clahe"]

logger = logging.getLogger(__name__)

STATS_FIELDS = 16
"""Fields read per cube to estimate the statistics a cube lacks."""

Transform = Callable[[np.ndarray], np.ndarray]


def require_clahe() -> Callable[..., np.ndarray]:
    """``skimage.exposure.equalize_adapthist``, or an ImportError that says how to install it."""
    try:
        from skimage.exposure import equalize_adapthist
    except ImportError as exc:
        raise ImportError(
            "clahe=True needs scikit-image, which is not installed. Install it with "
            "`pip install cellcubes[clahe]` (or `pip install scikit-image`), or pass clahe=False."
        ) from exc
    return equalize_adapthist  # type: ignore[no-any-return]


def clahe(sample: np.ndarray) -> np.ndarray:
    """CLAHE of each channel of a ``(C, H, W)`` sample; float32 in ``[0, 1]``.

    Each channel is scaled to ``[0, 1]`` by its own minimum and maximum (a
    constant channel becomes 0), then equalised with
    :func:`skimage.exposure.equalize_adapthist` (default kernel and clip limit).
    """
    equalize = require_clahe()
    out = np.empty(sample.shape, dtype=np.float32)
    for c, channel in enumerate(sample):
        lo, hi = float(channel.min()), float(channel.max())
        if hi <= lo:
            out[c] = 0.0
            continue
        out[c] = equalize((channel - lo) / (hi - lo))
    return out


@dataclass(frozen=True)
class SampleTransforms:
    """CLAHE → normalise → user transform, for one sample. Picklable if ``user`` is."""

    clahe: bool = False
    normalize: bool = False
    user: Transform | None = None

    def __call__(
        self, sample: np.ndarray, mean: np.ndarray | None, std: np.ndarray | None
    ) -> np.ndarray:
        if self.clahe:
            sample = clahe(sample)
        if self.normalize and mean is not None and std is not None:
            sample -= mean[:, None, None]
            sample /= std[:, None, None]
        if self.user is not None:
            sample = np.asarray(self.user(sample))
        return sample


def estimate_statistics(
    samples: Iterable[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation over the present channels of some fields.

    Parameters
    ----------
    samples
        ``(pixels (C, H, W), present (C,))`` per field.

    Returns
    -------
    mean, std
        float64 ``(C,)``. A channel never present gets mean 0 and std 1; a
        constant channel gets std 1 (so that dividing by it is harmless).
    """
    n = mean = m2 = None  # combined count, mean and sum of squared deviations (Chan et al.)
    for pixels, present in samples:
        values = pixels.astype(np.float64).reshape(len(pixels), -1)
        k = np.where(present, values.shape[1], 0).astype(np.float64)
        mu = np.where(present, values.mean(axis=1), 0.0)
        sq = np.where(present, values.var(axis=1) * values.shape[1], 0.0)
        if n is None or mean is None or m2 is None:
            n, mean, m2 = k, mu, sq
            continue
        both = np.maximum(n + k, 1.0)
        delta = mu - mean
        m2 = m2 + sq + delta**2 * n * k / both
        mean = mean + delta * k / both
        n = n + k
    if n is None or mean is None or m2 is None:
        raise ValueError("estimate_statistics needs at least one field")
    std = np.sqrt(np.where(n > 0, m2 / np.maximum(n, 1.0), 1.0))
    return np.where(n > 0, mean, 0.0), np.where(std > 0, std, 1.0)


def pick_fields(n: int, count: int = STATS_FIELDS) -> np.ndarray:
    """``min(n, count)`` positions in ``0 .. n-1``, evenly spread (deterministic)."""
    return np.unique(np.linspace(0, n - 1, min(n, count)).round().astype(np.int64))
