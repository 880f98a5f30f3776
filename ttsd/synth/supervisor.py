"""The supervisor of the worker processes: one process per model with work (`ttsd.synth.runner`),
started on demand, woken for new jobs, stopped when idle by its own exit, at most
`TTS_MAX_LOADED_MODELS` models alive at once, and restarted with backoff when one dies.

How a worker ended decides what its jobs cost them. A clean exit (idle, or stopped when asked)
gave its jobs back itself. A worker that died (a signal, an abort, out of memory) charges each job
it held an attempt, and those jobs then run alone (a poison job cannot take neighbours down twice).
A worker the supervisor had to kill past the grace period gives its jobs back uncounted.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from ttsd.config import Settings
from ttsd.faults import SUPERVISOR_ENV
from ttsd.jobqueue.tables import Job
from ttsd.synth import wire

log = logging.getLogger(__name__)

RESTART_BACKOFF_S: Final = (1.0, 2.0, 5.0, 15.0, 60.0)
"""Waits before restarting a model's worker after its 1st, 2nd, ... crash in a row."""
HEALTHY_S: Final = 60.0
"""A worker that ran this long before dying starts its model's backoff afresh."""
KILL_WAIT_S: Final = 10.0


class SupervisedQueue(Protocol):
    """What the supervisor does with the queue."""

    def interrupt_lease(self, token: str, max_attempts: int, only: Collection[str] | None = None) -> list[Job]: ...

    def release_lease(self, token: str) -> list[str]: ...


@dataclass
class _Process:
    """One worker process and what it told us."""

    model: str
    token: str
    popen: subprocess.Popen[str]
    started: float
    last_heard: float
    activity: str = "starting"
    ready: dict[str, Any] = field(default_factory=dict)
    calls: dict[int, list[str]] = field(default_factory=dict)
    """Generate calls not yet kept, and their jobs: the ones charged if the worker dies now."""
    stopping: bool = False
    killed: bool = False
    hung: bool = False
    reader: threading.Thread | None = None

    def send(self, event: str, fields: dict[str, Any] | None = None) -> None:
        """A command, never blocking: a worker that stopped reading its pipe must not hang the
        daemon (a lost `wake` or `listen` is harmless; a worker that misses `stop` is killed past
        the grace)."""
        stdin = self.popen.stdin
        if stdin is None:
            return
        try:
            os.write(stdin.fileno(), wire.encode(event, fields).encode("utf-8"))
        except (OSError, ValueError):
            return  # full, or it is exiting; `poll` sees how it ends

    def in_calls(self) -> set[str]:
        return {job_id for jobs in list(self.calls.values()) for job_id in jobs}


@dataclass
class SupervisorHooks:
    """What the supervisor tells the daemon."""

    job_finished: Callable[[str], None] = lambda job_id: None
    call_done: Callable[[], None] = lambda: None
    publish: Callable[[str], None] = lambda job_id: None
    owe: Callable[[str], None] = lambda job_id: None
    """A status file a worker could not write before it left: the daemon writes it when it can."""


