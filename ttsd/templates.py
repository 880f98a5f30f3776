"""Command templates of the hook settings (`TTS_ON_JOB_DONE`, `TTS_ON_QUEUE_DRAINED`): how a
template splits into words, which placeholders each may hold, and how they are filled in.

The settings check a template once, at start, so a typo in a placeholder stops the daemon there
instead of failing every job's hook later; the hook runner fills templates in. `{{name}}` stands
for a literal `{name}`; other braces are left alone; the program (first word) holds no placeholder.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

# placeholder -> environment variable
JOB_PLACEHOLDERS: Mapping[str, str] = {
    "id": "TTSD_JOB_ID",
    "name": "TTSD_JOB_NAME",
    "state": "TTSD_JOB_STATE",
    "model": "TTSD_JOB_MODEL",
    "audio": "TTSD_AUDIO",
    "duration": "TTSD_DURATION_S",
    "error_code": "TTSD_ERROR_CODE",
    "error": "TTSD_ERROR_MESSAGE",
    "status_file": "TTSD_STATUS_FILE",
    "client_id": "TTSD_CLIENT_ID",
    "outbox": "TTSD_OUTBOX",
}
DRAIN_PLACEHOLDERS: Mapping[str, str] = {
    "done": "TTSD_DONE",
    "failed": "TTSD_FAILED",
    "cancelled": "TTSD_CANCELLED",
    "total": "TTSD_TOTAL",
    "outbox": "TTSD_OUTBOX",
}
_PLACEHOLDER = re.compile(r"\{\{([A-Za-z_]+)\}\}|\{([A-Za-z_]+)\}")


def parse_template(template: str, placeholders: Mapping[str, str]) -> tuple[str, ...]:
    """Split a command template into its words (shell quoting rules, no shell) and check its
    placeholders; raises ValueError saying what is wrong."""
    try:
        argv = tuple(shlex.split(template))
    except ValueError as exc:
        raise ValueError(f"cannot split the command: {exc}") from exc
    if not argv:
        raise ValueError("the command is empty")
    if any(match.group(2) for match in _PLACEHOLDER.finditer(argv[0])):
        raise ValueError("the program (first word) cannot contain a placeholder")
    unknown = sorted(
        {
            match.group(2)
            for word in argv
            for match in _PLACEHOLDER.finditer(word)
            if match.group(2) and match.group(2) not in placeholders
        }
    )
    if unknown:
        raise ValueError(
            f"unknown placeholder(s) {', '.join('{' + name + '}' for name in unknown)}; "
            f"known: {', '.join('{' + name + '}' for name in placeholders)}"
        )
    return argv


def render(argv: tuple[str, ...], values: Mapping[str, str]) -> tuple[str, ...]:
    """The command with its placeholders replaced, in one pass: a value is never expanded again."""

    def substitute(match: re.Match[str]) -> str:
        literal, name = match.groups()
        return f"{{{literal}}}" if literal else values[name]

    return tuple(_PLACEHOLDER.sub(substitute, word) for word in argv)
