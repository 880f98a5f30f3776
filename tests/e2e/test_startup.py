"""A daemon that cannot start says why in one line and exits 1: no traceback, no crash loop noise."""

from __future__ import annotations

import json
import subprocess
import sys

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


def test_a_second_daemon_with_its_own_queue_refuses_a_served_inbox(ghost_env: DaemonEnv) -> None:
    first = ghost_env.start()
    first.wait_ready()
    other_state = ghost_env.root / "other-state"
    second = ghost_env.start(TTS_STATE_DIR=str(other_state))
    assert second.wait_exit(60) == 1
    output = second.log()
    assert "Traceback" not in output, output
    assert f"already serving the inbox {ghost_env.inbox}" in output
    assert f"pid {first.process.pid}, state {ghost_env.state}" in output, output

    # What the second daemon's user sees: doctor blocks and status warns, naming the first daemon.
    env = {**ghost_env.env, "TTS_STATE_DIR": str(other_state)}
    doctor = subprocess.run(
        [sys.executable, "-m", "ttsd", "doctor", "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert doctor.returncode == 1
    [check] = [c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "inbox owner"]
    assert f"pid {first.process.pid}" in check["detail"]
    status = subprocess.run(
        [sys.executable, "-m", "ttsd", "status", "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert f"pid {first.process.pid}" in json.loads(status.stdout)["inbox_served_by_another_daemon"]
    assert ghost_env.cli("status", "--json").returncode == 0
    assert json.loads(ghost_env.cli("status", "--json").stdout)["inbox_served_by_another_daemon"] is None
    assert first.terminate() == 0
