"""Crash recovery with real processes and real SIGKILLs. The daemon (with its worker) kills itself at
named points (`TTS_FAULT`, `TTS_FAULT_SCOPE=daemon`), so each test hits the window it means to, not
whatever timing luck gives. A kill of the whole daemon is not the job's fault: it costs no attempt."""

from __future__ import annotations

import json
import random
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import soundfile as sf

from tests.support.assertions import assert_queue_sound
from tests.support.daemon_harness import DaemonEnv, wait_for


class OutboxWatcher:
    """Reads every audio file that appears in the outbox, as fast as it can, the whole time a test
    runs: a partial file would be caught by the decoder (or by a size that disagrees with its header)."""

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox
        self.problems: list[str] = []
        self.reads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            for path in self.outbox.glob("*.wav"):
                try:
                    info = sf.info(path)
                    audio, _ = sf.read(path, dtype="float32")
                except FileNotFoundError:
                    continue
                except Exception as exc:  # any decode failure is a visible partial file
                    self.problems.append(f"{path.name}: {exc}")
                    continue
                self.reads += 1
                if len(audio) != info.frames:
                    self.problems.append(f"{path.name}: {len(audio)} samples, header says {info.frames}")

    @contextmanager
    def running(self) -> Iterator[OutboxWatcher]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=10)


def job_rows(env: DaemonEnv) -> list[tuple[str, str, int]]:
    with sqlite3.connect(env.state / "ttsd.sqlite3") as db:
        return list(db.execute("SELECT name, state, attempts FROM job ORDER BY name"))


@pytest.mark.parametrize("point", ["synthesis", "audio_write", "after_audio", "after_done"])
def test_kill_during_a_job_then_restart_finishes_it(daemon_env: DaemonEnv, point: str) -> None:
    watcher = OutboxWatcher(daemon_env.outbox)
    with watcher.running():
        crashing = daemon_env.start(TTS_FAULT=f"{point}:victim", TTS_FAULT_SCOPE="daemon")
        crashing.wait_ready()
        daemon_env.drop_json("victim.json", {"text": "Interrupted, then finished.", "speaker": "Ryan"})
        assert crashing.wait_exit(90) == -9

        restarted = daemon_env.start()
        restarted.wait_ready()
        document = daemon_env.wait_state("victim", ("done", "failed"))
        assert restarted.terminate() == 0

    assert document["state"] == "done", document
    # Interrupted by the daemon's death, the try is not counted: the job was done once.
    assert document["attempts"] == 1
    assert job_rows(daemon_env) == [("victim", "done", document["attempts"])]
    assert_queue_sound(daemon_env)
    assert watcher.problems == []
    assert watcher.reads > 0, "the outbox watcher never saw the audio file"
    assert (daemon_env.inbox / "accepted" / "victim.json").is_file()


def test_kill_between_enqueue_and_moving_the_file_makes_no_duplicate(daemon_env: DaemonEnv) -> None:
    crashing = daemon_env.start(TTS_FAULT="before_move:twice")
    crashing.wait_ready()
    daemon_env.drop_json("twice.json", {"text": "Recorded, not yet moved.", "speaker": "Ryan"})
    assert crashing.wait_exit(90) == -9
    assert (daemon_env.inbox / "twice.json").is_file()

    restarted = daemon_env.start()
    restarted.wait_ready()
    document = daemon_env.wait_state("twice", ("done",))
    wait_for(lambda: (daemon_env.inbox / "accepted" / "twice.json").is_file(), 30, "the file to be moved")
    assert restarted.terminate() == 0
    assert job_rows(daemon_env) == [("twice", "done", document["attempts"])]
    assert_queue_sound(daemon_env)


def test_status_files_are_rebuilt_from_the_queue(daemon_env: DaemonEnv) -> None:
    daemon = daemon_env.start()
    daemon.wait_ready()
    daemon_env.drop_json("kept.json", {"text": "Keep my status.", "speaker": "Ryan"})
    done = daemon_env.wait_state("kept", ("done",))
    assert daemon.terminate() == 0

    (daemon_env.outbox / "kept.status.json").unlink()
    restarted = daemon_env.start()
    restarted.wait_ready()
    rebuilt = daemon_env.wait_state("kept", ("done",), timeout=30)
    assert restarted.terminate() == 0
    assert rebuilt == done
    assert json.loads((daemon_env.outbox / "kept.status.json").read_text())["job_id"] == done["job_id"]


@pytest.mark.slow
def test_kills_at_random_moments_lose_nothing(daemon_env: DaemonEnv) -> None:
    """Ten SIGKILLs of the daemon at random moments (seeded, so a failure can be replayed) while
    jobs arrive and run; then one clean run. Every job ends done exactly once, with intact audio,
    and no job is charged for the kills (the attempt limit is the default)."""
    rng = random.Random(20261124)
    names = [f"random-{i}" for i in range(20)]
    watcher = OutboxWatcher(daemon_env.outbox)
    with watcher.running():
        for round_number in range(10):
            daemon = daemon_env.start(TTS_MAX_BATCH="2")
            daemon.wait_ready()
            for name in names[round_number * 2 : round_number * 2 + 2]:
                daemon_env.drop_json(f"{name}.json", {"text": f"Sentence for {name}.", "speaker": "Ryan"})
            kill_after = rng.uniform(0.5, 8.0)
            assert daemon.wait_exit_or(kill_after) is None, daemon.log()
            daemon.kill()
        final = daemon_env.start(TTS_MAX_BATCH="2")
        final.wait_ready()
        for name in names:
            daemon_env.wait_state(name, ("done",), timeout=120)
        assert final.terminate() == 0

    rows = job_rows(daemon_env)
    assert [name for name, _state, _attempts in rows] == sorted(names)
    assert all(state == "done" and attempts == 1 for _name, state, attempts in rows), rows
    assert_queue_sound(daemon_env)
    assert watcher.problems == []
