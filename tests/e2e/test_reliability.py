"""Queue behaviour under stress, with real daemon processes: a job that kills its worker every time,
graceful stops, and backpressure."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.support.assertions import assert_queue_sound
from tests.support.daemon_harness import DaemonEnv, wait_for

# About 200 frames: several seconds on the tiny model, whose speech ends after a length that follows
# its text; long enough to interrupt.
SLOW_TEXT = "This sentence is long on purpose, so that the tiny model speaks it for a while. " * 3


def queue_rows(env: DaemonEnv) -> dict[str, tuple[str, int, str | None]]:
    with sqlite3.connect(env.state / "ttsd.sqlite3") as db:
        rows = db.execute("SELECT name, state, attempts, error_code FROM job")
        return {name: (state, attempts, code) for name, state, attempts, code in rows}


@pytest.mark.slow
def test_a_job_that_kills_its_worker_every_time_fails_alone(daemon_env: DaemonEnv) -> None:
    daemon = daemon_env.start(TTS_FAULT="synthesis:poison", TTS_MAX_ATTEMPTS="2")
    daemon.wait_ready()
    names = ("good-1", "poison", "good-2", "good-3")
    for name in names:
        daemon_env.drop_json(f"{name}.json", {"text": f"I am {name}.", "speaker": "Ryan"})

    def settled() -> bool:
        states = {name: (document or {}).get("state") for name in names for document in [daemon_env.status(name)]}
        return states.pop("poison") == "failed" and set(states.values()) == {"done"}

    wait_for(settled, 180, lambda: f"the queue to settle (now {queue_rows(daemon_env)})")
    assert daemon.process.poll() is None, "only the worker died; the daemon kept serving"
    assert daemon.terminate() == 0
    rows = queue_rows(daemon_env)
    assert rows["poison"] == ("failed", 2, "interrupted")
    # Jobs that shared the poison's first call were charged for that crash, never for a second one.
    assert all(rows[f"good-{i}"][0] == "done" and rows[f"good-{i}"][1] <= 2 for i in (1, 2, 3))
    crashes = daemon.json_log.read_text(encoding="utf-8").count("died (signal SIGKILL)")
    assert crashes == 2, "after the first crash the suspect runs alone"
    assert_queue_sound(daemon_env)


def test_sigterm_lets_running_work_finish_within_the_grace(daemon_env: DaemonEnv) -> None:
    daemon = daemon_env.start(TTS_SHUTDOWN_GRACE_S="60")
    daemon.wait_ready()
    daemon_env.drop_json("finish.json", {"text": f"Let me finish. {SLOW_TEXT}", "speaker": "Ryan"})
    daemon_env.wait_state("finish", ("running",))
    assert daemon.terminate() == 0
    document = daemon_env.status("finish")
    assert document is not None and document["state"] == "done" and document["attempts"] == 1


def test_sigterm_past_the_grace_releases_work_without_counting_it(daemon_env: DaemonEnv) -> None:
    daemon = daemon_env.start(TTS_SHUTDOWN_GRACE_S="0")
    daemon.wait_ready()
    daemon_env.drop_json("later.json", {"text": f"Finish me later. {SLOW_TEXT}", "speaker": "Ryan"})
    daemon_env.wait_state("later", ("running",))
    assert daemon.terminate() == 0
    assert "back to the queue" in daemon.log()
    released = daemon_env.status("later")
    assert released is not None and released["state"] == "queued" and released["attempts"] == 0

    restarted = daemon_env.start()
    restarted.wait_ready()
    done = daemon_env.wait_state("later", ("done",))
    assert done["attempts"] == 1
    assert restarted.terminate() == 0


def test_backpressure_keeps_files_in_the_inbox_until_there_is_room(daemon_env: DaemonEnv) -> None:
    daemon = daemon_env.start(TTS_MAX_QUEUE_SIZE="2", TTS_MAX_BATCH="1")
    daemon.wait_ready()
    names = [f"wave-{i}" for i in range(6)]
    for name in names:
        daemon_env.drop_json(f"{name}.json", {"text": f"Number {name}. {SLOW_TEXT}", "speaker": "Ryan"})

    def pending() -> int:
        return sum(1 for state, _, _ in queue_rows(daemon_env).values() if state in ("queued", "running"))

    wait_for(lambda: len(queue_rows(daemon_env)) >= 2, 30, "the first jobs to be recorded")
    waiting = sorted(p.name for p in daemon_env.inbox.glob("wave-*.json"))
    assert len(waiting) >= 3, "files beyond the queue limit must wait in the inbox"
    assert pending() <= 2
    for name in names:
        daemon_env.wait_state(name, ("done",), timeout=120)
        assert pending() <= 2
    assert not list(daemon_env.inbox.glob("wave-*.json"))
    status = json.loads(daemon_env.cli("status", "--json").stdout)
    assert status["queue"]["tiny"] == {"done": 6}
    assert daemon.terminate() == 0
