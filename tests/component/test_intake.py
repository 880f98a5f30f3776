"""Intake: files in the inbox -> jobs, exactly once, whatever the producer does.

Most cases drive the real `Intake` in-process (real Store, real Outbox, real files; `scan()` and
`take_ready()` called directly, with intake's monotonic clock under the test's control), so they
are fast and deterministic. A few run a real daemon where the watcher and the threads matter:
files dropped while it was down, rename hints against slow writers, and a burst of 5,000 files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from watchdog.events import FileClosedEvent, FileCreatedEvent, FileModifiedEvent, FileMovedEvent

import ttsd.intake.intake as intake_module
from tests.support.fakes import FakeClock, deny_access, scratch_dir, take_now
from ttsd.config import Settings
from ttsd.delivery.outbox import Outbox
from ttsd.delivery.status import status_document
from ttsd.intake.access import recorded_inbox_problem
from ttsd.intake.arrivals import EMPTY_FILE_WAIT_S
from ttsd.intake.folders import ACCEPTED_DIR, REASON_SUFFIX, REJECTED_DIR, is_ignored
from ttsd.intake.intake import Intake, IntakeSettings, Outcome
from ttsd.intake.jobfile import JobDefaults, ParsedEntry, parse_job_file
from ttsd.intake.watcher import Hint, _QueueingHandler
from ttsd.intake.writers import WRITERS, FileId, WriterCheck, open_for_writing
from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.store import Store
from ttsd.jobqueue.tables import Job

STABLE_S = 0.5
MAX_FILE_BYTES = 1024**2

IGNORED_NAMES = (
    ".DS_Store",
    ".hidden.json",
    ".x.json.swp",
    ".#x.json",
    "x.json.tmp",
    "x.json.part",
    "x.json.crdownload",
    "x.json.download",
    "x.json~",
    "~$x.json",
    "#x.json#",
    "4913",
    "Icon\r",
    "Thumbs.db",
)


def job_bytes(text: str, **fields: Any) -> bytes:
    return json.dumps({"text": text, **fields}).encode("utf-8")


@dataclass
class Bench:
    """One real Intake over real folders, its monotonic clock moved by hand."""

    root: Path
    inbox: Path
    store: Store
    outbox: Outbox
    intake: Intake
    clock: FakeClock

    def drop(self, name: str, content: bytes | str) -> Path:
        path = self.inbox / name
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return path

    def drop_renamed(self, name: str, content: bytes) -> Path:
        """Temp name, then rename, then the hint the watcher would give."""
        temp = self.drop(f".{name}.tmp", content)
        path = self.inbox / name
        temp.rename(path)
        self.intake.consider(path, arrived_by_rename=True)
        return path

    def closed(self, path: Path) -> None:
        """The hint the watcher gives when a writer closes a file (inotify's IN_CLOSE_WRITE)."""
        self.intake.consider(path, arrived_by_rename=False, closed_by_writer=True)

    def with_writers(self, writers: WriterCheck | None) -> None:
        """A fresh intake on the same folders, seeing writers through `writers` (None: as on macOS)."""
        hints: queue.Queue[Hint | None] = queue.Queue()
        self.intake = Intake(
            self.intake.settings, self.store, self.outbox, hints, threading.Event(), clock=self.clock, writers=writers
        )

    def pump(self) -> None:
        """Scan, then let every file that stays unchanged settle, and take what is ready."""
        self.intake.scan()
        self.intake.take_ready()
        self.clock.advance(STABLE_S + 0.01)
        self.intake.take_ready()

    def jobs(self) -> list[Job]:
        """The jobs in the queue (rejected files are rows too, listed by `rejected`)."""
        return [job for job in self.store.jobs(limit=None) if job.state != JobState.REJECTED]

    def rejected(self) -> list[Job]:
        return self.store.jobs(state=JobState.REJECTED, limit=None)

    def job_names(self) -> list[str]:
        return sorted(job.name for job in self.jobs())

    def status(self, name: str) -> dict[str, Any] | None:
        return self.outbox.read_status(name)

    def listing(self, folder: str = "") -> list[str]:
        return sorted(path.name for path in (self.inbox / folder).iterdir())

    def waiting(self) -> list[str]:
        """Entries still in the inbox (the intake's own folders aside)."""
        return [name for name in self.listing() if name not in (ACCEPTED_DIR, REJECTED_DIR, "voices")]


@pytest.fixture
def bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bench]:
    with scratch_dir(tmp_path) as root:
        inbox, outbox_dir, state = root / "inbox", root / "outbox", root / "state"
        settings = Settings(
            inbox=inbox,
            outbox=outbox_dir,
            state_dir=state,
            default_model="tiny",
            max_job_file_bytes=MAX_FILE_BYTES,
        )
        clock = FakeClock()
        store = Store(settings.db_path)
        outbox = Outbox(outbox_dir)
        hints: queue.Queue[Hint | None] = queue.Queue()
        intake_settings = IntakeSettings.from_settings(settings)
        intake_settings = replace(intake_settings, max_queue_size=10_000, stable_s=STABLE_S, scan_interval_s=60.0)
        intake = Intake(intake_settings, store, outbox, hints, threading.Event(), clock=clock)
        yield Bench(root, inbox, store, outbox, intake, clock)
        store.close()


