"""A CubeLoader's workers stop on close(), on leaving a with block, and at interpreter exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from loaders import CubeBatchDataset

SCRIPT = """
import sys
from loaders import CubeBatchDataset

loader = it = None

def main():
    global loader, it
    data = CubeBatchDataset(sys.argv[1], input_dims={{"y": 32, "x": 32}}, batch_size=2)
    loader = data.loader(num_workers=2)
    it = iter(loader)
    first = next(it)
    {action}
    print("batches", len(loader), "next", loader.state_dict()["batch"], flush=True)

if __name__ == "__main__":
    main()
"""


@pytest.mark.parametrize("action", ["pass", "loader.close()"])
def test_an_abandoned_iteration_leaves_no_leaked_semaphores(local_cube, tmp_path, action):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(SCRIPT.format(action=action)))
    done = subprocess.run(
        [sys.executable, str(script), str(local_cube)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "next 1" in done.stdout  # one batch delivered before the exit
    assert "leaked semaphore" not in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def test_a_closed_loader_continues_where_it_stopped(local_cube):
    data = CubeBatchDataset(str(local_cube), input_dims={"y": 32, "x": 32}, batch_size=3)
    whole = [b["sample"].tolist() for b in data.loader(num_workers=0)]
    with data.loader(num_workers=1) as loader:
        first = next(iter(loader))
        assert loader.dataloader is not None and loader.dataloader._iterator is not None
    assert loader.dataloader._iterator is None  # workers stopped by the with block
    rest = [b["sample"].tolist() for b in loader]  # workers start again, at batch 1
    assert [first["sample"].tolist(), *rest] == whole
