"""Scripts in job files (ttsd/intake/scripts.py, book_jobs.py): segments and their voices, saved
voices by name, pause markup, subtitles, Markdown books, and every hostile form of them getting a
clear rejection that names the field."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from tests.unit.test_jobfile import DEFAULTS
from ttsd.errors import JobRejected
from ttsd.intake.book_jobs import CHAPTER_PAUSE_MS, TITLE_PAUSE_MS
from ttsd.intake.jobfile import ParsedEntry, parse_job_file
from ttsd.jobspec import JobSpec
from ttsd.voicelib import SavedVoice, VoiceNotFound


class Library:
    """Saved voices as job parsing sees them, without files."""

    def __init__(self, *voices: SavedVoice) -> None:
        self.voices = {voice.name: voice for voice in voices}

    def get(self, name: str) -> SavedVoice:
        if name not in self.voices:
            raise VoiceNotFound(name, sorted(self.voices))
        return self.voices[name]


def saved(name: str, model: str = "qwen3-tts-0.6b-base", sha: str = "ab" * 32) -> SavedVoice:
    return SavedVoice(
        name=name,
        model=model,
        source="recording",
        description=None,
        ref_text="A transcript.",
        recording_sha256="cd" * 32,
        prompt_sha256=sha,
        x_vector_only=False,
        created_at="2026-11-30T00:00:00Z",
    )


WITH_VOICES = replace(DEFAULTS, voices=Library(saved("narrator"), saved("guest", sha="ef" * 32)))


def parse(job: dict[str, Any] | str, file_name: str = "job.json") -> ParsedEntry:
    data = json.dumps(job) if isinstance(job, dict) else job
    entries = parse_job_file(file_name, data.encode(), WITH_VOICES)
    assert len(entries) == 1
    return entries[0]


def accepted(job: dict[str, Any] | str, file_name: str = "job.json") -> JobSpec:
    entry = parse(job, file_name)
    assert entry.rejection is None, entry.rejection and entry.rejection.message
    assert entry.spec is not None
    return entry.spec


def rejected(job: dict[str, Any] | str, code: str, field: str | None, file_name: str = "job.json") -> JobRejected:
    entry = parse(job, file_name)
    assert entry.rejection is not None, "accepted"
    assert (entry.rejection.code, entry.rejection.field) == (code, field), entry.rejection.message
    return entry.rejection


DIALOGUE = {
    "model": "qwen3-tts-0.6b",
    "speaker": "Ryan",
    "language": "English",
    "segments": [
        {"text": "Hello there.", "speaker": "Vivian", "pause_ms": 500},
        {"text": "Hi! [pause 1.5s] Who are you?"},
        {"text": "A narrator.", "speaker": "Serena", "instruct": "Whisper.", "language": "German"},
    ],
    "subtitles": "vtt",
}


def test_segments_inherit_the_jobs_voice_unless_they_name_their_own() -> None:
    spec = accepted(DIALOGUE)
    assert spec.segments is not None
    voices = [(s.voice.speaker, s.voice.language, s.voice.instruct) for s in spec.segments]
    assert voices == [("Vivian", "English", None), ("Ryan", "English", None), ("Serena", "German", "Whisper.")]
    assert [s.pause_ms for s in spec.segments] == [500, None, None]
    assert spec.text == "Hello there.\n\nHi! [pause 1.5s] Who are you?\n\nA narrator."
    assert spec.subtitles == "vtt"
    assert spec.script() == spec.segments


def test_a_plain_job_keeps_its_content_key_and_is_one_segment() -> None:
    spec = accepted({"text": "Plain.", "speaker": "Ryan"})
    assert spec.segments is None and spec.voice is None
    assert "segments" not in json.dumps(spec.content_key())
    (only,) = spec.script()
    assert (only.text, only.voice.speaker) == ("Plain.", "Ryan")
    assert accepted({"text": "Plain.", "speaker": "Ryan"}).content_key() == spec.content_key()
    assert accepted({"text": "Plain.", "speaker": "Ryan", "subtitles": "srt"}).content_key() != spec.content_key()


def test_a_saved_voice_sets_the_model_and_its_prompt_hash_is_part_of_the_job() -> None:
    spec = accepted({"text": "Cloned.", "voice": "narrator"})
    assert (spec.model, spec.kind, spec.voice, spec.voice_sha256) == (
        "qwen3-tts-0.6b-base",
        "base",
        "narrator",
        "ab" * 32,
    )
    other = accepted({"text": "Cloned.", "voice": "guest"})
    assert other.content_key() != spec.content_key()
    script = accepted({"segments": [{"text": "One.", "voice": "narrator"}, {"text": "Two.", "voice": "guest"}]})
    assert script.model == "qwen3-tts-0.6b-base"
    assert [s.voice.voice_sha256 for s in script.segments or ()] == ["ab" * 32, "ef" * 32]


@pytest.mark.parametrize(
    ("job", "code", "field", "says"),
    [
        ({"text": "x", "voice": "nobody"}, "unknown_voice", "voice", "'nobody'"),
        ({"segments": [{"text": "x", "voice": "narrator"}, {"text": "y", "voice": "ghost"}]},
         "unknown_voice", "segments.1.voice", "saved voices: guest, narrator"),
        ({"text": "x", "voice": "narrator", "model": "qwen3-tts-1.7b-base"}, "voice_not_for_model", "voice",
         "made for model 'qwen3-tts-0.6b-base'"),
        ({"text": "x", "voice": "narrator", "model": "qwen3-tts-0.6b"}, "field_not_for_model", "voice", "custom_voice"),
        ({"text": "x", "voice": "narrator", "ref_audio": "a.wav"}, "conflicting_fields", "ref_audio", "drop ref_audio"),
        ({"text": "x", "voice": "narrator", "ref_text": "Hi."}, "conflicting_fields", "ref_text", "own recording"),
        ({"model": "qwen3-tts-0.6b-base", "ref_audio": "../../etc/passwd",
          "segments": [{"text": "x", "voice": "guest"}]}, "invalid_field", "ref_audio", "voices/ folder"),
        ({"model": "qwen3-tts-0.6b", "ref_audio": "a.wav", "segments": [{"text": "x"}]},
         "field_not_for_model", "ref_audio", "custom_voice"),
        ({"text": "x", "segments": [{"text": "y"}]}, "missing_field", "text", "not both"),
        ({"model": "qwen3-tts-0.6b"}, "missing_field", "text", "either text or segments"),
        ({"segments": []}, "invalid_field", "segments", "at least 1"),
        ({"segments": [{"text": "  "}]}, "blank_text", "segments.0.text", "blank"),
        ({"segments": [{"text": "x", "pitch": 3}]}, "unknown_field", "segments.0.pitch", "allowed: text, speaker"),
        ({"segments": [{"text": "x", "pause_ms": 99_999}]}, "invalid_field", "segments.0.pause_ms", "10000"),
        ({"segments": [{"text": "x", "speaker": "https://evil"}]}, "url_refused", "segments.0.speaker", "URL"),
        ({"model": "qwen3-tts-1.7b-design", "segments": [{"text": "x", "instruct": "Calm."}, {"text": "y"}]},
         "missing_field", "segments.1.instruct", "voice description"),
        ({"text": "x", "chapter_files": True}, "invalid_field", "chapter_files", "Markdown book"),
        ({"text": "x", "subtitles": "ass"}, "invalid_field", "subtitles", "'srt' or 'vtt'"),
    ],
)  # fmt: skip
def test_bad_scripts_and_voices_are_rejected_naming_the_field(
    job: dict[str, Any], code: str, field: str, says: str
) -> None:
    assert says in rejected(job, code, field).message


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("Wait [pause 99999s] for it.", "at most 10 s"),
        ("Nested [pause [pause 1s]] brackets.", "[pause"),
        ("Unclosed [pause 2s and on.", "[pause"),
        ("No unit [pause 5].", "unit"),
        ("[pause 1s]", "no words"),
    ],
)
def test_hostile_pause_markup_is_a_clear_rejection(text: str, says: str) -> None:
    message = rejected({"text": text}, "invalid_markup", "text").message
    assert message.startswith("text: ") and says in message
    in_segment = rejected({"segments": [{"text": "Fine."}, {"text": text}]}, "invalid_markup", "segments.1.text")
    assert says in in_segment.message


def test_other_brackets_are_just_text() -> None:
    assert accepted({"text": "See [1] and [laughs] here."}).text == "See [1] and [laughs] here."


BOOK = """---
speaker: Ryan
language: English
chapter_files: true
---
# The Beginning

