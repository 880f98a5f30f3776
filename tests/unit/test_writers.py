"""Who holds a file open for writing (ttsd/intake/writers.py): what /proc says, matched by identity."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ttsd.intake.writers import WRITERS, FileId, can_see_writers, open_for_writing

pytestmark = pytest.mark.skipif(WRITERS is None, reason="this system does not show which files are open for writing")


def identity(path: Path) -> FileId:
    info = path.stat()
    return (info.st_dev, info.st_ino)


def ask(*paths: Path) -> dict[FileId, int]:
    return open_for_writing({identity(path): path.name for path in paths})


@pytest.mark.parametrize("mode", ["wb", "ab", "r+b"])
def test_a_file_open_for_writing_is_found_with_its_writer(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "job.json"
    path.write_bytes(b"{}")
    other = tmp_path / "other.json"
    other.write_bytes(b"{}")
    with path.open(mode):
        assert ask(path, other) == {identity(path): os.getpid()}
    assert ask(path, other) == {}


def test_readers_are_not_writers(tmp_path: Path) -> None:
    path = tmp_path / "read.txt"
    path.write_text("only read", encoding="utf-8")
    with path.open("rb"):
        assert ask(path) == {}


def test_the_same_name_elsewhere_is_another_file(tmp_path: Path) -> None:
    (tmp_path / "inbox").mkdir()
    (tmp_path / "elsewhere").mkdir()
    waiting = tmp_path / "inbox" / "x.txt"
    waiting.write_text("complete", encoding="utf-8")
    with (tmp_path / "elsewhere" / "x.txt").open("w", encoding="utf-8"):
        assert ask(waiting) == {}


def test_a_writer_that_used_another_path_to_the_file_is_found(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real, target_is_directory=True)
    with (tmp_path / "alias" / "x.txt").open("w", encoding="utf-8"):
        assert ask(real / "x.txt") == {identity(real / "x.txt"): os.getpid()}


HOLD_OPEN = "import sys; f = open(sys.argv[1], 'w'); print('ready', flush=True); sys.stdin.read()"


def test_a_writer_in_another_process_is_found_until_it_ends(tmp_path: Path) -> None:
    path = tmp_path / "child.txt"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; f = open(sys.argv[1], 'w'); print('ready', flush=True); sys.stdin.read()",
            path,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        assert ask(path) == {identity(path): child.pid}
    finally:
        child.kill()
        child.wait(30)
    assert ask(path) == {}


def test_nothing_to_ask_costs_nothing() -> None:
    assert open_for_writing({}) == {}


def test_a_system_without_proc_cannot_see_writers(tmp_path: Path) -> None:
    assert can_see_writers()
    assert not can_see_writers(tmp_path)
    assert open_for_writing({(1, 2): "x.txt"}, proc=tmp_path / "missing") == {}
