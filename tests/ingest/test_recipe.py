"""``python -m ingest recipe`` on local cubes: units, results, bad recipes, shipped recipes.

The S3 tests (``test_recipe_s3.py``) cover array jobs, kills and re-runs; here
the recipe's outputs are compared with what a plain loop over the cube gives,
and every mistake a user can make with a recipe must name the file or the unit.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import cubes
from ingest.cli import main
from loaders import CubeBatchDataset
from tests.conftest import ROOT
from tests.ingest.recipe_texts import LIGHT, light_table, plain_loop, write_recipe

RECIPES = ROOT / "examples" / "recipes"

PROFILE = """
import numpy as np
import xarray as xr


def recipe(ds):
    images = ds["images"].values.astype(np.float32)
    return xr.Dataset(
        {"profile": ("stain", images.mean(axis=(1, 2))), "peak": images.max()},
        coords={"stain": [str(c) for c in ds["channel"].values]},
    )
"""


def _run(cube: Path | str, dest: Path | str, recipe: Path | str, *extra: str) -> int:
    return main(["recipe", str(cube), str(dest), "--recipe", str(recipe), "--no-progress", *extra])


def test_the_table_equals_a_plain_loop_and_records_its_provenance(local_cube, tmp_path):
    recipe = write_recipe(tmp_path, LIGHT)
    dest = tmp_path / "out"
    assert _run(local_cube, dest, recipe) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(dest), plain_loop(str(local_cube), light_table))
    manifest = json.loads((dest / "_recipe" / "manifest.json").read_text())
    assert manifest["recipe_sha256"] == hashlib.sha256(recipe.read_bytes()).hexdigest()
    assert manifest["function"] == "recipe" and manifest["unit_dims"] == ["well", "field"]
    assert len(manifest["source_fingerprint"]) == 64


def test_arrays_become_a_cube_aligned_with_the_source_that_the_loader_reads(local_cube, tmp_path):
    recipe = write_recipe(tmp_path, PROFILE)
    dest = tmp_path / "profiles.zarr"
    assert _run(local_cube, dest, f"{recipe}:recipe") == 0
    source = cubes.open_cube(str(local_cube))
    derived = cubes.open_cube(str(dest), require_complete=True)
    assert dict(derived["profile"].sizes) == {"well": 3, "field": 2, "stain": 8}
    merged = xr.merge([source, derived[["profile", "peak"]]], compat="no_conflicts")
    for well in source["well"].values:
        for field in source["field"].values:
            images = source["images"].sel(well=well, field=field).values.astype(np.float32)
            np.testing.assert_allclose(
                merged["profile"].sel(well=well, field=field).values, images.mean(axis=(1, 2))
            )
            assert merged["peak"].sel(well=well, field=field).item() == images.max()
    np.testing.assert_array_equal(merged["row"].values, source["row"].values)
    with CubeBatchDataset(str(dest), variables=["profile"], batch_size=6) as data:
        batch = data[0]
    order = [(w, f) for w in range(3) for f in range(2)]
    expected = np.stack([derived["profile"].values[w, f] for w, f in order])
    np.testing.assert_allclose(batch["inputs"].numpy().reshape(6, -1), expected)


def test_a_coarser_unit_is_a_whole_well_with_all_its_fields(local_cube, tmp_path):
    recipe = write_recipe(
        tmp_path,
        """
        import pandas as pd

        def recipe(ds):
            return pd.DataFrame({"fields": [ds.sizes["field"]], "dna": [
                float(ds["images"].sel(channel="DNA").mean())]})
        """,
    )
    dest = tmp_path / "wells"
    assert _run(local_cube, dest, recipe, "--unit", "well") == 0
    table = pd.read_parquet(dest)
    source = cubes.open_cube(str(local_cube))
    assert table["well"].tolist() == [str(w) for w in source["well"].values]
    assert table["fields"].tolist() == [2, 2, 2]
    expected = source["images"].sel(channel="DNA").astype("float64").mean(("field", "y", "x"))
    np.testing.assert_allclose(table["dna"], expected.values)


BAD = {
    "syntax": ("def recipe(ds)\n    return 1\n", "", r"recipe\.py has a syntax error at line 1"),
    "missing": (
        "def other(ds):\n    return None\n",
        "",
        r"defines no function 'recipe' "
        r"\(it defines: other\)\. Name one with --recipe",
    ),
    "import": (
        "import not_a_module_here\n",
        "",
        r"Importing the recipe .*recipe\.py raised "
        r"ModuleNotFoundError",
    ),
    "type": (
        "def recipe(ds):\n    return [1, 2]\n",
        "--threads=1",
        r"recipe\.py:recipe on unit well=A01, field=1: the recipe returned list; return a "
        r"pandas\.DataFrame",
    ),
    "columns": (
        "import pandas as pd\n\ndef recipe(ds):\n"
        "    name = 'a' if str(ds.well.item()) == 'A01' else 'b'\n"
        "    return pd.DataFrame({name: [1.0]})\n",
        "--threads=1",
        r"returned a table with columns \['b'\] for unit well=A02, field=1, but a table with "
        r"columns \['a'\] for unit well=A01, field=1\. A recipe must return the same columns",
    ),
    "unit column": (
        "import pandas as pd\n\ndef recipe(ds):\n    return pd.DataFrame({'well': [1]})\n",
        "--threads=1",
        r"on unit well=A01, field=1: the recipe's table has columns \['well'\]",
    ),
    "raises": (
        "def recipe(ds):\n    return 1 / 0\n",
        "--threads=1",
        r"on unit well=A01, field=1 raised ZeroDivisionError: division by zero \(.*recipe\.py "
        r"line 2\)\. Fix the recipe, or pass --on-error skip",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_recipe_gets_a_one_line_message_naming_the_file_or_the_unit(
    case, local_cube, tmp_path, capsys
):
    text, extra, match = BAD[case]
    recipe = write_recipe(tmp_path, text)
    dest = tmp_path / "out"
    assert _run(local_cube, dest, recipe, *([extra] if extra else [])) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert re.search(match, err), err
    assert not (dest / "_recipe" / "report.json").exists()


def test_a_missing_recipe_file_and_a_unit_dim_the_cube_lacks_are_refused(
    local_cube, tmp_path, capsys
):
    assert _run(local_cube, tmp_path / "o", tmp_path / "nope.py") == 2
    assert "No recipe file at" in capsys.readouterr().err
    recipe = write_recipe(tmp_path, LIGHT)
    assert _run(local_cube, tmp_path / "o", recipe, "--unit", "plate") == 2
    err = capsys.readouterr().err
    assert "--unit plate" in err and "(well, field)" in err and not (tmp_path / "o").exists()


def test_overwrite_is_refused_in_an_array_jobs_slice(local_cube, tmp_path, capsys):
    recipe = write_recipe(tmp_path, LIGHT)
    argv = ["--task-index", "0", "--task-count", "2", "--overwrite"]
    assert _run(local_cube, tmp_path / "out", recipe, *argv) == 2
    assert "each slice would delete what the others wrote" in capsys.readouterr().err


def test_a_changed_cube_or_a_dest_holding_something_else_is_refused(
    local_cube, local_plate, tmp_path, capsys
):
    cube = tmp_path / "plate.zarr"
    shutil.copytree(local_cube, cube)
    recipe = write_recipe(tmp_path, LIGHT)
    assert _run(cube, tmp_path / "out", recipe) == 0
    assert main(["cellpainting", str(local_plate), str(cube), "--overwrite", "--no-progress"]) == 0
    assert _run(cube, tmp_path / "out", recipe) == 2
    err = capsys.readouterr().err
    assert "is not the one the results came from" in err and "--overwrite" in err
    assert _run(cube, tmp_path / "out", recipe, "--overwrite") == 0

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert _run(cube, other, recipe) == 2
    assert "already holds notes.txt, not a recipe's output" in capsys.readouterr().err
    assert (other / "notes.txt").read_text() == "mine"
