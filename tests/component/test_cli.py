"""The CLI against a real store in a temporary state directory (click's runner, no daemon)."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import ttsd.cli.jobs as jobs_module
import ttsd.cli.submit as submit_module
import ttsd.client as client_module
import ttsd.daemon as daemon_module
from tests.support.fakes import deny_access
from ttsd.cli import main
from ttsd.cli.views import progress_line
from ttsd.config import Settings
from ttsd.delivery.outbox import Outbox
from ttsd.fsutil import hold_lock
from ttsd.intake.access import RECORD_NAME, InboxAccess
from ttsd.intake.jobfile import job_defaults, parse_object
from ttsd.jobqueue.records import AudioInfo, InboxTake, Rejection, RunInfo
from ttsd.jobqueue.store import Store
from ttsd.jobqueue.tables import Job
from ttsd.names import default_output_name
from ttsd.ops.lock import daemon_lock


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    return {name: tmp_path / name for name in ("state", "inbox", "outbox")}


def invoke(folders: dict[str, Path], *args: str, stdin: str | None = None) -> Result:
    options = [f"--{name}-dir" if name == "state" else f"--{name}" for name in folders]
    prefix = [item for option, path in zip(options, folders.values(), strict=True) for item in (option, str(path))]
    return CliRunner().invoke(main, [*prefix, *args], input=stdin, catch_exceptions=False)


def enqueue(folders: dict[str, Path], **fields: Any) -> Job:
    settings = Settings(state_dir=folders["state"], inbox=folders["inbox"], outbox=folders["outbox"])
    store = Store(settings.db_path)
    try:
        spec = parse_object(
            {"text": "Hello.", "model": "tiny", **fields},
            fields.get("output", "hello"),
            job_defaults(settings),
        )
        return store.enqueue(spec).job
    finally:
        store.close()


def test_status_on_a_fresh_state_directory(folders: dict[str, Path]) -> None:
    result = invoke(folders, "status", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["daemon"] == {"running": False}
    assert data["queue"] == {} and data["running"] == []
    human = invoke(folders, "status")
    assert "never started" in human.output


def test_jobs_show_and_their_json_shapes(folders: dict[str, Path]) -> None:
    first = enqueue(folders, output="one")
    enqueue(folders, output="two", text="Second.")

    listing = json.loads(invoke(folders, "jobs", "--json").stdout)
    assert [row["name"] for row in listing] == ["two", "one"]
    assert set(listing[0]) == {
        "id",
        "name",
        "model",
        "state",
        "attempts",
        "created_at",
        "finished_at",
        "duration_s",
        "error",
    }
    assert json.loads(invoke(folders, "jobs", "--state", "done", "--json").stdout) == []

    for ref in (first.id, first.id[:6], "one"):
        shown = invoke(folders, "show", ref, "--json")
        assert shown.exit_code == 0
        document = json.loads(shown.stdout)
        assert document["job_id"] == first.id and document["state"] == "queued"
        assert document["text"] == "Hello."

    status = json.loads(invoke(folders, "status", "--json").stdout)
    assert status["queue"] == {"tiny": {"queued": 2}}


def test_unknown_job_exits_3(folders: dict[str, Path]) -> None:
    result = invoke(folders, "show", "nope")
    assert result.exit_code == 3
    assert "no job" in result.output


def test_cancel_and_retry(folders: dict[str, Path]) -> None:
    job = enqueue(folders)
    cancelled = invoke(folders, "cancel", job.id, "--json")
    assert cancelled.exit_code == 0 and json.loads(cancelled.stdout)["state"] == "cancelled"
    status_file = json.loads((folders["outbox"] / "hello.status.json").read_text())
    assert status_file["state"] == "cancelled"
    assert invoke(folders, "cancel", job.id).exit_code == 1

    retried = invoke(folders, "retry", job.id, "--json")
    assert retried.exit_code == 0 and json.loads(retried.stdout)[0]["state"] == "queued"
    assert invoke(folders, "retry").exit_code == 2


def test_submit_writes_a_valid_job_file_atomically(folders: dict[str, Path]) -> None:
    result = invoke(
        folders,
        "submit",
        "Hello from the CLI.",
        "--speaker",
        "Ryan",
        "--model",
        "tiny",
        "--output",
        "greeting",
        "--priority",
        "5",
        "--json",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    path = Path(data["file"])
    assert path == folders["inbox"] / "greeting.json"
    assert json.loads(path.read_text()) == {
        "text": "Hello from the CLI.",
        "speaker": "Ryan",
        "model": "tiny",
        "output": "greeting",
        "priority": 5,
    }
    assert [p.name for p in folders["inbox"].iterdir()] == ["greeting.json"]

    again = invoke(folders, "submit", "Another.", "--model", "tiny", "--output", "greeting", "--json")
    assert Path(json.loads(again.stdout)["file"]).name == "greeting-2.json"


def test_submit_reads_stdin_and_names_the_job_from_its_text(folders: dict[str, Path]) -> None:
    result = invoke(folders, "submit", "-", "--model", "tiny", "--json", stdin="Read from a pipe.")
    assert result.exit_code == 0
    name = json.loads(result.stdout)["name"]
    assert name == default_output_name({"text": "Read from a pipe.", "model": "tiny"})
    assert name.startswith("read-from-a-pipe-")


def test_default_names_differ_for_jobs_that_differ_beyond_their_text(folders: dict[str, Path]) -> None:
    names = {
        json.loads(invoke(folders, "submit", "Same words.", "--model", "tiny", *extra, "--json").stdout)["name"]
        for extra in ([], ["--seed", "1"], ["--speaker", "Ryan"], ["--format", "flac"])
    }
    assert len(names) == 4, names


def test_submit_says_so_when_every_name_is_taken(folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "MAX_NAME_ATTEMPTS", 4)
    for _ in range(3):
        assert invoke(folders, "submit", "Hi.", "--model", "tiny", "--output", "busy").exit_code == 0
    result = invoke(folders, "submit", "Hi.", "--model", "tiny", "--output", "busy")
    assert result.exit_code == 1
    assert "too many files named busy*.json are waiting" in result.output


def test_submit_refuses_a_bad_job_before_writing_it(folders: dict[str, Path]) -> None:
    result = invoke(folders, "submit", "Hi.", "--model", "no-such-model")
    assert result.exit_code == 2
    assert "model: unknown model 'no-such-model'" in result.output
    assert not folders["inbox"].exists() or not any(folders["inbox"].iterdir())


def test_submit_names_a_saved_voice_and_subtitles(folders: dict[str, Path]) -> None:
    unknown = invoke(folders, "submit", "Hi.", "--voice", "nobody")
    assert unknown.exit_code == 2
    assert "voice: no saved voice 'nobody'" in unknown.output
    result = invoke(folders, "submit", "Hi. Bye.", "--model", "tiny", "--subtitles", "vtt", "--output", "sub", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(Path(json.loads(result.stdout)["file"]).read_text())["subtitles"] == "vtt"


def test_bad_settings_are_a_usage_error(folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTS_MAX_BATCH", "lots")
    result = invoke(folders, "status")
    assert result.exit_code == 2
    assert "TTS_MAX_BATCH" in result.output


def test_jobs_since_filter_and_wait(folders: dict[str, Path]) -> None:
    job = enqueue(folders)
    assert len(json.loads(invoke(folders, "jobs", "--since", "1h", "--json").stdout)) == 1
    assert json.loads(invoke(folders, "jobs", "--since", "2999-01-01", "--json").stdout) == []
    assert invoke(folders, "jobs", "--since", "yesterday").exit_code == 2

    timed_out = invoke(folders, "wait", job.id, "--timeout", "0.2")
    assert timed_out.exit_code == 1 and "still unfinished: hello (queued)" in timed_out.output
    invoke(folders, "cancel", job.id)
    finished = invoke(folders, "wait", "hello", "--json")
    assert finished.exit_code == 1 and json.loads(finished.stdout)[0]["state"] == "cancelled"
    assert invoke(folders, "wait", "nope").exit_code == 3


def test_status_reports_the_last_hour_per_model(folders: dict[str, Path]) -> None:
    settings = Settings(state_dir=folders["state"], inbox=folders["inbox"], outbox=folders["outbox"])
    store = Store(settings.db_path)
    try:
        for name, cached in (("fresh", False), ("again", True)):
            spec = parse_object({"text": f"{name}.", "model": "tiny"}, name, job_defaults(settings))
            store.enqueue(spec)
            token, [job] = store.claim("tiny", 1)
            audio = AudioInfo(file=f"{name}.wav", format="wav", sample_rate=24_000, duration_s=2.0, bytes=1, sha256="x")
            run = RunInfo(device="cpu", dtype="float32", seed=None, cache_hit=cached, synth_s=0.0 if cached else 1.0)
            assert store.finish_done(job.id, token, audio, run)
    finally:
        store.close()
    data = json.loads(invoke(folders, "status", "--json").stdout)
    figures = data["last_hour"]["tiny"]
    assert figures["done"] == 2 and figures["failed"] == 0 and figures["retries"] == 0
    assert figures["rtf"] == 0.5 and figures["cache_hit_rate"] == 0.5 and figures["audio_s"] == 4.0
    human = invoke(folders, "status").output
    assert "last 1h  tiny: 2 done, 0 failed, 4.0s of audio, RTF 0.50" in human
    assert "cache    0 takes" in human


def test_progress_line_and_show_progress(folders: dict[str, Path]) -> None:
    running = {"state": "running", "progress": {"chunks_done": 3, "chunks_total": 10, "audio_s": 12.5, "eta_s": 8.2}}
    assert progress_line("chapter", running) == (
        "chapter: running   [######..............] 3/10 chunks, 12.5s of audio, ETA 8s"
    )
    enqueue(folders)
    assert (
        "progress     queued    [....................] 0/1 chunks, 0.0s of audio"
        in invoke(folders, "show", "hello").output
    )


@pytest.mark.parametrize(
    "args", [("--json", "status"), ("status", "--json"), ("--json", "jobs"), ("--json", "cache", "stats")]
)
def test_json_goes_before_or_after_the_command(folders: dict[str, Path], args: tuple[str, ...]) -> None:
    result = invoke(folders, *args)
    assert result.exit_code == 0, result.output
    json.loads(result.stdout)


@pytest.mark.parametrize("command", ["submit", "wait"])
def test_ctrl_c_while_waiting_says_the_job_goes_on(
    folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    if command == "wait":
        monkeypatch.setattr(jobs_module, "WAIT_POLL_S", 0.0)
        monkeypatch.setattr(time, "sleep", interrupted)
        result = invoke(folders, "wait", enqueue(folders).id)
    else:
        monkeypatch.setattr(submit_module, "wait_for_submitted", interrupted)
        result = invoke(folders, "submit", "Wait for me.", "--model", "tiny", "--wait")
    assert result.exit_code == 130, result.output
    assert "stopped waiting" in result.output and "go on" in result.output.replace("goes on", "go on")


@pytest.fixture
def stopped_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A state directory whose daemon (a LaunchAgent, say) served other folders and is not running;
    the CLI runs from an unrelated folder with no folder settings of its own."""
    for name in ("TTS_INBOX", "TTS_OUTBOX", "TTS_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    places = {name: tmp_path / name for name in ("state", "inbox", "outbox", "elsewhere")}
    places["elsewhere"].mkdir()
    monkeypatch.chdir(places["elsewhere"])
    store = Store(places["state"] / "ttsd.sqlite3")
    record = store.register_daemon(places["inbox"], places["outbox"], "test")
    store.daemon_stopped(record.id)
    store.close()
    return places


def test_submit_while_the_daemon_is_down_uses_its_folders_and_says_so(stopped_daemon: dict[str, Path]) -> None:
    result = CliRunner().invoke(
        main, ["--state-dir", str(stopped_daemon["state"]), "submit", "Later.", "--model", "tiny", "--json"]
    )
    assert result.exit_code == 0, result.output
    submitted = json.loads(result.stdout)
    assert Path(submitted["file"]).parent == stopped_daemon["inbox"]
    assert submitted["daemon_running"] is False
    assert "no daemon is running" in result.stderr and "will run when one starts" in result.stderr
    assert not (stopped_daemon["elsewhere"] / "inbox").exists(), "never a guessed folder"


def test_cancel_while_the_daemon_is_down_writes_into_its_outbox(stopped_daemon: dict[str, Path]) -> None:
    store = Store(stopped_daemon["state"] / "ttsd.sqlite3")
    try:
        settings = Settings(state_dir=stopped_daemon["state"], default_model="tiny")
        job = store.enqueue(parse_object({"text": "Never mind."}, "never", job_defaults(settings))).job
    finally:
        store.close()
    result = CliRunner().invoke(main, ["--state-dir", str(stopped_daemon["state"]), "cancel", job.id])
    assert result.exit_code == 0, result.output
    assert json.loads((stopped_daemon["outbox"] / "never.status.json").read_text())["state"] == "cancelled"
    assert not (stopped_daemon["elsewhere"] / "outbox").exists()
    assert "no daemon is running" in result.stderr


def test_with_no_daemon_ever_the_note_names_the_folders_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TTS_INBOX", "TTS_OUTBOX", "TTS_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["--state-dir", str(tmp_path / "state"), "submit", "Hi.", "--model", "tiny"])
    assert result.exit_code == 0, result.output
    assert f"{tmp_path / 'inbox'} -> {tmp_path / 'outbox'} (from the default settings)" in result.stderr


