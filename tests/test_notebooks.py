"""The notebooks run top to bottom on small data, as stored (without outputs)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))

# What each notebook must print: proof that it ran its steps, not just started.
EXPECTED = {
    "quickstart.ipynb": ("samples,", "(8, 3, 64, 64)"),
    "climate.ipynb": ("missing steps: ['2000-03-10", "T per level:", "inputs (8, 2, 3, 16, 16)"),
}


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "stored outputs"
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no image shown"
    text = "".join(o.get("text", "") for o in outputs)
    for expected in EXPECTED[path.name]:
        assert expected in text, expected


def test_there_is_a_notebook():
    assert NOTEBOOKS, "notebooks/ holds no notebook"
