"""``python -m cubes`` starts without xarray, pandas, dask, zarr (issue 13): imports, not time."""

from __future__ import annotations

import pytest

from tests.helpers import HEAVY_MODULES, imported_packages


@pytest.mark.parametrize("args", [("--help",), ("ls", "--help"), ("preview", "--help")])
def test_help_imports_no_heavy_library(args: tuple[str, ...]) -> None:
    imported = imported_packages("-m", "cubes", *args)
    assert "cubes" in imported and "argparse" in imported
    assert not imported & set(HEAVY_MODULES), sorted(imported & set(HEAVY_MODULES))


def test_import_cubes_is_light_until_open_cube_is_used() -> None:
    imported = imported_packages("-c", "import cubes; cubes.CubeError")
    assert "xarray" not in imported
    imported = imported_packages("-c", "import cubes; cubes.open_cube")
    assert "xarray" in imported
