"""The saved voice library: one folder per voice under the state directory.

    <root>/<name>/voice.json          what the voice is (`SavedVoice`)
    <root>/<name>/prompt.safetensors  the Base model's clone prompt (see `prompt_file`)
    <root>/<name>/reference.wav       the reference audio, so the voice can be made again for another model

A voice is written whole into a hidden temp folder and renamed into place, so readers see a whole
voice or none. Names are unique regardless of case, so a library copied to a case-folding file
system (macOS) stays whole.
"""

from __future__ import annotations

import builtins
import json
import logging
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import soundfile as sf
from pydantic import StringConstraints, TypeAdapter, ValidationError

from ttsd import __version__
from ttsd.fsutil import (
    TEMP_PREFIX,
    TEMP_SUFFIX,
    NotRegularFile,
    atomic_write,
    fsync_dir,
    make_folder,
    read_regular_file,
    temp_name,
)
from ttsd.voicelib.errors import DamagedVoice, VoiceNotFound, VoiceRejected, voice_name_problem
from ttsd.voicelib.prompt_file import checked_prompt_bytes, encode_prompt, saved_names, sha256_of

log = logging.getLogger(__name__)

VOICE_FILE: Final = "voice.json"
PROMPT_FILE: Final = "prompt.safetensors"
REFERENCE_FILE: Final = "reference.wav"
MAX_VOICE_FILE_BYTES: Final = 256 * 1024
STALE_TEMP_S: Final = 3600.0
"""A temp folder older than this is a crashed save's leftover (a live save takes seconds)."""

Source = Literal["recording", "design"]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


