"""Worker processes, with real daemons, real tiny models and real signals: a model's worker starts
on demand and exits when idle; a worker killed from outside charges its jobs; a kill of the whole
daemon charges nothing, and its workers go with it; a second SIGTERM stops at once."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

from tests.support.assertions import assert_queue_sound
from tests.support.daemon_harness import DaemonEnv, wait_for

# Several seconds of speech on the tiny model: long enough to act while it is spoken.
SLOW_TEXT = "This sentence is long on purpose, so that the tiny model speaks it for a while. " * 3


def children(pid: int) -> set[int]:
    """The live child processes of `pid` (Linux /proc; CI and this machine are Linux)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def workers(env: DaemonEnv) -> list[dict[str, Any]]:
    """The worker processes `ttsd status` reports."""
    report = json.loads(env.cli("status", "--json").stdout)
    return list(report["daemon"].get("loaded_models") or [])


def attempts_and_restarts(env: DaemonEnv, name: str) -> tuple[int, int]:
    with sqlite3.connect(env.state / "ttsd.sqlite3") as db:
        attempts, restarts = db.execute("SELECT attempts, restarts FROM job WHERE name = ?", (name,)).fetchone()
    return int(attempts), int(restarts)


def test_a_model_s_worker_starts_on_demand_and_exits_when_idle(daemon_env: DaemonEnv) -> None:
    daemon = daemon_env.start(TTS_MODEL_IDLE_S="2")
    daemon.wait_ready()
    assert children(daemon.process.pid) == set(), "no model is loaded before a job needs it"
    daemon_env.drop_json("hello.json", {"text": "Hello there.", "speaker": "Ryan"})
    daemon_env.wait_state("hello", ("done",))
    [worker] = wait_for(lambda: [w for w in workers(daemon_env) if w.get("device")], 10, "status to show the worker")
    assert worker["model"] == "tiny" and worker["pid"] in children(daemon.process.pid)
    assert worker["device"] == "cpu" and worker["batch"] >= 1 and worker["batch_reason"]
    # Idle for TTS_MODEL_IDLE_S: the worker exits, and the model's memory goes with the process.
    wait_for(lambda: not alive(worker["pid"]), 30, "the idle worker to exit")
    wait_for(lambda: workers(daemon_env) == [], 10, "status to show no worker")
    assert "exits: idle" in daemon.log()
    # The next job starts it again.
    daemon_env.drop_json("again.json", {"text": "Hello again.", "speaker": "Ryan"})
    daemon_env.wait_state("again", ("done",))
    assert daemon.terminate() == 0


def test_a_worker_killed_from_outside_charges_its_job_which_then_runs_alone(daemon_env: DaemonEnv) -> None:
    daemon = daemon_env.start()
    daemon.wait_ready()
    daemon_env.drop_json("victim.json", {"text": SLOW_TEXT, "speaker": "Ryan"})
    daemon_env.wait_state("victim", ("running",))
    [worker] = wait_for(lambda: [w for w in workers(daemon_env) if w.get("device")], 30, "a loaded worker")
    os.kill(worker["pid"], signal.SIGKILL)
    document = daemon_env.wait_state("victim", ("done", "failed"), timeout=120)
    assert document["state"] == "done", document
    assert document["attempts"] == 2, "the crash of its worker is charged to the job it held"
    assert "died (signal SIGKILL)" in daemon.log()
    assert daemon.process.poll() is None, "the daemon itself kept serving"
    assert daemon.terminate() == 0
    assert_queue_sound(daemon_env)


def test_killing_the_daemon_charges_nothing_and_its_workers_exit_with_it(daemon_env: DaemonEnv) -> None:
    daemon = daemon_env.start()
    daemon.wait_ready()
    daemon_env.drop_json("survivor.json", {"text": SLOW_TEXT, "speaker": "Ryan"})
    daemon_env.wait_state("survivor", ("running",))
    orphans = wait_for(lambda: children(daemon.process.pid), 30, "the worker process")
    daemon.kill()
    wait_for(lambda: not any(alive(pid) for pid in orphans), 15, "the workers to notice their daemon is gone")

    restarted = daemon_env.start()
    restarted.wait_ready()
    document = daemon_env.wait_state("survivor", ("done", "failed"), timeout=120)
    assert document["state"] == "done", document
    assert attempts_and_restarts(daemon_env, "survivor") == (1, 1), "the kill was not the job's fault"
    assert restarted.terminate() == 0
    assert_queue_sound(daemon_env)


def test_sigterm_starts_no_new_call_and_a_second_one_stops_at_once(daemon_env: DaemonEnv) -> None:
    daemon = daemon_env.start(TTS_SHUTDOWN_GRACE_S="120", TTS_MAX_BATCH="1")
    daemon.wait_ready()
    # Chunked: many calls, so a daemon that kept starting calls after SIGTERM would be seen doing so.
    daemon_env.drop_json("book.json", {"text": SLOW_TEXT * 4, "speaker": "Ryan", "chunking": {"max_chars": 80}})
    wait_for(lambda: (daemon_env.status("book") or {}).get("progress", {}).get("chunks_done", 0) >= 1, 60,
             "the first chunk")  # fmt: skip
    daemon.process.send_signal(signal.SIGTERM)
    wait_for(lambda: "stopping: no new claims" in daemon.log(), 10, "the stop to begin")
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.wait_exit(30) == 0
    after = daemon_env.status("book")
    assert after is not None and after["state"] == "queued" and after["attempts"] == 0
    done = after["progress"]["chunks_done"]
    assert 1 <= done < after["progress"]["chunks_total"], "finished chunks are kept; the rest waits"
    restarted = daemon_env.start()
    restarted.wait_ready()
    finished = daemon_env.wait_state("book", ("done",), timeout=180)
    assert finished["attempts"] == 1
    assert restarted.terminate() == 0


