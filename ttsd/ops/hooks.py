"""Completion hooks: a command run after each finished job (`TTS_ON_JOB_DONE`), a command run when
the queue drains (`TTS_ON_QUEUE_DRAINED`), and a macOS notification per drained batch
(`TTS_NOTIFY`).

Only the settings name commands: a job file never can. A template is split into words by shell
rules (shlex) but run without a shell, so a job's name or error message is data in one argument,
never code. Placeholders are replaced inside each word after the split:

    on_job_done       {id} {name} {state} {model} {audio} {duration} {error_code} {error}
                      {status_file} {client_id} {outbox}
    on_queue_drained  {done} {failed} {cancelled} {total} {outbox}

`{{name}}` stands for a literal `{name}`; other braces are left alone. The program (first word)
cannot hold a placeholder. The same values reach the command as environment variables (see
JOB_PLACEHOLDERS and DRAIN_PLACEHOLDERS), plus TTSD_EVENT (`job_done` or `queue_drained`).
A value may start with `-`: put `--` before `{name}` where a program would read it as an option
(`{audio}` and `{status_file}` are absolute paths). Under launchd PATH is minimal: name programs
by absolute path.

Hooks run one at a time on their own thread, fed by a bounded queue, so a slow hook never holds a
worker; each runs in its own process group, killed whole when it outlives `TTS_HOOK_TIMEOUT_S`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING

from ttsd.errors import TtsdError
from ttsd.joblog import job_extra
from ttsd.jobqueue.states import JobState
from ttsd.ops.drain import DrainSummary
from ttsd.templates import DRAIN_PLACEHOLDERS, JOB_PLACEHOLDERS, parse_template, render

if TYPE_CHECKING:
    from ttsd.config import Settings
    from ttsd.delivery.outbox import Outbox
    from ttsd.jobqueue.tables import Job

log = logging.getLogger(__name__)

MAX_PENDING = 1000
# By absolute path: launchd gives agents a minimal PATH.
OSASCRIPT = "/usr/bin/osascript"
OUTPUT_TAIL_BYTES = 2000
# After SIGKILL a process is gone at once unless stuck in the kernel; do not wait on it forever.
KILL_WAIT_S = 5.0

_NOTIFY_SCRIPT = (
    "-e",
    "on run argv",
    "-e",
    "display notification (item 1 of argv) with title (item 2 of argv)",
    "-e",
    "end run",
)


def _clean(values: Mapping[str, str]) -> dict[str, str]:
    # A NUL cannot be passed in an argument or the environment (Popen refuses the whole call).
    return {key: value.replace("\0", "") for key, value in values.items()}


def job_values(job: Job, outbox: Outbox) -> dict[str, str]:
    """A finished job's placeholder values; absent ones are empty strings."""
    done = job.state == JobState.DONE
    return _clean(
        {
            "id": job.id,
            "name": job.name,
            "state": job.state,
            "model": job.model,
            "audio": str(outbox.root / job.audio_file) if done and job.audio_file else "",
            "duration": str(job.duration_s) if done and job.duration_s is not None else "",
            # As in the status file: a job that ended done has no error, whatever its tries left.
            "error_code": "" if done else job.error_code or "",
            "error": "" if done else job.error_message or "",
            "status_file": str(outbox.status_path(job.name)),
            "client_id": job.client_id or "",
            "outbox": str(outbox.root),
        }
    )


@dataclass(frozen=True)
class HookCall:
    """One command to run: what logs call it, its words, the variables added to its environment,
    and the job it is about (for the logs)."""

    hook: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    extra: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """How the logs name this call."""
        job_id = self.extra.get("job_id")
        return f"hook {self.hook} (job {job_id})" if job_id else f"hook {self.hook}"


@dataclass(frozen=True)
class HookResult:
    """How a hook ended. `returncode` is None when it never started (`error` says why) or was
    killed for outliving its timeout; `output` is the tail of its stdout and stderr."""

    returncode: int | None
    elapsed_s: float
    timed_out: bool = False
    output: str = ""
    error: str | None = None


RunHook = Callable[[HookCall, float], HookResult]


def run_hook(call: HookCall, timeout_s: float) -> HookResult:
    """Run one hook without a shell, in a new session (its own process group), stdin closed; if
    it outlives `timeout_s`, kill its whole group, so children it started go with it."""
    started = time.monotonic()
    # A file, not a pipe: a hook that writes a lot can neither block on a full pipe nor fill memory.
    with tempfile.TemporaryFile() as output:
        try:
            process = subprocess.Popen(
                call.argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env={**os.environ, **call.env},
                start_new_session=True,
            )
        except (OSError, ValueError) as exc:  # not found, not executable, a bad argument
            return HookResult(None, time.monotonic() - started, error=f"{type(exc).__name__}: {exc}")
        try:
            returncode: int | None = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            return HookResult(None, time.monotonic() - started, timed_out=True, output=_tail(output))
        return HookResult(returncode, time.monotonic() - started, output=_tail(output))


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):  # it ended between the timeout and the kill
        os.killpg(process.pid, signal.SIGKILL)
    try:
        process.wait(timeout=KILL_WAIT_S)
    except subprocess.TimeoutExpired:
        log.warning("hook process %d did not die after SIGKILL; leaving it", process.pid)