def guarded(action: Callable[[], object], timeout: float, fifos: tuple[Path, ...] = ()) -> None:
    """Run `action` in a thread; fail (after unblocking any reader stuck on `fifos`) if it hangs."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        for fifo in fifos:
            with contextlib.suppress(OSError):  # a reader blocked in open() is released by a writer
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(5)
        raise AssertionError(f"intake blocked for more than {timeout}s")
    if errors:
        raise errors[0]


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every path passed to os.open while the test runs."""
    seen: list[str] = []
    real_open = os.open

    def spy(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        seen.append(os.fsdecode(path))
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", spy)
    return seen


# -- when a file is complete ---------------------------------------------------------------------


def test_a_slow_writer_is_not_taken_while_it_grows(bench: Bench) -> None:
    text = "A slow writer's sentence, written a few bytes at a time."
    data = job_bytes(text)
    path = bench.inbox / "slow.json"
    pieces = [data[i : i + 9] for i in range(0, len(data), 9)]
    with path.open("wb") as handle:
        for piece in pieces:
            handle.write(piece)
            handle.flush()
            os.fsync(handle.fileno())
            bench.intake.scan()
            bench.intake.take_ready()
            # Quiet for most of the window, never all of it: still growing.
            bench.clock.advance(STABLE_S * 0.9)
            bench.intake.take_ready()
            assert bench.waiting() == ["slow.json"], "taken while it was still being written"
            assert bench.jobs() == []
    bench.intake.take_ready()  # sees it settled only from here on
    assert bench.waiting() == ["slow.json"]
    bench.clock.advance(STABLE_S)
    bench.intake.take_ready()
    assert bench.waiting() == []
    [job] = bench.jobs()
    assert json.loads(job.spec_json)["text"] == text
    assert bench.listing(ACCEPTED_DIR) == ["slow.json"]
    assert bench.listing(REJECTED_DIR) == []


def test_a_rewrite_in_place_with_the_same_size_still_counts_as_a_change(bench: Bench) -> None:
    path = bench.drop("same-size.json", job_bytes("version one"))
    bench.intake.scan()
    bench.intake.take_ready()
    bench.clock.advance(STABLE_S * 0.9)
    path.write_bytes(job_bytes("version two"))  # same length, new mtime and ctime
    bench.intake.take_ready()
    bench.clock.advance(STABLE_S * 0.9)
    bench.intake.take_ready()
    assert bench.jobs() == []
    bench.clock.advance(STABLE_S)
    bench.intake.take_ready()
    [job] = bench.jobs()
    assert json.loads(job.spec_json)["text"] == "version two"


@pytest.mark.parametrize("offset_s", [-86_400.0, 86_400.0 * 365])
def test_file_times_are_not_compared_with_the_wall_clock(bench: Bench, offset_s: float) -> None:
    # An old mtime is no proof the file is complete; a future one (cp -p from a machine with a
    # skewed clock, a clock stepped back) must not hold the file until that date.
    path = bench.drop("skewed.json", job_bytes(f"mtime moved by {offset_s}"))
    moment = time.time() + offset_s
    os.utime(path, (moment, moment))
    bench.intake.scan()
    bench.intake.take_ready()
    assert bench.jobs() == [], "taken at first sight: an old mtime is not proof of completeness"
    bench.clock.advance(STABLE_S)
    bench.intake.take_ready()
    assert bench.job_names() == ["skewed"]


def test_temp_then_rename_is_ignored_then_taken_at_once(bench: Bench) -> None:
    temp = bench.drop(".atomic.json.tmp", job_bytes("written under a temp name"))
    bench.pump()
    bench.pump()
    assert bench.jobs() == []
    assert temp.read_bytes() == job_bytes("written under a temp name")

    path = bench.inbox / "atomic.json"
    temp.rename(path)
    bench.intake.consider(path, arrived_by_rename=True)
    bench.intake.take_ready()  # no time passes: the rename says it is complete
    assert bench.job_names() == ["atomic"]
    assert bench.listing(ACCEPTED_DIR) == ["atomic.json"]


def test_a_rename_hint_upgrades_a_file_the_scan_saw_first(bench: Bench) -> None:
    path = bench.drop("seen-first.json", job_bytes("scanned, then the rename event"))
    bench.intake.scan()
    bench.intake.take_ready()
    assert bench.jobs() == []
    bench.intake.consider(path, arrived_by_rename=True)
    bench.intake.take_ready()
    assert bench.job_names() == ["seen-first"]


def test_files_dropped_before_intake_started_are_all_taken(bench: Bench) -> None:
    for index in range(20):
        bench.drop(f"early-{index:02d}.json", job_bytes(f"dropped early, number {index}"))
    bench.drop("early-lines.jsonl", b'{"text": "line one"}\n{"text": "line two"}\n')
    bench.drop("early-text.txt", "Just the words.")
    bench.pump()
    expected = sorted([f"early-{i:02d}" for i in range(20)] + ["early-lines-1", "early-lines-2", "early-text"])
    assert bench.job_names() == expected
    assert bench.waiting() == []
    assert len(bench.listing(ACCEPTED_DIR)) == 22


@pytest.mark.parametrize(
    "temp_name",
    ["notes.json~", ".notes.json.swp", "4913", ".#notes.json", "notes.json.part", "notes.json.crdownload"],
)
def test_editor_saves_through_an_ignored_name_then_rename_over(bench: Bench, temp_name: str) -> None:
    bench.drop("notes.json", job_bytes("first draft"))
    bench.pump()
    assert bench.job_names() == ["notes"]

    temp = bench.drop(temp_name, job_bytes("second draft, saved by an editor"))
    bench.pump()
    assert temp.exists(), "an editor's temp file was touched"
    assert len(bench.jobs()) == 1

    target = bench.inbox / "notes.json"
    temp.rename(target)
    bench.intake.consider(target, arrived_by_rename=True)
    bench.intake.take_ready()
    texts = sorted(json.loads(job.spec_json)["text"] for job in bench.jobs())
    assert texts == ["first draft", "second draft, saved by an editor"]
    assert len(bench.listing(ACCEPTED_DIR)) == 2
    assert bench.waiting() == []


def test_vim_style_save_backup_rename_then_write_in_place(bench: Bench) -> None:
    # vim: write "4913" to test the folder, rename x -> x~, write x afresh (not atomically), drop x~.
    probe = bench.drop("4913", b"")
    probe.unlink()
    bench.drop("poem.json", job_bytes("roses are red"))
    bench.pump()
    assert bench.job_names() == ["poem"]

    bench.drop("poem.json", job_bytes("violets are blue"))
    backup = bench.inbox / "poem.json~"
    (bench.inbox / "poem.json").rename(backup)
    bench.intake.consider(backup, arrived_by_rename=True)  # an ignored name: never a candidate
    with (bench.inbox / "poem.json").open("wb") as handle:
        handle.write(job_bytes("violets are blue")[:10])
        handle.flush()
        bench.intake.scan()
        bench.intake.take_ready()
        bench.clock.advance(STABLE_S / 2)
        bench.intake.take_ready()
        handle.write(job_bytes("violets are blue")[10:])
    backup.unlink()
    bench.pump()
    texts = sorted(json.loads(job.spec_json)["text"] for job in bench.jobs())
    assert texts == ["roses are red", "violets are blue"]
    assert bench.listing(REJECTED_DIR) == []


# -- files written in place: taken when their writer is done -----------------------------------------

needs_writers = pytest.mark.skipif(WRITERS is None, reason="this system does not show which files are open for writing")
LONG_TEXT = " ".join(f"Sentence number {index} of a text its writer takes its time over." for index in range(6))


def settle(bench: Bench, rounds: int = 4, step: float = STABLE_S * 3) -> None:
    """Let intake look at the inbox while the clock runs on, several windows in all."""
    for _ in range(rounds):
        bench.intake.scan()
        bench.intake.take_ready()
        bench.clock.advance(step)
        bench.intake.take_ready()


@needs_writers
def test_a_file_held_open_is_not_taken_however_long_its_writer_pauses(bench: Bench) -> None:
    data = job_bytes(LONG_TEXT)
    path = bench.inbox / "paused.json"
    with path.open("wb") as handle:
        handle.write(data[: len(data) // 2])
        handle.flush()
        settle(bench, rounds=6)  # quiet for many windows, and still open
        assert bench.waiting() == ["paused.json"], "taken while its writer still had it open"
        assert bench.jobs() == []
        assert bench.listing(REJECTED_DIR) == []
        handle.write(data[len(data) // 2 :])
    bench.closed(path)
    bench.intake.take_ready()
    assert bench.jobs() == [], "just written: the stability window still applies after the close"
    bench.clock.advance(STABLE_S)
    bench.intake.take_ready()
    [job] = bench.jobs()
    assert json.loads(job.spec_json)["text"] == LONG_TEXT
    assert bench.listing(ACCEPTED_DIR) == ["paused.json"]


@needs_writers
def test_a_file_is_taken_right_after_its_writer_closes_it(bench: Bench) -> None:
    path = bench.inbox / "kept-open.txt"
    with path.open("w", encoding="utf-8") as handle:
        handle.write(LONG_TEXT)
        handle.flush()
        settle(bench)
        assert bench.jobs() == []
    bench.closed(path)
    bench.intake.take_ready()  # no time passes: it was unchanged for long, and now no one writes it
    [job] = bench.jobs()
    assert json.loads(job.spec_json)["text"] == LONG_TEXT


@needs_writers
def test_open_pause_write_close_is_taken_not_rejected_as_blank(bench: Bench) -> None:
    # `(sleep 1; echo text) > inbox/late.txt`: the shell creates the file empty, the text comes later.
    path = bench.inbox / "late.txt"
    with path.open("w", encoding="utf-8") as handle:
        settle(bench)
        assert bench.waiting() == ["late.txt"]
        assert bench.listing(REJECTED_DIR) == []
        handle.write("text\n")
    bench.closed(path)
    bench.intake.take_ready()
    bench.clock.advance(STABLE_S)
    bench.intake.take_ready()
    [job] = bench.jobs()
    assert json.loads(job.spec_json)["text"].strip() == "text"
    assert bench.listing(REJECTED_DIR) == []


@needs_writers
def test_a_writer_that_closes_and_opens_again_is_waited_for(bench: Bench) -> None:
    # `echo first > f; echo second >> f`: the first close is not the end of the file.
    path = bench.inbox / "twice.txt"
    path.write_text("First line.\n", encoding="utf-8")
    bench.closed(path)
    bench.intake.take_ready()
    assert bench.jobs() == [], "taken at the first close, before the window"
    with path.open("a", encoding="utf-8") as handle:
        bench.clock.advance(STABLE_S)
        bench.intake.take_ready()
        assert bench.jobs() == [], "taken while opened again for writing"
        handle.write("Second line.\n")
    bench.closed(path)
    bench.intake.take_ready()
    bench.clock.advance(STABLE_S)
    bench.intake.take_ready()
    [job] = bench.jobs()
    assert json.loads(job.spec_json)["text"].split() == ["First", "line.", "Second", "line."]


@needs_writers
def test_a_lost_close_event_delays_a_file_only_until_the_next_look(bench: Bench) -> None:
    path = bench.inbox / "no-event.json"
    with path.open("wb") as handle:
        handle.write(job_bytes("closed without an event"))
        handle.flush()
        settle(bench)
    bench.clock.advance(STABLE_S)
    bench.intake.take_ready()
    assert bench.jobs() == [], "looked at again before its time although nothing said it was closed"
    bench.clock.advance(bench.intake.settings.scan_interval_s)
    bench.intake.take_ready()
    assert bench.job_names() == ["no-event"]


@needs_writers
def test_a_writer_in_another_process_holds_the_file_until_it_ends(bench: Bench) -> None:
    path = bench.inbox / "child.json"
    data = job_bytes("written by another process, which dies before closing it")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_WRITER, str(path), data[:20].hex()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        settle(bench)
        assert bench.waiting() == ["child.json"]
    finally:
        child.kill()
        child.wait(30)
    bench.clock.advance(bench.intake.settings.scan_interval_s)
    bench.intake.take_ready()
    assert bench.waiting() == [], "its writer is gone: the file must not wait for ever"
    assert bench.listing(REJECTED_DIR) == ["child.json", "child.json" + REASON_SUFFIX]  # half a JSON document


CHILD_WRITER = """
import sys
handle = open(sys.argv[1], "wb")
handle.write(bytes.fromhex(sys.argv[2]))
handle.flush()
print("ready", flush=True)
sys.stdin.read()
"""


@needs_writers
def test_a_reader_holding_the_file_does_not_hold_it_back(bench: Bench) -> None:
    path = bench.drop("read.json", job_bytes("someone is only reading me"))
    with path.open("rb"):
        bench.pump()
    assert bench.job_names() == ["read"]


def test_one_writer_check_answers_for_every_waiting_file(bench: Bench) -> None:
    calls: list[int] = []

    def counting(files: Mapping[FileId, str]) -> dict[FileId, int]:
        calls.append(len(files))
        return open_for_writing(files) if WRITERS is not None else {}

    bench.with_writers(counting)
    count = 500
    for index in range(count):
        bench.drop(f"many-{index:03d}.json", job_bytes(f"one of many, number {index}"))
    bench.drop_renamed("renamed.json", job_bytes("renamed files are never checked"))
    bench.pump()
    assert calls == [count], "one pass over the processes for all waiting files, none for a renamed one"
    assert len(bench.jobs()) == count + 1


def test_without_a_writer_check_an_empty_file_waits_longer_than_the_window(bench: Bench) -> None:
    # As on macOS: no close events, no way to see writers. An empty file is what a writer leaves
    # between creating the file and its first write, so it is not judged by the short window.
    bench.with_writers(None)
    path = bench.drop("empty-for-now.txt", b"")
    bench.drop("complete.txt", "Already written.")
    bench.pump()
    assert bench.job_names() == ["complete"], "without a writer check the stability rule alone decides"
    assert bench.waiting() == ["empty-for-now.txt"]
    path.write_text("Written late.", encoding="utf-8")
    bench.pump()
    assert bench.job_names() == ["complete", "empty-for-now"]
    assert bench.listing(REJECTED_DIR) == []

    bench.drop("really-empty.txt", b"")
    bench.pump()
    assert bench.waiting() == ["really-empty.txt"]
    bench.clock.advance(EMPTY_FILE_WAIT_S)
    bench.intake.take_ready()
    assert bench.waiting() == [], "an empty file still gets its answer"
    assert bench.listing(REJECTED_DIR) == ["really-empty.txt", "really-empty.txt" + REASON_SUFFIX]


# -- rewrites of the same file ---------------------------------------------------------------------


def test_the_same_file_rewritten_with_new_content_is_a_new_job(bench: Bench) -> None:
    bench.drop("again.json", job_bytes("the first text"))
    bench.pump()
    bench.drop("again.json", job_bytes("a different text"))
    bench.pump()
    jobs = bench.jobs()
    assert [job.name for job in jobs] == ["again", "again"]
    assert len({job.id for job in jobs}) == 2
    accepted = bench.listing(ACCEPTED_DIR)
    assert len(accepted) == 2 and "again.json" in accepted
    status = bench.status("again")
    assert status is not None and status["job_id"] == jobs[0].id  # the newest owns the name


def test_the_same_file_rewritten_with_the_same_content_is_one_job(bench: Bench) -> None:
    first = take_now(bench.intake, bench.drop("twin.json", job_bytes("say it once")))
    second = take_now(bench.intake, bench.drop("twin.json", job_bytes("say it once")))
    assert first == Outcome(queued=1, duplicates=0, rejected=0)
    assert second == Outcome(queued=0, duplicates=1, rejected=0)
    [job] = bench.jobs()
    assert job.name == "twin"
    assert len(bench.listing(ACCEPTED_DIR)) == 2, "the duplicate file is accepted too, not left behind"
    status = bench.status("twin")
    assert status is not None and status["job_id"] == job.id and status["state"] == "queued"
    assert status == json.loads(json.dumps(status_document(bench.store.get(job.id)))), "status disagrees with the queue"


# -- malformed files -------------------------------------------------------------------------------

DEEP_ARRAY = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"text":' * 100_000 + b'"x"' + b"}" * 100_000
OVERSIZED = b'{"text": "' + b"a" * MAX_FILE_BYTES + b'"}'
GARBAGE_WITH_NUL = bytes((i * 37 + 11) % 256 for i in range(4096))
GARBAGE_HIGH = bytes(range(0x80, 0x100)) * 8

MALFORMED: list[tuple[str, bytes, str, str | None]] = [
    ("truncated.json", b'{"text": "cut off', "invalid_json", None),
    ("latin1.json", '{"text": "café"}'.encode("latin-1"), "encoding", None),
    ("nan.json", b'{"text": "hi", "seed": NaN}', "invalid_number", None),
    ("infinity.json", b'{"text": "hi", "generation": {"temperature": Infinity}}', "invalid_number", None),
    ("duplicate-keys.json", b'{"text": "one", "text": "two"}', "duplicate_key", None),
    ("deep-array.json", DEEP_ARRAY, "too_deep", None),
    ("deep-object.json", DEEP_OBJECT, "too_deep", None),
    ("wrong-type.json", b'{"text": 42}', "invalid_field", "text"),
    ("wrong-priority.json", b'{"text": "hi", "priority": "high"}', "invalid_field", "priority"),
    ("bool-seed.json", b'{"text": "hi", "seed": true}', "invalid_field", "seed"),
    ("nested-type.json", b'{"text": "hi", "generation": {"top_k": "5"}}', "invalid_field", "generation.top_k"),
    ("unknown-field.json", b'{"text": "hi", "volume": 2}', "unknown_field", "volume"),
    ("too-fast.json", b'{"text": "hi", "speed": 9}', "invalid_field", "speed"),
    ("missing-text.json", b'{"speaker": "Ryan"}', "missing_field", "text"),
    ("a-list.json", b'[{"text": "hi"}]', "not_an_object", None),
    ("empty.json", b"", "invalid_json", None),
    ("empty-lines.jsonl", b"\n\n", "empty", None),
    ("blank.txt", b"  \n\t", "blank_text", "text"),
    ("oversized.json", OVERSIZED, "too_large", None),
    ("garbage.json", GARBAGE_WITH_NUL, "binary", None),
    ("high-bytes.json", GARBAGE_HIGH, "encoding", None),
    ("surrogate.json", b'{"text": "\\ud800"}', "encoding", "text"),
    ("a-url.json", b'{"text": "hi", "speaker": "https://example.com/voice"}', "url_refused", "speaker"),
    ("bad-output.json", b'{"text": "hi", "output": "../escape"}', "invalid_output", "output"),
    ("unknown-model.json", b'{"text": "hi", "model": "nope"}', "unknown_model", "model"),
    ("notes.md", b"# A heading and no words", "invalid_book", None),
    ("notes.rtf", b"{\\rtf1 not a job}", "unsupported_file", None),
]


@pytest.mark.parametrize(("file_name", "content", "code", "field"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_each_malformed_file_is_rejected_with_its_reason_and_good_ones_still_go_through(
    bench: Bench, file_name: str, content: bytes, code: str, field: str | None
) -> None:
    bench.drop("good-before.json", job_bytes("dropped before the bad one"))
    bench.drop(file_name, content)
    bench.drop("good-after.txt", "dropped after the bad one")
    bench.pump()

    stem = Path(file_name).stem
    document = bench.status(stem)
    assert document is not None and document["state"] == "rejected", document
    assert document["error"]["code"] == code, document["error"]
    assert document["error"]["field"] == field, document["error"]
    assert document["source_file"] == file_name
    [row] = [job for job in bench.rejected() if job.id == document["job_id"]]  # recorded in the queue too
    assert (row.error_code, row.source_file) == (document["error"]["code"], file_name)
    assert bench.listing(REJECTED_DIR) == sorted([file_name, file_name + REASON_SUFFIX])
    assert (bench.inbox / REJECTED_DIR / file_name).read_bytes() == content, "the rejected file was altered"
    reason = (bench.inbox / REJECTED_DIR / (file_name + REASON_SUFFIX)).read_text(encoding="utf-8")
    assert code in reason
    assert bench.job_names() == ["good-after", "good-before"]
    assert bench.listing(ACCEPTED_DIR) == ["good-after.txt", "good-before.json"]
    assert bench.waiting() == []


def test_a_bom_is_accepted(bench: Bench) -> None:
    bench.drop("bom.json", b"\xef\xbb\xbf" + job_bytes("behind a byte order mark"))
    bench.drop("bom.txt", b"\xef\xbb\xbfplain words behind a BOM")
    bench.pump()
    texts = sorted(json.loads(job.spec_json)["text"] for job in bench.jobs())
    assert texts == ["behind a byte order mark", "plain words behind a BOM"]


def test_a_jsonl_file_with_one_bad_line_keeps_the_good_lines(bench: Bench) -> None:
    lines = [job_bytes("line one"), b'{"text": "line two", "seed": NaN}', job_bytes("line three")]
    bench.drop("batch.jsonl", b"\n".join(lines) + b"\n")
    bench.pump()
    assert bench.job_names() == ["batch-1", "batch-3"]
    bad = bench.status("batch-2")
    assert bad is not None and bad["state"] == "rejected" and bad["error"]["code"] == "invalid_number"
    for name in ("batch-1", "batch-3"):
        good = bench.status(name)
        assert good is not None and good["state"] == "queued"
    assert bench.listing(ACCEPTED_DIR) == ["batch.jsonl"]


def test_a_jsonl_file_with_only_bad_lines_is_rejected_line_by_line(bench: Bench) -> None:
    bench.drop("all-bad.jsonl", b'{"text": 1}\nnot json\n')
    bench.pump()
    assert bench.jobs() == []
    assert bench.listing(REJECTED_DIR) == ["all-bad.jsonl", "all-bad.jsonl" + REASON_SUFFIX]
    reason = (bench.inbox / REJECTED_DIR / ("all-bad.jsonl" + REASON_SUFFIX)).read_text(encoding="utf-8")
    assert "line 1: invalid_field" in reason and "line 2: invalid_json" in reason


# -- things that are not regular files ----------------------------------------------------------------


def assert_rejected_not_regular(bench: Bench, name: str) -> None:
    document = bench.status(Path(name).stem)
    assert document is not None and document["state"] == "rejected"
    assert document["error"]["code"] == "not_regular", document["error"]
    assert name in bench.listing(REJECTED_DIR)
    assert name not in bench.waiting()


def test_a_symlink_to_a_job_file_outside_is_rejected_and_never_followed(bench: Bench, opened: list[str]) -> None:
    outside = bench.root / "outside.json"
    outside.write_bytes(job_bytes("a perfectly good job, reached through a link"))
    before = outside.stat()
    (bench.inbox / "link.json").symlink_to(outside)
    bench.drop("good.json", job_bytes("a real file"))
    bench.pump()

    assert_rejected_not_regular(bench, "link.json")
    moved = bench.inbox / REJECTED_DIR / "link.json"
    assert moved.is_symlink() and moved.readlink() == outside, "the link itself moves, not its target"
    assert outside.read_bytes() == job_bytes("a perfectly good job, reached through a link")
    assert outside.stat().st_ino == before.st_ino
    assert bench.job_names() == ["good"]
    assert not [path for path in opened if path in (str(outside), str(bench.inbox / "link.json"), str(moved))]


def test_a_symlink_to_a_fifo_is_rejected_without_blocking(bench: Bench, opened: list[str]) -> None:
    fifo = bench.root / "outside.fifo"
    os.mkfifo(fifo)
    (bench.inbox / "piped.json").symlink_to(fifo)
    guarded(bench.pump, timeout=10, fifos=(fifo,))
    assert_rejected_not_regular(bench, "piped.json")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert str(fifo) not in opened


def test_a_dangling_symlink_is_rejected(bench: Bench) -> None:
    (bench.inbox / "dangling.json").symlink_to(bench.root / "nowhere.json")
    bench.pump()
    assert_rejected_not_regular(bench, "dangling.json")
    assert (bench.inbox / REJECTED_DIR / "dangling.json").is_symlink()
    assert not (bench.root / "nowhere.json").exists()


def test_a_fifo_in_the_inbox_is_rejected_without_blocking(bench: Bench, opened: list[str]) -> None:
    fifo = bench.inbox / "pipe.json"
    os.mkfifo(fifo)
    bench.drop("good.json", job_bytes("next to a FIFO"))
    guarded(bench.pump, timeout=10, fifos=(fifo, bench.inbox / REJECTED_DIR / fifo.name))
    assert_rejected_not_regular(bench, "pipe.json")
    assert stat.S_ISFIFO((bench.inbox / REJECTED_DIR / "pipe.json").lstat().st_mode)
    assert str(fifo) not in opened
    assert bench.job_names() == ["good"]


def test_a_fifo_renamed_in_is_rejected_at_once_without_blocking(bench: Bench) -> None:
    fifo = bench.inbox / "hinted.json"
    os.mkfifo(fifo)
    bench.intake.consider(fifo, arrived_by_rename=True)
    guarded(bench.intake.take_ready, timeout=10, fifos=(fifo, bench.inbox / REJECTED_DIR / fifo.name))
    assert_rejected_not_regular(bench, "hinted.json")


def test_a_unix_socket_is_rejected(bench: Bench) -> None:
    import socket

    path = bench.inbox / "sock.json"
    if len(os.fsencode(path)) >= 100:
        pytest.skip("the temp path is too long for a unix socket name")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(path))
        guarded(bench.pump, timeout=10)
    finally:
        server.close()
    assert_rejected_not_regular(bench, "sock.json")


def test_a_directory_named_like_a_job_is_rejected_and_not_entered(bench: Bench) -> None:
    folder = bench.inbox / "folder.json"
    folder.mkdir()
    (folder / "inner.json").write_bytes(job_bytes("inside a folder: not a job"))
    bench.pump()
    assert_rejected_not_regular(bench, "folder.json")
    moved = bench.inbox / REJECTED_DIR / "folder.json"
    assert moved.is_dir() and (moved / "inner.json").read_bytes() == job_bytes("inside a folder: not a job")
    assert bench.jobs() == []


def test_a_fifo_or_symlink_swapped_in_after_the_check_is_still_not_followed(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The lstat check and the open are two steps: the open itself refuses links and never waits.
    monkeypatch.setattr(Intake, "_entry_problem", lambda self, path: None)
    outside = bench.root / "target.json"
    outside.write_bytes(job_bytes("reached only by following a link"))
    (bench.inbox / "swapped-link.json").symlink_to(outside)
    fifo = bench.inbox / "swapped-fifo.json"
    os.mkfifo(fifo)
    guarded(lambda: take_now(bench.intake, fifo), timeout=10, fifos=(fifo, bench.inbox / REJECTED_DIR / fifo.name))
    take_now(bench.intake, bench.inbox / "swapped-link.json")
    for name, code in (("swapped-fifo", "not_regular"), ("swapped-link", "not_regular")):
        document = bench.status(name)
        assert document is not None and document["error"]["code"] == code, document
    assert bench.jobs() == []


# -- names intake leaves alone -------------------------------------------------------------------------


def test_ignored_names_are_never_touched(bench: Bench) -> None:
    for name in IGNORED_NAMES:
        assert is_ignored(name), name
        bench.drop(name, job_bytes(f"I am {name!r} and must stay put"))
    before = {name: (bench.inbox / name).stat() for name in IGNORED_NAMES}
    for name in IGNORED_NAMES:
        bench.intake.consider(bench.inbox / name, arrived_by_rename=True)
    bench.pump()
    bench.pump()
    assert sorted(bench.waiting()) == sorted(IGNORED_NAMES)
    for name, info in before.items():
        now = (bench.inbox / name).stat()
        assert (now.st_ino, now.st_size, now.st_mtime_ns) == (info.st_ino, info.st_size, info.st_mtime_ns)
        assert (bench.inbox / name).read_bytes() == job_bytes(f"I am {name!r} and must stay put")
    assert bench.jobs() == []
    assert list(bench.outbox.root.iterdir()) == []
    assert bench.listing(ACCEPTED_DIR) == bench.listing(REJECTED_DIR) == []


def test_files_inside_the_intake_folders_are_not_candidates(bench: Bench) -> None:
    (bench.inbox / ACCEPTED_DIR / "old.json").write_bytes(job_bytes("already accepted"))
    (bench.inbox / "voices" / "voice.json").write_bytes(job_bytes("a voice folder file"))
    bench.intake.consider(bench.inbox / ACCEPTED_DIR / "old.json", arrived_by_rename=True)
    bench.pump()
    assert bench.jobs() == []


# -- one bad file never stops the others -------------------------------------------------------------


def test_a_status_file_that_cannot_be_written_does_not_strand_the_job_file(bench: Bench) -> None:
    (bench.outbox.root / "blocked.status.json").mkdir()  # a folder squats the status file's name
    bench.drop("blocked.json", job_bytes("my status cannot be written"))
    bench.drop("fine.json", job_bytes("mine can"))
    bench.pump()
    assert bench.job_names() == ["blocked", "fine"]
    assert bench.waiting() == [], "the job is recorded: its file must not stay to be taken again"
    assert bench.listing(ACCEPTED_DIR) == ["blocked.json", "fine.json"]
    bench.drop("blocked.json", job_bytes("my status cannot be written"))
    bench.pump()
    assert bench.job_names() == ["blocked", "fine"], "taking it again is a duplicate, not a new job"


def test_a_file_that_vanishes_before_it_is_taken_is_forgotten(bench: Bench) -> None:
    bench.drop("vanishing.json", job_bytes("here, then gone"))
    bench.drop("staying.json", job_bytes("here to stay"))
    bench.intake.scan()
    bench.intake.take_ready()
    (bench.inbox / "vanishing.json").unlink()
    bench.clock.advance(STABLE_S)
    bench.intake.take_ready()
    assert bench.job_names() == ["staying"]
    assert take_now(bench.intake, bench.inbox / "vanishing.json") == Outcome()


@pytest.mark.skipif(sys.platform == "darwin", reason="APFS only stores UTF-8 names")
def test_file_names_that_are_not_utf8_are_taken(bench: Bench) -> None:
    for raw_name, content in ((b"caf\xe9.json", job_bytes("named in Latin-1")), (b"na\xefve.json", b"{")):
        (bench.inbox / os.fsdecode(raw_name)).write_bytes(content)
    bench.pump()
    [job] = bench.jobs()
    assert job.name == "caf_" and job.source_file == "caf\ufffd.json"
    rejected = bench.status("na_ve")
    assert rejected is not None and rejected["source_file"] == "na\ufffdve.json"
    assert bench.waiting() == []
    assert len(bench.listing(ACCEPTED_DIR)) == 1 and len(bench.listing(REJECTED_DIR)) == 2


def test_files_wait_in_the_inbox_while_the_queue_is_full(bench: Bench) -> None:
    bench.intake.settings = replace(bench.intake.settings, max_queue_size=2)
    for index in range(4):
        bench.drop(f"wait-{index}.json", job_bytes(f"number {index}"))
    bench.pump()
    assert len(bench.jobs()) == 2
    assert len(bench.waiting()) == 2
    for name in bench.waiting():
        assert bench.status(Path(name).stem) is None, "a held-back file is not rejected"
    bench.intake.settings = replace(bench.intake.settings, max_queue_size=10)
    bench.pump()
    assert len(bench.jobs()) == 4 and bench.waiting() == []


def test_an_inbox_that_cannot_be_listed_is_said_once_per_episode_and_recorded_for_the_cli(
    bench: Bench, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    state = bench.root / "state"
    bench.drop("waiting.json", job_bytes("taken once the inbox can be listed again"))
    caplog.set_level(logging.INFO, logger="ttsd.intake")
    with monkeypatch.context() as denied:
        deny_access(denied, bench.inbox)  # what macOS does to a LaunchAgent's python in ~/Desktop
        for _ in range(5):
            bench.pump()
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1, "once per episode, not at every scan"
    assert errors[0].exc_info is None, "one line, not a traceback"
    problem = recorded_inbox_problem(state)
    assert problem is not None and problem["message"] in errors[0].getMessage()
    assert problem["message"].startswith(
        f"cannot use the inbox {bench.inbox}: Operation not permitted (macOS privacy protection: give ttsd's python"
    )
    assert bench.jobs() == []

    bench.pump()
    assert bench.job_names() == ["waiting"]
    assert recorded_inbox_problem(state) is None, "the episode is over"
    assert f"intake can list the inbox {bench.inbox} again" in caplog.messages

    with monkeypatch.context() as denied:
        deny_access(denied, bench.inbox)
        bench.intake.scan()
    assert len([record for record in caplog.records if record.levelno >= logging.ERROR]) == 2, "a new episode"
    assert recorded_inbox_problem(state) is not None
    Intake(bench.intake.settings, bench.store, bench.outbox, queue.Queue(), threading.Event(), clock=bench.clock)
    assert recorded_inbox_problem(state) is None, "a starting daemon's intake has not failed yet"


# -- the watcher's hints -------------------------------------------------------------------------------


def test_watcher_hints_name_files_the_way_intake_knows_the_inbox(tmp_path: Path) -> None:
    real = tmp_path / "real-inbox"
    real.mkdir()
    alias = tmp_path / "alias"
    alias.symlink_to(real, target_is_directory=True)
    hints: queue.Queue[Hint | None] = queue.Queue()
    handler = _QueueingHandler(alias, hints)
    # FSEvents reports real paths; inotify the watched spelling; either way intake gets its own.
    handler.on_any_event(FileCreatedEvent(str(real / "a.json")))
    handler.on_any_event(FileMovedEvent(str(real / ".a.tmp"), str(alias / "b.json")))
    handler.on_any_event(FileModifiedEvent(os.fsencode(real / "caf\udce9.json")))
    handler.on_any_event(FileClosedEvent(str(real / "a.json")))
    handler.on_any_event(FileCreatedEvent(str(real / "accepted" / "c.json")))  # not in the inbox itself
    handler.on_any_event(FileMovedEvent(str(alias / "d.json"), str(tmp_path / "elsewhere.json")))
    got = []
    while not hints.empty():
        got.append(hints.get_nowait())
    assert got == [
        Hint(alias / "a.json", arrived_by_rename=False),
        Hint(alias / "b.json", arrived_by_rename=True),
        Hint(alias / "caf\udce9.json", arrived_by_rename=False),
        Hint(alias / "a.json", arrived_by_rename=False, closed_by_writer=True),
    ]


def test_held_back_files_are_not_parsed_again_until_there_is_room_then_go_oldest_first(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[str] = []

    def counting(file_name: str, data: bytes, defaults: JobDefaults) -> list[ParsedEntry]:
        parsed.append(file_name)
        return parse_job_file(file_name, data, defaults)

    monkeypatch.setattr(intake_module, "parse_job_file", counting)
    bench.intake.settings = replace(bench.intake.settings, max_queue_size=1)
    # Dropped newest-name-first: the order of arrival (mtime), not of names, decides who goes first.
    for age, name in enumerate(("d", "c", "b", "a")):
        path = bench.drop(f"{name}.json", job_bytes(f"file {name}"))
        moment = 1_700_000_000 + age
        os.utime(path, (moment, moment))
    bench.pump()
    assert [job.name for job in bench.jobs()] == ["d"]
    assert sorted(parsed) == ["a.json", "b.json", "c.json", "d.json"]

    parsed.clear()
    for _ in range(3):
        bench.pump()
    assert parsed == [], "a full queue must not make intake read the waiting files again"

    bench.store.cancel(bench.jobs()[0].id)  # room for one more
    bench.pump()
    assert sorted(job.name for job in bench.jobs()) == ["c", "d"], "the oldest waiting file goes next"

    (bench.inbox / "a.json").write_bytes(job_bytes("file a, edited"))  # a changed file is read again
    parsed.clear()
    bench.pump()
    assert "a.json" in parsed
