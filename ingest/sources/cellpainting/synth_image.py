"""The pixels of a synthetic Cell Painting field: cells, light and camera as a Phenix sees them.

Cells are random ellipses (a nucleus with nucleoli, a cytoplasm) painted into
the five stains (nuclei in DNA, nucleoli in RNA, perinuclear ER, punctate
mitochondria, membranes in AGP) and three brightfield focus planes. They are
then lit and recorded as the real images of ``shared/real-data`` show (the six
Phenix TIFFs of pe2loaddata, 1080², binning 2; measured in ``docs/codecs.md``):

- a camera offset of ~100 ADU and a gain of ~0.4 ADU per photo-electron: the
  shot noise's variance is ``GAIN`` x the signal (a Gaussian of that variance:
  every pixel holds hundreds of electrons), plus ~2 ADU of read noise;
- each stain's own background (the real images' medians: 195 to 850 ADU above
  the offset; brightfield ~21,000), lit unevenly: vignetting about an
  off-centre point and out-of-focus haze at two scales;
- cells whose brightness spreads over the real images' range (lognormal per
  cell; the stains' 99.9th percentiles reach 17,000-37,000 ADU).

So tuned, a synthetic field compresses as the real images do, within 10 % under
every codec of ``ingest.codecs`` (``tests/ingest/test_synth_compression.py``);
the Poisson noise of unit gain and flat backgrounds of before did not (byte
shuffle favoured them, bitshuffle the real images). Blurs share their FFTs
(``scipy.fft``): a 1080² field takes about a third of a CPU-second.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import numpy as np
import scipy.fft

from ingest.sources.cellpainting.jump import SOURCE4_CHANNELS

__all__ = ["synth_field"]

OFFSET = 100.0  # ADU of a dark pixel
GAIN = 0.45  # ADU per photo-electron
READ_NOISE = 2.0  # ADU
BACKGROUND = {"Mito": 620.0, "AGP": 850.0, "RNA": 195.0, "ER": 545.0, "DNA": 340.0}
CELL_SIGNAL = {"Mito": 18000.0, "AGP": 15000.0, "RNA": 12000.0, "ER": 20000.0, "DNA": 24000.0}
BRIGHTFIELD = 20900.0  # ADU above the offset
BRIGHTFIELD_CELLS = 1500.0  # contrast of cell edges in brightfield, ADU
VIGNETTE = 0.2  # light lost in the corners
HAZE = (0.08, 0.03)  # out-of-focus haze: relative amplitude at a large and a small scale
CELL_AREA = 8000  # pixels per cell: ~150 cells in a 1080² field
FOCUS = {"HighZBF": 3.0, "LowZBF": 2.0, "Brightfield": 0.6}  # blur of the brightfield planes


def synth_field(size: int, *, seed: int, row: int, column: int, field: int) -> np.ndarray:
    """The 8 channels of one field as ``(8, size, size)`` uint16, in channel-number order.

    A pure function of its arguments.

    Examples
    --------
    >>> synth_field(64, seed=0, row=1, column=1, field=1).shape
    (8, 64, 64)
    """
    rng = np.random.default_rng([seed, row, column, field])
    nuclei, cyto, nucleoli = _paint_cells(rng, size)
    signals = _stains(rng, nuclei, cyto, nucleoli)
    vignette, haze = _light(rng, size)
    edges = _Spectrum(cyto > 0)  # brightfield: cell outlines, at three focus depths
    out = np.empty((len(SOURCE4_CHANNELS), size, size), np.uint16)
    for i, name in enumerate(SOURCE4_CHANNELS.values()):
        if name in signals:
            mean = vignette * (BACKGROUND[name] * haze + CELL_SIGNAL[name] * signals[name])
        else:
            bf = edges.blur((2.0, FOCUS[name]), minus=(5.0, FOCUS[name]))
            light = 1 + 0.3 * (vignette - 1)  # transmitted light: less vignetting
            mean = light * (BRIGHTFIELD * (1 + 0.1 * (haze - 1)) + BRIGHTFIELD_CELLS * bf)
        out[i] = _camera(rng, mean)
    return out


def _paint_cells(rng: np.random.Generator, size: int) -> tuple[np.ndarray, ...]:
    """Nuclei (by brightness), cytoplasm (less the nuclei) and nucleoli, float32 images."""
    nuclei = np.zeros((size, size), np.float32)
    cyto = np.zeros((size, size), np.float32)
    nucleoli = np.zeros((size, size), np.float32)
    for cy, cx, r_nuc, r_cell, angle, bright in _cells(rng, size):
        _stamp(nuclei, cy, cx, r_nuc, r_nuc * 0.8, angle, bright)
        _stamp(cyto, cy, cx, r_cell, r_cell * 0.75, angle + 0.3, bright)
        for _ in range(rng.integers(1, 4)):
            dy, dx = rng.normal(0, r_nuc * 0.35, 2)
            _stamp(nucleoli, cy + dy, cx + dx, r_nuc * 0.22, r_nuc * 0.2, 0.0, bright)
    cyto -= (nuclei > 0) * 0.6 * cyto
    return nuclei, cyto, nucleoli


def _stains(
    rng: np.random.Generator, nuclei: np.ndarray, cyto: np.ndarray, nucleoli: np.ndarray
) -> dict[str, np.ndarray]:
    """Each stain's signal (about 0..1 x a cell's brightness), blurred by the optics."""
    size = nuclei.shape[0]
    cyto_f, nuclei_f = _Spectrum(cyto), _Spectrum(nuclei)
    membrane = np.clip(cyto_f.blur((1.0,), minus=(3.0,)), 0, None) * 4
    texture = _Spectrum(rng.random((size, size), dtype=np.float32)).blur((1.2,))
    texture = (texture - texture.min()) / (np.ptp(texture) + 1e-6)
    dots = (rng.random((size, size), dtype=np.float32) > 0.97).astype(np.float32)
    puncta = _Spectrum(dots).blur((0.8,)) * 6
    perinuclear = np.clip(_Spectrum(nuclei > 0).blur((6.0,)), 0, 1) * cyto * 2.0
    signals = {
        "Mito": cyto * (0.3 + puncta * texture),
        "AGP": membrane + 0.25 * cyto * texture,
        "RNA": 0.35 * cyto * texture + 0.5 * nuclei_f.blur((1.0,)) / 3 + 1.5 * nucleoli,
        "ER": perinuclear * (0.4 + 0.8 * texture),
        "DNA": nuclei_f.blur((1.5,)) * (0.75 + 0.25 * texture),
    }
    return {name: _Spectrum(s).blur((0.7,)) for name, s in signals.items()}  # the optics


def _light(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Vignetting about an off-centre point, and out-of-focus haze (about 1, two scales)."""
    yy, xx = np.ogrid[0:size, 0:size]
    cy, cx = rng.uniform(0.35, 0.65, 2) * size
    vignette = 1 - VIGNETTE * ((yy - cy) ** 2 + (xx - cx) ** 2) / (size * size / 2)
    white = _Spectrum(rng.standard_normal((size, size), dtype=np.float32))
    haze = np.ones((size, size), np.float32)
    for amplitude, sigma in zip(HAZE, (size / 12, 2.0), strict=True):
        part = white.blur((sigma,))
        haze += amplitude * part / (part.std() + 1e-6)
    return vignette.astype(np.float32), haze


