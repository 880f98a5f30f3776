"""Completion hooks (ttsd/ops/hooks.py, ttsd/ops/drain.py): templates from the settings run
without a shell, job fields as arguments and environment, failures and timeouts logged without
holding anyone up, and one drain hook and notification per batch of work."""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ttsd.config import Settings, load_settings
from ttsd.delivery.outbox import Outbox
from ttsd.errors import ConfigError
from ttsd.jobqueue.tables import Job
from ttsd.ops.drain import DrainSummary, DrainTracker
from ttsd.ops.hooks import (
    HookCall,
    HookResult,
    HookRunner,
    run_hook,
)
from ttsd.templates import parse_template, render

# Writes its arguments and the TTSD_* environment as JSON to the file named by its first argument.
RECORDER = """\
import json, os, sys
env = {key: value for key, value in os.environ.items() if key.startswith("TTSD_")}
with open(sys.argv[1], "w", encoding="utf-8") as handle:
    json.dump({"argv": sys.argv[2:], "env": env}, handle)
"""
# Writes its own pid and a child's, then sleeps: a hook that hangs, with a child of its own.
HANGER = """\
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
with open(sys.argv[1] + ".tmp", "w") as handle:
    handle.write(str(child.pid))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(60)
"""


def make_job(**fields: Any) -> Job:
    values: dict[str, Any] = {
        "id": "j-0001",
        "content_key": "key",
        "name": "greeting",
        "model": "tiny",
        "batch_key": "batch",
        "spec_json": "{}",
        "state": "done",
    }
    values.update(fields)
    return Job(**values)


def settings_for(tmp_path: Path, **fields: Any) -> Settings:
    return Settings(inbox=tmp_path / "inbox", outbox=tmp_path / "outbox", state_dir=tmp_path / "state", **fields)


def python_command(tmp_path: Path, script: str, *args: str) -> str:
    path = tmp_path / "hook.py"
    path.write_text(script, encoding="utf-8")
    words = [sys.executable, str(path), *args]
    # Quoted as a person would write it in ttsd.toml, the words with placeholders left bare.
    return " ".join(word if "{" in word else shlex.quote(word) for word in words)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class FakeRunner:
    """Records calls instead of running them."""

    def __init__(self) -> None:
        self.calls: list[HookCall] = []

    def __call__(self, call: HookCall, timeout_s: float) -> HookResult:
        self.calls.append(call)
        return HookResult(0, 0.0)


def hook_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "ttsd.ops.hooks"]


# -- templates ---------------------------------------------------------------------------------


def test_templates_split_like_a_shell_and_substitute_each_word_once() -> None:
    argv = parse_template("/usr/bin/say -o '{audio} copy' {{name}} x{id}y", {"audio": "", "id": ""})
    assert argv == ("/usr/bin/say", "-o", "{audio} copy", "{{name}}", "x{id}y")
    rendered = render(argv, {"audio": "/out/a {id}.wav", "id": "7"})
    # A value holding a placeholder is not expanded again; {{name}} is a literal {name}.
    assert rendered == ("/usr/bin/say", "-o", "/out/a {id}.wav copy", "{name}", "x7y")
    # Braces that are not placeholders (an awk program) are left alone.
    assert parse_template("awk '{print $1}' {}", {}) == ("awk", "{print $1}", "{}")


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("notify {nam}", "unknown placeholder(s) {nam}"),
        ("{audio} --play", "program"),
        ("say 'unclosed", "cannot split"),
    ],
)
def test_bad_templates_are_refused_when_the_settings_load(tmp_path: Path, template: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=r"TTS_ON_JOB_DONE") as caught:
        load_settings(environ={"TTS_STATE_DIR": str(tmp_path), "TTS_ON_JOB_DONE": template})
    assert problem in str(caught.value)


