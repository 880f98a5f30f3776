"""End to end: a real `ttsd run` process, real folders, the real qwen-tts code path on the tiny
checkpoint. Nothing here is mocked."""

from __future__ import annotations

import hashlib
import json
import shlex
import stat
import sys
import time
from typing import Any

from tests.support.assertions import assert_real_wav
from tests.support.daemon_harness import DaemonEnv, wait_for

FRAME = 1920  # samples per codec frame at 24 kHz (12.5 Hz)


def test_job_files_in_speech_out(daemon_env: DaemonEnv) -> None:
    daemon = daemon_env.start()
    daemon.wait_ready()

    daemon_env.drop("hello.json", json.dumps({"text": "Hello there.", "speaker": "Ryan"}))
    daemon_env.drop("note.txt", "A short note, read aloud.")
    daemon_env.drop_json("renamed.json", {"text": "Arrived by rename.", "speaker": "Vivian", "language": "English"})
    daemon_env.drop("typo.json", json.dumps({"text": "Oops.", "spekaer": "Ryan"}))

    # A slow writer: the file exists, incomplete, for longer than one pause between pieces.
    slow = daemon_env.inbox / "slow.json"
    pieces = ['{"text": "Written', " slowly, ", 'in pieces.", ', '"speaker": "Ryan"}']
    with slow.open("w", encoding="utf-8") as handle:
        for piece in pieces:
            handle.write(piece)
            handle.flush()
            time.sleep(0.08)

    for name in ("hello", "note", "renamed", "slow"):
        document = daemon_env.wait_state(name, ("done", "failed"))
        assert document["state"] == "done", document
        audio = assert_real_wav(daemon_env.outbox / f"{name}.wav")
        assert len(audio) % FRAME == 0
        assert document["audio"]["file"] == f"{name}.wav"
        assert document["audio"]["duration_s"] == round(len(audio) / 24_000, 3)
        assert document["audio"]["bytes"] == (daemon_env.outbox / f"{name}.wav").stat().st_size
        assert document["model"] == "tiny" and document["device"] == "cpu" and document["dtype"] == "float32"
        assert document["attempts"] == 1 and document["error"] is None

    rejected = daemon_env.wait_state("typo", ("rejected",))
    assert rejected["error"]["code"] == "unknown_field"
    assert rejected["error"]["field"] == "spekaer"
    assert rejected["error"]["message"].startswith("spekaer: unknown field")
    assert (daemon_env.inbox / "rejected" / "typo.json").is_file()
    assert not (daemon_env.outbox / "typo.wav").exists()

    for accepted in ("hello.json", "note.txt", "renamed.json", "slow.json"):
        assert (daemon_env.inbox / "accepted" / accepted).is_file()
    assert sorted(p.name for p in daemon_env.inbox.iterdir() if p.is_file() and not p.name.startswith(".")) == []

    assert daemon.terminate() == 0


def test_same_job_twice_is_one_job(daemon_env: DaemonEnv) -> None:
    daemon = daemon_env.start()
    daemon.wait_ready()
    job = {"text": "Say it once.", "speaker": "Ryan"}

    daemon_env.drop_json("twice.json", job)
    first = daemon_env.wait_state("twice", ("done",))
    daemon_env.drop_json("twice.json", job)
    wait_for(
        lambda: len(list((daemon_env.inbox / "accepted").glob("twice*.json"))) == 2,
        30,
        "the second file to be accepted",
    )
    listing = daemon_env.cli("jobs", "--json")
    assert listing.returncode == 0, listing.stderr
    jobs = [row for row in json.loads(listing.stdout) if row["name"] == "twice"]
    assert [row["id"] for row in jobs] == [first["job_id"]]
    assert daemon_env.wait_state("twice", ("done",))["job_id"] == first["job_id"]
    assert daemon.terminate() == 0


def test_cli_round_trip_against_a_running_daemon(daemon_env: DaemonEnv) -> None:
    hook_log = daemon_env.root / "hooks.log"
    record = f"import os; open({str(hook_log)!r}, 'a').write(os.environ['TTSD_EVENT'] + ' ' + '{{name}}' + ' ' + "
    record += "os.environ.get('TTSD_JOB_STATE', os.environ.get('TTSD_DONE', '')) + '\\n')"
    daemon = daemon_env.start(
        TTS_ON_JOB_DONE=f"{sys.executable} -c {shlex.quote(record)}",
        TTS_ON_QUEUE_DRAINED=f"{sys.executable} -c {shlex.quote(record.replace('{name}', 'all'))}",
    )
    daemon.wait_ready()

    submitted = daemon_env.cli("submit", "Submitted from the command line.", "--speaker", "Ryan", "--wait", "--json")
    assert submitted.returncode == 0, submitted.stderr
    document = json.loads(submitted.stdout)
    assert document["state"] == "done"
    assert_real_wav(daemon_env.outbox / document["audio"]["file"])

    shown = daemon_env.cli("show", document["name"], "--json")
    assert shown.returncode == 0
    assert json.loads(shown.stdout)["job_id"] == document["job_id"]

    status = json.loads(daemon_env.cli("status", "--json").stdout)
    assert status["daemon"]["running"] is True
    assert status["queue"]["tiny"]["done"] == 1

    unknown_speaker = daemon_env.cli("submit", "Who is this?", "--speaker", "Nobody", "--wait")
    assert unknown_speaker.returncode == 1
    assert "Nobody" in unknown_speaker.stdout and "voices:" in unknown_speaker.stdout

    wait_for(lambda: hook_log.exists() and hook_log.read_text().count("queue_drained") == 2, 30, "two drains")
    assert daemon.terminate() == 0
    status = json.loads(daemon_env.cli("status", "--json").stdout)
    assert status["daemon"]["running"] is False
    events = hook_log.read_text().splitlines()
    assert f"job_done {document['name']} done" in events
    assert any(line.startswith("job_done who-is-this") and line.endswith("failed") for line in events)
    assert events[-1].startswith("queue_drained all")


