"""Fault injection for the crash tests: `TTS_FAULT=point` or `TTS_FAULT=point:name` makes the process
kill itself with SIGKILL when it reaches `point` (for any job, or only for the job whose output name
contains `name`). Off unless the variable is set; the points are named where they are called."""

from __future__ import annotations

import os
import signal

FAULT_ENV = "TTS_FAULT"


def crash_point(point: str, job_name: str = "") -> None:
    """Die here, without any cleanup, if the environment asks for it."""
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    wanted_point, _, wanted_name = wanted.partition(":")
    if wanted_point == point and wanted_name in job_name:
        os.kill(os.getpid(), signal.SIGKILL)