def test_hook_settings_from_the_environment(tmp_path: Path) -> None:
    settings = load_settings(
        environ={
            "TTS_STATE_DIR": str(tmp_path),
            "TTS_ON_JOB_DONE": "/bin/echo {name}",
            "TTS_ON_QUEUE_DRAINED": "/bin/echo {done} of {total}",
            "TTS_HOOK_TIMEOUT_S": "2.5",
            "TTS_NOTIFY": "true",
        }
    ).settings
    assert (settings.on_job_done, settings.on_queue_drained) == ("/bin/echo {name}", "/bin/echo {done} of {total}")
    assert (settings.hook_timeout_s, settings.notify) == (2.5, True)
    # The drain hook knows no job fields.
    with pytest.raises(ConfigError, match="TTS_ON_QUEUE_DRAINED"):
        load_settings(environ={"TTS_STATE_DIR": str(tmp_path), "TTS_ON_QUEUE_DRAINED": "/bin/echo {name}"})
    assert settings_for(tmp_path, on_job_done="   ").on_job_done is None


# -- running hooks -----------------------------------------------------------------------------


def test_job_fields_reach_a_real_process_as_arguments_and_environment(tmp_path: Path) -> None:
    out = tmp_path / "seen.json"
    command = python_command(tmp_path, RECORDER, str(out), "{name}", "{state}", "--audio={audio}", "{duration}")
    settings = settings_for(tmp_path, on_job_done=command)
    outbox = Outbox(settings.outbox)
    job = make_job(client_id="req-9", audio_file="greeting.wav", duration_s=1.25, error_code="old", error_message="x")
    hooks = HookRunner(settings)
    hooks.start()
    hooks.job_finished(job, outbox)
    hooks.stop(timeout=10)

    seen = json.loads(out.read_text(encoding="utf-8"))
    audio = str(settings.outbox / "greeting.wav")
    assert seen["argv"] == ["greeting", "done", f"--audio={audio}", "1.25"]
    assert seen["env"] == {
        "TTSD_EVENT": "job_done",
        "TTSD_JOB_ID": "j-0001",
        "TTSD_JOB_NAME": "greeting",
        "TTSD_JOB_STATE": "done",
        "TTSD_JOB_MODEL": "tiny",
        "TTSD_AUDIO": audio,
        "TTSD_DURATION_S": "1.25",
        # A job that ended done reports no error, as its status file does.
        "TTSD_ERROR_CODE": "",
        "TTSD_ERROR_MESSAGE": "",
        "TTSD_STATUS_FILE": str(settings.outbox / "greeting.status.json"),
        "TTSD_CLIENT_ID": "req-9",
        "TTSD_OUTBOX": str(settings.outbox),
    }


def test_a_failed_job_brings_its_error_and_no_audio(tmp_path: Path) -> None:
    out = tmp_path / "seen.json"
    settings = settings_for(tmp_path, on_job_done=python_command(tmp_path, RECORDER, str(out), "{error_code}"))
    job = make_job(state="failed", error_code="engine_error", error_message="out of memory\0!")
    hooks = HookRunner(settings)
    hooks.start()
    hooks.job_finished(job, Outbox(settings.outbox))
    hooks.stop(timeout=10)
    seen = json.loads(out.read_text(encoding="utf-8"))
    assert seen["argv"] == ["engine_error"]
    env = seen["env"]
    assert (env["TTSD_JOB_STATE"], env["TTSD_AUDIO"], env["TTSD_DURATION_S"]) == ("failed", "", "")
    # A NUL would make the whole call fail; it is dropped.
    assert env["TTSD_ERROR_MESSAGE"] == "out of memory!"


