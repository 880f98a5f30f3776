"""ttsd/client.py: the client side of the folder protocol (drop a job, read and await its status)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from ttsd import client
from ttsd.client import (
    InboxCrowded,
    read_status,
    stage_job,
    status_path,
    submit_job,
    wait_for_status,
    wait_for_submitted,
)
from ttsd.delivery import status as status_module
from ttsd.fsutil import TEMP_PREFIX, TEMP_SUFFIX, atomic_write


def write_status(outbox: Path, name: str, document: Any) -> None:
    atomic_write(status_path(outbox, name), json.dumps(document).encode("utf-8"), durable=False)


def hidden_files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("."))


# -- submit_job and stage_job ---------------------------------------------------------------------


def test_submit_job_takes_the_next_free_name_and_never_replaces_a_waiting_file(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"  # created on first use
    first = submit_job(inbox, "chapter", {"text": "one"})
    second = submit_job(inbox, "chapter", {"text": "two"})
    third = submit_job(inbox, "chapter", {"text": "three"})

    assert [path.name for path in (first, second, third)] == ["chapter.json", "chapter-2.json", "chapter-3.json"]
    assert [json.loads(path.read_bytes()) for path in (first, second, third)] == [
        {"text": "one"},
        {"text": "two"},
        {"text": "three"},
    ]
    assert hidden_files(inbox) == [], "the staged temp file is gone once the job is linked into place"


def test_submit_job_writes_utf8_json(tmp_path: Path) -> None:
    path = submit_job(tmp_path, "grüße", {"text": "你好，世界", "speaker": "Ryan"})
    assert path.name == "grüße.json"
    assert path.read_bytes() == '{"text": "你好，世界", "speaker": "Ryan"}'.encode()


def test_submit_job_gives_up_when_every_name_is_waiting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "MAX_NAME_ATTEMPTS", 3)  # chapter.json and chapter-2.json only
    submit_job(tmp_path, "chapter", {"text": "one"})
    submit_job(tmp_path, "chapter", {"text": "two"})
    with pytest.raises(InboxCrowded, match=r"too many files named chapter\*\.json"):
        submit_job(tmp_path, "chapter", {"text": "three"})
    assert sorted(path.name for path in tmp_path.iterdir()) == ["chapter-2.json", "chapter.json"]


def test_a_staged_job_is_hidden_until_dropped_under_exactly_its_name(tmp_path: Path) -> None:
    (tmp_path / "job.json").write_text("an older file", encoding="utf-8")
    staged = stage_job(tmp_path, "job.json", {"text": "new"})

    assert staged.temp.name.startswith(TEMP_PREFIX) and staged.temp.name.endswith(TEMP_SUFFIX)
    assert (tmp_path / "job.json").read_text(encoding="utf-8") == "an older file"

    assert staged.drop() == tmp_path / "job.json"
    assert json.loads((tmp_path / "job.json").read_bytes()) == {"text": "new"}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["job.json"]


# -- read_status ----------------------------------------------------------------------------------


def test_status_path_is_the_name_plus_the_status_suffix(tmp_path: Path) -> None:
    assert status_path(tmp_path, "hello") == tmp_path / "hello.status.json"


def test_read_status_returns_the_document(tmp_path: Path) -> None:
    write_status(tmp_path, "hello", {"state": "queued", "name": "hello"})
    assert read_status(tmp_path, "hello") == {"state": "queued", "name": "hello"}


def test_read_status_is_none_without_a_status_file_or_an_outbox(tmp_path: Path) -> None:
    assert read_status(tmp_path, "absent") is None
    assert read_status(tmp_path / "no-outbox", "absent") is None


@pytest.mark.parametrize(
    "content",
    [b"", b'{"state": "do', b"not json", b"[1, 2]", b'"done"', b"null", b"\xff\xfe", b"[" * 100_000],
    ids=["empty", "truncated", "text", "array", "string", "null", "not-utf8", "too-deep"],
)
def test_read_status_is_none_for_garbage(tmp_path: Path, content: bytes) -> None:
    status_path(tmp_path, "junk").write_bytes(content)
    assert read_status(tmp_path, "junk") is None


def test_read_status_is_none_for_a_document_past_the_size_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_status(tmp_path, "big", {"state": "done", "padding": "x" * 100})
    monkeypatch.setattr(status_module, "MAX_STATUS_BYTES", 50)
    assert read_status(tmp_path, "big") is None


def test_read_status_does_not_follow_a_symlink(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_status(elsewhere, "planted", {"state": "done"})
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    status_path(outbox, "planted").symlink_to(status_path(elsewhere, "planted"))
    assert read_status(outbox, "planted") is None


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_read_status_does_not_block_on_a_fifo(tmp_path: Path) -> None:
    # A blocking read would hang here; read_regular_file opens non-blocking and refuses it.
    os.mkfifo(status_path(tmp_path, "fifo"))
    assert read_status(tmp_path, "fifo") is None


# -- wait_for_status ------------------------------------------------------------------------------


def test_wait_for_status_reports_each_new_document_and_returns_the_final_one(tmp_path: Path) -> None:
    write_status(tmp_path, "job", {"state": "queued"})
    following = {"queued": "running", "running": "done"}
    seen: list[str] = []

    def on_change(document: dict[str, Any]) -> None:
        # The job moves on once the client has seen each state: deterministic, no second thread.
        seen.append(document["state"])
        if document["state"] in following:
            write_status(tmp_path, "job", {"state": following[document["state"]]})

    final = wait_for_status(tmp_path, "job", timeout=10, on_change=on_change, poll_s=0.001)

    assert final == {"state": "done"}
    assert seen == ["queued", "running", "done"]


@pytest.mark.parametrize("state", ["done", "failed", "cancelled", "rejected"])
def test_wait_for_status_returns_at_once_for_any_final_state(tmp_path: Path, state: str) -> None:
    write_status(tmp_path, "job", {"state": state})
    assert wait_for_status(tmp_path, "job", timeout=0)["state"] == state


def test_wait_for_status_calls_on_change_once_per_document_not_per_poll(tmp_path: Path) -> None:
    write_status(tmp_path, "job", {"state": "running"})
    seen: list[dict[str, Any]] = []
    with pytest.raises(TimeoutError):
        wait_for_status(tmp_path, "job", timeout=0.05, on_change=seen.append, poll_s=0.001)
    assert seen == [{"state": "running"}]


def test_wait_for_status_times_out_naming_the_last_state(tmp_path: Path) -> None:
    write_status(tmp_path, "job", {"state": "running"})
    with pytest.raises(TimeoutError, match=r"gave up waiting for job after 0.05s \(last state: running\)"):
        wait_for_status(tmp_path, "job", timeout=0.05, poll_s=0.001)


def test_wait_for_status_times_out_without_any_status_file(tmp_path: Path) -> None:
    with pytest.raises(TimeoutError, match=r"\(last state: none\)"):
        wait_for_status(tmp_path, "never", timeout=0.02, poll_s=0.001)


def test_wait_for_submitted_ignores_an_earlier_job_of_the_same_name(tmp_path: Path) -> None:
    # The name's status file still describes an earlier, finished job while the new file waits.
    write_status(tmp_path, "take", {"job_id": "old", "state": "done"})
    job_file = submit_job(tmp_path / "inbox", "take", {"text": "again"})
    seen: list[str] = []

    def intake_then_worker(document: dict[str, Any]) -> None:
        seen.append(f"{document['job_id']}:{document['state']}")
        if document["state"] == "queued":
            write_status(tmp_path, "take", {"job_id": "new", "state": "done"})

    write_status(tmp_path, "take", {"job_id": "new", "state": "queued"})  # intake: status first,
    job_file.rename(tmp_path / "inbox" / "taken.json")  # then the file leaves the inbox
    result = wait_for_submitted(job_file, tmp_path, "take", timeout=5, on_change=intake_then_worker, poll_s=0.001)
    assert result["job_id"] == "new" and seen == ["new:queued", "new:done"]


def test_wait_for_submitted_returns_a_rejection_and_times_out_while_the_file_waits(tmp_path: Path) -> None:
    job_file = submit_job(tmp_path / "inbox", "bad", {"text": "x"})
    with pytest.raises(
        TimeoutError, match=r"bad\.json to be taken from the inbox after 0\.02s \(is the daemon running\?\)"
    ):
        wait_for_submitted(job_file, tmp_path, "bad", timeout=0.02, poll_s=0.001)
    write_status(tmp_path, "bad", {"job_id": None, "state": "rejected"})
    job_file.unlink()
    assert wait_for_submitted(job_file, tmp_path, "bad", timeout=1, poll_s=0.001)["state"] == "rejected"
