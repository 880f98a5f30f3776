"""Run real `ttsd run` processes on temporary folders, and wait for things without bare sleeps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ttsd.client import read_status, stage_job

T = TypeVar("T")

READY_LINE = "serving"
GHOST_MODEL = "ghost"  # a registry name whose weights are nowhere: its jobs fail at once, without a model


def wait_for(
    condition: Callable[[], T | None],
    timeout: float,
    what: str | Callable[[], str],
    interval: float = 0.05,
) -> T:
    """Poll `condition` until it returns something truthy; fail the test after `timeout` seconds.

    `what` names what was awaited; as a callable it is called only once the wait has failed, so the
    message can say how things stand then (`lambda: f"... (now {env.status(name)})"`), not before.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:g}s waiting for {described}")
        time.sleep(interval)


@dataclass
class DaemonProcess:
    """One daemon subprocess and its log file."""

    process: subprocess.Popen[bytes]
    log_path: Path
    json_log: Path

    def log(self) -> str:
        """Everything the daemon wrote so far: its own log file (JSON lines) and its stdout/stderr."""
        paths = [path for path in (self.json_log, self.log_path) if path.exists()]
        return "\n".join(path.read_text(encoding="utf-8", errors="replace") for path in paths)

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until the daemon says it is serving (or fail with its log)."""

        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited with {self.process.returncode}:\n{self.log()}")
            return READY_LINE in self.log()

        wait_for(ready, timeout, "the daemon to start")

    def wait_exit(self, timeout: float = 60) -> int:
        """Wait for the process to end by itself; returns its exit status."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"daemon still running after {timeout}s:\n{self.log()}") from exc

    def wait_exit_or(self, seconds: float) -> int | None:
        """Give the process `seconds` to exit by itself: its status, or None if it is still running."""
        try:
            return self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return None

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, then wait for a graceful exit."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        """SIGKILL, the way launchd or a power cut ends a process."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)


@dataclass
class DaemonEnv:
    """Folders and settings for daemons under test."""

    root: Path
    inbox: Path
    outbox: Path
    state: Path
    env: dict[str, str]
    processes: list[DaemonProcess] = field(default_factory=list)

    @classmethod
    def create(cls, root: Path, tiny_models: Path) -> DaemonEnv:
        """Folders under `root`; `tiny` resolves to the prebuilt checkpoint."""
        inbox, outbox, state = root / "inbox", root / "outbox", root / "state"
        for folder in (inbox, outbox, state / "models"):
            folder.mkdir(parents=True)
        for built in tiny_models.iterdir():
            if built.name.startswith("."):
                continue
            (state / "models" / built.name).symlink_to(built, target_is_directory=True)
        env = {
            **os.environ,
            "TTS_STATE_DIR": str(state),
            "TTS_INBOX": str(inbox),
            "TTS_OUTBOX": str(outbox),
            "TTS_DEFAULT_MODEL": "tiny",
            "TTS_STABLE_S": "0.2",
            "TTS_SCAN_INTERVAL_S": "0.5",
            "TTS_LOG_LEVEL": "INFO",
            "HF_HUB_OFFLINE": "1",
            "HF_HOME": str(root / "hf-home"),
            "PYTHONUNBUFFERED": "1",
            # torch's default, one thread per core, runs the tiny model 5-20x slower on a busy
            # 2-core machine than one thread does.
            "TTS_TORCH_THREADS": "1",
        }
        env.pop("TTS_FAULT", None)
        return cls(root, inbox, outbox, state, env)

    def start(self, role: str = "run", **settings: str) -> DaemonProcess:
        """Start `ttsd run` (or `ttsd worker`, with `role`) with extra environment (e.g.
        TTS_FAULT="synthesis:victim")."""
        log_path = self.root / f"daemon-{len(self.processes)}.log"
        json_log = self.root / f"daemon-{len(self.processes)}.jsonl"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "ttsd", role],
                env={**self.env, "TTS_LOG_FILE": str(json_log), **settings},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
            )
        daemon = DaemonProcess(process, log_path, json_log)
        self.processes.append(daemon)
        return daemon

    def stop_all(self) -> None:
        """Make sure no daemon outlives its test."""
        for daemon in self.processes:
            daemon.kill()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the real `ttsd` command against these folders."""
        return subprocess.run(
            [sys.executable, "-m", "ttsd", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def drop(self, name: str, content: str | bytes) -> Path:
        """Write a job file the simple way (not atomically), as many scripts do."""
        path = self.inbox / name
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return path

    def drop_json(self, name: str, job: dict[str, Any]) -> Path:
        """Write a JSON job file atomically under exactly the file name `name` (staged under a hidden
        temp name, then renamed into place, replacing a file of that name), as ttsd's client does."""
        return stage_job(self.inbox, name, job).drop()

    def status(self, name: str) -> dict[str, Any] | None:
        """The status document of output `name`, if it exists and is complete."""
        return read_status(self.outbox, name)

    def wait_state(self, name: str, states: tuple[str, ...], timeout: float = 90) -> dict[str, Any]:
        """Wait until `name`'s status file says one of `states`."""

        def reached() -> dict[str, Any] | None:
            document = self.status(name)
            return document if document is not None and document.get("state") in states else None

        return wait_for(reached, timeout, lambda: f"{name} to reach {'/'.join(states)} (now {self.status(name)})")
