"""The shipped recipes (``examples/recipes``) on small cubes, against what a plain loop gives.

Cell profiles on a 128x128 plate (one row per cell, then per-well medians),
the torch embedding into a derived cube, and the climate regional means on a
month of a synthetic climate cube with a missing day.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

import cubes
from ingest.cli import main
from tests.conftest import ROOT
from tests.ingest.recipe_texts import plain_loop

RECIPES = ROOT / "examples" / "recipes"


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", RECIPES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(cube: str, dest: Path, recipe: str, *extra: str) -> None:
    argv = ["recipe", cube, str(dest), "--recipe", str(RECIPES / recipe), "--no-progress"]
    assert main([*argv, *extra]) == 0


@pytest.fixture(scope="module")
def plate(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Two wells x two fields of 128x128: a few nuclei per field."""
    root = tmp_path_factory.mktemp("plate128")
    argv = ["synth-plate", str(root / "src"), "--wells", "A01,B02", "--fields", "2"]
    assert main([*argv, "--size", "128"]) == 0
    assert main(["cellpainting", str(root / "src"), str(root / "plate.zarr"), "--no-progress"]) == 0
    return str(root / "plate.zarr")


@pytest.fixture(scope="module")
def january(tmp_path_factory: pytest.TempPathFactory) -> str:
    """January 2000 of a synthetic 8x16 climate, 5 January missing."""
    root = tmp_path_factory.mktemp("january")
    src = root / "src"
    argv = ["synth-climate", str(src), "--grid", "8x16", "--drop-step", "2000-01-05"]
    assert main(argv) == 0
    (root / "urls.txt").write_text(str(src / "model_2000-01.nc") + "\n")
    assert main(["netcdf", str(root / "urls.txt"), str(root / "jan.zarr"), "--no-progress"]) == 0
    return str(root / "jan.zarr")


def test_cell_profiles_give_one_row_per_cell_and_per_well_medians(plate, tmp_path):
    profiles = _module("cell_profiles")
    _run(plate, tmp_path / "cells", "cell_profiles.py")
    cells = pd.read_parquet(tmp_path / "cells")
    pd.testing.assert_frame_equal(cells, plain_loop(plate, profiles.recipe))
    assert len(cells) >= 4 and (cells["area_um2"] >= profiles.MIN_AREA_UM2).all()
    assert (cells["mean_DNA"] > cells["mean_Mito"]).mean() > 0.5  # nuclei: bright in DNA

    _run(plate, tmp_path / "wells", "cell_profiles.py:well", "--unit", "well")
    wells = pd.read_parquet(tmp_path / "wells").set_index("well")
    expected = cells.groupby("well")[["area_um2", "mean_DNA", "mean_ER"]].median()
    pd.testing.assert_frame_equal(wells[expected.columns], expected, check_names=False)
    assert wells["n_cells"].to_dict() == cells.groupby("well").size().to_dict()


def test_the_embedding_recipe_writes_a_well_field_feature_cube(plate, tmp_path):
    embed = _module("embed")
    _run(plate, tmp_path / "embed.zarr", "embed.py")
    derived = cubes.open_cube(str(tmp_path / "embed.zarr"), require_complete=True)
    assert derived["embedding"].dims == ("well", "field", "feature")
    assert derived["embedding"].shape == (2, 2, embed.FEATURES)
    source = cubes.open_cube(plate)
    unit = source[["images", "present"]].sel(well="B02", field=2).load()
    np.testing.assert_allclose(
        derived["embedding"].sel(well="B02", field=2).values,
        embed.recipe(unit)["embedding"].values,
        rtol=1e-5,
    )
    assert derived["present"].values.all()


def test_climate_regional_means_are_cos_lat_weighted_per_present_time_step(january, tmp_path):
    _run(january, tmp_path / "regions", "climate_regions.py", "--threads", "2")
    table = pd.read_parquet(tmp_path / "regions")
    ds = cubes.open_cube(january)
    present = ds["present"].values
    assert len(table) == int(present.sum()) == 30
    assert "2000-01-05" not in " ".join(table["time"])
    weights = np.cos(np.deg2rad(ds["lat"]))
    kept = ds.isel(time=np.flatnonzero(present))
    np.testing.assert_allclose(
        table["T_surf_global"], kept["T_surf"].weighted(weights).mean(("lat", "lon")), rtol=1e-6
    )
    tropics = kept["T"].sel(plev=85000.0).where(abs(kept["lat"]) <= 23.5)
    np.testing.assert_allclose(
        table["T_85000_tropics"], tropics.weighted(weights).mean(("lat", "lon")), rtol=1e-6
    )
