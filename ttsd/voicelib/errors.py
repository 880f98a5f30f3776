"""What can go wrong with a saved voice, and the rule for its name."""

from __future__ import annotations

import re
from collections.abc import Sequence

from ttsd.errors import JobNotFound, TtsdError

MAX_VOICE_NAME_CHARS = 64
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


def voice_name_problem(name: str) -> str | None:
    """Why `name` cannot name a saved voice, or None when it can. The name becomes a folder name, so
    it is plain ASCII: letters, digits, `-`, `_` and `.`, not starting with `.` (hidden, and `..`) nor
    with `-` (read as an option by `ttsd voices remove` and every shell tool)."""
    if not name:
        return "a voice name cannot be empty"
    if len(name) > MAX_VOICE_NAME_CHARS:
        return f"a voice name is at most {MAX_VOICE_NAME_CHARS} characters (this one has {len(name)})"
    if name.startswith((".", "-")):
        return "a voice name cannot start with '.' or '-'"
    if not _NAME.fullmatch(name):
        return "a voice name holds only letters, digits, '-', '_' and '.'"
    return None


class VoiceNotFound(JobNotFound):
    """No saved voice of that name (a kind of "not found": the CLI exits 3)."""

    code = "missing_voice"

    def __init__(self, name: str, saved: Sequence[str], why: str = "") -> None:
        known = ", ".join(saved) if saved else "none yet"
        super().__init__(
            f"no saved voice {name!r}{f' ({why})' if why else ''}; saved voices: {known} "
            "(add one with `ttsd voices add NAME --from recording.wav`)"
        )
        self.voice = name


class DamagedVoice(TtsdError):
    """A saved voice whose files cannot be used as they are."""

    code = "damaged_voice"

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(
            f"saved voice {name!r} is damaged: {problem}; remove it (`ttsd voices remove {name}`) and add it again"
        )
        self.voice = name
        self.problem = problem


class VoiceRejected(TtsdError):
    """A voice cannot be saved as asked: a bad name, a name taken, a bad recording or prompt."""

    code = "voice_rejected"
