"""Import qwen_tts without letting its import-time chatter reach stdout or stderr."""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
from types import ModuleType


def import_qwen_tts_quietly() -> ModuleType:
    """Import and return the `qwen_tts` package with Python-level stdout and stderr silenced.

    Its package import prints a flash-attn banner on stdout, which would corrupt JSON printed by
    the CLI, and the `sox` dependency logs a warning when the SoX binary is missing. Both are
    harmless, so they are discarded. The redirect swaps `sys.stdout`/`sys.stderr` for the whole
    process while the first import runs (4-5 s); later calls hit the module cache at once.
    A `/bin/sh: sox: not found` line written by a child shell goes to file descriptor 2 directly
    and cannot be caught this way.
    """
    # Their config classes log every defaulted sub-config at INFO on each load.
    logging.getLogger("qwen_tts").setLevel(logging.WARNING)
    logging.getLogger("sox").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return importlib.import_module("qwen_tts")
