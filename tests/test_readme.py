"""The README's and the docs' examples run as written: every python and bash block, in order.

The blocks share one working folder, as a reader following the README in a
terminal does (``demo-data/`` made by the quick start is what the walkthrough
ingests), with this virtualenv's ``python`` first on PATH and a moto server of
its own standing in for S3 through ``AWS_ENDPOINT_URL``, as the walkthrough
sets it. A block is left out only where the line before it says
``<!-- not run: why -->`` (starting that server, activating the virtualenv);
synopses are fenced as ``text``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.M | re.S)
NOT_RUN = re.compile(r"<!-- not run: (.+?) -->\s*$")
RUNNERS = {"python": ["python", "-c"], "bash": ["bash", "-e", "-o", "pipefail", "-c"]}


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it is, its language, its code, why it is not run (if so)."""

    where: str
    language: str
    code: str
    not_run: str | None


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, in order."""
    text = path.read_text()
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        reason = NOT_RUN.search(before)
        line = text.count("\n", 0, match.start()) + 1
        found.append(
            Block(
                f"{path.relative_to(ROOT)}:{line}",
                match.group(1),
                match.group(2),
                reason.group(1) if reason else None,
            )
        )
    return found


def runnable() -> list[Block]:
    """The blocks the test runs: python and bash ones not marked ``not run``."""
    return [
        b for path in DOCUMENTS for b in blocks(path) if b.language in RUNNERS and not b.not_run
    ]


@pytest.fixture(scope="module")
def terminal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A working folder with the repository's examples, and the environment of the walkthrough."""
    from moto.server import ThreadedMotoServer

    work = tmp_path_factory.mktemp("readme")
    (work / "examples").symlink_to(ROOT / "examples")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        env = dict(os.environ)
        env.update(
            PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
            PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p),
            AWS_ENDPOINT_URL=f"http://{host}:{port}",
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
            MPLBACKEND="Agg",
        )
        yield work, env
    finally:
        server.stop()


def test_the_documents_have_examples_and_each_left_out_says_why() -> None:
    """The parser finds the README's blocks; a block not run is marked with its reason."""
    readme = blocks(ROOT / "README.md")
    # make demo / make test, then the quick start
    assert [b.language for b in readme[:2]] == ["bash", "bash"]
    assert sum(b.language == "python" for b in readme) >= 4
    assert all(b.language in (*RUNNERS, "text") for b in readme), [b.where for b in readme]
    skipped = [b for b in readme if b.not_run]
    assert skipped and all(len(b.not_run or "") > 10 for b in skipped)


@pytest.mark.slow
@pytest.mark.s3
def test_every_example_runs_as_written(terminal: tuple[Path, dict[str, str]]) -> None:
    """Each block, in order, exits 0 in the shared folder; a failure names the block's line."""
    work, env = terminal
    ran = []
    for block in runnable():
        start = time.perf_counter()
        proc = subprocess.run(
            [*RUNNERS[block.language], block.code],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, (
            f"{block.where} ({block.language}) exited {proc.returncode}:\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
        ran.append(block.where)
        print(f"{block.where}: {time.perf_counter() - start:.1f} s")
    assert len(ran) >= 8
    # What the quick start and the walkthrough say they make is there.
    assert (work / "demo-data" / "plate.zarr" / "zarr.json").is_file()
    assert (work / "demo-data" / "plate.png").stat().st_size > 10_000
    assert (work / "demo-data" / "t_surf.png").stat().st_size > 10_000
