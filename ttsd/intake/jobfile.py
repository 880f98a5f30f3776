"""Pure parsing: the bytes of a job file -> validated job specs, or typed rejections naming the field.

Nothing here touches the disk, the queue or the model: the same bytes always give the same answer.
"""

from __future__ import annotations

import codecs
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import PurePosixPath
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from ttsd.audio import SPEED_RANGE
from ttsd.catalog import ModelEntry, build_registry
from ttsd.config import Settings
from ttsd.encoding import AudioFormat, rate_problem
from ttsd.errors import JobRejected
from ttsd.intake.book_jobs import BOOK_SUFFIX, book_object
from ttsd.intake.scripts import (
    MAX_SEGMENTS,
    SavedVoices,
    SegmentFile,
    job_voices,
    reject,
    voice_model,
)
from ttsd.jobspec import ChapterStart, Generation, JobSpec, SubtitleFormat
from ttsd.names import name_problem, sanitize_name
from ttsd.voicelib import VoiceLibrary

JOB_SUFFIXES = (".json", ".jsonl", ".txt", BOOK_SUFFIX)
# Each line of a .jsonl file costs a parse, a queue row and a status file: a cap keeps one dropped
# file from stalling intake for minutes (4 MiB of "1\n" would otherwise be two million rejections).
MAX_JOBS_PER_FILE = 10_000

_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_MAX_ID_CHARS = 200
_MAX_SHORT_FIELD_CHARS = 2_000
# No field takes a number near this long; the cap keeps int() linear and below Python's digit limit
# (which would raise a plain ValueError out of json.loads).
_MAX_INT_DIGITS = 100
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# Prose may hold tabs, line and page breaks; names and identifiers hold no control character at all.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_PROSE_FIELDS = ("text", "instruct", "ref_text")
_IDENTIFIER_FIELDS = ("model", "speaker", "language", "ref_audio", "id", "voice")
_VOICE_KEYS = ("speaker", "instruct", "ref_audio", "ref_text", "voice")


class Chunking(BaseModel):
    """How long text is cut into pieces the model takes in one go."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_chars: StrictInt | None = Field(None, ge=20)
    gap_ms: StrictInt | None = Field(None, ge=0, le=10_000)
    # A shorter first chunk: its audio exists sooner (what a streamed answer waits for).
    first_max_chars: StrictInt | None = Field(None, ge=20)


class JobFile(BaseModel):
    """A job object exactly as a file may state it (schema 1). Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: StrictStr | None = None
    model: StrictStr | None = None
    speaker: StrictStr | None = Field(None, max_length=100)
    language: StrictStr | None = Field(None, max_length=100)
    instruct: StrictStr | None = Field(None, max_length=_MAX_SHORT_FIELD_CHARS)
    ref_audio: StrictStr | None = Field(None, max_length=255)
    ref_text: StrictStr | None = Field(None, max_length=_MAX_SHORT_FIELD_CHARS)
    format: AudioFormat = "wav"
    sample_rate: StrictInt | None = Field(None, ge=8_000, le=192_000)
    output: StrictStr | None = None
    priority: StrictInt = Field(0, ge=-1_000_000, le=1_000_000)
    seed: StrictInt | None = Field(None, ge=0, le=2**32 - 1)
    generation: Generation = Field(default_factory=Generation)
    id: StrictStr | None = Field(None, max_length=_MAX_ID_CHARS)
    cache: StrictBool = True
    chunking: Chunking = Field(default_factory=Chunking)
    normalize: StrictBool = False
    speed: StrictFloat = Field(1.0, ge=SPEED_RANGE[0], le=SPEED_RANGE[1])
    voice: StrictStr | None = Field(None, max_length=100)
    segments: list[SegmentFile] | None = Field(None, min_length=1, max_length=MAX_SEGMENTS)
    subtitles: SubtitleFormat | None = None
    chapter_files: StrictBool = False