def test_hostile_job_values_are_passed_literally(tmp_path: Path) -> None:
    out = tmp_path / "seen.json"
    pwned = tmp_path / "pwned"
    # Names are restricted (letters, digits, space, '.', '_', '-'), a client's id and an error
    # message far less: they may hold anything a shell would act on.
    hostile = f"x; rm -rf ~ $(touch {pwned}) `touch {pwned}` && echo ' \" \\ {{state}} $HOME"
    name = "my take 2 ünï"
    command = python_command(tmp_path, RECORDER, str(out), "{name}", "{client_id}", "e={error}")
    settings = settings_for(tmp_path, on_job_done=command)
    job = make_job(name=name, state="failed", client_id=hostile, error_message=hostile)
    hooks = HookRunner(settings)
    hooks.start()
    hooks.job_finished(job, Outbox(settings.outbox))
    hooks.stop(timeout=10)
    seen = json.loads(out.read_text(encoding="utf-8"))
    assert seen["argv"] == [name, hostile, f"e={hostile}"]
    assert (seen["env"]["TTSD_CLIENT_ID"], seen["env"]["TTSD_ERROR_MESSAGE"]) == (hostile, hostile)
    assert not pwned.exists()


def test_a_job_whose_name_cannot_be_in_the_outbox_is_skipped_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runner = FakeRunner()
    hooks = HookRunner(settings_for(tmp_path, on_job_done="/bin/echo {name}"), runner=runner)
    with caplog.at_level(logging.ERROR, logger="ttsd.ops.hooks"):
        hooks.job_finished(make_job(name="../escape"), Outbox(tmp_path / "outbox"))
    hooks.start()
    hooks.stop(timeout=5)
    assert runner.calls == []
    assert "hook on_job_done not run for job j-0001" in hook_records(caplog)[0].getMessage()


def test_a_failing_hook_is_logged_with_its_job_and_output(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    script = "import sys; print('no speaker attached'); sys.exit(3)\n"
    settings = settings_for(tmp_path, on_job_done=python_command(tmp_path, script))
    hooks = HookRunner(settings)
    hooks.start()
    started = time.monotonic()
    hooks.job_finished(make_job(), Outbox(settings.outbox))
    assert time.monotonic() - started < 0.5
    with caplog.at_level(logging.WARNING, logger="ttsd.ops.hooks"):
        hooks.stop(timeout=10)
    (record,) = hook_records(caplog)
    assert record.levelno == logging.WARNING
    assert record.__dict__["job_id"] == "j-0001"
    message = record.getMessage()
    assert "hook on_job_done (job j-0001) failed: exit status 3" in message
    assert "no speaker attached" in message


def test_a_hanging_hook_is_killed_with_its_children_at_the_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pid_file = tmp_path / "child.pid"
    settings = settings_for(tmp_path, on_job_done=python_command(tmp_path, HANGER, str(pid_file)), hook_timeout_s=0.5)
    hooks = HookRunner(settings)
    hooks.start()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="ttsd.ops.hooks"):
        hooks.job_finished(make_job(), Outbox(settings.outbox))
        # The caller is not held up by the hook it queued.
        assert time.monotonic() - started < 0.5
        assert wait_for(lambda: any("timed out" in r.getMessage() for r in hook_records(caplog)))
    elapsed = time.monotonic() - started
    assert elapsed < 0.5 + 2.0
    (record,) = hook_records(caplog)
    assert "hook on_job_done (job j-0001) timed out after 0.5s and was killed" in record.getMessage()
    assert record.__dict__["job_id"] == "j-0001"
    # The hook's own child was in its process group, and died with it.
    child = int(pid_file.read_text())
    assert wait_for(lambda: not process_alive(child))
    hooks.stop(timeout=5)


def process_alive(pid: int) -> bool:
    # A killed orphan may linger as a zombie until its new parent reaps it: dead all the same.
    if Path("/proc/self").exists():
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_slow_hook_does_not_hold_up_the_caller(tmp_path: Path) -> None:
    release = threading.Event()

    def blocking(call: HookCall, timeout_s: float) -> HookResult:
        release.wait(10)
        return HookResult(0, 0.0)

    hooks = HookRunner(settings_for(tmp_path, on_job_done="/bin/true"), runner=blocking)
    hooks.start()
    outbox = Outbox(tmp_path / "outbox")
    started = time.monotonic()
    for index in range(20):
        hooks.job_finished(make_job(id=f"j-{index}"), outbox)
    assert time.monotonic() - started < 0.5
    release.set()
    hooks.stop(timeout=5)


