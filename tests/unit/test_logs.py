"""Logging (ttsd/ops/logs.py): human lines on a terminal, JSON lines elsewhere and in the rotating log
file, job ids on the records about a job, one set of handlers however often it is set up, and
`follow` reading the tail, then new lines, across a rotation."""

from __future__ import annotations

import io
import json
import logging
import queue
import threading
from collections.abc import Iterator
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

import pytest

from ttsd.config import Settings
from ttsd.joblog import job_extra, job_logger
from ttsd.jobqueue.tables import Job
from ttsd.ops.logs import QUIET_LOGGERS, follow, human_line, log_file_path, setup_logging

WAIT_S = 5.0


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Each test's handlers and levels are undone, so neither pytest's nor other tests' logging
    sees them."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    for name, old in quiet.items():
        logging.getLogger(name).setLevel(old)


def make_settings(tmp_path: Path, **fields: Any) -> Settings:
    return Settings(inbox=tmp_path / "inbox", outbox=tmp_path / "outbox", state_dir=tmp_path / "state", **fields)


def make_job() -> Job:
    return Job(id="j-42", content_key="k", name="chapter 1", model="tiny", batch_key="b", spec_json="{}")


def ours(root: logging.Logger) -> list[logging.Handler]:
    return [handler for handler in root.handlers if (handler.get_name() or "").startswith("ttsd:")]


def test_json_lines_carry_the_job(tmp_path: Path) -> None:
    stream = io.StringIO()
    setup_logging(make_settings(tmp_path), None, stream)
    log = logging.getLogger("ttsd.synth.worker")
    job_logger(log, make_job()).info("done: %.2fs of audio", 1.5)
    log.warning("disk %s", "full", extra=job_extra(make_job()))
    log.info("no job here")
    try:
        raise ValueError("bad")
    except ValueError:
        log.exception("delivery failed")

    first, second, third, fourth = (json.loads(line) for line in stream.getvalue().splitlines())
    assert set(first) == {"ts", "level", "logger", "thread", "message", "job_id", "job_name"}
    assert first["ts"].endswith("Z") and first["ts"][10] == "T"
    assert (first["level"], first["logger"], first["thread"]) == ("INFO", "ttsd.synth.worker", "MainThread")
    assert (first["message"], first["job_id"], first["job_name"]) == ("done: 1.50s of audio", "j-42", "chapter 1")
    assert (second["level"], second["job_id"]) == ("WARNING", "j-42")
    assert "job_id" not in third
    assert fourth["message"] == "delivery failed" and "ValueError: bad" in fourth["exc"]


def test_a_terminal_gets_human_lines(tmp_path: Path) -> None:
    stream = Terminal()
    setup_logging(make_settings(tmp_path), None, stream)
    logging.getLogger("ttsd.daemon").info("serving %s", "inbox", extra=job_extra(make_job()))
    line = stream.getvalue().rstrip("\n")
    assert not line.startswith("{")
    assert line.endswith(" INFO    MainThread ttsd.daemon: serving inbox")


def test_the_log_file_gets_json_and_stderr_off_a_terminal_only_problems(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, log_level="DEBUG")
    path = log_file_path(settings)
    assert path == tmp_path / "state" / "logs" / "ttsd.log"
    stream = io.StringIO()
    setup_logging(settings, path, stream)
    log = logging.getLogger("ttsd.intake.intake")
    log.debug("scan")
    log.error("cannot read the inbox")
    logging.getLogger("transformers").info("chatter")
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [line["message"] for line in lines] == ["scan", "cannot read the inbox"]
    # launchd's stderr file is never rotated: it gets only what someone must look at.
    assert [json.loads(line)["message"] for line in stream.getvalue().splitlines()] == ["cannot read the inbox"]
    assert (path.parent.stat().st_mode & 0o777) == 0o700


