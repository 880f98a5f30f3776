"""Who speaks what: a job's voice fields checked against its model's kind, saved voices looked up
in the library, `[pause]` markup checked, and a script's segments resolved (each inherits the
job's voice fields unless it names its own)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from ttsd.catalog import KIND_FIELDS, ModelEntry
from ttsd.errors import JobRejected, TtsdError
from ttsd.jobspec import Segment, VoiceFields
from ttsd.markup import MAX_PAUSE_MS, MarkupError, parse_pauses
from ttsd.voicelib import SavedVoice

MAX_SEGMENTS: Final = 20_000
MAX_JOB_SILENCE_S: Final = 3_600
_VOICE_FIELDS = ("speaker", "instruct", "ref_audio", "ref_text", "voice")
_CLONE_FIELDS = ("voice", "ref_audio", "ref_text")


class SavedVoices(Protocol):
    """The voice library as job parsing sees it."""

    def get(self, name: str) -> SavedVoice: ...


class SegmentFile(BaseModel):
    """One segment of a script as a job file states it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: StrictStr
    speaker: StrictStr | None = Field(None, max_length=100)
    voice: StrictStr | None = Field(None, max_length=100)
    instruct: StrictStr | None = Field(None, max_length=2_000)
    language: StrictStr | None = Field(None, max_length=100)
    ref_audio: StrictStr | None = Field(None, max_length=255)
    ref_text: StrictStr | None = Field(None, max_length=2_000)
    pause_ms: StrictInt | None = Field(None, ge=0, le=MAX_PAUSE_MS)


def reject(code: str, message: str, field: str | None = None) -> JobRejected:
    """A rejection whose message starts with the field it is about."""
    prefix = f"{field}: " if field else ""
    return JobRejected(code, prefix + message, field)


def check_markup(text: str, field: str) -> int:
    """The silence `text`'s `[pause]` markup asks for, in ms; markup that is malformed or out of
    bounds is refused, saying where."""
    try:
        marked = parse_pauses(text)
    except MarkupError as exc:
        raise reject("invalid_markup", exc.message, field) from exc
    return marked.lead_ms + sum(pause for _, pause in marked.runs)


def check_silence(total_ms: int, field: str) -> None:
    """A job's asked-for silence (pause markup and segment pauses) is bounded: a few bytes of
    `[pause 10s]` must not become hours of audio the worker has to hold and join."""
    if total_ms > MAX_JOB_SILENCE_S * 1000:
        raise reject(
            "too_much_silence",
            f"the pauses it asks for add up to {total_ms / 1000:g} s; a job's pauses are at most {MAX_JOB_SILENCE_S} s",
            field,
        )


def check_ref_audio(ref_audio: str, field: str) -> None:
    """A reference recording is named by its plain file name inside the inbox's voices/ folder."""
    # Checked on the string itself: PurePosixPath would quietly drop a trailing "/" or "/.".
    if "/" in ref_audio or "\\" in ref_audio or not ref_audio or ref_audio.startswith("."):
        raise reject("invalid_field", "must be the plain name of a file in the inbox's voices/ folder", field)


def saved_voice(name: str, library: SavedVoices | None, field: str) -> SavedVoice:
    """The saved voice `name`, or a rejection naming it (unknown, or damaged on disk)."""
    if library is None:
        raise reject("unknown_voice", f"there is no saved voice {name!r} (the voice library is empty)", field)
    try:
        return library.get(name)
    except TtsdError as exc:
        raise reject("unknown_voice", exc.message, field) from exc


def voice_model(named: Sequence[tuple[str | None, str]], library: SavedVoices | None) -> tuple[str, str] | None:
    """The model the first saved voice named in `named` ((name, field) pairs) was made for, and that
    voice's name: a job naming a voice and no model runs on that model."""
    first = next(((name, field) for name, field in named if name), None)
    return None if first is None else (saved_voice(first[0], library, first[1]).model, first[0])


class _LookedUpOnce:
    """A library read once per voice name: a script's thousands of segments may name one voice."""

    def __init__(self, library: SavedVoices) -> None:
        self._library = library
        self._found: dict[str, SavedVoice] = {}

    def get(self, name: str) -> SavedVoice:
        if name not in self._found:
            self._found[name] = self._library.get(name)
        return self._found[name]