def _camera(rng: np.random.Generator, mean: np.ndarray) -> np.ndarray:
    """What the camera records of ``mean`` ADU of light above its offset: uint16 with shot
    and read noise."""
    sd = np.sqrt(GAIN * np.maximum(mean, 0) + READ_NOISE**2)
    noisy = OFFSET + mean + sd * rng.standard_normal(mean.shape, dtype=np.float32)
    return np.clip(np.rint(noisy), 0, 65535).astype(np.uint16)


def _cells(rng: np.random.Generator, size: int) -> Iterator[tuple[float, ...]]:
    """Random cells: centre, nucleus and cell radii (px at 0.6 µm), angle, brightness."""
    for _ in range(max(1, rng.poisson(size * size / CELL_AREA))):
        r_nuc = rng.uniform(6, 11)
        yield (
            rng.uniform(0, size),
            rng.uniform(0, size),
            r_nuc,
            r_nuc * rng.uniform(2.0, 3.2),
            rng.uniform(0, np.pi),
            rng.lognormal(0, 0.5),
        )


def _stamp(
    image: np.ndarray, cy: float, cx: float, ry: float, rx: float, angle: float, value: float
) -> None:
    """Add a filled rotated ellipse (max with what is there) to ``image`` in place."""
    reach = int(np.ceil(max(ry, rx))) + 1
    y0, y1 = max(int(cy) - reach, 0), min(int(cy) + reach + 1, image.shape[0])
    x0, x1 = max(int(cx) - reach, 0), min(int(cx) + reach + 1, image.shape[1])
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1]
    dy, dx = yy - cy, xx - cx
    cos, sin = np.cos(angle), np.sin(angle)
    inside = ((dy * cos + dx * sin) / ry) ** 2 + ((dx * cos - dy * sin) / rx) ** 2 <= 1.0
    region = image[y0:y1, x0:x1]
    np.maximum(region, inside * np.float32(value), out=region)


class _Spectrum:
    """An image's 2-D FFT, computed once for all its Gaussian blurs (periodic edges)."""

    def __init__(self, image: np.ndarray) -> None:
        self.shape = image.shape
        self.spectrum = scipy.fft.rfft2(image.astype(np.float32))

    def blur(self, sigmas: tuple[float, ...], minus: tuple[float, ...] | None = None) -> np.ndarray:
        """The image blurred by Gaussians of ``sigmas`` in turn, less its blur by ``minus``."""
        transfer = _transfer(self.shape, sigmas)
        if minus is not None:
            transfer = transfer - _transfer(self.shape, minus)
        out = scipy.fft.irfft2(self.spectrum * transfer, s=self.shape)
        return np.asarray(out, dtype=np.float32)


@lru_cache(maxsize=64)
def _transfer(shape: tuple[int, ...], sigmas: tuple[float, ...]) -> np.ndarray:
    """The FFT of Gaussian blurs of ``sigmas`` (px) in turn: one of sqrt(sum of squares)."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    var = sum(s * s for s in sigmas)
    return np.exp(-2 * np.pi**2 * var * (fy**2 + fx**2)).astype(np.float32)
