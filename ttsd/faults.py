"""Fault injection for the crash tests: `TTS_FAULT=point` or `TTS_FAULT=point:name` makes the process
kill itself with SIGKILL when it reaches `point` (for any job, or only for the job whose output name
contains `name`). Off unless the variable is set; the points are named where they are called.

Most points are reached in a worker process. By default only that process dies (a worker crash,
which its supervisor sees); with `TTS_FAULT_SCOPE=daemon` the daemon that started it dies first
(a kill -9 of the whole daemon, or a power cut, at exactly that point)."""

from __future__ import annotations

import os
import signal

FAULT_ENV = "TTS_FAULT"
SCOPE_ENV = "TTS_FAULT_SCOPE"
SUPERVISOR_ENV = "TTS_WORKER_OF"
"""Set by the supervisor in each worker's environment: the daemon's pid."""


def crash_point(point: str, job_name: str = "") -> None:
    """Die here, without any cleanup, if the environment asks for it."""
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    wanted_point, _, wanted_name = wanted.partition(":")
    if wanted_point != point or wanted_name not in job_name:
        return
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if os.environ.get(SCOPE_ENV) == "daemon" and supervisor:
        os.kill(int(supervisor), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