It was a *dark* night. [pause 1s] Very dark.

Another paragraph.

# The Middle

- one item
- two items

# The End

Fin.
"""


def test_a_markdown_book_becomes_a_script_with_chapters_in_m4b() -> None:
    spec = accepted(BOOK, "novel.md")
    assert (spec.name, spec.format, spec.speaker, spec.chapter_files) == ("novel", "m4b", "Ryan", True)
    assert spec.segments is not None and spec.chapters is not None
    texts = [s.text for s in spec.segments]
    assert texts[:3] == ["The Beginning", "It was a dark night. [pause 1s] Very dark.", "Another paragraph."]
    assert [(c.title, texts[c.segment]) for c in spec.chapters] == [
        ("The Beginning", "The Beginning"),
        ("The Middle", "The Middle"),
        ("The End", "The End"),
    ]
    assert accepted(BOOK.replace("chapter_files: true", "chapter_files: false"), "novel.md").content_key() != (
        spec.content_key()
    )
    pauses = [s.pause_ms for s in spec.segments]
    assert pauses[0] == TITLE_PAUSE_MS and pauses[2] == CHAPTER_PAUSE_MS and pauses[-1] is None
    assert all(s.voice.speaker == "Ryan" for s in spec.segments)


@pytest.mark.parametrize(
    ("book", "code", "field"),
    [
        ("---\ntext: sneaky\n---\n# A\n\nBody.\n", "invalid_field", "text"),
        ("---\nformat: [1, 2]\n---\n# A\n\nBody.\n", "invalid_book", None),
        ("---\nvoice: nobody\n---\n# A\n\nBody.\n", "unknown_voice", "voice"),
        ("# Only a heading\n", "invalid_book", None),
        ("# A\n\nBody [pause 20s].\n", "invalid_markup", "segments.1.text"),
    ],
)
def test_bad_books_are_rejected(book: str, code: str, field: str | None) -> None:
    rejected(book, code, field, "book.md")


def test_a_books_rejection_names_the_chapter_and_paragraph() -> None:
    message = rejected("# A\n\nFine.\n\n# The House\n\nOne.\n\nTwo [pause 20s].\n", "invalid_markup",
                       "segments.4.text", "book.md").message  # fmt: skip
    assert message.startswith("segments.4.text (chapter 2 ('The House'), paragraph 2): ")


def test_a_pause_on_a_line_of_its_own_joins_the_paragraph_before() -> None:
    spec = accepted("# One\n\n[pause 3s]\n\nA.\n\n[pause 2s]\n\nB.\n\n[pause 1s]\n", "book.md")
    assert [(s.text, s.pause_ms) for s in spec.segments or ()] == [
        ("One", 1_000),
        ("[pause 3s] A. [pause 2s]", None),
        ("B. [pause 1s]", None),
    ]
    assert [c.title for c in spec.chapters or ()] == ["One"]


def test_chapter_titles_leave_their_markup_out() -> None:
    spec = accepted("# Part [pause 1s] One\n\nText.\n", "book.md")
    assert [c.title for c in spec.chapters or ()] == ["Part  One"]


def test_a_book_over_the_segment_limit_says_so_in_book_terms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ttsd.intake.book_jobs.MAX_SEGMENTS", 3)
    message = rejected("# A\n\nOne.\n\nTwo.\n\nThree.\n", "too_many_segments", None, "book.md").message
    assert "the book has 4 titles and paragraphs; the limit is 3" in message


def test_a_jobs_pauses_are_bounded_in_total(monkeypatch: pytest.MonkeyPatch) -> None:
    few_bytes = {"text": "a [pause 10s] " * 19 + "end"}  # 190 s of silence in 269 characters
    limited = replace(WITH_VOICES, max_job_chars=10_000)
    (entry,) = parse_job_file("job.json", json.dumps(few_bytes).encode(), limited)
    assert entry.spec is not None
    monkeypatch.setattr("ttsd.intake.scripts.MAX_JOB_SILENCE_S", 100)
    (entry,) = parse_job_file("job.json", json.dumps(few_bytes).encode(), limited)
    assert entry.rejection is not None and entry.rejection.code == "too_much_silence"
    assert "add up to 190 s; a job's pauses are at most 100 s" in entry.rejection.message
    script = {"model": "qwen3-tts-0.6b", "segments": [{"text": "x", "pause_ms": 10_000}] * 11}
    rejected(script, "too_much_silence", "segments")
    accepted({"model": "qwen3-tts-0.6b", "segments": [{"text": "x", "pause_ms": 10_000}] * 10})


def test_a_model_picked_by_a_segments_voice_is_named_in_the_rejection() -> None:
    job = {"segments": [{"text": "Hi.", "speaker": "Ryan"}, {"text": "Hello.", "voice": "narrator"}]}
    message = rejected(job, "field_not_for_model", "segments.0.speaker").message
    assert "the job names no model: it runs on 'qwen3-tts-0.6b-base', the model of voice 'narrator'" in message


def test_no_output_name_may_look_like_a_books_chapter_file() -> None:
    assert "chapter file" in rejected({"text": "x", "output": "novel.ch01"}, "invalid_output", "output").message
    assert accepted({"text": "x"}, "novel.ch01.json").name == "novel-ch01"
