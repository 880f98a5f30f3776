"""A full outbox disk: jobs wait for space instead of failing for good, rejections are recorded in
the queue, and every status file owed is written once space comes back."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon_harness import DaemonEnv, wait_for


@pytest.fixture
def small_outbox(daemon_env: DaemonEnv) -> Iterator[Path]:
    """A 2 MiB file system for the outbox (tmpfs; needs root, as CI and this project's machines are)."""
    mount_point = daemon_env.root / "small-outbox"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        daemon_env.stop_all()
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, check=False)


def fill(folder: Path) -> Path:
    """Write a file until the disk has no byte left."""
    filler = folder / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for block in (65536, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * block)
    finally:
        os.close(fd)
    with pytest.raises(OSError) as full:
        (folder / "probe").write_bytes(b"x")
    assert full.value.errno == errno.ENOSPC
    return filler


def jobs(env: DaemonEnv, *args: str) -> list[dict[str, object]]:
    listed: list[dict[str, object]] = json.loads(env.cli("jobs", "--json", *args).stdout)
    return listed


def test_a_full_outbox_makes_jobs_wait_and_owed_status_files_are_written(
    daemon_env: DaemonEnv, small_outbox: Path
) -> None:
    daemon_env.env["TTS_OUTBOX"] = str(small_outbox)
    daemon_env.outbox = small_outbox
    daemon = daemon_env.start()
    daemon.wait_ready()
    filler = fill(small_outbox)

    daemon_env.drop_json("later.json", {"text": "Spoken once there is room."})
    daemon_env.drop_json("broken.json", {"text": ""})
    wait_for(lambda: any(row["error"] and "no space" in str(row["error"]) for row in jobs(daemon_env)), 90,
             lambda: f"the job to wait for space (jobs: {jobs(daemon_env)})")  # fmt: skip
    rejected = wait_for(lambda: jobs(daemon_env, "--state", "rejected"), 60, "the rejection to be recorded")
    assert [row["name"] for row in rejected] == ["broken"]
    assert daemon_env.status("broken") is None, "no room for its status file yet"
    assert "waiting for space" in daemon.log()

    filler.unlink()
    done = daemon_env.wait_state("later", ("done",), timeout=120)
    assert done["attempts"] == 1, "waiting for space used up no attempt"
    assert (small_outbox / done["audio"]["file"]).is_file()
    broken = daemon_env.wait_state("broken", ("rejected",), timeout=60)
    assert broken["error"]["field"] == "text"
    assert daemon.terminate() == 0
