"""A daemon that cannot start says why in one line and exits 1: no traceback, no crash loop noise."""

from __future__ import annotations

import pytest

from tests.support.daemon_harness import DaemonEnv


@pytest.mark.parametrize(
    ("setting", "what"), [("TTS_OUTBOX", "outbox"), ("TTS_INBOX", "inbox"), ("TTS_STATE_DIR", "state directory")]
)
def test_a_folder_that_cannot_be_created_is_one_clear_line(ghost_env: DaemonEnv, setting: str, what: str) -> None:
    blocker = ghost_env.root / "a-file"
    blocker.write_text("not a folder")
    daemon = ghost_env.start(**{setting: str(blocker / "below")})
    assert daemon.wait_exit(60) == 1
    output = daemon.log()
    assert "Traceback" not in output, output
    assert f"ttsd: cannot use the {what} {blocker / 'below'}: Not a directory" in output, output
