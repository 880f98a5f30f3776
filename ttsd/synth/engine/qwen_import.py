"""Import qwen_tts without letting its import-time chatter reach stdout or stderr."""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import sys
from types import ModuleType


def import_qwen_tts_quietly() -> ModuleType:
    """Import and return the `qwen_tts` package with Python-level stdout and stderr silenced.

    Its package import prints a flash-attn banner on stdout, which would corrupt JSON printed by
    the CLI, and the `sox` dependency logs a warning when the SoX binary is missing. Both are
    harmless, so they are discarded. The redirect swaps `sys.stdout`/`sys.stderr` for the whole
    process while the first import runs (4-5 s); later calls hit the module cache at once.
    """
    # Their config classes log every defaulted sub-config at INFO on each load.
    logging.getLogger("qwen_tts").setLevel(logging.WARNING)
    # `sox` sets its own logger's level when imported, so a level set here would not hold: a filter
    # does (the logger object is the same before and after).
    sox_logger = logging.getLogger("sox")
    if not any(isinstance(f, _ErrorsOnly) for f in sox_logger.filters):
        sox_logger.addFilter(_ErrorsOnly())
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        _import_sox_quietly()
        return importlib.import_module("qwen_tts")


class _ErrorsOnly(logging.Filter):
    """Lets only errors through (the missing-SoX warning is noise: ttsd does not need SoX)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def _import_sox_quietly() -> None:
    """Import `sox` with its probe's shell kept quiet.

    `sox` probes for the SoX binary at import with `os.popen("sox -h")`; without SoX (ttsd does not
    need it) the shell writes `sox: not found` straight to file descriptor 2, past any Python-level
    redirect, on every start. Only that probe, during that import, has its stderr discarded."""
    if "sox" in sys.modules:
        return
    original = os.popen

    def probe(cmd: str, mode: str = "r", buffering: int = -1) -> os._wrap_close:
        return original(f"{cmd} 2>/dev/null", mode, buffering)

    os.popen = probe
    try:
        importlib.import_module("sox")
    except ImportError:
        return
    finally:
        os.popen = original