def test_a_terminal_with_a_log_file_still_sees_everything(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    stream = Terminal()
    setup_logging(settings, log_file_path(settings), stream)
    logging.getLogger("ttsd").info("hello")
    assert "ttsd: hello" in stream.getvalue()


def test_the_log_file_rotates_at_its_size_limit(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, log_max_bytes=1024, log_backups=2)
    path = tmp_path / "logs" / "custom.log"
    setup_logging(settings, path, io.StringIO())
    log = logging.getLogger("ttsd.test")
    for index in range(60):
        log.info("line %03d %s", index, "x" * 60)
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["custom.log", "custom.log.1", "custom.log.2"]
    for name in files:
        assert (path.parent / name).stat().st_size <= 1024
    # The newest lines are in the live file, in order.
    last = [json.loads(line)["message"] for line in path.read_text(encoding="utf-8").splitlines()]
    assert last[-1].startswith("line 059")


def test_setting_up_twice_keeps_one_set_of_handlers(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    root = logging.getLogger()
    others = [handler for handler in root.handlers if handler not in ours(root)]
    first, second = io.StringIO(), io.StringIO()
    setup_logging(settings, log_file_path(settings), first)
    setup_logging(settings, log_file_path(settings), second)
    assert [handler.get_name() for handler in ours(root)] == ["ttsd:stream", "ttsd:file"]
    # Handlers set up by others (pytest's here) are left alone.
    assert [handler for handler in root.handlers if handler not in ours(root)] == others
    logging.getLogger("ttsd").warning("once")
    assert first.getvalue() == ""
    assert len(second.getvalue().splitlines()) == 1
    assert len(log_file_path(settings).read_text(encoding="utf-8").splitlines()) == 1
    setup_logging(settings, None, second)
    assert [handler.get_name() for handler in ours(root)] == ["ttsd:stream"]


def test_third_party_loggers_are_quieted(tmp_path: Path) -> None:
    setup_logging(make_settings(tmp_path, log_level="DEBUG"), None, io.StringIO())
    assert logging.getLogger("transformers").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("watchdog.observers").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("ttsd.synth.worker").getEffectiveLevel() == logging.DEBUG
    setup_logging(make_settings(tmp_path, log_level="ERROR"), None, io.StringIO())
    assert logging.getLogger("transformers").getEffectiveLevel() == logging.ERROR


def test_log_file_setting(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, log_file="~/x/../ttsd.log")
    assert settings.log_file == Path("~/ttsd.log").expanduser()
    assert log_file_path(settings) == settings.log_file
    with pytest.raises(ValueError, match="log_backups"):
        make_settings(tmp_path, log_backups=0)


def test_human_line_renders_a_json_record() -> None:
    record = {
        "ts": "2025-01-02T03:04:05.678000Z",
        "level": "ERROR",
        "logger": "ttsd.synth.worker",
        "thread": "worker-tiny-0",
        "message": "boom",
        "exc": "Traceback ...",
    }
    line = human_line(json.dumps(record))
    assert line.endswith(" ERROR   worker-tiny-0 ttsd.synth.worker: boom\nTraceback ...")
    assert human_line("plain text") == "plain text"


# -- follow ---------------------------------------------------------------------------------------


class Follower:
    """Runs `follow` on a thread, handing each line over a queue."""

    def __init__(self, path: Path, from_end_lines: int) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(path, from_end_lines), daemon=True)
        self.thread.start()

    def _run(self, path: Path, from_end_lines: int) -> None:
        for line in follow(path, from_end_lines, self.stopped.is_set, poll_s=0.01):
            self.lines.put(line)

    def take(self, count: int) -> list[str]:
        return [self.lines.get(timeout=WAIT_S) for _ in range(count)]

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive()


def test_follow_yields_the_tail_then_new_lines_across_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "ttsd.log"
    path.write_text("".join(f"old {i}\n" for i in range(5000)) + "half", encoding="utf-8")
    follower = Follower(path, 3)
    try:
        assert follower.take(3) == ["old 4997", "old 4998", "old 4999"]
        with path.open("a", encoding="utf-8") as handle:
            handle.write(" a line\nnew 1\n")
        assert follower.take(2) == ["half a line", "new 1"]

        handler = RotatingFileHandler(path, maxBytes=1, backupCount=2, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(message)s"))
        try:
            # maxBytes=1: every record first rolls the file over, then starts the new one. (Two
            # rotations quicker than a poll would skip the middle file, as with tail -F.)
            for message in ("rotated 1", "rotated 2"):
                handler.emit(logging.makeLogRecord({"msg": message}))
                assert follower.take(1) == [message]
        finally:
            handler.close()
        assert (tmp_path / "ttsd.log.2").exists()
    finally:
        follower.stop()
    assert follower.lines.empty()


def test_follow_truncation_and_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "later.log"
    follower = Follower(path, 10)
    try:
        path.write_text("first\n", encoding="utf-8")
        assert follower.take(1) == ["first"]
        # Truncated, then shorter than what was read: seen as a new start (as with tail -F).
        path.write_text("new\n", encoding="utf-8")
        assert follower.take(1) == ["new"]
    finally:
        follower.stop()


def test_follow_without_following_yields_just_the_tail(tmp_path: Path) -> None:
    path = tmp_path / "ttsd.log"
    path.write_text("a\nb\nc\n", encoding="utf-8")
    assert list(follow(path, 2, lambda: True)) == ["b", "c"]
    assert list(follow(path, 0, lambda: True)) == []
    assert list(follow(path, 10, lambda: True)) == ["a", "b", "c"]
    assert list(follow(tmp_path / "missing.log", 5, lambda: True)) == []
