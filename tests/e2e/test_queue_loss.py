"""The queue database deleted or damaged while the daemon was stopped: the daemon says so, moves a
damaged file aside, rebuilds the queue from disk, finishes what was waiting and redoes nothing."""

from __future__ import annotations

import json

import pytest

from tests.support.daemon_harness import DaemonEnv


@pytest.mark.parametrize("loss", ["deleted", "damaged"])
def test_the_queue_is_rebuilt_and_waiting_work_finishes(daemon_env: DaemonEnv, loss: str) -> None:
    daemon = daemon_env.start()
    daemon.wait_ready()
    daemon_env.drop_json("kept.json", {"text": "Spoken before the loss."})
    kept = daemon_env.wait_state("kept", ("done",))
    audio = daemon_env.outbox / kept["audio"]["file"]
    delivered = audio.stat()
    assert daemon.terminate() == 0

    # A job that was accepted and queued when the queue was lost (its file is in accepted/).
    accepted = daemon_env.inbox / "accepted" / "waiting.json"
    accepted.write_text(json.dumps({"text": "Waiting when the queue was lost."}), encoding="utf-8")
    db_path = daemon_env.state / "ttsd.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        (daemon_env.state / f"ttsd.sqlite3{suffix}").unlink(missing_ok=True)
    if loss == "damaged":
        db_path.write_bytes(b"this is no longer a database " * 100)

    restarted = daemon_env.start()
    restarted.wait_ready()
    waiting = daemon_env.wait_state("waiting", ("done",))
    assert waiting["state"] == "done"
    again = daemon_env.status("kept")
    assert again is not None and again["job_id"] == kept["job_id"] and again["state"] == "done"
    assert audio.stat().st_ino == delivered.st_ino and audio.stat().st_mtime_ns == delivered.st_mtime_ns, "not redone"
    log = restarted.log()
    assert "rebuilt 1 finished and 1 queued job(s)" in log, log
    assert ("moved aside" in log) == (loss == "damaged")
    assert "Traceback" not in log
    listing = json.loads(daemon_env.cli("jobs", "--json").stdout)
    assert {row["name"]: row["state"] for row in listing} == {"kept": "done", "waiting": "done"}
    assert restarted.terminate() == 0
