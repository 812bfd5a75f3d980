"""The command line as a new user meets it: every mistake is one line, exit 2, nothing written."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

import cubes
from ingest.cli import build_parser, main
from ingest.sources import SOURCES

SYNTH = ["--wells", "2", "--fields", "1", "--size", "32"]


def _fails(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run ``main(args)``: exit status 2 and one line on stderr, no traceback; the line."""
    status = main([*args, "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def _snapshot(root: Path) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--threads", "0", "--threads: got '0'; expected a whole number of at least 1"),
        ("--threads", "abc", "--threads: got 'abc'; expected a whole number of at least 1"),
        ("--workers", "0", "--workers: got '0'; expected a whole number of at least 1"),
        ("--task-count", "0", "--task-count: got '0'; expected a whole number of at least 1"),
        ("--task-index", "-1", "--task-index: got '-1'; expected a whole number of at least 0"),
        ("--pixel-size", "0", "--pixel-size: got '0'; expected a finite number above 0"),
        ("--pixel-size", "nan", "--pixel-size: got 'nan'; expected a finite number above 0"),
        ("--log-level", "LOUD", "--log-level: invalid choice: 'LOUD' (choose from 'DEBUG'"),
        ("--endpoint-url", "minio", "--endpoint-url: got 'minio'; expected an endpoint URL"),
        ("--on-error", "ignore", "--on-error: invalid choice: 'ignore'"),
    ],
)
def test_source_option_out_of_range(capsys, local_plate, tmp_path, option, value, expected):
    dest = tmp_path / "out.zarr"
    err = _fails(capsys, "cellpainting", str(local_plate), str(dest), option, value)
    assert expected in err
    assert "(see 'python -m ingest cellpainting --help')" in err
    assert not dest.exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--size", "0"], "--size: got '0'; expected a whole number of at least 1"),
        (["--size", "-5"], "--size: got '-5'; expected a whole number of at least 1"),
        (["--fields", "0"], "--fields: got '0'; expected a whole number of at least 1"),
        (["--seed", "-1"], "--seed: got '-1'; expected a whole number of at least 0"),
        (["--wells", "0"], "--wells 0: a 384-well plate has 1 to 384 wells."),
        (["--wells", "A01,Q01"], "--wells: Q01 is outside a 384-well plate."),
        (["--wells", "A01,B2,a01"], "--wells A01,B2,a01: A01 is named twice"),
        (["--wells", "A1B"], "--wells: 'A1B' is not a well name like A01"),
        (["--plate", "a/b"], "--plate: got 'a/b'; expected letters, digits"),
        (["--plate", "P__1"], "--plate: got 'P__1'; expected letters, digits, . _ - (not __)"),
        (["--measurement", "M1"], "--measurement: got 'M1'; expected Measurement followed by"),
        (["--size", "64", "--jump-size"], "--jump-size: not allowed with argument --size"),
    ],
)
def test_synth_plate_argument_out_of_range(capsys, tmp_path, args, expected):
    dest = tmp_path / "synth"
    err = _fails(capsys, "synth-plate", str(dest), *args)
    assert expected in err
    assert not dest.exists()


def test_missing_argument_is_one_line(capsys, local_plate):
    err = _fails(capsys, "cellpainting", str(local_plate))
    assert "the following arguments are required: DEST" in err


@pytest.mark.parametrize("option", ["--load-data", "--channel-map"])
def test_table_that_does_not_exist(capsys, local_plate, tmp_path, option):
    table = local_plate / "load_dta.csv"  # load_data.csv, mistyped
    dest = tmp_path / "out.zarr"
    err = _fails(capsys, "cellpainting", str(local_plate), str(dest), option, str(table))
    assert f"{option} {table} does not exist" in err
    assert f"did you mean {local_plate / 'load_data.csv'}?" in err
    assert "Check the path or URL" in err
    assert not dest.exists()


def test_table_that_is_a_folder(capsys, local_plate, tmp_path):
    dest = tmp_path / "out.zarr"
    err = _fails(capsys, "cellpainting", str(local_plate), str(dest), "--load-data", str(tmp_path))
    assert f"--load-data {tmp_path} is a folder, not a file" in err
    assert not dest.exists()


def test_src_that_does_not_exist(capsys, local_plate, tmp_path):
    src = str(local_plate) + "x"  # a typo
    dest = tmp_path / "out.zarr"
    err = _fails(capsys, "cellpainting", src, str(dest))
    assert f"SRC {src} does not exist (did you mean {local_plate}" in err
    assert "Check it for typos" in err and "No Cell Painting images" not in err
    assert not dest.exists()


def test_messages_keep_the_case_of_paths(capsys, local_plate, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["cellpainting", str(local_plate), "demo-data/plate.zarr", "--no-progress"]
    assert main(args) == 0
    assert "Wrote demo-data/plate.zarr: 48 inputs" in capsys.readouterr().out
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("demo-data/plate.zarr is up to date: nothing written")


def test_a_batch_is_never_written_into_a_cube(capsys, tmp_path):
    src, dest = tmp_path / "src", tmp_path / "plate.zarr"
    assert main(["synth-plate", str(src), *SYNTH]) == 0
    assert main(["cellpainting", str(src), str(dest), "--no-progress"]) == 0
    before = _snapshot(dest)
    assert main(["synth-plate", str(src), *SYNTH, "--plate", "SYNTH0002"]) == 0
    assert len([p for p in src.iterdir() if p.is_dir()]) == 2  # two plate folders: a batch
    capsys.readouterr()

    for extra in ([], ["--overwrite"], ["--plates", "SYNTH0001"]):
        err = _fails(capsys, "cellpainting", str(src), str(dest), *extra)
        assert f"{dest} holds the cube of plate SYNTH0001, but SRC {src} holds a batch" in err
        assert "new DEST prefix" in err and "--overwrite does not replace a cube" in err
    assert "(SYNTH0001, SYNTH0002 in this run)" in _fails(
        capsys, "cellpainting", str(src), str(dest)
    )
    assert _snapshot(dest) == before  # untouched: no plate cubes, no index inside it

    # The remedies the message gives work: a new prefix for the batch, one plate's folder.
    assert main(["cellpainting", str(src), str(tmp_path / "plates"), "--no-progress"]) == 0
    assert {p.name for p in (tmp_path / "plates").glob("*.zarr")} == {
        "SYNTH0001.zarr",
        "SYNTH0002.zarr",
    }
    plate = next(src.glob("SYNTH0001__*"))
    assert main(["cellpainting", str(plate), str(dest), "--no-progress"]) == 0
    assert "is up to date" in capsys.readouterr().out
    assert _snapshot(dest) == before


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"cellcubes {cubes.__version__}\n"


def _sub_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {"": parser, **action.choices}


COMMANDS = [name for name in _sub_parsers() if name]  # every sub-command, new ones too


def test_the_commands_are_all_there():
    assert {*SOURCES, "finalize", "synth-plate", "synth-climate"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_examples(capsys, command):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    examples = out.split("examples:\n", 1)[1].splitlines()
    assert len([e for e in examples if e.startswith(f"  python -m ingest {command} ")]) >= 2


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_every_option_has_help(command):
    parser = _sub_parsers()[command]
    missing = [a.dest for a in parser._actions if not a.help]
    assert not missing, f"python -m ingest {command}: no help for {missing}"