@dataclass(frozen=True)
class SavedVoice:
    """One saved voice, as its voice.json describes it."""

    name: str
    model: str
    """The registry name of the Base model the prompt was computed with (prompts fit one model)."""
    source: Source
    description: str | None
    """The VoiceDesign description it was designed from (source "design")."""
    ref_text: str | None
    """The reference transcript (None: the prompt is the speaker embedding only)."""
    recording_sha256: Sha256
    prompt_sha256: Sha256
    x_vector_only: bool
    created_at: str
    duration_s: float = 0.0
    """The reference audio's length."""
    ttsd_version: str = ""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form (voice.json's content)."""
        return asdict(self)


_VOICE_ADAPTER: Final = TypeAdapter(SavedVoice)


class VoiceLibrary:
    """The saved voices under `root` (`Settings.saved_voices_dir`); the folder appears on first save."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def get(self, name: str) -> SavedVoice:
        """The voice saved as exactly `name`: VoiceNotFound (naming the saved ones) when there is
        none, DamagedVoice when its voice.json is unreadable or invalid."""
        problem = voice_name_problem(name)
        if problem is not None:
            raise VoiceNotFound(name, self.names(), why=problem)
        folder = self._folder_of(name)
        if folder is None:
            raise VoiceNotFound(name, self.names())
        if folder.name != name:
            raise VoiceNotFound(name, self.names(), why=f"did you mean {folder.name!r}? a job spells a voice as saved")
        voice = self._read(folder)
        # A prompt changed or cut since it was saved is found here, when a job names the voice or
        # `ttsd voices list` shows it, not only when a worker loads it.
        checked_prompt_bytes(folder / PROMPT_FILE, voice.prompt_sha256, name)
        return voice

    def list(self) -> list[SavedVoice]:
        """Every usable saved voice, sorted by name; damaged ones are logged and left out."""
        voices = []
        for name in self.names():
            try:
                voices.append(self.get(name))
            except (DamagedVoice, VoiceNotFound) as exc:
                log.warning("skipping saved voice folder %s: %s", self.root / name, exc.message)
        return voices

    def names(self) -> builtins.list[str]:
        """The names of the voice folders, damaged ones included, sorted."""
        return saved_names(self.root)

    def prompt_path(self, name: str) -> Path:
        """Where voice `name`'s prompt file is (whether or not it exists)."""
        problem = voice_name_problem(name)
        if problem is not None:
            raise VoiceNotFound(name, self.names(), why=problem)
        return self.root / name / PROMPT_FILE

    def reference_path(self, name: str) -> Path:
        """Where voice `name`'s reference audio is."""
        return self.prompt_path(name).with_name(REFERENCE_FILE)

    def save(
        self,
        name: str,
        *,
        model: str,
        source: Source,
        prompt: Mapping[str, Any],
        recording: Path,
        recording_sha256: str | None = None,
        description: str | None = None,
        force: bool = False,
    ) -> SavedVoice:
        """Save a voice: `prompt` holds the prompt item's fields as numpy arrays (see
        `prompt_file.encode_prompt`), `recording` is the reference audio as a WAV file, copied as
        it is; `recording_sha256` is the hash of the user's own file when that was converted (default:
        the WAV's). With `force` an existing voice of the same name is replaced. VoiceRejected says
        why a voice cannot be saved."""
        self.check_new_name(name, force)
        data = encode_prompt(prompt)
        try:
            reference = read_regular_file(recording, 1 << 30)
            duration = float(sf.info(str(recording)).duration)
        except (OSError, RuntimeError) as exc:
            raise VoiceRejected(f"the reference recording {recording} cannot be read: {exc}") from exc
        voice = SavedVoice(
            name=name,
            model=model,
            source=source,
            description=description,
            ref_text=prompt.get("ref_text"),
            recording_sha256=recording_sha256 or sha256_of(reference),
            prompt_sha256=sha256_of(data),
            x_vector_only=bool(prompt["x_vector_only_mode"]),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            duration_s=round(duration, 3),
            ttsd_version=__version__,
        )
        files = {
            PROMPT_FILE: data,
            REFERENCE_FILE: reference,
            VOICE_FILE: json.dumps(voice.as_dict(), indent=2, ensure_ascii=False).encode("utf-8"),
        }
        self._install(name, files)
        return voice

    def remove(self, name: str) -> SavedVoice | None:
        """Delete voice `name` and return what it was (None when it was damaged: a damaged voice can
        always be removed); VoiceNotFound when there is none."""
        folder = self._folder_of(name) if voice_name_problem(name) is None else None
        if folder is None or folder.name != name:
            raise VoiceNotFound(name, self.names())
        try:
            voice: SavedVoice | None = self._read(folder)
        except DamagedVoice:
            voice = None
        self._discard(folder)
        return voice

    def check_new_name(self, name: str, force: bool = False) -> None:
        """VoiceRejected unless `name` can be saved now (valid, free, or replaced with `force`)."""
        problem = voice_name_problem(name)
        if problem is not None:
            raise VoiceRejected(f"cannot save voice {name!r}: {problem}")
        existing = self._folder_of(name)
        if existing is None:
            return
        if existing.name != name:
            raise VoiceRejected(
                f"cannot save voice {name!r}: it differs only in case from the saved voice {existing.name!r}"
                " (names are unique regardless of case)"
            )
        if not force:
            raise VoiceRejected(
                f"a voice named {name!r} is already saved (replace it with --force, or remove it first)"
            )

    # -- inside ----------------------------------------------------------------------------------

    def _folder_of(self, name: str) -> Path | None:
        """The folder whose name equals `name` regardless of case, if any."""
        wanted = name.casefold()
        return next((self.root / n for n in self.names() if n.casefold() == wanted), None)

    def _read(self, folder: Path) -> SavedVoice:
        name = folder.name
        try:
            raw = read_regular_file(folder / VOICE_FILE, MAX_VOICE_FILE_BYTES)
        except FileNotFoundError:
            raise DamagedVoice(name, f"{VOICE_FILE} is missing") from None
        except (NotRegularFile, OSError) as exc:
            raise DamagedVoice(name, f"{VOICE_FILE} cannot be read ({exc})") from exc
        try:
            voice = _VOICE_ADAPTER.validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "the file"
            raise DamagedVoice(name, f"{VOICE_FILE} is invalid at {where}: {first['msg']}") from exc
        if voice.name != name:
            raise DamagedVoice(name, f"{VOICE_FILE} names the voice {voice.name!r}, not its folder's name")
        return voice

    def _install(self, name: str, files: Mapping[str, bytes]) -> None:
        make_folder(self.root, "saved voices folder")
        self._sweep_stale()
        staging = self.root / temp_name()
        staging.mkdir(mode=0o755)
        try:
            for file_name, data in files.items():
                atomic_write(staging / file_name, data)
            fsync_dir(staging)
            target = self.root / name
            old = None
            if target.exists():
                old = self.root / temp_name()
                target.rename(old)
            try:
                staging.rename(target)
            except OSError as exc:
                if old is not None:
                    # The replaced voice comes back: a failed --force must not lose it.
                    old.rename(target)
                    old = None
                raise VoiceRejected(f"voice {name!r} was saved by someone else meanwhile ({exc})") from exc
            fsync_dir(self.root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def _discard(self, folder: Path) -> None:
        # Renamed away first: the voice disappears at once and whole, even if deleting its files fails.
        gone = self.root / temp_name()
        folder.rename(gone)
        fsync_dir(self.root)
        shutil.rmtree(gone, ignore_errors=True)

    def _sweep_stale(self) -> None:
        cutoff = time.time() - STALE_TEMP_S
        for leftover in self.root.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
            try:
                if leftover.is_dir() and not leftover.is_symlink() and leftover.stat().st_mtime < cutoff:
                    shutil.rmtree(leftover, ignore_errors=True)
            except OSError:
                continue
