"""Intake inside a real daemon: files dropped while it was down, the watcher, a 5,000-file burst."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon_harness import DaemonEnv, wait_for
from ttsd.intake.access import recorded_inbox_problem
from ttsd.intake.folders import ACCEPTED_DIR, REASON_SUFFIX, REJECTED_DIR, is_ignored
from ttsd.intake.writers import WRITERS


def job_bytes(text: str, **fields: Any) -> bytes:
    return json.dumps({"text": text, **fields}).encode("utf-8")


DEEP_ARRAY = b"[" * 100_000 + b"]" * 100_000


def names_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def db_rows(env: DaemonEnv) -> list[tuple[str, str, str | None]]:
    db_path = env.state / "ttsd.sqlite3"
    if not db_path.exists():
        return []
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30) as db:
        return list(db.execute("SELECT name, state, source_file FROM job WHERE state != 'rejected' ORDER BY name"))


def inbox_waiting(env: DaemonEnv) -> list[str]:
    return sorted(
        entry.name
        for entry in os.scandir(env.inbox)
        if entry.name not in (ACCEPTED_DIR, REJECTED_DIR, "voices") and not is_ignored(entry.name)
    )


def test_files_dropped_while_the_daemon_was_down_are_all_taken_at_start(ghost_env: DaemonEnv) -> None:
    names = [f"offline-{index:02d}" for index in range(30)]
    for name in names:
        ghost_env.drop(f"{name}.json", job_bytes(f"waiting for the daemon: {name}"))
    ghost_env.drop("offline-lines.jsonl", b'{"text": "one"}\n{"text": "two"}\n{"text": "three"}\n')
    ghost_env.drop("offline-deep.json", DEEP_ARRAY)  # nested too deep, parsed in the intake thread
    ghost_env.drop("offline-broken.json", b'{"text": ')
    for ignored in (".DS_Store", "draft.json.part", ".offline.json.swp"):
        ghost_env.drop(ignored, b"leave me alone")

    daemon = ghost_env.start()
    daemon.wait_ready()
    wait_for(
        lambda: not inbox_waiting(ghost_env),
        60,
        lambda: f"every job file to be taken (still waiting: {inbox_waiting(ghost_env)})",
    )
    expected = sorted([*names, "offline-lines-1", "offline-lines-2", "offline-lines-3"])
    wait_for(
        lambda: len(db_rows(ghost_env)) >= len(expected),
        30,
        lambda: f"every job to be recorded (now {len(db_rows(ghost_env))} of {len(expected)})",
    )
    assert daemon.terminate() == 0

    rows = db_rows(ghost_env)
    assert [name for name, _, _ in rows] == expected
    assert sorted(names_in(ghost_env.inbox / ACCEPTED_DIR)) == sorted(
        [f"{name}.json" for name in names] + ["offline-lines.jsonl"]
    )
    rejected = sorted(names_in(ghost_env.inbox / REJECTED_DIR))
    assert rejected == sorted(
        ["offline-broken.json", "offline-deep.json"] + [f"offline-{x}.json{REASON_SUFFIX}" for x in ("broken", "deep")]
    )
    for name, code in (("offline-deep", "too_deep"), ("offline-broken", "invalid_json")):
        document = ghost_env.status(name)
        assert document is not None and document["error"]["code"] == code
    for ignored in (".DS_Store", "draft.json.part", ".offline.json.swp"):
        assert (ghost_env.inbox / ignored).read_bytes() == b"leave me alone"


def test_the_watcher_takes_renamed_files_at_once_and_waits_for_slow_writers(ghost_env: DaemonEnv) -> None:
    stable_s = 4.0
    daemon = ghost_env.start(TTS_STABLE_S=str(stable_s), TTS_SCAN_INTERVAL_S="0.5")
    daemon.wait_ready()

    slow_path = ghost_env.inbox / "slow.json"
    slow_data = job_bytes("written in many small pieces, with pauses well inside the window")
    premature: list[str] = []
    writer_done = threading.Event()

    def slow_writer() -> None:
        with slow_path.open("wb") as handle:
            for start in range(0, len(slow_data), 8):
                if not slow_path.exists():
                    premature.append(f"moved away after {start} bytes")
                handle.write(slow_data[start : start + 8])
                handle.flush()
                writer_done.wait(0.1)  # the pause between two pieces of a slow producer
        writer_done.set()

    writer = threading.Thread(target=slow_writer, daemon=True)
    writer.start()
    started = time.monotonic()
    ghost_env.drop_json("renamed.json", {"text": "complete the moment it appears"})
    wait_for(lambda: "renamed" in [row[0] for row in db_rows(ghost_env)], stable_s - 1, "the renamed file")
    assert time.monotonic() - started < stable_s, "a renamed file must not wait for the stability window"

    writer.join(30)
    assert writer_done.is_set()
    wait_for(lambda: "slow" in [row[0] for row in db_rows(ghost_env)], 30, "the slow file to be taken")
    assert daemon.terminate() == 0
    assert premature == [], premature
    assert names_in(ghost_env.inbox / REJECTED_DIR) == []
    document = ghost_env.status("slow")
    assert document is not None and document["state"] != "rejected"


PAUSE_S = 1.5  # the producer's pause: several times the harness's TTS_STABLE_S (0.2 s)
STILL_OPEN = "is still open for writing"
needs_writers = pytest.mark.skipif(WRITERS is None, reason="this system does not show which files are open for writing")


def shown_text(env: DaemonEnv, name: str) -> str:
    shown = env.cli("show", name, "--json")
    assert shown.returncode == 0, shown.stderr
    text: str = json.loads(shown.stdout)["text"]
    return text


@needs_writers
def test_a_writer_that_pauses_with_the_file_open_gets_its_whole_text_spoken(daemon_env: DaemonEnv) -> None:
    daemon = daemon_env.start()
    daemon.wait_ready()
    text = " ".join(f"This is sentence {word} of a text written in two halves." for word in ("one", "two", "three"))
    text += " " + " ".join(f"And here is line {word}, after the pause." for word in ("four", "five", "six", "seven"))
    assert len(text) > 300
    path = daemon_env.inbox / "paused.txt"
    with path.open("w", encoding="utf-8") as handle:
        handle.write(text[: len(text) // 2])
        handle.flush()
        wrote = time.monotonic()
        # The pause lasts PAUSE_S, and until the daemon has judged the half-written file (found it
        # still open, or, wrongly, taken it).
        wait_for(
            lambda: (
                time.monotonic() - wrote >= PAUSE_S and (STILL_OPEN in daemon.log() or not inbox_waiting(daemon_env))
            ),
            30,
            lambda: f"intake to look at paused.txt:\n{daemon.log()}",
        )
        assert inbox_waiting(daemon_env) == ["paused.txt"], "taken while its writer had it open"
        assert db_rows(daemon_env) == []
        handle.write(text[len(text) // 2 :])
    document = daemon_env.wait_state("paused", ("done", "failed", "rejected"), timeout=120)
    assert document["state"] == "done", document
    assert shown_text(daemon_env, "paused") == text
    assert daemon.terminate() == 0
    assert names_in(daemon_env.inbox / ACCEPTED_DIR) == ["paused.txt"]


@needs_writers
def test_a_shell_redirect_that_writes_late_is_taken_not_rejected_as_blank(ghost_env: DaemonEnv) -> None:
    daemon = ghost_env.start()
    daemon.wait_ready()
    subprocess.run(
        ["sh", "-c", "(sleep 1; echo 'Written a second after the file appeared.') > late.txt"],
        cwd=ghost_env.inbox,
        timeout=30,
        check=True,
    )
    document = wait_for(lambda: ghost_env.status("late"), 30, "the late file to be taken")
    assert document["state"] != "rejected", document
    assert STILL_OPEN in daemon.log(), "the file was not found open while the shell slept"
    assert shown_text(ghost_env, "late").strip() == "Written a second after the file appeared."
    assert daemon.terminate() == 0
    assert names_in(ghost_env.inbox / REJECTED_DIR) == []


def vm_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the daemon's RSS from /proc")
def test_a_burst_of_5000_files_is_recorded_exactly_once_in_bounded_memory(ghost_env: DaemonEnv) -> None:
    count = 5000
    daemon = ghost_env.start(TTS_MAX_QUEUE_SIZE="100000", TTS_SCAN_INTERVAL_S="1")
    daemon.wait_ready()
    pid = daemon.process.pid
    peak = vm_rss_bytes(pid)
    started = time.monotonic()
    for index in range(count):
        if index % 2:
            ghost_env.drop_json(f"burst-{index:04d}.json", {"text": f"burst number {index}"})
        else:
            ghost_env.drop(f"burst-{index:04d}.json", job_bytes(f"burst number {index}"))
    dropped_s = time.monotonic() - started

    def all_taken() -> bool:
        nonlocal peak
        peak = max(peak, vm_rss_bytes(pid))
        return len(names_in(ghost_env.inbox / ACCEPTED_DIR)) == count

    wait_for(all_taken, 240, "all 5,000 files to be taken", interval=0.25)
    taken_s = time.monotonic() - started
    assert daemon.terminate(120) == 0

    with sqlite3.connect(ghost_env.state / "ttsd.sqlite3") as db:
        total, names, sources = db.execute(
            "SELECT count(*), count(DISTINCT name), count(DISTINCT source_file) FROM job"
        ).fetchone()
        running = db.execute("SELECT count(*) FROM job WHERE state = 'running'").fetchone()[0]
    assert (total, names, sources) == (count, count, count)
    assert running == 0
    assert sorted(names_in(ghost_env.inbox / ACCEPTED_DIR)) == [f"burst-{i:04d}.json" for i in range(count)]
    assert inbox_waiting(ghost_env) == []
    assert names_in(ghost_env.inbox / REJECTED_DIR) == []
    assert peak < 1.5 * 1024**3, f"daemon RSS peaked at {peak / 1024**2:.0f} MiB"
    print(f"burst: dropped in {dropped_s:.1f}s, all taken after {taken_s:.1f}s, peak RSS {peak / 1024**2:.0f} MiB")


def test_an_inbox_that_cannot_be_listed_is_said_once_and_shown_by_status_until_it_can(ghost_env: DaemonEnv) -> None:
    # The tests run as root, whom no mode refuses: an inbox moved away stands in for one macOS's
    # privacy protection keeps from the daemon (that case, EPERM, is simulated in the component tests).
    daemon = ghost_env.start()
    daemon.wait_ready()
    away = ghost_env.root / "inbox-away"
    ghost_env.inbox.rename(away)
    wait_for(lambda: recorded_inbox_problem(ghost_env.state), 30, "the daemon to record the inbox problem")
    problem = json.loads(ghost_env.cli("status", "--json").stdout)["inbox_problem"]
    assert problem["message"] == f"cannot use the inbox {ghost_env.inbox}: No such file or directory"
    assert f"inbox    the daemon cannot list it (since {problem['since']})" in ghost_env.cli("status").stdout
    away.rename(ghost_env.inbox)
    wait_for(lambda: recorded_inbox_problem(ghost_env.state) is None, 30, "the daemon to list its inbox again")
    assert json.loads(ghost_env.cli("status", "--json").stdout)["inbox_problem"] is None
    ghost_env.drop("after.json", job_bytes("taken once the inbox is back"))
    ghost_env.wait_state("after", ("queued", "running", "failed"))
    logged = daemon.json_log.read_text(encoding="utf-8")
    assert logged.count("no job is taken until it can list the inbox again") == 1, logged
    assert "Traceback" not in daemon.log()
    assert daemon.terminate() == 0