def _tail(output: IO[bytes]) -> str:
    size = output.seek(0, os.SEEK_END)
    output.seek(max(0, size - OUTPUT_TAIL_BYTES))
    return output.read().decode("utf-8", errors="replace").strip()


class HookRunner:
    """Runs the configured hooks on one background thread. `job_finished` and `queue_drained`
    only queue a call and return at once; the queue keeps at most `max_pending` calls, dropping
    the oldest (with a warning) rather than growing without limit."""

    def __init__(
        self,
        settings: Settings,
        runner: RunHook = run_hook,
        platform: str = sys.platform,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._job_argv = parse_template(settings.on_job_done, JOB_PLACEHOLDERS) if settings.on_job_done else None
        self._drain_argv = (
            parse_template(settings.on_queue_drained, DRAIN_PLACEHOLDERS) if settings.on_queue_drained else None
        )
        self._outbox = settings.outbox
        self._timeout_s = settings.hook_timeout_s
        self._runner = runner
        self._notify = settings.notify and platform == "darwin"
        if settings.notify and not self._notify:
            log.info("TTS_NOTIFY is set, but notifications are shown on macOS only: none on %s", platform)
        self._pending: deque[HookCall] = deque(maxlen=max_pending)
        self._changed = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="hooks", daemon=True)

    @property
    def enabled(self) -> bool:
        """Whether any hook or notification is configured."""
        return bool(self._job_argv or self._drain_argv or self._notify)

    def start(self) -> None:
        """Start the hook thread."""
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Take no more calls, run those already queued, and wait up to `timeout` seconds for them.
        A hook still running then is left to its own timeout (the thread does not keep the
        process alive)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            with self._changed:
                waiting = len(self._pending)
            log.warning("hooks still running after %.1fs; %d queued hook(s) not run", timeout, waiting)

    def job_finished(self, job: Job, outbox: Outbox) -> None:
        """Queue `TTS_ON_JOB_DONE` for a job that has reached a final state (done, failed,
        cancelled); other states (a failure that will be retried) are ignored. Returns at once."""
        if self._job_argv is None or not JobState(job.state).terminal:
            return
        try:
            values = job_values(job, outbox)
        except TtsdError:
            # Only a name that failed validation has no place in the outbox; no worker should pay.
            log.exception("hook on_job_done not run for job %s", job.id, extra=job_extra(job))
            return
        self._submit(
            HookCall(
                "on_job_done",
                render(self._job_argv, values),
                _environment(values, JOB_PLACEHOLDERS, "job_done"),
                job_extra(job),
            )
        )

    def queue_drained(self, summary: DrainSummary) -> None:
        """Queue `TTS_ON_QUEUE_DRAINED` and the notification for one drained batch. Returns at once."""
        values = {
            "done": str(summary.done),
            "failed": str(summary.failed),
            "cancelled": str(summary.cancelled),
            "total": str(summary.total),
            "outbox": str(self._outbox),
        }
        if self._drain_argv is not None:
            self._submit(
                HookCall(
                    "on_queue_drained",
                    render(self._drain_argv, values),
                    _environment(values, DRAIN_PLACEHOLDERS, "queue_drained"),
                )
            )
        if self._notify:
            # The text goes in as an argument of the script, never spliced into its source.
            text = f"Queue done: {summary.message()}"
            self._submit(HookCall("notify", (OSASCRIPT, *_NOTIFY_SCRIPT, text, "ttsd"), {}))

    def _submit(self, call: HookCall) -> None:
        with self._changed:
            if self._closed:
                log.warning("%s not run: the daemon is stopping", call.describe(), extra=dict(call.extra))
                return
            if len(self._pending) == self._pending.maxlen:
                dropped = self._pending[0]  # append() below pushes it out
                log.warning(
                    "%d hooks waiting: dropping the oldest, %s",
                    len(self._pending),
                    dropped.describe(),
                    extra=dict(dropped.extra),
                )
            self._pending.append(call)
            self._changed.notify()

    def _serve(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._closed:
                    self._changed.wait()
                if not self._pending:
                    return
                call = self._pending.popleft()
            self._run(call)

    def _run(self, call: HookCall) -> None:
        extra = dict(call.extra)
        try:
            result = self._runner(call, self._timeout_s)
        except Exception:
            # A broken runner must not end the thread: the hooks after this one still run.
            log.exception("%s could not be run", call.describe(), extra=extra)
            return
        if result.error is not None:
            log.warning("%s could not start: %s", call.describe(), result.error, extra=extra)
        elif result.timed_out:
            log.warning(
                "%s timed out after %.1fs and was killed%s",
                call.describe(),
                self._timeout_s,
                _quoted(result.output),
                extra=extra,
            )
        elif result.returncode != 0:
            log.warning(
                "%s failed: exit status %s after %.2fs%s",
                call.describe(),
                result.returncode,
                result.elapsed_s,
                _quoted(result.output),
                extra=extra,
            )
        else:
            log.debug("%s done in %.2fs%s", call.describe(), result.elapsed_s, _quoted(result.output), extra=extra)


def _environment(values: Mapping[str, str], placeholders: Mapping[str, str], event: str) -> dict[str, str]:
    env = {placeholders[key]: value for key, value in values.items()}
    env["TTSD_EVENT"] = event
    return env


def _quoted(output: str) -> str:
    return f"; output: {output}" if output else ""
