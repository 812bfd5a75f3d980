"""Progress bars of ``synth-plate`` and ``synth-climate``: drawn on stderr, ``--no-progress`` off.

The bar is drawn only once the work has taken ``ingest.progress.MINIMUM_S`` (as the
ingest run's); the tests set that to 0 to force it on for work this small.
"""

from __future__ import annotations

import re

import pytest

from ingest import progress
from ingest.cli import main
from ingest.progress import CountBar
from ingest.sources.netcdf.synth import write_synth_climate

BAR = re.compile(r"\r\[(#*) *\] \| (\d+)% Completed \| \d[^\r\n]*s(?=\r|\n|$)")

COMMANDS = {
    "synth-plate": ["--wells", "3", "--fields", "2", "--size", "32"],
    "synth-climate": ["--grid", "4x8"],
}


def _bars(err: str) -> list[tuple[int, int]]:
    """Each drawing of a bar on ``err``: (``#`` count, percent)."""
    return [(len(m.group(1)), int(m.group(2))) for m in BAR.finditer(err)]


@pytest.fixture
def forced(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bars from the first moment, however quick the work."""
    monkeypatch.setattr(progress, "MINIMUM_S", 0.0)


@pytest.mark.parametrize("command", COMMANDS)
def test_synth_commands_draw_a_bar_that_ends_complete(forced, tmp_path, capsys, command):
    assert main([command, str(tmp_path / "out"), *COMMANDS[command]]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("Wrote ")  # the summary stays on stdout, the bar on stderr
    bars = _bars(err)
    assert bars and bars[-1] == (40, 100), err
    assert err.endswith("\n") and err.count("\n") == 1  # one line, ended once
    percents = [p for _, p in bars]
    assert percents == sorted(percents)


@pytest.mark.parametrize("command", COMMANDS)
def test_no_progress_draws_nothing(forced, tmp_path, capsys, command):
    assert main([command, str(tmp_path / "out"), *COMMANDS[command], "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("Wrote ")
    assert err == ""


def test_python_callers_get_no_bar_unless_they_ask(forced, tmp_path, capsys):
    write_synth_climate(str(tmp_path / "quiet"), grid=(4, 8))
    assert capsys.readouterr().err == ""
    write_synth_climate(str(tmp_path / "loud"), grid=(4, 8), progress=True)
    assert _bars(capsys.readouterr().err)[-1] == (40, 100)


def test_quick_work_draws_nothing_by_default(capsys):
    assert progress.MINIMUM_S == 1.0  # the ingest run's minimum
    with CountBar(3) as bar:
        for _ in range(3):
            bar.advance()
    assert capsys.readouterr().err == ""


def test_a_failed_run_shows_where_it_stopped_not_complete(forced, capsys):
    with pytest.raises(OSError, match="disk full"), CountBar(4) as bar:
        bar.advance()
        raise OSError("disk full")
    assert _bars(capsys.readouterr().err)[-1] == (10, 25)