def job_voices(
    own: dict[str, str | None],
    text: str,
    segments: Sequence[SegmentFile] | None,
    entry: ModelEntry,
    library: SavedVoices | None,
    chosen_by: str | None,
) -> tuple[VoiceFields, tuple[Segment, ...] | None]:
    """The job's own voice fields and its script's segments, checked against the model; `chosen_by`
    names the saved voice that picked the model (a job that named none), for the rejections."""
    library = _LookedUpOnce(library) if library is not None else None
    try:
        if segments is None:
            check_silence(check_markup(text, "text"), "text")
            return resolve_voice(own, entry, library), None
        # The job's own fields are its segments' defaults: checked here, required only of segments.
        return check_voice(own, entry, library), resolve_segments(segments, own, entry, library)
    except JobRejected as rejection:
        if chosen_by is None or rejection.code not in ("field_not_for_model", "missing_field"):
            raise
        why = f" (the job names no model: it runs on {entry.name!r}, the model of voice {chosen_by!r})"
        raise JobRejected(rejection.code, rejection.message + why, rejection.field) from None


def resolve_voice(
    given: dict[str, str | None], entry: ModelEntry, library: SavedVoices | None, where: str = ""
) -> VoiceFields:
    """`given` voice fields (speaker, instruct, ref_audio, ref_text, voice, language) checked against
    the model's kind, with everything that kind needs present; `where` prefixes field names in
    rejections (`segments.2.`)."""
    voice = check_voice(given, entry, library, where)
    if entry.kind == "voice_design" and not (voice.instruct or "").strip():
        raise reject(
            "missing_field", f"model {entry.name!r} (voice_design) needs a voice description", where + "instruct"
        )
    if entry.kind == "base" and not (voice.ref_audio or voice.voice):
        raise reject(
            "missing_field",
            f"model {entry.name!r} (voice clone) needs a saved voice or a reference recording",
            where + "ref_audio",
        )
    return voice


def check_voice(
    given: dict[str, str | None], entry: ModelEntry, library: SavedVoices | None, where: str = ""
) -> VoiceFields:
    """`given` voice fields checked against the model's kind, without requiring any (a script's own
    fields are only its segments' defaults): fields the kind does not take, a reference outside the
    voices folder, a saved voice that is unknown or made for another model, a voice with a recording."""
    accepted = (*KIND_FIELDS[entry.kind], *(("voice",) if entry.kind == "base" else ()))
    for field in _VOICE_FIELDS:
        if given.get(field) is not None and field not in accepted:
            raise reject(
                "field_not_for_model",
                f"model {entry.name!r} is a {entry.kind} model and takes {', '.join(accepted)}",
                where + field,
            )
    voice, ref_audio = given.get("voice"), given.get("ref_audio")
    if ref_audio is not None:
        check_ref_audio(ref_audio, where + "ref_audio")
    if voice and (ref_audio or given.get("ref_text")):
        field = "ref_audio" if ref_audio else "ref_text"
        raise reject(
            "conflicting_fields", f"a saved voice brings its own recording and transcript: drop {field}", where + field
        )
    sha = None
    if voice:
        saved = saved_voice(voice, library, where + "voice")
        if saved.model != entry.name:
            raise reject(
                "voice_not_for_model",
                f"voice {voice!r} was made for model {saved.model!r}, but this job uses {entry.name!r}",
                where + "voice",
            )
        sha = saved.prompt_sha256
    return VoiceFields(
        speaker=given.get("speaker"),
        language=given.get("language") or "Auto",
        instruct=given.get("instruct"),
        ref_audio=ref_audio,
        ref_text=given.get("ref_text"),
        voice=voice,
        voice_sha256=sha,
    )


def resolve_segments(
    segments: Sequence[SegmentFile], defaults: dict[str, str | None], entry: ModelEntry, library: SavedVoices | None
) -> tuple[Segment, ...]:
    """A script's segments, each speaking with its own voice fields, or the job's (`defaults`)
    where it names none. A segment naming a voice or a recording takes none of the job's."""
    resolved = []
    silence_ms = 0
    for index, segment in enumerate(segments):
        where = f"segments.{index}."
        if not segment.text.strip():
            raise reject("blank_text", "must not be blank", where + "text")
        silence_ms += check_markup(segment.text, where + "text") + (segment.pause_ms or 0)
        check_silence(silence_ms, "segments")
        own = segment.model_dump(exclude={"text", "pause_ms"}, exclude_none=True)
        inherited = dict(defaults)
        if any(field in own for field in _CLONE_FIELDS):
            for field in _CLONE_FIELDS:
                inherited.pop(field, None)
        voice = resolve_voice({**inherited, **own}, entry, library, where)
        resolved.append(Segment(text=segment.text, voice=voice, pause_ms=segment.pause_ms))
    return tuple(resolved)
