"""The inbox lock: one daemon with a queue of its own per inbox, or any number of daemons of one
shared queue, never both kinds at once."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from ttsd.config import Settings
from ttsd.errors import DaemonAlreadyRunning
from ttsd.ops.lock import inbox_lock, other_inbox_daemon

URL = "postgresql://ttsd@db.local/ttsd"


def settings(root: Path, name: str, url: str = "") -> Settings:
    return Settings(state_dir=root / name, inbox=root / "inbox", outbox=root / "outbox", database_url=url)


def test_daemons_of_one_shared_queue_share_the_inbox(tmp_path: Path) -> None:
    with inbox_lock(settings(tmp_path, "a", URL)), inbox_lock(settings(tmp_path, "b", URL)):
        assert other_inbox_daemon(tmp_path / "inbox", tmp_path / "c") is None
        with (
            pytest.raises(DaemonAlreadyRunning, match="daemons sharing a queue database"),
            inbox_lock(settings(tmp_path, "c")),
        ):
            pass


def test_a_daemon_with_its_own_queue_keeps_the_inbox_to_itself(tmp_path: Path) -> None:
    with contextlib.ExitStack() as held:
        held.enter_context(inbox_lock(settings(tmp_path, "a")))
        with pytest.raises(DaemonAlreadyRunning, match=r"state .*/a\) is already serving the inbox"):
            held.enter_context(inbox_lock(settings(tmp_path, "b", URL)))
        with pytest.raises(DaemonAlreadyRunning):
            held.enter_context(inbox_lock(settings(tmp_path, "c")))