def test_at_most_max_loaded_models_run_and_an_idle_one_makes_room(daemon_env: DaemonEnv) -> None:
    daemon = daemon_env.start(TTS_MAX_LOADED_MODELS="1", TTS_MODEL_IDLE_S="600")
    daemon.wait_ready()
    most = 0

    def both_done() -> bool:
        nonlocal most
        most = max(most, len(children(daemon.process.pid)))
        states = [(daemon_env.status(name) or {}).get("state") for name in ("plain", "designed")]
        return states == ["done", "done"]

    daemon_env.drop_json("plain.json", {"text": "A plain voice.", "speaker": "Ryan"})
    daemon_env.wait_state("plain", ("done",))
    daemon_env.drop_json("designed.json", {"text": "Designed.", "model": "tiny-design", "instruct": "A calm voice."})
    wait_for(both_done, 120, lambda: f"both jobs to be done:\n{daemon.log()}")
    assert most == 1, "two models ran at once"
    assert "stopping the idle worker of tiny to make room for tiny-design" in daemon.log()
    assert daemon.terminate() == 0


def test_a_crash_charges_only_the_jobs_of_the_call_it_happened_in(daemon_env: DaemonEnv) -> None:
    daemon = daemon_env.start(TTS_FAULT="synthesis:victim", TTS_MAX_BATCH="1", TTS_MAX_ATTEMPTS="2")
    daemon.wait_ready()
    names = ("victim", "a1", "a2", "a3")
    for name in names:
        daemon_env.drop_json(f"{name}.json", {"text": f"I am {name}.", "speaker": "Ryan"})
    for name in names:
        daemon_env.wait_state(name, ("done", "failed"), timeout=120)
    assert daemon.terminate() == 0
    # Charged: the victim's call, and at most the call before it, if it was still being decoded then.
    charged = [name for name in ("a1", "a2", "a3") if attempts_and_restarts(daemon_env, name)[0] > 1]
    assert len(charged) <= 1, f"{charged} were charged for another job's crash"
    victim = daemon_env.status("victim")
    assert victim is not None and (victim["state"], victim["attempts"]) == ("failed", 2)
    assert victim["error"]["code"] == "interrupted"


def test_a_preloaded_model_is_loaded_before_any_job(daemon_env: DaemonEnv) -> None:
    daemon = daemon_env.start(TTS_PRELOAD_MODELS="tiny")
    daemon.wait_ready()
    [worker] = wait_for(lambda: [w for w in workers(daemon_env) if w.get("device")], 60, "the preloaded model")
    assert worker["model"] == "tiny" and worker["state"] == "idle"
    assert daemon.terminate() == 0


def test_a_hung_worker_is_killed_and_its_job_runs_again(daemon_env: DaemonEnv) -> None:
    daemon = daemon_env.start(TTS_LEASE_S="4")
    daemon.wait_ready()
    daemon_env.drop_json("stuck.json", {"text": SLOW_TEXT, "speaker": "Ryan"})
    daemon_env.wait_state("stuck", ("running",))
    [worker] = wait_for(lambda: [w for w in workers(daemon_env) if w.get("device")], 30, "a loaded worker")
    os.kill(worker["pid"], signal.SIGSTOP)  # alive, but answering nothing: hung
    wait_for(lambda: not alive(worker["pid"]), 30, "the hung worker to be killed")
    document = daemon_env.wait_state("stuck", ("done", "failed"), timeout=120)
    assert document["state"] == "done" and document["attempts"] == 2, document
    assert "killing it as hung" in daemon.log()
    assert daemon.terminate() == 0


def test_each_engine_speaks_and_status_names_it(daemon_env: DaemonEnv) -> None:
    """ttsd's loop (the default) and the official qwen-tts path (`TTS_ENGINE=qwen-tts`) both speak
    a seeded job the same way twice, and `ttsd status` names the engine its worker runs."""
    for engine in ("ttsd", "qwen-tts"):
        daemon = daemon_env.start(TTS_ENGINE=engine)
        daemon.wait_ready()
        for take in ("a", "b"):
            job = {
                "text": "Hello there, twice.",
                "speaker": "Ryan",
                "seed": 7,
                "cache": False,
                "output": f"{engine}-{take}",
            }
            daemon_env.drop_json(f"{engine}-{take}.json", job)
            daemon_env.wait_state(f"{engine}-{take}", ("done",))
        [worker] = wait_for(
            lambda: [w for w in workers(daemon_env) if w.get("engine")], 30, "status to name the engine"
        )
        assert worker["engine"] == engine
        takes = [(daemon_env.outbox / f"{engine}-{take}.wav").read_bytes() for take in ("a", "b")]
        assert takes[0] == takes[1], "a seeded job sounds the same every time"
        assert daemon.terminate() == 0
