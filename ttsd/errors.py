"""The exception tree. Every error a user can meet carries a stable `code` and a human message."""

from __future__ import annotations

import sys


class TtsdError(Exception):
    """Base of every error ttsd raises on purpose."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(TtsdError):
    """A setting is missing, malformed or out of range."""

    code = "config"


class JobRejected(TtsdError):
    """A job file (or one line of a .jsonl file) cannot become a job. Names the field when there is one."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field


class EngineError(TtsdError):
    """Synthesis failed. Subclasses say whether trying again can help."""

    code = "engine"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class TransientEngineError(EngineError):
    """A failure that may pass: device out of memory, NaN output, an interrupted call."""

    code = "engine_transient"


class PermanentEngineError(EngineError):
    """A failure that repeats on every try: unknown speaker, unusable input, missing weights."""

    code = "engine_permanent"


class ModelUnavailable(PermanentEngineError):
    """The model's weights are not present and cannot be fetched."""

    code = "model_unavailable"


class StoreError(TtsdError):
    """The queue database cannot be used as asked."""

    code = "store"


class DaemonAlreadyRunning(StoreError):
    """Another daemon holds the state directory's lock."""

    code = "daemon_running"


class FolderUnusable(TtsdError):
    """A folder ttsd needs (inbox, outbox, state) cannot be created or used."""

    code = "folder"


class JobNotFound(TtsdError):
    """No job matches the id or output name given."""

    code = "not_found"


class LaunchdError(TtsdError):
    """A launchctl step failed, or the plist could not be built or written."""

    code = "launchd"


class LaunchdUnsupported(LaunchdError):
    """The system-changing steps were asked for on a system without launchd."""

    code = "launchd_unsupported"

    def __init__(self) -> None:
        super().__init__(
            f"launchd is macOS-only (this is {sys.platform}): nothing was changed. Use --dry-run to see "
            "the plist and commands an install would use. On Linux, run `ttsd run` under a supervisor, "
            "such as a systemd user unit (Restart=always, KillSignal=SIGTERM)."
        )