def test_a_program_that_cannot_start_is_reported(tmp_path: Path) -> None:
    result = run_hook(HookCall("on_job_done", (str(tmp_path / "missing"),), {}), 5.0)
    assert result.returncode is None
    assert result.error is not None and "FileNotFoundError" in result.error


def test_a_broken_runner_does_not_stop_the_hooks_after_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ran: list[str] = []

    def flaky(call: HookCall, timeout_s: float) -> HookResult:
        ran.append(call.extra["job_id"])
        if len(ran) == 1:
            raise RuntimeError("runner bug")
        return HookResult(0, 0.0)

    hooks = HookRunner(settings_for(tmp_path, on_job_done="/bin/true"), runner=flaky)
    hooks.start()
    outbox = Outbox(tmp_path / "outbox")
    with caplog.at_level(logging.ERROR, logger="ttsd.ops.hooks"):
        hooks.job_finished(make_job(id="j-1"), outbox)
        hooks.job_finished(make_job(id="j-2"), outbox)
        hooks.stop(timeout=5)
    assert ran == ["j-1", "j-2"]
    assert "could not be run" in hook_records(caplog)[0].getMessage()


def test_the_queue_is_bounded_and_drops_the_oldest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    runner = FakeRunner()
    hooks = HookRunner(settings_for(tmp_path, on_job_done="/bin/echo {id}"), runner=runner, max_pending=2)
    outbox = Outbox(tmp_path / "outbox")
    with caplog.at_level(logging.WARNING, logger="ttsd.ops.hooks"):
        # Not started yet: the calls pile up.
        for index in range(3):
            hooks.job_finished(make_job(id=f"j-{index}"), outbox)
    (record,) = hook_records(caplog)
    assert "dropping the oldest, hook on_job_done (job j-0)" in record.getMessage()
    hooks.start()
    hooks.stop(timeout=5)
    assert [call.argv for call in runner.calls] == [("/bin/echo", "j-1"), ("/bin/echo", "j-2")]


def test_only_final_states_run_the_job_hook(tmp_path: Path) -> None:
    runner = FakeRunner()
    hooks = HookRunner(settings_for(tmp_path, on_job_done="/bin/echo {state}"), runner=runner)
    hooks.start()
    outbox = Outbox(tmp_path / "outbox")
    for state in ("queued", "running", "done", "failed", "cancelled"):
        hooks.job_finished(make_job(state=state), outbox)
    hooks.stop(timeout=5)
    assert [call.argv[1] for call in runner.calls] == ["done", "failed", "cancelled"]


def test_nothing_configured_runs_nothing(tmp_path: Path) -> None:
    runner = FakeRunner()
    hooks = HookRunner(settings_for(tmp_path), runner=runner)
    assert not hooks.enabled
    hooks.start()
    hooks.job_finished(make_job(), Outbox(tmp_path / "outbox"))
    hooks.queue_drained(DrainSummary(done=1))
    hooks.stop(timeout=5)
    assert runner.calls == []


# -- drains and notifications --------------------------------------------------------------------


class Queue:
    """A stand-in for the store's count of queued and running jobs."""

    def __init__(self) -> None:
        self.pending = 0

    def __call__(self) -> int:
        return self.pending