class Supervisor:
    """Worker processes per model, started, woken, capped, restarted and stopped."""

    def __init__(
        self,
        settings: Settings,
        store: SupervisedQueue,
        hooks: SupervisorHooks,
        loader: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        owner: str = "",
    ) -> None:
        self._settings = settings
        # Every lease token starts with the daemon's host id (`ttsd.ops.identity`).
        self._token_prefix = f"{owner}." if owner else ""
        self._store = store
        self._hooks = hooks
        self._loader = loader
        self._clock = clock
        self._processes: list[_Process] = []
        self._crashes: dict[str, int] = {}
        self._restart_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._closed = False

    # -- starting and waking -------------------------------------------------------------------------

    def ensure(self, model: str, preload: bool = False) -> None:
        """`model` has work: wake its idle workers, or start them (when the cap and backoff allow);
        with `preload`, a started worker loads its model before any job asks for it."""
        with self._lock:
            if self._closed:
                return
            running = [p for p in self._processes if p.model == model and not p.stopping]
            if not running and self._clock() >= self._restart_at.get(model, 0.0) and self._make_room(model):
                for _ in range(self._settings.max_concurrency_per_model):
                    self._processes.append(self._spawn(model, preload))
        # Outside the lock: even a non-blocking write must not hold up the other threads. A busy
        # worker is woken too: its running batch takes new jobs at the next step, and its "busy" may
        # be stale (it says "idle" only once its last job is kept).
        for process in running:
            process.send(wire.WAKE)

    def listen(self, model: str, job_id: str) -> None:
        """Someone streams `job_id`: its chunks running in `model`'s workers write live audio (see
        `ttsd.synth.live`) until the job leaves the worker. A no-op when `model` has no live worker;
        cheap (one short non-blocking write per worker), so a stream may repeat it every second: a
        worker started or restarted since then hears it at the next repeat."""
        with self._lock:
            processes = [p for p in self._processes if p.model == model and not p.stopping]
        for process in processes:
            process.send(wire.LISTEN, {"job": job_id})

    def _make_room(self, model: str) -> bool:
        """Whether one more model may load; if not, ask an idle worker of another model to exit."""
        models = {p.model for p in self._processes}
        if len(models) < self._settings.max_loaded_models:
            return True
        idle = [p for p in self._processes if p.model != model and p.activity == wire.IDLE and not p.stopping]
        for process in idle[:1]:
            log.info("stopping the idle worker of %s to make room for %s", process.model, model)
            process.stopping = True
            process.send(wire.STOP)
        return False

    def _spawn(self, model: str, preload: bool) -> _Process:
        token = f"{self._token_prefix}{model}-{uuid.uuid4().hex[:12]}"
        command = [sys.executable, "-m", "ttsd.synth.runner", model, token, *(["--preload"] if preload else [])]
        if self._loader:
            command += ["--loader", self._loader]
        popen = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
            env={**os.environ, SUPERVISOR_ENV: str(os.getpid())},
        )
        process = _Process(model, token, popen, self._clock(), self._clock())
        assert popen.stdin is not None
        # Whole, before the pipe becomes non-blocking: far below a pipe's buffer, so this never waits.
        popen.stdin.write(self._settings.model_dump_json() + "\n")
        popen.stdin.flush()
        os.set_blocking(popen.stdin.fileno(), False)
        process.reader = threading.Thread(target=self._read, args=(process,), name=f"events-{model}", daemon=True)
        process.reader.start()
        log.info("started the worker of %s (pid %d)", model, popen.pid)
        return process

    # -- what workers say ----------------------------------------------------------------------------

    def _read(self, process: _Process) -> None:
        stdout = process.popen.stdout
        assert stdout is not None
        for line in stdout:
            process.last_heard = self._clock()
            message = wire.decode(line)
            if message is None:
                continue
            try:
                self._handle(process, message)
            except Exception:
                # This thread must keep reading: a worker whose pipe fills up blocks.
                log.exception("could not handle what the worker of %s said: %s", process.model, line[:200])

    def _handle(self, process: _Process, message: dict[str, Any]) -> None:
        event = message["event"]
        if event == wire.LOG:
            record = wire.rebuild_record(message)
            logging.getLogger(record.name).handle(record)
        elif event == wire.GENERATING:
            process.calls[int(message["call"])] = [str(job) for job in message.get("jobs", [])]
        elif event == wire.KEPT:
            process.calls.pop(int(message["call"]), None)
        elif event == wire.FINISHED:
            self._hooks.job_finished(str(message.get("job")))
        elif event == wire.CALL:
            self._hooks.call_done()
        elif event == wire.READY:
            process.ready = {key: value for key, value in message.items() if key != "event"}
        elif event in (wire.BUSY, wire.IDLE):
            process.activity = event
        elif event == wire.EXIT:
            for job_id in message.get("owed", []):
                self._hooks.owe(str(job_id))

    # -- exits ---------------------------------------------------------------------------------------

    def poll(self) -> list[str]:
        """Reap workers that ended and settle their jobs; kill one silent for longer than a lease
        (hung: its heartbeat thread beats every quarter lease). Returns the models that lost a
        worker."""
        with self._lock:
            ended = [p for p in self._processes if p.popen.poll() is not None]
            self._processes = [p for p in self._processes if p not in ended]
            live = list(self._processes)
        for process in live:
            silent = self._clock() - process.last_heard
            if not process.stopping and not process.hung and silent > self._settings.lease_s:
                log.error("the worker of %s said nothing for %.0fs: killing it as hung", process.model, silent)
                process.hung = True
                process.popen.kill()
        for process in ended:
            if process.reader is not None:
                process.reader.join(timeout=5)
            self._settle(process)
        return [process.model for process in ended]

    def live_tokens(self) -> list[str]:
        """The leases of live workers: watched through their pipes, never recovered as stale."""
        with self._lock:
            return [process.token for process in self._processes]

    def _settle(self, process: _Process) -> None:
        code = process.popen.returncode
        if (code == 0 or process.killed) and not process.hung:
            released = self._store.release_lease(process.token)
            for job_id in released:
                self._hooks.publish(job_id)
            if process.killed:
                log.warning("worker %s stopped past the grace period: %d job(s) back to the queue",
                            process.model, len(released))  # fmt: skip
            return
        # The jobs of the calls it died in are charged (they may be what killed it); the others it
        # held go back uncounted. Dead outside any call, the cause is unknown: all are charged.
        in_calls = process.in_calls()
        charged = self._store.interrupt_lease(process.token, self._settings.max_attempts, in_calls or None)
        spared = self._store.release_lease(process.token)
        ran = self._clock() - process.started
        crashes = 1 if ran >= HEALTHY_S else self._crashes.get(process.model, 0) + 1
        self._crashes[process.model] = crashes
        wait = RESTART_BACKOFF_S[min(crashes, len(RESTART_BACKOFF_S)) - 1]
        self._restart_at[process.model] = self._clock() + wait
        log.error(
            "the worker of %s died (%s) after %.0fs: %d job(s) in its calls charged an attempt (they run "
            "alone next), %d back to the queue uncounted; restarting in %.0fs",
            process.model, "hung" if process.hung else describe_exit(code), ran, len(charged), len(spared), wait,
        )  # fmt: skip
        for job in charged:
            self._hooks.publish(job.id)
            if job.state.terminal:
                self._hooks.job_finished(job.id)
        for job_id in spared:
            self._hooks.publish(job_id)

    # -- views and stopping --------------------------------------------------------------------------

    def loaded(self) -> list[dict[str, Any]]:
        """The live workers: model, pid, state, and once loaded its device plan and batch size."""
        with self._lock:
            processes = list(self._processes)
        rows = []
        for process in processes:
            ready = process.ready
            rows.append(
                {
                    "model": process.model,
                    "pid": process.popen.pid,
                    "state": "stopping" if process.stopping else process.activity,
                    **ready.get("plan", {}),
                    "batch": (ready.get("batch") or {}).get("size"),
                    "batch_reason": (ready.get("batch") or {}).get("reason"),
                    "load_s": next((m.get("load_s") for m in ready.get("loaded", []) if "load_s" in m), None),
                    "startup_s": ready.get("startup_s"),
                    "up_s": round(self._clock() - process.started, 1),
                }
            )
        return rows

    def stop(self, grace_s: float, hurry: threading.Event) -> None:
        """Ask every worker to stop: each finishes its call in progress if the grace period allows,
        keeps what it made and gives its other jobs back. Past the grace period (or once `hurry` is
        set, by a second signal) the rest are killed and their jobs given back uncounted."""
        with self._lock:
            self._closed = True
            processes = list(self._processes)
        for process in processes:
            process.stopping = True
            process.send(wire.STOP)
        deadline = self._clock() + grace_s
        while any(p.popen.poll() is None for p in processes):
            if hurry.is_set() or self._clock() >= deadline:
                break
            hurry.wait(0.05)
        for process in processes:
            if process.popen.poll() is None:
                process.killed = True
                process.popen.kill()
                process.popen.wait(timeout=KILL_WAIT_S)
        self.poll()


def describe_exit(code: int | None) -> str:
    """'signal SIGKILL' or 'exit status 1'."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit status {code}"