def test_status_counts_the_files_waiting_in_the_inbox(folders: dict[str, Path]) -> None:
    inbox = folders["inbox"]
    (inbox / "accepted").mkdir(parents=True)
    (inbox / "accepted" / "old.json").write_text("{}")
    for name in ("one.json", "two.txt", ".hidden.json", "half.json.part"):
        (inbox / name).write_text("x")
    status = json.loads(invoke(folders, "status", "--json").stdout)
    assert status["inbox_waiting"] == 2
    assert "2 file(s) waiting to be taken" in invoke(folders, "status").stdout


def test_rejected_files_are_in_the_queue_for_jobs_show_and_status(folders: dict[str, Path]) -> None:
    settings = Settings(state_dir=folders["state"], inbox=folders["inbox"], outbox=folders["outbox"])
    store = Store(settings.db_path)
    try:
        blank = Rejection("empty", "empty.txt", "blank_text", "text: must not be blank", "text")
        [taken] = store.take_files([InboxTake("k1", "empty.txt", "rejected", (), (blank,))], "here")
        [row] = taken.rejected
        invalid = Rejection("empty", "empty.json", "invalid_json", "invalid JSON at line 1", None)
        store.take_files([InboxTake("k2", "empty.json", "rejected", (), (invalid,))], "here")
    finally:
        store.close()
    listed = json.loads(invoke(folders, "jobs", "--state", "rejected", "--json").stdout)
    assert [(item["name"], item["error"]) for item in listed] == [
        ("empty", "invalid JSON at line 1"),
        ("empty", "text: must not be blank"),
    ], "both files are visible, though they share a name (and a status file)"
    shown = json.loads(invoke(folders, "show", row.id, "--json").stdout)
    assert (shown["state"], shown["source_file"], shown["error"]["field"]) == ("rejected", "empty.txt", "text")
    assert "rejected 2 job file(s) or line(s)" in invoke(folders, "status").stdout


