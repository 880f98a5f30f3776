"""What a worker process and its supervisor say to each other, and the settings they derive."""

from __future__ import annotations

import io
import logging
import signal

from ttsd.config import Settings, torch_threads
from ttsd.synth import wire
from ttsd.synth.supervisor import describe_exit


def test_a_message_is_one_line_and_reads_back() -> None:
    line = wire.encode(wire.FINISHED, {"job": "abc"})
    assert line.endswith("\n") and line.count("\n") == 1
    assert wire.decode(line) == {"event": "finished", "job": "abc"}


def test_lines_that_are_not_messages_are_ignored() -> None:
    for line in ("", "not json", "[1, 2]", '{"no": "event"}', '{"event": 3}'):
        assert wire.decode(line) is None


def test_a_worker_s_log_record_arrives_whole_with_its_job_fields_and_traceback() -> None:
    sent = io.StringIO()
    handler = wire.PipeLogHandler(sent, "worker-tiny")
    logger = logging.getLogger("ttsd.test.wire")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("job %s failed", "j1", extra={"job_id": "j1", "job_name": "hello"})
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    message = wire.decode(sent.getvalue())
    assert message is not None and message["event"] == wire.LOG
    record = wire.rebuild_record(message)
    assert record.getMessage() == "job j1 failed"
    assert record.levelno == logging.ERROR and record.name == "ttsd.test.wire"
    assert getattr(record, "job_id", None) == "j1" and getattr(record, "job_name", None) == "hello"
    assert (record.threadName or "").startswith("worker-tiny/")
    assert "ValueError: boom" in (record.exc_text or "")


def test_a_log_handler_whose_supervisor_is_gone_drops_records_quietly() -> None:
    closed = io.StringIO()
    closed.close()
    handler = wire.PipeLogHandler(closed, "worker-tiny")
    handler.emit(logging.makeLogRecord({"msg": "nobody listens"}))


def test_exits_are_described_by_signal_name_or_status() -> None:
    assert describe_exit(-signal.SIGKILL) == "signal SIGKILL"
    assert describe_exit(1) == "exit status 1"
    assert describe_exit(None) == "still running"


def test_auto_threads_are_one_on_small_machines_and_half_the_cores_on_big_ones() -> None:
    auto = Settings()
    assert torch_threads(auto, cores=2) == 1 and torch_threads(auto, cores=4) == 1
    assert torch_threads(auto, cores=10) == 5
    assert torch_threads(Settings(torch_threads=3), cores=10) == 3
    assert torch_threads(Settings(torch_threads=0), cores=10) == 0
