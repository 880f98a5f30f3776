"""Output names: the only strings from a job that become file names, so they come from a safe charset."""

from __future__ import annotations

import unicodedata

MAX_NAME_CHARS = 100
_PUNCTUATION = frozenset(" ._-")


def _allowed(char: str, first: bool) -> bool:
    category = unicodedata.category(char)
    if category[0] in "LN":
        return True
    if first:
        # A leading dot hides the file; a leading '-' or space trips shell tools.
        return char == "_"
    return category[0] == "M" or char in _PUNCTUATION


def name_problem(name: str) -> str | None:
    """Why `name` cannot be an output name, or None when it can."""
    if not name:
        return "must not be empty"
    if name != unicodedata.normalize("NFC", name):
        return "must be in Unicode NFC form"
    if len(name) > MAX_NAME_CHARS:
        return f"must be at most {MAX_NAME_CHARS} characters (got {len(name)})"
    for index, char in enumerate(name):
        if not _allowed(char, index == 0):
            where = "start with" if index == 0 else "contain"
            return (
                f"must not {where} {char!r} (allowed: letters and digits of any script, "
                "then also space, '.', '_', '-')"
            )
    if name.endswith((" ", ".")):
        return "must not end with a space or a dot"
    return None


def sanitize_name(stem: str) -> str:
    """A valid output name derived from a file stem: bad characters become `_`, never empty."""
    stem = unicodedata.normalize("NFC", stem)[:MAX_NAME_CHARS]
    chars = [char if _allowed(char, index == 0) else "_" for index, char in enumerate(stem)]
    cleaned = "".join(chars).rstrip(" .")
    return cleaned or "job"