@pytest.mark.parametrize(("folder", "what"), [("state", "state directory"), ("inbox", "inbox"), ("outbox", "outbox")])
def test_run_stops_at_once_on_a_folder_macos_keeps_from_it(
    folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch, folder: str, what: str
) -> None:
    started: list[Settings] = []

    def run_daemon(settings: Settings, **_options: object) -> int:
        started.append(settings)
        return 0

    monkeypatch.setattr(daemon_module, "run_daemon", run_daemon)
    for path in folders.values():
        path.mkdir(mode=0o700)
    deny_access(monkeypatch, folders[folder])
    result = invoke(folders, "run")
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(
        f"ttsd: cannot use the {what} {folders[folder]}: Operation not permitted (macOS privacy protection: "
        "give ttsd's python ("
    )
    assert "Full Disk Access" in line
    assert started == [], "the daemon never starts on a folder it cannot use"


def test_status_shows_the_inbox_problem_the_running_daemon_recorded(folders: dict[str, Path]) -> None:
    settings = Settings(state_dir=folders["state"], inbox=folders["inbox"], outbox=folders["outbox"])
    store = Store(settings.db_path)
    store.register_daemon(settings.inbox, settings.outbox, "test")
    store.close()
    access = InboxAccess(settings.inbox, settings.state_dir / RECORD_NAME)
    access.failed(PermissionError(errno.EPERM, "Operation not permitted"))
    assert json.loads(invoke(folders, "status", "--json").stdout)["inbox_problem"] is None, "no daemon: stale"
    with hold_lock(settings.lock_path, str(os.getpid())):
        problem = json.loads(invoke(folders, "status", "--json").stdout)["inbox_problem"]
        assert problem["message"] == f"cannot use the inbox {settings.inbox}: Operation not permitted"
        human = invoke(folders, "status").output
    assert f"inbox    the daemon cannot list it (since {problem['since']}): {problem['message']}" in human