def test_second_daemon_on_the_same_state_refuses(daemon_env: DaemonEnv) -> None:
    first = daemon_env.start()
    first.wait_ready()
    second = daemon_env.start()
    assert second.wait_exit(60) == 1
    assert "already serving" in second.log()
    assert first.process.poll() is None
    record = json.loads((daemon_env.state / "effective-settings.json").read_text(encoding="utf-8"))
    assert record["pid"] == first.process.pid, "the refused daemon must not replace the running one's settings"
    assert first.terminate() == 0


def test_submit_wait_returns_the_job_it_wrote_even_when_the_name_was_used_before(daemon_env: DaemonEnv) -> None:
    daemon = daemon_env.start()
    daemon.wait_ready()
    outcomes = []
    for seed in ("1", "2"):
        result = daemon_env.cli(
            "submit", "One name, two takes.", "--output", "reused", "--seed", seed, "--wait", "--json"
        )
        assert result.returncode == 0, result.stderr
        outcomes.append(json.loads(result.stdout))
    first, second = outcomes
    assert first["state"] == second["state"] == "done"
    assert second["job_id"] != first["job_id"] and (first["seed"], second["seed"]) == (1, 2)
    assert daemon_env.status("reused") == second, "the name's status file describes the newest job"
    assert daemon.terminate() == 0


def test_a_name_belongs_to_the_job_delivered_to_it_last(daemon_env: DaemonEnv) -> None:
    daemon = daemon_env.start()
    daemon.wait_ready()

    def delivered(job_id: str, after: str = "") -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            document = daemon_env.status("take")
            if document is None or (document["job_id"], document["state"]) != (job_id, "done"):
                return None
            return document if document["finished_at"] > after else None

        document = wait_for(ready, 90, lambda: f"job {job_id} to own 'take' (now {daemon_env.status('take')})")
        audio = (daemon_env.outbox / document["audio"]["file"]).read_bytes()
        assert hashlib.sha256(audio).hexdigest() == document["audio"]["sha256"], "audio and status disagree"
        return document

    version_a, version_b = {"text": "Version A.", "output": "take"}, {"text": "Version B.", "output": "take"}
    daemon_env.drop_json("a.json", version_a)
    first_a = delivered(daemon_env.wait_state("take", ("done",))["job_id"])
    daemon_env.drop_json("b.json", version_b)
    b = delivered(wait_for(lambda: _other_job(daemon_env, first_a["job_id"]), 60, "version B to be taken"))
    daemon_env.drop_json("a-again.json", version_a)  # the earlier version, dropped again
    again_a = delivered(first_a["job_id"], after=b["finished_at"])
    assert again_a["audio"]["sha256"] == first_a["audio"]["sha256"], "spoken again from the cache"
    assert daemon_env.cli("retry", b["job_id"]).returncode == 0  # and the other way round, by hand
    delivered(b["job_id"], after=again_a["finished_at"])
    assert daemon.terminate() == 0


def _other_job(env: DaemonEnv, job_id: str) -> str | None:
    document = env.status("take")
    return document["job_id"] if document is not None and document["job_id"] != job_id else None


def test_doctor_shows_the_running_daemon_s_settings_not_only_its_own(ghost_env: DaemonEnv) -> None:
    daemon = ghost_env.start(TTS_MAX_BATCH="2", HF_TOKEN="hf_never_recorded")
    daemon.wait_ready()
    # This command's environment has no TTS_MAX_BATCH: it would use the default, auto.
    report = json.loads(ghost_env.cli("doctor", "--json").stdout)
    assert report["settings_of"]["who"] == "daemon" and report["settings_of"]["pid"] == daemon.process.pid
    assert report["settings"]["max_batch"] == {
        "value": "2",
        "source": "env",
        "differs": True,
        "here": {"value": "auto", "source": "default"},
    }
    assert report["settings"]["inbox"] == {"value": str(ghost_env.inbox), "source": "env", "differs": False}
    human = ghost_env.cli("doctor").stdout
    assert f"settings of the running daemon (pid {daemon.process.pid};" in human
    assert " *max_batch" in human and "2  [env]  (here: auto [default])" in human
    record = ghost_env.state / "effective-settings.json"
    assert "hf_never_recorded" not in record.read_text(encoding="utf-8")
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert daemon.terminate() == 0
    stopped = json.loads(ghost_env.cli("doctor", "--json").stdout)
    assert stopped["settings_of"] == {"who": "cli", "why": "no daemon is running"}
    assert stopped["settings"]["max_batch"] == {"value": "auto", "source": "default"}