@dataclass(frozen=True)
class JobDefaults:
    """What parsing needs from the settings: defaults, limits, and the model registry."""

    default_model: str
    default_sample_rate: int
    max_text_length: int
    max_job_chars: int
    max_file_bytes: int
    registry: Mapping[str, ModelEntry]
    voices: SavedVoices | None = None
    """The saved voice library (None: no saved voices)."""


def job_defaults(settings: Settings) -> JobDefaults:
    """What the job parser needs from the settings."""
    return JobDefaults(
        default_model=settings.default_model,
        default_sample_rate=settings.default_sample_rate,
        max_text_length=settings.max_text_length,
        max_job_chars=settings.max_job_chars,
        max_file_bytes=settings.max_job_file_bytes,
        registry=build_registry(settings.models),
        voices=VoiceLibrary(settings.saved_voices_dir),
    )


@dataclass(frozen=True)
class ParsedEntry:
    """One job of a file: its output name, and either the spec or why it was refused."""

    name: str
    line: int | None
    spec: JobSpec | None = None
    rejection: JobRejected | None = None


def _checked_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A JSON escape can smuggle in a lone UTF-16 surrogate, which no UTF-8 writer (status file,
    # SQLite, the content key) can encode later: refuse it here, where every key and value passes.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if _SURROGATE.search(key):
            raise reject("encoding", "a key holds an unpaired UTF-16 surrogate escape")
        if key in result:
            raise reject("duplicate_key", f"the key {key!r} appears twice")
        if isinstance(value, str) and _SURROGATE.search(value):
            raise reject("encoding", "holds an unpaired UTF-16 surrogate escape", key)
        result[key] = value
    return result


def _no_constants(token: str) -> Any:
    raise reject("invalid_number", f"{token} is not a valid JSON number")


def _finite_float(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise reject("invalid_number", f"{token} is out of range for a number")
    return value


def _short_int(token: str) -> int:
    digits = len(token.lstrip("-"))
    if digits > _MAX_INT_DIGITS:
        raise reject("invalid_number", f"a {digits}-digit integer is out of range")
    return int(token)


def decode_text(data: bytes, max_bytes: int) -> str:
    """Strict UTF-8 (a leading BOM tolerated), or UTF-16/UTF-32 when a BOM says so (what Notepad and
    TextEdit save as "Unicode"), within the size cap."""
    if len(data) > max_bytes:
        raise reject("too_large", f"the file is {len(data)} bytes; the limit is {max_bytes}")
    encoding = _bom_encoding(data)
    # In UTF-16 and UTF-32 most characters hold zero bytes: only a decoded NUL means binary there.
    if encoding == "utf-8-sig" and b"\x00" in data:
        raise reject("binary", "the file holds NUL bytes: it is not a text job file")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        name = encoding.removesuffix("-sig").upper()
        raise reject("encoding", f"not valid {name} at byte {exc.start}: save the file as UTF-8") from exc
    if "\x00" in text:
        raise reject("binary", "the file holds NUL characters: it is not a text job file")
    return text


def _bom_encoding(data: bytes) -> str:
    # UTF-32 first: its little-endian BOM starts with UTF-16's.
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return encoding
    return "utf-8-sig"


def decode_json(text: str) -> Any:
    """JSON with duplicate keys, NaN/Infinity and absurd nesting refused."""
    try:
        return json.loads(
            text,
            object_pairs_hook=_checked_object,
            parse_constant=_no_constants,
            parse_float=_finite_float,
            parse_int=_short_int,
        )
    except RecursionError as exc:
        raise reject("too_deep", "the JSON is nested too deeply") from exc
    except json.JSONDecodeError as exc:
        raise reject("invalid_json", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc


_NESTED: dict[str, type[BaseModel]] = {"generation": Generation, "chunking": Chunking, "segments": SegmentFile}


def _validation_rejection(exc: ValidationError) -> JobRejected:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or None
    if first["type"] == "extra_forbidden":
        # The allowed keys of the object the stray key sits in, not always the top level's.
        parent = _NESTED.get(str(first["loc"][0])) if len(first["loc"]) > 1 else None
        allowed = ", ".join((parent or JobFile).model_fields)
        return reject("unknown_field", f"unknown field (allowed: {allowed})", field)
    if first["type"] == "missing":
        return reject("missing_field", "is required", field)
    return reject("invalid_field", first["msg"], field)


def _check_safe_strings(job: JobFile) -> None:
    _check_strings(job, "")
    for index, segment in enumerate(job.segments or ()):
        _check_strings(segment, f"segments.{index}.")


def _check_strings(fields: BaseModel, where: str) -> None:
    for field in (*_PROSE_FIELDS, *_IDENTIFIER_FIELDS):
        value = getattr(fields, field, None)
        if value is None:
            continue
        # The text itself may well read a URL out loud; every other string names or steers something.
        if field != "text" and _URL.match(value.strip()):
            raise reject("url_refused", "URLs are not accepted: ttsd never fetches anything a job names", where + field)
        if _SURROGATE.search(value):
            raise reject("encoding", "holds an unpaired UTF-16 surrogate, which no file can store", where + field)
        bad = _CONTROL.search(value) if field in _IDENTIFIER_FIELDS else None
        if "\x00" in value or bad:
            char = "\x00" if bad is None else bad.group()
            raise reject("invalid_field", f"must not contain the control character {char!r}", where + field)


def resolve(
    job: JobFile, name: str, defaults: JobDefaults, chapters: tuple[ChapterStart, ...] | None = None
) -> JobSpec:
    """Fill defaults and check everything that depends on the settings and the model registry
    (`chapters`: a Markdown book's, whose segments are its paragraphs)."""
    text = _script_text(job, defaults)
    _check_safe_strings(job)
    named = [(job.voice, "voice"), *((s.voice, f"segments.{i}.voice") for i, s in enumerate(job.segments or ()))]
    chosen = None if job.model else voice_model(named, defaults.voices)
    model = job.model or (chosen[0] if chosen else defaults.default_model)
    entry = defaults.registry.get(model)
    if entry is None:
        known = ", ".join(sorted(defaults.registry))
        raise reject("unknown_model", f"unknown model {model!r} (known: {known})", "model")
    own = {field: getattr(job, field) for field in (*_VOICE_KEYS, "language")}
    voice, segments = job_voices(own, text, job.segments, entry, defaults.voices, chosen[1] if chosen else None)
    if job.chapter_files and not chapters:
        raise reject("invalid_field", "only a Markdown book (.md job file) has chapters", "chapter_files")
    sample_rate = job.sample_rate or defaults.default_sample_rate
    problem = rate_problem(job.format, sample_rate)
    if problem:
        raise reject("invalid_field", problem, "sample_rate")
    max_chars = job.chunking.max_chars
    if max_chars is not None and max_chars > defaults.max_text_length:
        raise reject("invalid_field", f"must be at most {defaults.max_text_length}", "chunking.max_chars")
    if job.output is not None:
        problem = name_problem(job.output)
        if problem:
            raise reject("invalid_output", problem, "output")
        name = job.output
    return JobSpec(
        name=name,
        text=text,
        model=model,
        kind=entry.kind,
        speaker=voice.speaker,
        language=voice.language,
        instruct=voice.instruct,
        ref_audio=voice.ref_audio,
        ref_text=voice.ref_text,
        format=job.format,
        sample_rate=sample_rate,
        priority=job.priority,
        seed=job.seed,
        generation=job.generation,
        client_id=job.id,
        cache=job.cache,
        chunk_max_chars=max_chars or defaults.max_text_length,
        gap_ms=job.chunking.gap_ms,
        normalize=job.normalize,
        speed=job.speed,
        chunk_first_chars=job.chunking.first_max_chars,
        voice=voice.voice,
        voice_sha256=voice.voice_sha256,
        segments=segments,
        chapters=chapters,
        subtitles=job.subtitles,
        chapter_files=job.chapter_files,
    )


def _script_text(job: JobFile, defaults: JobDefaults) -> str:
    """The job's whole text (a script's segments joined by blank lines), checked for size."""
    if (job.text is None) == (job.segments is None):
        raise reject("missing_field", "give either text or segments (a script), not both or neither", "text")
    text = job.text if job.text is not None else "\n\n".join(s.text for s in job.segments or ())
    if job.text is not None and not text.strip():
        raise reject("blank_text", "must not be blank", "text")
    if len(text) > defaults.max_job_chars:
        field = "text" if job.text is not None else "segments"
        raise reject("text_too_long", f"is {len(text)} characters; the limit is {defaults.max_job_chars}", field)
    return text


def parse_object(
    obj: Any, name: str, defaults: JobDefaults, chapters: tuple[ChapterStart, ...] | None = None
) -> JobSpec:
    """A decoded JSON value -> a resolved spec, or JobRejected (`chapters`: a book's)."""
    if not isinstance(obj, dict):
        raise reject("not_an_object", f"a job must be a JSON object, not {type(obj).__name__}")
    try:
        job = JobFile.model_validate(obj)
    except ValidationError as exc:
        raise _validation_rejection(exc) from exc
    return resolve(job, name, defaults, chapters)


def _parse_json(text: str, name: str, defaults: JobDefaults) -> JobSpec:
    return parse_object(decode_json(text), name, defaults)


def _parse_book(text: str, name: str, defaults: JobDefaults) -> JobSpec:
    book = book_object(text)
    try:
        return parse_object(book.job, name, defaults, book.chapters)
    except JobRejected as rejection:
        raise book.in_book_terms(rejection) from None


def _entry(name: str, line: int | None, build: Callable[[], JobSpec]) -> ParsedEntry:
    try:
        spec = build()
    except JobRejected as rejection:
        return ParsedEntry(name=name, line=line, rejection=rejection)
    # An accepted job is known by its own name, which its `output` field may have set.
    return ParsedEntry(name=spec.name, line=line, spec=spec)


def parse_job_file(file_name: str, data: bytes, defaults: JobDefaults) -> list[ParsedEntry]:
    """The bytes of an inbox file named `file_name` -> one entry per job (several for .jsonl).

    Never raises for bad content: every problem becomes a rejection entry. A file-level problem
    (size, encoding) rejects the whole file as one entry.
    """
    path = PurePosixPath(file_name)
    stem_name = sanitize_name(path.stem)
    suffix = path.suffix.lower()
    if suffix not in JOB_SUFFIXES:
        rejection = reject("unsupported_file", f"only {', '.join(JOB_SUFFIXES)} files are jobs")
        return [ParsedEntry(name=stem_name, line=None, rejection=rejection)]
    try:
        text = decode_text(data, defaults.max_file_bytes)
    except JobRejected as rejection:
        return [ParsedEntry(name=stem_name, line=None, rejection=rejection)]
    if suffix == ".txt":
        return [_entry(stem_name, None, lambda: resolve(JobFile(text=text), stem_name, defaults))]
    if suffix == ".json":
        return [_entry(stem_name, None, partial(_parse_json, text, stem_name, defaults))]
    if suffix == BOOK_SUFFIX:
        return [_entry(stem_name, None, partial(_parse_book, text, stem_name, defaults))]
    return _parse_lines(text, stem_name, defaults)


def _parse_lines(text: str, stem_name: str, defaults: JobDefaults) -> list[ParsedEntry]:
    # Only "\n" ends a line: str.splitlines() would also cut at U+2028, U+0085 and friends, which JSON
    # allows raw inside a string. A "\r" left over from CRLF is whitespace to the JSON decoder.
    lines = [(number, line) for number, line in enumerate(text.split("\n"), start=1) if line.strip()]
    if not lines:
        return [ParsedEntry(name=stem_name, line=None, rejection=reject("empty", "the file holds no job lines"))]
    if len(lines) > MAX_JOBS_PER_FILE:
        rejection = reject("too_many_jobs", f"the file holds {len(lines)} job lines; the limit is {MAX_JOBS_PER_FILE}")
        return [ParsedEntry(name=stem_name, line=None, rejection=rejection)]
    entries = []
    for number, line in lines:
        line_name = sanitize_name(stem_name, f"-{number}")
        entries.append(_entry(line_name, number, partial(_parse_json, line, line_name, defaults)))
    return entries