def test_one_drain_hook_and_notification_per_batch(tmp_path: Path) -> None:
    runner = FakeRunner()
    settings = settings_for(tmp_path, on_queue_drained="/bin/echo {done} {failed} {total}", notify=True)
    hooks = HookRunner(settings, runner=runner, platform="darwin")
    queue = Queue()
    tracker = DrainTracker(queue)
    hooks.start()

    def finish(job: Job) -> None:
        queue.pending -= 1
        summary = tracker.job_finished(job)
        if summary is not None:
            hooks.queue_drained(summary)

    queue.pending = 3
    finish(make_job(id="a"))
    finish(make_job(id="b", state="failed"))
    assert tracker.poll() is None
    finish(make_job(id="c"))
    assert tracker.poll() is None  # the batch was reported once, by the job that drained it
    queue.pending = 1
    finish(make_job(id="d"))
    hooks.stop(timeout=5)

    drains = [call for call in runner.calls if call.hook == "on_queue_drained"]
    notes = [call for call in runner.calls if call.hook == "notify"]
    assert [call.argv for call in drains] == [("/bin/echo", "2", "1", "3"), ("/bin/echo", "1", "0", "1")]
    assert drains[0].env["TTSD_DONE"] == "2" and drains[0].env["TTSD_FAILED"] == "1"
    assert drains[0].env["TTSD_EVENT"] == "queue_drained"
    assert len(notes) == 2
    # osascript gets the text as an argument of a fixed script, never spliced into it.
    assert notes[0].argv[0] == "/usr/bin/osascript"
    assert notes[0].argv[-2:] == ("Queue done: 2 done, 1 failed", "ttsd")


def test_a_drain_waits_for_the_queue_to_stay_empty(tmp_path: Path) -> None:
    now = [100.0]
    queue = Queue()
    tracker = DrainTracker(queue, settle_s=2.0, clock=lambda: now[0])
    assert tracker.poll() is None  # nothing finished: nothing to report
    assert tracker.job_finished(make_job(id="a")) is None  # empty, but only just
    now[0] = 101.5
    queue.pending = 1  # another file arrived before the settle period ran out
    assert tracker.poll() is None
    queue.pending = 0
    assert tracker.job_finished(make_job(id="b")) is None
    now[0] = 103.0
    assert tracker.poll() is None  # 1.5 s since the last finish
    now[0] = 103.6
    assert tracker.poll() == DrainSummary(done=2)
    assert tracker.poll() is None
    # Jobs that are not over (a failure to be retried) do not start a batch.
    assert tracker.job_finished(make_job(state="queued")) is None
    now[0] = 200.0
    assert tracker.poll() is None


def test_a_failing_pending_count_only_delays_the_drain(caplog: pytest.LogCaptureFixture) -> None:
    calls = [0]

    def pending() -> int:
        calls[0] += 1
        if calls[0] == 1:
            raise OSError("database is locked")
        return 0

    tracker = DrainTracker(pending)
    with caplog.at_level(logging.ERROR, logger="ttsd.ops.drain"):
        assert tracker.job_finished(make_job()) is None
    drain_records = [record for record in caplog.records if record.name == "ttsd.ops.drain"]
    assert "could not count pending jobs" in drain_records[0].getMessage()
    assert tracker.poll() == DrainSummary(done=1)


def test_notify_off_macos_is_a_no_op_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    runner = FakeRunner()
    with caplog.at_level(logging.INFO, logger="ttsd.ops.hooks"):
        hooks = HookRunner(settings_for(tmp_path, notify=True), runner=runner, platform="linux")
        hooks.start()
        hooks.queue_drained(DrainSummary(done=1))
        hooks.queue_drained(DrainSummary(failed=2))
        hooks.stop(timeout=5)
    assert runner.calls == []
    assert not hooks.enabled
    (record,) = hook_records(caplog)
    assert "macOS only" in record.getMessage()


def test_drain_summary_message() -> None:
    assert DrainSummary(done=3, failed=1).message() == "3 done, 1 failed"
    assert DrainSummary(cancelled=1).message() == "1 cancelled"
    assert DrainSummary(done=1, failed=1, cancelled=1).total == 3
