"""The contract every source passes, as zarr's ``StoreTests``: subclass :class:`SourceContract`.

A subclass names its source and says how to make a small input of it and how to
spoil one input file; the tests here then check what the writer relies on:
plans pickle, tasks own disjoint whole shards, planning is deterministic, a bad
input is an error naming the file, a run killed with SIGKILL and run again equals
one run, and array slices + ``finalize`` equal one run.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

import cubes
from ingest.journal import journal_url
from ingest.sources import SOURCES
from tests.conftest import ROOT, run_cli


class SourceContract:
    """Mixin of contract tests; a subclass sets :attr:`name` and implements the hooks."""

    name: str = ""
    extra_args: tuple[str, ...] = ()
    keeps_journal = False  # appendable cubes keep theirs: the ledger of per-task statistics

    # --- hooks ---------------------------------------------------------------------------

    def make_input(self, root: Path) -> str:
        """Write a small input under ``root``; return SRC."""
        raise NotImplementedError

    def options(self) -> Any:
        """The source's options for the input of :meth:`make_input`."""
        raise NotImplementedError

    def spoil(self, src: str) -> str:
        """Make one input unreadable; return the name the error must quote."""
        raise NotImplementedError

    # --- the contract --------------------------------------------------------------------

    def _plans(self, tmp_path: Path) -> list[Any]:
        src = self.make_input(tmp_path / "src")
        return SOURCES[self.name].plan(src, str(tmp_path / "cube.zarr"), self.options())

    def test_plans_pickle(self, tmp_path: Path) -> None:
        for plan in self._plans(tmp_path):
            again = pickle.loads(pickle.dumps(plan))
            assert again.fingerprint == plan.fingerprint
            assert [t.index for t in again.tasks] == [t.index for t in plan.tasks]

    def test_tasks_own_disjoint_whole_shards(self, tmp_path: Path) -> None:
        for plan in self._plans(tmp_path):
            assert plan.tasks, "a plan with no task"
            for name in plan.variables:
                shards = plan.encoding[name].get("shards") or plan.encoding[name]["chunks"]
                owner = np.zeros(plan.template[name].shape[: plan.depth], dtype=np.int64)
                for task in plan.tasks:
                    region = plan.region(task.index)
                    for sel, size in zip(region, shards, strict=False):
                        assert sel.start % size == 0, (name, task.index, "not shard-aligned")
                    owner[region] += 1
                assert owner.max() == 1, f"{name}: two tasks write one region"

    def test_planning_twice_gives_the_same_fingerprint(self, tmp_path: Path) -> None:
        src = self.make_input(tmp_path / "src")
        source = SOURCES[self.name]
        one = [p.fingerprint for p in source.plan(src, str(tmp_path / "a.zarr"), self.options())]
        two = [p.fingerprint for p in source.plan(src, str(tmp_path / "a.zarr"), self.options())]
        assert one == two

    def test_a_bad_input_is_an_error_naming_the_file(self, tmp_path: Path) -> None:
        src = self.make_input(tmp_path / "src")
        quoted = self.spoil(src)
        dest = str(tmp_path / "bad.zarr")
        proc = run_cli(self.name, src, dest, "--no-progress", *self.extra_args, check=False)
        assert proc.returncode == 2, proc.stderr
        assert quoted in proc.stderr and "Traceback" not in proc.stderr

    def test_slices_and_finalize_equal_one_run(self, tmp_path: Path) -> None:
        src = self.make_input(tmp_path / "src")
        whole, sliced = str(tmp_path / "whole.zarr"), str(tmp_path / "sliced.zarr")
        run_cli(self.name, src, whole, "--no-progress", *self.extra_args)
        for k in range(2):
            args = ("--task-index", str(k), "--task-count", "2", *self.extra_args)
            run_cli(self.name, src, sliced, "--no-progress", *args)
        run_cli("finalize", sliced, "--no-progress")
        a, b = cubes.open_cube(whole, require_complete=True), cubes.open_cube(sliced)
        assert b.attrs["cube_complete"] is True
        xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())
        assert a.attrs["cube_layout"] == b.attrs["cube_layout"]

    def test_kill_9_then_the_same_command_equals_one_run(self, tmp_path: Path) -> None:
        src = self.make_input(tmp_path / "src")
        whole, killed = tmp_path / "whole.zarr", tmp_path / "killed.zarr"
        run_cli(self.name, src, str(whole), "--no-progress", *self.extra_args)
        args = [self.name, src, str(killed), "--no-progress", "--threads", "1", *self.extra_args]
        proc = subprocess.Popen(
            [sys.executable, "-m", "ingest", *args],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        markers = tmp_path / journal_url(killed.name) / "done"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if markers.exists() and any(markers.iterdir()):
                break
            time.sleep(0.002)
        proc.kill()  # no cleanup of any kind
        proc.wait()
        run_cli(*args)  # the same command again
        a = cubes.open_cube(str(whole), require_complete=True)
        b = cubes.open_cube(str(killed), require_complete=True)
        xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())
        assert (tmp_path / journal_url(killed.name)).exists() == self.keeps_journal
