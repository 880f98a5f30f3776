"""macOS privacy protection: which folders it guards (a pure rule on paths), the one-line message for
a folder that cannot be used, and the probe that tries a folder the way the daemon will.

Real macOS is not available here: the rules are reasoned from the platform's documentation, and the
refusals are simulated (EPERM raised by os.scandir and os.open for one folder; see `deny_access`)."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import pytest

from tests.support.fakes import deny_access
from ttsd.errors import FolderUnusable
from ttsd.fsutil import TEMP_PREFIX, make_folder, probe_folder
from ttsd.privacy import VOLUME_PLACE, folder_problem, grant, protected_place

HOME = Path("/Users/me")
EPERM = PermissionError(errno.EPERM, os.strerror(errno.EPERM))


@pytest.mark.parametrize(
    ("path", "place"),
    [
        (HOME / "Desktop", "Desktop"),
        (HOME / "Desktop" / "ttsd" / "inbox", "Desktop"),
        (HOME / "desktop" / "inbox", "Desktop"),  # APFS compares names without case
        (HOME / "Documents" / "ttsd", "Documents"),
        (HOME / "Downloads" / "outbox", "Downloads"),
        (HOME / "Library" / "Mobile Documents" / "com~apple~CloudDocs" / "ttsd", "iCloud Drive"),
        (Path("/Volumes/USB Stick/ttsd/inbox"), VOLUME_PLACE),
        (Path("/Volumes/nas/share"), VOLUME_PLACE),
    ],
)
def test_protected_places(path: Path, place: str) -> None:
    assert protected_place(path, HOME) == place


@pytest.mark.parametrize(
    "path",
    [
        HOME / "ttsd" / "inbox",
        HOME / "Desktop-old" / "inbox",
        HOME / "Library" / "Application Support" / "ttsd",
        HOME / "Library" / "Mobile",
        HOME,
        Path("/Volumes"),
        Path("/tmp/ttsd/inbox"),
        Path("/Users/other/ttsd"),
    ],
)
def test_unprotected_places(path: Path) -> None:
    assert protected_place(path, HOME) is None


def test_on_macos_eperm_names_the_permission_and_the_python_to_grant_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    message = folder_problem("inbox", HOME / "Desktop" / "in", EPERM)
    assert message.startswith(f"cannot use the inbox {HOME / 'Desktop' / 'in'}: Operation not permitted (macOS")
    assert "Full Disk Access" in message and "Files and Folders" in message
    assert str(Path(sys.executable).resolve()) in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("platform", "problem"),
    [("linux", EPERM), ("darwin", PermissionError(errno.EACCES, os.strerror(errno.EACCES)))],
)
def test_no_privacy_hint_where_it_is_not_the_cause(
    monkeypatch: pytest.MonkeyPatch, platform: str, problem: OSError
) -> None:
    monkeypatch.setattr(sys, "platform", platform)
    assert folder_problem("outbox", Path("/x"), problem) == f"cannot use the outbox /x: {problem.strerror}"


def test_grant_names_the_interpreter_a_venv_python_links_to(tmp_path: Path) -> None:
    real = tmp_path / "python3.11"
    real.write_text("")
    venv_python = tmp_path / "venv-python"
    venv_python.symlink_to(real)
    assert f"({venv_python}, that is {real})" in grant(venv_python)
    assert f"({real})" in grant(real)


def test_the_probe_lists_and_writes_and_leaves_nothing(tmp_path: Path) -> None:
    probe_folder(tmp_path, "outbox")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("write", [True, False])
def test_a_folder_that_cannot_be_listed_fails_the_probe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write: bool
) -> None:
    inbox = tmp_path / "Desktop" / "inbox"
    inbox.mkdir(parents=True)
    deny_access(monkeypatch, inbox)
    make_folder(inbox, "inbox")  # mkdir of an existing folder and a mode check do not see the refusal
    with pytest.raises(FolderUnusable) as raised:
        probe_folder(inbox, "inbox", write=write)
    assert raised.value.message.startswith(f"cannot use the inbox {inbox}: Operation not permitted (macOS privacy")


def test_a_folder_that_can_be_listed_but_not_written_fails_the_probe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_scandir = os.scandir
    deny_access(monkeypatch, tmp_path)
    monkeypatch.setattr(os, "scandir", real_scandir)  # listing allowed, creating a file refused
    probe_folder(tmp_path, "outbox", write=False)
    with pytest.raises(FolderUnusable, match=f"cannot use the outbox {tmp_path}: Operation not permitted"):
        probe_folder(tmp_path, "outbox")
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(TEMP_PREFIX)]
