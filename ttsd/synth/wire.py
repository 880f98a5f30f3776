"""What a worker process and its supervisor say to each other: one JSON object per line.

Supervisor -> worker, on the worker's stdin: the settings first, then `wake` and `stop` commands,
and `listen` (someone streams this job: its running chunks write live audio, see `ttsd.synth.live`).
The end of stdin means the supervisor is gone (killed, crashed, or the machine is stopping): the
worker then exits at once, on every platform, because a pipe's reader sees its writer's death.

Worker -> supervisor, on a private copy of the worker's stdout: `ready` (device plan, batch size),
`exit` (why it is leaving, and the status files it still owes), `finished` (a job reached its final
state), `call` (a generate call was kept), `busy`/`idle`, `generating` (the jobs of the call about
to run) and `kept` (that call's takes are kept), `beat` (alive, from the lease heartbeat), and `log`
(a log record: the supervisor writes the one log file, so no two processes rotate it).
"""

from __future__ import annotations

import json
import logging
from typing import IO, Any, Final

WAKE: Final = "wake"
STOP: Final = "stop"
LISTEN: Final = "listen"
READY: Final = "ready"
FINISHED: Final = "finished"
CALL: Final = "call"
BUSY: Final = "busy"
IDLE: Final = "idle"
LOG: Final = "log"
BEAT: Final = "beat"
GENERATING: Final = "generating"
KEPT: Final = "kept"
EXIT: Final = "exit"

_RECORD_FIELDS: Final = ("name", "levelno", "levelname", "msg", "created", "msecs", "relativeCreated",
                         "process", "processName", "thread", "threadName", "pathname", "filename",
                         "module", "lineno", "funcName")  # fmt: skip


def encode(event: str, fields: dict[str, Any] | None = None) -> str:
    """One message line."""
    return json.dumps({"event": event, **(fields or {})}, default=str) + "\n"


def decode(line: str) -> dict[str, Any] | None:
    """A message, or None for a line that is not one (a worker never sends those; be lenient)."""
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message if isinstance(message, dict) and isinstance(message.get("event"), str) else None


def record_fields(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, Any]:
    """A log record as plain fields: the message already formatted, the exception as text, and the
    `extra` fields (job ids and names) that the log's JSON lines carry."""
    fields = {name: getattr(record, name, None) for name in _RECORD_FIELDS}
    fields["msg"] = record.getMessage()
    if record.exc_info:
        fields["exc_text"] = formatter.formatException(record.exc_info)
    extra = {key: value for key, value in record.__dict__.items() if key not in _STANDARD and not key.startswith("_")}
    return {"record": fields, "extra": json.loads(json.dumps(extra, default=str))}


def rebuild_record(message: dict[str, Any]) -> logging.LogRecord:
    """The log record a worker sent, ready for the supervisor's handlers."""
    fields = dict(message.get("record") or {})
    fields.update(message.get("extra") or {})
    fields["args"] = None
    fields["exc_info"] = None
    return logging.makeLogRecord(fields)


class PipeLogHandler(logging.Handler):
    """Sends a worker's log records to its supervisor."""

    def __init__(self, send: IO[str], source: str) -> None:
        super().__init__()
        self._send = send
        self._source = source
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = record_fields(record, self._formatter)
            fields["record"]["threadName"] = f"{self._source}/{record.threadName}"
            line = encode(LOG, fields)
            self.acquire()
            try:
                self._send.write(line)
                self._send.flush()
            finally:
                self.release()
        except (OSError, ValueError):
            # The supervisor is gone; the worker is about to notice and exit.
            return


_STANDARD: Final = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
