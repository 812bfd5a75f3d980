"""``--keep-bits N``: lossy bit-rounding of climate fields, on request only, said in the attrs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numcodecs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import cubes
from ingest.cli import main
from ingest.codecs import keep_bits
from ingest.sources import ArgumentError
from ingest.sources.netcdf import NetcdfOptions

FLOATS = hnp.arrays(np.float32, st.integers(1, 64), elements=st.floats(width=32))


@settings(max_examples=200, deadline=None)
@given(FLOATS, st.integers(0, 23))
def test_rounding_is_within_half_a_kept_unit(values, bits) -> None:
    rounded = keep_bits(values, bits)
    finite = np.isfinite(values)
    assert rounded.dtype == np.float32
    np.testing.assert_array_equal(rounded[~finite], values[~finite])  # NaN, inf untouched
    x, r = values[finite].astype(np.float64), rounded[finite].astype(np.float64)
    scale = np.maximum(np.abs(x), 2.0**-126)  # subnormals: of the smallest normal number
    assert np.all(np.abs(r - x) <= scale * 2.0 ** -(bits + 1))
    np.testing.assert_array_equal(keep_bits(rounded, bits), rounded)  # idempotent
    below_max = finite & (np.abs(values) < 2.0**127)  # nearer FLT_MAX: kept, not inf
    low = rounded[below_max].view(np.uint32) & ((1 << (23 - bits)) - 1)
    assert not low.any()  # the dropped bits are zero: what compresses


def test_rounding_is_numcodecs_bitround() -> None:
    values = np.random.default_rng(0).normal(size=4096).astype(np.float32) * 300
    for bits in (1, 7, 12, 16):
        expected = numcodecs.BitRound(keepbits=bits).decode(
            numcodecs.BitRound(keepbits=bits).encode(values.copy())
        )
        np.testing.assert_array_equal(keep_bits(values, bits), np.asarray(expected).view("<f4"))


@pytest.fixture(scope="module")
def months(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from ingest.sources.netcdf.synth import write_synth_climate

    root = tmp_path_factory.mktemp("keep-bits")
    return [Path(u) for u in write_synth_climate(str(root), years=1, grid=(16, 32), seed=2).urls]


def _bytes(cube: str, name: str) -> int:
    return sum(p.stat().st_size for p in (Path(cube) / name / "c").rglob("*") if p.is_file())


def test_a_rounded_cube_is_within_the_error_and_says_so(months, tmp_path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for f in months[:2]:
        shutil.copy(f, src / f.name)
    exact, lossy = str(tmp_path / "exact.zarr"), str(tmp_path / "lossy.zarr")
    assert main(["netcdf", str(src), exact, "--no-progress"]) == 0
    assert main(["netcdf", str(src), lossy, "--no-progress", "--keep-bits", "7"]) == 0
    a = cubes.open_cube(exact, require_complete=True).load()
    b = cubes.open_cube(lossy, require_complete=True).load()
    for name in ("T_surf", "q_H2O", "cldfrac", "T"):
        assert b[name].attrs["keep_bits"] == 7 and "keep_bits" not in a[name].attrs
        x, r = a[name].values.astype(np.float64), b[name].values.astype(np.float64)
        np.testing.assert_array_equal(np.isnan(x), np.isnan(r))
        ok = ~np.isnan(x)
        assert np.all(np.abs(r[ok] - x[ok]) <= np.abs(x[ok]) * 2.0**-8)
        assert not np.array_equal(r[ok], x[ok])  # it did round
        if b[f"{name}_mean"].ndim == 0:  # the statistics are of the stored values
            assert float(b[f"{name}_mean"]) == pytest.approx(np.nanmean(r), rel=1e-6)
        assert _bytes(lossy, name) < _bytes(exact, name)


def test_the_rounding_of_a_cube_is_kept(months, capsys, tmp_path) -> None:
    src, dest = tmp_path / "src", str(tmp_path / "cube.zarr")
    src.mkdir()
    shutil.copy(months[0], src / months[0].name)
    args = ["netcdf", str(src), dest, "--no-progress", "--steps-per-shard", "8"]
    assert main([*args, "--keep-bits", "10"]) == 0
    shutil.copy(months[1], src / months[1].name)
    for other, said in ((["--keep-bits", "12"], "--keep-bits 12"), ([], "no --keep-bits")):
        assert main([*args, *other]) == 2  # an append of other rounding: refused
        err = capsys.readouterr().err
        assert f"was written with --keep-bits 10; this run has {said}." in err
        assert "--overwrite" in err
    assert cubes.open_cube(dest).sizes["time"] == 31
    assert main([*args, "--keep-bits", "10"]) == 0
    assert cubes.open_cube(dest, require_complete=True).sizes["time"] == 31 + 28


def test_keep_bits_is_checked(capsys, months, tmp_path) -> None:
    with pytest.raises(ArgumentError, match="--keep-bits 24: a float32 has 23 mantissa bits"):
        NetcdfOptions(keep_bits=24)
    assert main(["netcdf", str(months[0]), str(tmp_path / "c.zarr"), "--keep-bits", "-1"]) == 2
    assert "--keep-bits: got '-1'; expected a whole number of at least 0" in capsys.readouterr().err