def test_status_while_a_daemon_holds_the_lock_but_has_not_registered_yet(folders: dict[str, Path]) -> None:
    settings = Settings(state_dir=folders["state"], inbox=folders["inbox"], outbox=folders["outbox"])
    with daemon_lock(settings):
        result = invoke(folders, "status")
    assert result.exit_code == 0, result.output
    assert "daemon   starting" in result.stdout


def test_status_names_files_put_into_accepted_by_hand(folders: dict[str, Path]) -> None:
    accepted = folders["inbox"] / "accepted"
    accepted.mkdir(parents=True)
    settings = Settings(state_dir=folders["state"], inbox=folders["inbox"], outbox=folders["outbox"])
    store = Store(settings.db_path)
    try:
        store.enqueue(parse_object({"text": "Taken.", "model": "tiny"}, "taken", job_defaults(settings)), "taken.json")
    finally:
        store.close()
    (accepted / "taken.json").write_text("{}")
    (accepted / "taken.20261129T101010123456.json").write_text("{}")  # a second drop of that name
    (accepted / "mine.json").write_text('{"text": "I put this here myself."}')
    status = json.loads(invoke(folders, "status", "--json").stdout)
    assert status["accepted_strays"] == ["mine.json"]
    assert "1 file(s) put in inbox/accepted/ by hand are never taken (mine.json)" in invoke(folders, "status").stdout


def test_cancel_with_a_full_outbox_disk_still_cancels_and_says_so(
    folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    job = enqueue(folders)

    def full(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Outbox, "write_status", full)
    result = invoke(folders, "cancel", job.id)
    assert result.exit_code == 0, result.output
    assert "not updated yet: No space left on device" in result.stderr
    assert json.loads(invoke(folders, "show", job.id, "--json").stdout)["state"] == "cancelled"
