"""Output names: the only strings from a job that become file names, so they come from a safe charset."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

MAX_NAME_CHARS = 100
# File systems cap a name at 255 bytes (ext4) or 255 UTF-8 bytes / UTF-16 units (APFS, HFS+). 100
# CJK characters are 300 bytes, so the byte cap is what keeps `<name>.status.json` creatable; 200
# leaves room for every suffix ttsd adds, and for the NFD expansion HFS+ applies to Hangul.
MAX_NAME_BYTES = 200
_PUNCTUATION = frozenset(" ._-")
# `<book>.ch01.m4b` is a book's chapter file: no output name may end like one, or its audio and the
# book's chapter would be one file.
_CHAPTER_TAIL = re.compile(r"\.ch\d+$", re.IGNORECASE)


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
                f"must not {where} {char!r} (allowed: letters and digits of any script, then also space, '.', '_', '-')"
            )
    if name.endswith((" ", ".")):
        return "must not end with a space or a dot"
    if _CHAPTER_TAIL.search(name):
        return "must not end like a book's chapter file ('.ch' and a number: <book>.ch01)"
    size = len(name.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        return f"must be at most {MAX_NAME_BYTES} bytes in UTF-8 (got {size})"
    return None


def _fit(name: str, room_chars: int, room_bytes: int) -> str:
    name = name[:room_chars]
    while len(name.encode("utf-8")) > room_bytes:
        name = name[:-1]
    return name


def sanitize_name(stem: str, suffix: str = "") -> str:
    """A valid output name derived from a file stem: bad characters become `_`, never empty.

    `suffix` (a valid tail such as `-3` for the third line of a .jsonl file) is kept whole: the stem
    is shortened to make room, so two suffixes never truncate into the same name.
    """
    stem = unicodedata.normalize("NFC", stem)
    chars = [char if _allowed(char, index == 0) else "_" for index, char in enumerate(stem)]
    room_bytes = MAX_NAME_BYTES - len(suffix.encode("utf-8"))
    cleaned = _fit("".join(chars), MAX_NAME_CHARS - len(suffix), room_bytes).rstrip(" .")
    cleaned = _CHAPTER_TAIL.sub(lambda tail: "-" + tail.group()[1:], cleaned)
    return (cleaned or "job") + suffix


def name_key(name: str) -> str:
    """The name as a case-insensitive file system (macOS's default APFS, Windows) sees it: names
    with equal keys are one file there. Output names are already NFC (`name_problem` refuses the
    rest), so a file system that also ignores Unicode normalisation merges no further names."""
    return unicodedata.normalize("NFC", name).casefold()


def default_output_name(job: Mapping[str, Any]) -> str:
    """A readable name for a job that sets no `output`: its first words plus a short hash of the
    whole job, so two different jobs with the same text never share a name."""
    words = re.findall(r"\w+", str(job.get("text", "")).lower())[:5]
    fields = {key: value for key, value in job.items() if key != "output"}
    # surrogatepass: a lone surrogate is the job parser's to refuse, naming its field, not a crash here.
    canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(canonical).hexdigest()[:6]
    return sanitize_name("-".join([*words, digest]) if words else f"job-{digest}")[:60]
