"""Logging: a readable line per record on a terminal, JSON lines everywhere else (a pipe, launchd's
files, the rotating log file), carrying the job's id and name when a record is about one job.
Also `follow`, the `tail -F` behind `ttsd logs --follow`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import IO, Any, TextIO

from ttsd.config import Settings
from ttsd.fsutil import make_folder
from ttsd.joblog import JOB_FIELDS

LOG_FILE_NAME = "ttsd.log"
# Libraries that talk a lot at INFO; their warnings still come through.
QUIET_LOGGERS = ("qwen_tts", "transformers", "sox", "watchdog", "huggingface_hub", "accelerate", "urllib3")
HUMAN_FORMAT = "%(asctime)s %(levelname)-7s %(threadName)s %(name)s: %(message)s"
HUMAN_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
# Marks the handlers setup_logging installed, so a second call replaces them instead of adding more.
_HANDLER_PREFIX = "ttsd:"
_TAIL_BLOCK = 8192


def log_file_path(settings: Settings) -> Path:
    """The daemon's log file: `TTS_LOG_FILE`, else `<state_dir>/logs/ttsd.log`."""
    return settings.log_file or settings.state_dir / "logs" / LOG_FILE_NAME


def _utc_iso(created: float) -> str:
    # The status files' format (ttsd.delivery.status.iso), so times in both can be compared by eye.
    return datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (ISO UTC), level, logger, thread, message, then job_id and
    job_name when the record has them, and exc (the traceback) when it carries an exception."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": _utc_iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "thread": record.threadName,
            "message": record.getMessage(),
        }
        for key in JOB_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                document[key] = value
        if record.exc_info:
            document["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:  # formatted already, by the worker process that logged it
            document["exc"] = record.exc_text
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        # default=str: an odd object in `extra` must not cost the record.
        return json.dumps(document, ensure_ascii=False, default=str)


def human_formatter() -> logging.Formatter:
    """The terminal format: local time, level, thread, logger, message (and any traceback).
    Job ids are not repeated here: ttsd's messages about a job already name it."""
    return logging.Formatter(HUMAN_FORMAT, HUMAN_DATE_FORMAT)


def human_line(line: str) -> str:
    """A JSON log line from the log file in the terminal format (for `ttsd logs` on a terminal);
    a line that is not one of ours comes back unchanged."""
    try:
        document = json.loads(line)
        created = datetime.strptime(document["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        when = created.astimezone().strftime(HUMAN_DATE_FORMAT)
        text = f"{when} {document['level']:<7} {document['thread']} {document['logger']}: {document['message']}"
    except (ValueError, KeyError, TypeError):
        return line
    exc = document.get("exc")
    return f"{text}\n{exc}" if isinstance(exc, str) else text


def setup_logging(settings: Settings, log_file: Path | None = None, stream: TextIO | None = None) -> None:
    """Send every log record to `stream` (default: the current `sys.stderr`) and, when `log_file`
    is given, to that file, rotated at `settings.log_max_bytes` keeping `settings.log_backups` old
    files (pass `log_file_path(settings)`).

    A terminal gets the human format; anything else (a pipe, a file) gets JSON lines, as does the
    log file. When there is a log file and the stream is not a terminal (launchd points stderr at
    a file it never rotates), the stream only gets warnings and errors: the log file has the rest.
    Calling it again replaces what the previous call installed.
    """
    stream = sys.stderr if stream is None else stream
    root = logging.getLogger()
    for handler in [h for h in root.handlers if (h.get_name() or "").startswith(_HANDLER_PREFIX)]:
        root.removeHandler(handler)
        handler.close()

    terminal = stream.isatty()
    console = logging.StreamHandler(stream)
    console.set_name(f"{_HANDLER_PREFIX}stream")
    console.setFormatter(human_formatter() if terminal else JsonFormatter())
    if log_file is not None and not terminal:
        console.setLevel(logging.WARNING)
    root.addHandler(console)

    if log_file is not None:
        # Private: records quote job names and error messages, which may quote job text.
        make_folder(log_file.parent, "log folder", mode=0o700)
        rotating = RotatingFileHandler(
            log_file, maxBytes=settings.log_max_bytes, backupCount=settings.log_backups, encoding="utf-8"
        )
        rotating.set_name(f"{_HANDLER_PREFIX}file")
        rotating.setFormatter(JsonFormatter())
        root.addHandler(rotating)

    level = logging.getLevelNamesMapping()[settings.log_level]
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, level))


def follow(path: Path, from_end_lines: int, stop: Callable[[], bool], poll_s: float = 0.2) -> Iterator[str]:
    """Yield the last `from_end_lines` lines of `path`, then each line appended to it, until
    `stop()` is true (checked between polls every `poll_s`). Like `tail -F`: when the file is
    rotated away (renamed, a new one created) the rest of the old file is read, then the new one
    from its start; a truncated file is re-read from its start; a missing file is waited for.
    Lines come without their newline; a line still being written is held until it is complete.
    `stop=lambda: True` yields just the tail."""
    handle = _open(path)
    pending = b""
    try:
        if handle is not None:
            lines, pending = _tail(handle, from_end_lines)
            yield from lines
        while not stop():
            if handle is None:
                handle = _open(path)
                if handle is None:
                    time.sleep(poll_s)
                continue
            chunk = handle.read()
            if chunk:
                *complete, pending = (pending + chunk).split(b"\n")
                yield from (_decode(line) for line in complete)
                continue
            if _replaced(path, handle):
                # Everything the old file got before the rename has just been read; a last line
                # without a newline is as complete as it will ever be.
                if pending:
                    yield _decode(pending)
                handle.close()
                handle = _open(path)
                pending = b""
                continue
            time.sleep(poll_s)
    finally:
        if handle is not None:
            handle.close()


def _open(path: Path) -> IO[bytes] | None:
    try:
        return path.open("rb")
    except FileNotFoundError:
        return None


def _decode(line: bytes) -> str:
    return line.decode("utf-8", errors="replace")


def _tail(handle: IO[bytes], count: int) -> tuple[list[str], bytes]:
    """The last `count` complete lines, and the incomplete line after them; leaves `handle` at the
    end. Reads backwards in blocks, so a large log costs no more than its tail."""
    end = handle.seek(0, os.SEEK_END)
    position = end
    data = b""
    # One newline more than wanted: the text before the first one may be a cut-off line.
    while position > 0 and data.count(b"\n") <= count:
        step = min(_TAIL_BLOCK, position)
        position -= step
        handle.seek(position)
        data = handle.read(step) + data
    handle.seek(end)
    *complete, partial = data.split(b"\n")
    if position > 0:
        complete = complete[1:]
    wanted = complete[-count:] if count > 0 else []
    return [_decode(line) for line in wanted], partial


def _replaced(path: Path, handle: IO[bytes]) -> bool:
    """True when `path` is now another file than `handle` (rotated); rewinds a truncated one."""
    try:
        current = path.stat()
    except FileNotFoundError:
        # Between the rename and the new file's creation: keep reading the old one for now.
        return False
    opened = os.fstat(handle.fileno())
    if (current.st_ino, current.st_dev) != (opened.st_ino, opened.st_dev):
        return True
    if current.st_size < handle.tell():
        handle.seek(0)
    return False
