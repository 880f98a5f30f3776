"""The job-file parser (ttsd/intake/jobfile.py): schema 1 as the README states it, every defaulting rule, every
typed rejection, and the properties the queue relies on (never raises, bounded time, stable keys)."""

from __future__ import annotations

import codecs
import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttsd.catalog import build_registry
from ttsd.encoding import FORMATS
from ttsd.errors import JobRejected
from ttsd.intake.jobfile import (
    JOB_SUFFIXES,
    MAX_JOBS_PER_FILE,
    JobDefaults,
    JobFile,
    ParsedEntry,
    parse_job_file,
)
from ttsd.jobspec import Generation, JobSpec
from ttsd.names import name_problem

DEFAULTS = JobDefaults(
    default_model="qwen3-tts-0.6b",
    default_sample_rate=24_000,
    max_text_length=600,
    max_job_chars=1_000,
    max_file_bytes=1024 * 1024,  # room for the 100,000-deep and 10,001-line files below
    registry=build_registry({}),
)
# A parse that takes longer than this on a hypothesis-sized input is a performance bug, not noise.
TIME_BOUND_S = 1.0

Job = dict[str, Any]


def parse(job: Job | str | bytes, file_name: str = "job.json") -> list[ParsedEntry]:
    """Parse a job given as a dict (dumped to JSON), a str (encoded) or raw bytes."""
    if isinstance(job, dict):
        data = json.dumps(job).encode()
    elif isinstance(job, str):
        data = job.encode()
    else:
        data = job
    return parse_job_file(file_name, data, DEFAULTS)


def one(job: Job | str | bytes, file_name: str = "job.json") -> ParsedEntry:
    entries = parse(job, file_name)
    assert len(entries) == 1
    return entries[0]


def accepted(job: Job | str | bytes, file_name: str = "job.json") -> JobSpec:
    entry = one(job, file_name)
    assert entry.rejection is None, entry.rejection.message
    assert entry.spec is not None
    return entry.spec


def rejected(job: Job | str | bytes, code: str, field: str | None = None, file_name: str = "job.json") -> JobRejected:
    entry = one(job, file_name)
    assert entry.spec is None
    assert entry.rejection is not None
    assert (entry.rejection.code, entry.rejection.field) == (code, field), entry.rejection.message
    assert_names_field(entry.rejection)
    return entry.rejection


def assert_names_field(rejection: JobRejected) -> None:
    """The human message leads with the field, so a status file reader sees what to fix."""
    assert rejection.message
    if rejection.field is not None:
        assert rejection.message.startswith(f"{rejection.field}: ")


# -- accepted jobs and defaults ---------------------------------------------------------------------


def test_minimal_json_job_gets_every_default() -> None:
    spec = accepted({"text": "Hello there."}, "greeting.json")
    assert spec == JobSpec(
        name="greeting",
        text="Hello there.",
        model="qwen3-tts-0.6b",
        kind="custom_voice",
        speaker=None,
        language="Auto",
        instruct=None,
        ref_audio=None,
        ref_text=None,
        format="wav",
        sample_rate=24_000,
        priority=0,
        seed=None,
        generation=Generation(),
        client_id=None,
        cache=True,
        chunk_max_chars=600,
        gap_ms=None,
        normalize=False,
    )


def test_every_field_is_carried_through() -> None:
    job: Job = {
        "text": "Bonjour.",
        "model": "tiny",
        "speaker": "Vivian",
        "language": "French",
        "instruct": "calmly",
        "format": "flac",
        "sample_rate": 16_000,
        "output": "salut",
        "priority": 7,
        "seed": 42,
        "generation": {"temperature": 0.7, "top_k": 40, "do_sample": True},
        "id": "req-1",
        "cache": False,
        "chunking": {"max_chars": 200, "gap_ms": 150, "first_max_chars": 80},
        "normalize": True,
        "speed": 1.25,
    }
    spec = accepted(job)
    assert spec.model_dump(exclude={"generation"}) == {
        "name": "salut",
        "text": "Bonjour.",
        "model": "tiny",
        "kind": "custom_voice",
        "speaker": "Vivian",
        "language": "French",
        "instruct": "calmly",
        "ref_audio": None,
        "ref_text": None,
        "format": "flac",
        "sample_rate": 16_000,
        "priority": 7,
        "seed": 42,
        "client_id": "req-1",
        "cache": False,
        "chunk_max_chars": 200,
        "gap_ms": 150,
        "normalize": True,
        "speed": 1.25,
        "chunk_first_chars": 80,
        "voice": None,
        "voice_sha256": None,
        "segments": None,
        "chapters": None,
        "subtitles": None,
        "chapter_files": False,
    }
    assert spec.generation.as_kwargs() == {"temperature": 0.7, "top_k": 40, "do_sample": True}


def test_txt_file_is_the_text_with_everything_defaulted() -> None:
    spec = accepted("Line one.\nLine two.\n", "story.txt")
    assert (spec.name, spec.text, spec.model, spec.language) == (
        "story",
        "Line one.\nLine two.\n",
        "qwen3-tts-0.6b",
        "Auto",
    )


def test_default_model_comes_from_the_defaults() -> None:
    defaults = JobDefaults(
        default_model="tiny-design",
        default_sample_rate=44_100,
        max_text_length=300,
        max_job_chars=1_000,
        max_file_bytes=64 * 1024,
        registry=build_registry({}),
    )
    [entry] = parse_job_file("a.json", b'{"text": "x", "instruct": "a deep voice"}', defaults)
    assert entry.spec is not None
    assert (entry.spec.model, entry.spec.kind) == ("tiny-design", "voice_design")
    assert (entry.spec.sample_rate, entry.spec.chunk_max_chars) == (44_100, 300)


@pytest.mark.parametrize(
    ("job", "kind"),
    [
        ({"model": "qwen3-tts-1.7b-design", "instruct": "a warm, low voice"}, "voice_design"),
        ({"model": "tiny-base", "ref_audio": "me.wav", "ref_text": "hello"}, "base"),
        ({"model": "qwen3-tts-0.6b-base", "ref_audio": "日本語 声.wav"}, "base"),
        ({"model": "qwen3-tts-1.7b", "speaker": "Ryan", "instruct": "whisper"}, "custom_voice"),
    ],
)
def test_each_model_kind_accepts_its_fields(job: Job, kind: str) -> None:
    assert accepted({"text": "Hi.", **job}).kind == kind


@pytest.mark.parametrize("bom_file", ["a.json", "a.txt", "a.jsonl"])
def test_a_leading_bom_is_tolerated(bom_file: str) -> None:
    data = b"\xef\xbb\xbf" + (b"Hi." if bom_file.endswith(".txt") else b'{"text": "Hi."}')
    assert accepted(data, bom_file).text == "Hi."


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"])
@pytest.mark.parametrize("bom_file", ["a.json", "a.txt", "a.jsonl"])
def test_utf16_and_utf32_with_a_bom_are_read(bom_file: str, encoding: str) -> None:
    # Notepad's and TextEdit's "Unicode" is UTF-16 with a byte order mark.
    body = "Grüße, 世界." if bom_file.endswith(".txt") else '{"text": "Grüße, 世界."}'
    bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE}.get(encoding, b"")
    bom = bom or {"utf-32-le": codecs.BOM_UTF32_LE, "utf-32-be": codecs.BOM_UTF32_BE}.get(encoding, b"")
    assert accepted(bom + body.encode(encoding), bom_file).text == "Grüße, 世界."


def test_utf16_without_a_bom_is_refused_with_a_way_forward() -> None:
    rejection = rejected("Hello.".encode("utf-16-le"), "binary", file_name="a.txt")
    assert "not a text job file" in rejection.message
    broken = codecs.BOM_UTF16_LE + "Hi".encode("utf-16-le") + b"\x00\xd8"  # a lone high surrogate
    assert "save the file as UTF-8" in rejected(broken, "encoding", file_name="a.txt").message


def test_suffix_is_case_insensitive() -> None:
    assert accepted({"text": "x"}, "Loud.JSON").name == "Loud"


@pytest.mark.parametrize(
    ("file_name", "name"),
    [
        ("plain.json", "plain"),
        ("two words.json", "two words"),
        ("a:b?c*.json", "a_b_c_"),
        ("-dash.json", "_dash"),
        (" space.json", "_space"),
        ("..json", "_"),
        ("....json", "_"),
        ("trailing. .json", "trailing"),
        ("e\u0301te\u0301.json", "\u00e9t\u00e9"),  # NFD stem -> NFC name
        ("tab\there.txt", "tab_here"),
        ("x" * 150 + ".json", "x" * 100),
        ("中" * 90 + ".json", "中" * 66),  # 200 UTF-8 bytes at most
    ],
)
def test_output_name_defaults_to_the_sanitised_stem(file_name: str, name: str) -> None:
    assert accepted({"text": "x"}, file_name).name == name


def test_output_field_overrides_the_stem() -> None:
    entry = one({"text": "x", "output": "Chapter 1 - intro"}, "-ugly name?.json")
    assert entry.spec is not None
    assert entry.name == entry.spec.name == "Chapter 1 - intro"


@pytest.mark.parametrize("output", ["第一章", "第1話 はじめに", "Глава_1", "नमस्ते दुनिया", "مرحبا", "v1.2-final_take"])
def test_outputs_in_any_script_are_accepted(output: str) -> None:
    assert accepted({"text": "x", "output": output}).name == output


def test_chunking_max_chars_up_to_the_limit_is_accepted() -> None:
    spec = accepted({"text": "x", "chunking": {"max_chars": 600, "gap_ms": 0}})
    assert (spec.chunk_max_chars, spec.gap_ms) == (600, 0)


def test_every_generation_setting_is_accepted() -> None:
    generation = {
        "temperature": 1,  # an int where a float is due: JSON does not tell them apart
        "top_k": 50,
        "top_p": 0.9,
        "repetition_penalty": 1.05,
        "max_new_tokens": 2048,
        "do_sample": False,
    }
    spec = accepted({"text": "x", "generation": generation})
    assert spec.generation.as_kwargs() == {**generation, "temperature": 1.0}


def test_text_may_start_with_a_url_and_hold_control_characters() -> None:
    # The text is read out, never fetched; a form feed from a pasted document is harmless.
    assert accepted({"text": "https://example.com\fis our site."}).text.startswith("https://")


def test_text_exactly_at_the_limit_is_accepted() -> None:
    assert len(accepted({"text": "a" * DEFAULTS.max_job_chars}).text) == DEFAULTS.max_job_chars


def test_a_valid_escaped_surrogate_pair_is_one_character() -> None:
    assert accepted(b'{"text": "\\ud83d\\ude00"}').text == "\U0001f600"


# -- rejections -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("job", "field", "allowed"),
    [
        ({"text": "x", "voix": "Ryan"}, "voix", "text, model, speaker"),
        ({"text": "x", "generation": {"temperatur": 1}}, "generation.temperatur", "temperature, top_k"),
        ({"text": "x", "chunking": {"size": 100}}, "chunking.size", "max_chars, gap_ms"),
    ],
)
def test_unknown_fields_are_refused_by_name(job: Job, field: str, allowed: str) -> None:
    rejection = rejected(job, "unknown_field", field)
    assert f"(allowed: {allowed}" in rejection.message


@pytest.mark.parametrize(
    ("job", "field"),
    [
        ({"text": 5}, "text"),
        ({"text": ["a"]}, "text"),
        ({"text": "x", "priority": "5"}, "priority"),
        ({"text": "x", "priority": 5.0}, "priority"),
        ({"text": "x", "priority": True}, "priority"),
        ({"text": "x", "priority": 10**7}, "priority"),
        ({"text": "x", "seed": -1}, "seed"),
        ({"text": "x", "seed": 2**32}, "seed"),
        ({"text": "x", "cache": "true"}, "cache"),
        ({"text": "x", "cache": 1}, "cache"),
        ({"text": "x", "normalize": None}, "normalize"),
        ({"text": "x", "format": "m4a"}, "format"),
        ({"text": "x", "speed": 0.2}, "speed"),
        ({"text": "x", "format": "mp3", "sample_rate": 27_290}, "sample_rate"),
        ({"text": "x", "format": "flac", "sample_rate": 96_001}, "sample_rate"),
        ({"text": "x", "speed": "fast"}, "speed"),
        ({"text": "x", "format": "WAV"}, "format"),
        ({"text": "x", "sample_rate": 24_000.0}, "sample_rate"),
        ({"text": "x", "sample_rate": 100}, "sample_rate"),
        ({"text": "x", "speaker": 5}, "speaker"),
        ({"text": "x", "output": 7}, "output"),
        ({"text": "x", "id": "i" * 201}, "id"),
        ({"text": "x", "generation": "hot"}, "generation"),
        ({"text": "x", "generation": {"temperature": "0.7"}}, "generation.temperature"),
        ({"text": "x", "generation": {"temperature": True}}, "generation.temperature"),
        ({"text": "x", "generation": {"temperature": 0}}, "generation.temperature"),
        ({"text": "x", "generation": {"top_p": 1.5}}, "generation.top_p"),
        ({"text": "x", "generation": {"top_k": 1.0}}, "generation.top_k"),
        ({"text": "x", "generation": {"do_sample": 1}}, "generation.do_sample"),
        ({"text": "x", "chunking": {"max_chars": 10}}, "chunking.max_chars"),
        ({"text": "x", "chunking": {"gap_ms": -1}}, "chunking.gap_ms"),
    ],
)
def test_wrong_types_and_ranges_are_refused_strictly(job: Job, field: str) -> None:
    rejected(job, "invalid_field", field)


def test_a_lone_surrogate_given_as_an_object_is_refused_naming_the_field() -> None:
    # A JSON file's escapes are refused while it is decoded; an object built in memory (an HTTP
    # request body parsed by the server) reaches the field checks with it.
    rejected({"text": "half a \ud800 pair"}, "encoding", "text")
    rejected({"text": "x", "instruct": "\udfff"}, "encoding", "instruct")


def test_missing_text_is_refused() -> None:
    rejected({"model": "tiny"}, "missing_field", "text")


@pytest.mark.parametrize("text", ["", "   ", "\n\t \r\n"])
def test_blank_text_is_refused(text: str) -> None:
    rejected({"text": text}, "blank_text", "text")
    rejected(text, "blank_text", "text", file_name="blank.txt")


def test_text_over_the_job_limit_is_refused() -> None:
    rejection = rejected({"text": "a" * (DEFAULTS.max_job_chars + 1)}, "text_too_long", "text")
    assert str(DEFAULTS.max_job_chars) in rejection.message


@pytest.mark.parametrize("file_name", ["bad.json", "bad.txt", "bad.jsonl"])
def test_invalid_utf8_is_refused(file_name: str) -> None:
    rejection = rejected(b'{"text": "caf\xe9"}', "encoding", file_name=file_name)
    assert "byte 13" in rejection.message


@pytest.mark.parametrize("file_name", ["nul.json", "nul.txt", "nul.jsonl"])
def test_nul_bytes_mean_binary(file_name: str) -> None:
    rejected(b'{"text": "a\x00b"}', "binary", file_name=file_name)


def test_oversized_files_are_refused_before_decoding() -> None:
    data = b"\xff" * (DEFAULTS.max_file_bytes + 1)
    rejected(data, "too_large")


def test_a_file_exactly_at_the_size_limit_is_parsed() -> None:
    prefix, suffix = b'{"text": "', b'"}'
    filler = b"a" * (DEFAULTS.max_file_bytes - len(prefix) - len(suffix))
    rejected(prefix + filler + suffix, "text_too_long", "text")


@pytest.mark.parametrize(
    "data",
    [
        b'{"text": "a", "text": "b"}',
        b'{"text": "a", "generation": {"top_k": 1, "top_k": 2}}',
    ],
)
def test_duplicate_keys_are_refused(data: bytes) -> None:
    assert "appears twice" in rejected(data, "duplicate_key").message


@pytest.mark.parametrize(
    "number", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"1" * 5_000, b"-" + b"9" * 101]
)
def test_non_finite_and_absurd_numbers_are_refused(number: bytes) -> None:
    rejected(b'{"text": "x", "generation": {"temperature": ' + number + b"}}", "invalid_number")


@pytest.mark.parametrize(
    "data",
    [
        b"[" * 100_000,
        b'{"a": ' * 100_000,
        b'{"text": "x", "generation": ' + b'{"k": [' * 50_000,
        b"[" * 50_000 + b"]" * 50_000,
    ],
)
def test_absurd_nesting_is_refused_without_crashing(data: bytes) -> None:
    start = time.perf_counter()
    rejected(data, "too_deep")
    assert time.perf_counter() - start < TIME_BOUND_S


def test_moderate_nesting_inside_a_field_is_a_type_error() -> None:
    rejected(b'{"text": ' + b"[" * 500 + b"]" * 500 + b"}", "invalid_field", "text")


@pytest.mark.parametrize("data", [b"[]", b'"text"', b"1", b"null", b"true", b'[{"text": "x"}]'])
def test_json_that_is_not_an_object_is_refused(data: bytes) -> None:
    rejected(data, "not_an_object")


@pytest.mark.parametrize("data", [b"", b"   ", b'{"text": "x"', b"{'text': 'x'}", b'{"text": "x"} {}'])
def test_malformed_json_is_refused(data: bytes) -> None:
    rejected(data, "invalid_json")


def test_unknown_model_is_refused_listing_the_known_ones() -> None:
    rejection = rejected({"text": "x", "model": "qwen3-tts-9b"}, "unknown_model", "model")
    for name in DEFAULTS.registry:
        assert name in rejection.message


@pytest.mark.parametrize("field", ["model", "speaker", "language", "instruct", "ref_audio", "ref_text", "id"])
@pytest.mark.parametrize("url", ["https://example.com/v.wav", "  HTTP://x", "file:///etc/passwd", "s3://b/k"])
def test_urls_are_refused_in_every_string_field_but_the_text(field: str, url: str) -> None:
    rejected({"text": "x", field: url}, "url_refused", field)


@pytest.mark.parametrize(
    "ref_audio",
    ["a/b.wav", "../x.wav", "..", ".", "/etc/passwd", ".hidden.wav", "a\\b.wav", "voice/", "voice/.", ""],
)
def test_ref_audio_must_be_a_plain_file_name(ref_audio: str) -> None:
    rejected({"text": "x", "model": "tiny-base", "ref_audio": ref_audio}, "invalid_field", "ref_audio")


@pytest.mark.parametrize("field", ["model", "speaker", "language", "ref_audio", "id"])
@pytest.mark.parametrize("char", ["\x00", "\n", "\x1b", "\x7f", "\x85"])
def test_identifiers_hold_no_control_characters(field: str, char: str) -> None:
    rejected({"text": "x", "model": "tiny-base", "ref_audio": "v.wav", field: f"a{char}b"}, "invalid_field", field)


@pytest.mark.parametrize("field", ["text", "instruct", "ref_text"])
def test_an_escaped_nul_in_prose_is_refused(field: str) -> None:
    rejected({"text": "x", "model": "tiny", field: "a\x00b"}, "invalid_field", field)


def test_a_lone_surrogate_escape_is_refused() -> None:
    rejected(b'{"text": "\\ud800"}', "encoding", "text")
    rejected(b'{"text": "x", "speaker": "a\\udfffb"}', "encoding", "speaker")
    rejected(b'{"text": "x", "\\ud800": 1}', "encoding")


@pytest.mark.parametrize(
    ("job", "field"),
    [
        ({"model": "tiny-base", "ref_audio": "v.wav", "speaker": "Ryan"}, "speaker"),
        ({"model": "tiny-base", "ref_audio": "v.wav", "instruct": "softly"}, "instruct"),
        ({"model": "tiny-design", "instruct": "deep", "speaker": "Ryan"}, "speaker"),
        ({"model": "tiny-design", "instruct": "deep", "ref_text": "hi"}, "ref_text"),
        ({"model": "tiny", "ref_audio": "v.wav"}, "ref_audio"),
        ({"ref_text": "hello"}, "ref_text"),
    ],
)
def test_fields_the_model_kind_does_not_take_are_refused(job: Job, field: str) -> None:
    rejected({"text": "x", **job}, "field_not_for_model", field)


@pytest.mark.parametrize(
    ("job", "field"),
    [
        ({"model": "tiny-design"}, "instruct"),
        ({"model": "qwen3-tts-1.7b-design", "instruct": "   "}, "instruct"),
        ({"model": "tiny-base"}, "ref_audio"),
        ({"model": "qwen3-tts-1.7b-base", "ref_text": "hello"}, "ref_audio"),
    ],
)
def test_fields_the_model_kind_needs_are_required(job: Job, field: str) -> None:
    rejected({"text": "x", **job}, "missing_field", field)


def test_chunking_max_chars_above_the_model_limit_is_refused() -> None:
    rejection = rejected({"text": "x", "chunking": {"max_chars": 601}}, "invalid_field", "chunking.max_chars")
    assert "600" in rejection.message


@pytest.mark.parametrize(
    "output",
    [
        "a/b",
        "../up",
        "a\\b",
        "/abs",
        ".",
        "..",
        ".hidden",
        "-flag",
        " lead",
        "trail ",
        "trail.",
        "a\x00b",
        "a\nb",
        "a\tb",
        "a\u202eb",  # right-to-left override: spoofs the extension
        "a:b",
        "",
        "x" * 101,
        "中" * 67,  # 100 characters would be fine, 201 UTF-8 bytes are not
        "e\u0301",  # NFD
    ],
)
def test_hostile_output_names_are_refused(output: str) -> None:
    rejected({"text": "x", "output": output}, "invalid_output", "output")


@pytest.mark.parametrize("file_name", ["job.yaml", "job", "job.json.tmp", "job.wav", "job.jsn"])
def test_unsupported_suffixes_are_refused(file_name: str) -> None:
    entry = one({"text": "x"}, file_name)
    assert entry.rejection is not None
    assert entry.rejection.code == "unsupported_file"


def test_a_rejection_keeps_the_stem_name_even_when_output_is_given() -> None:
    # A rejected job's status must land where the dropper looks by default: an output name that
    # failed validation cannot be trusted as a file name.
    entry = one({"text": "", "output": "elsewhere"}, "dropped.json")
    assert (entry.name, entry.rejection is not None) == ("dropped", True)


# -- .jsonl -----------------------------------------------------------------------------------------


def test_jsonl_lines_are_separate_jobs_named_by_line() -> None:
    data = '{"text": "one"}\n\n{"text": "two", "output": "second"}\r\n   \n{"text": "three"}'
    entries = parse(data, "batch.jsonl")
    assert [(e.name, e.line) for e in entries] == [("batch-1", 1), ("second", 3), ("batch-5", 5)]
    assert [e.spec.text for e in entries if e.spec] == ["one", "two", "three"]


def test_a_bad_jsonl_line_is_refused_alone() -> None:
    data = '{"text": "ok"}\n{"text": "ok", "voix": "x"}\nnot json\n{"text": "also ok"}\n'
    entries = parse(data, "mixed.jsonl")
    assert [(e.name, e.spec is not None) for e in entries] == [
        ("mixed-1", True),
        ("mixed-2", False),
        ("mixed-3", False),
        ("mixed-4", True),
    ]
    codes = [e.rejection.code for e in entries if e.rejection]
    assert codes == ["unknown_field", "invalid_json"]


def test_raw_line_separators_inside_a_jsonl_string_do_not_split_the_line() -> None:
    data = '{"text": "a\u2028b\u0085c\u2029d"}\n{"text": "e"}\n'
    assert [e.spec.text for e in parse(data, "seps.jsonl") if e.spec] == ["a\u2028b\u0085c\u2029d", "e"]


@pytest.mark.parametrize("data", ["", "\n", "  \n\t\n\r\n"])
def test_an_all_blank_jsonl_file_is_refused_as_empty(data: str) -> None:
    rejected(data, "empty", file_name="nothing.jsonl")


def test_too_many_jsonl_lines_are_refused_whole() -> None:
    data = '{"text": "x"}\n' * (MAX_JOBS_PER_FILE + 1)
    start = time.perf_counter()
    rejected(data, "too_many_jobs", file_name="flood.jsonl")
    assert time.perf_counter() - start < TIME_BOUND_S


def test_jsonl_line_names_stay_distinct_for_a_long_stem() -> None:
    entries = parse('{"text": "a"}\n' * 12, "s" * 120 + ".jsonl")
    names = [e.name for e in entries]
    assert len(set(names)) == 12
    assert names[-1] == "s" * 97 + "-12"
    assert all(name_problem(name) is None for name in names)


# -- content key and batch key ----------------------------------------------------------------------

BASE_JOB: Job = {"text": "Hello.", "model": "tiny"}
VOICE_CLONE: Job = {"text": "Hello.", "model": "tiny-base", "ref_audio": "v.wav"}
# One change per JobFile field, applied to BASE_JOB (or to VOICE_CLONE for the voice clone's own
# fields): each must give a different content key.
FIELD_CHANGES: dict[str, Job] = {
    "text": {"text": "Hello!"},
    "model": {"model": "qwen3-tts-0.6b"},
    "speaker": {"speaker": "Ryan"},
    "language": {"language": "English"},
    "instruct": {"instruct": "softly"},
    "ref_audio": {"ref_audio": "w.wav"},
    "ref_text": {"ref_text": "hi"},
    "format": {"format": "mp3"},
    "sample_rate": {"sample_rate": 48_000},
    "output": {"output": "other"},
    "priority": {"priority": 1},
    "seed": {"seed": 0},
    "generation": {"generation": {"top_k": 1}},
    "id": {"id": "client-7"},
    "cache": {"cache": False},
    "chunking": {"chunking": {"gap_ms": 10}},
    "normalize": {"normalize": True},
    "speed": {"speed": 2.0},
    "segments": {"text": None, "segments": [{"text": "Hello."}]},
    "subtitles": {"subtitles": "srt"},
}
# A saved voice needs a library and chapter files a book: tests/unit/test_job_scripts.py covers them.
ELSEWHERE = {"voice", "chapter_files"}


def test_field_changes_cover_every_job_field() -> None:
    assert set(FIELD_CHANGES) | ELSEWHERE == set(JobFile.model_fields)


@pytest.mark.parametrize("field", sorted(FIELD_CHANGES))
def test_content_key_changes_with_every_field(field: str) -> None:
    job = VOICE_CLONE if field in ("ref_audio", "ref_text") else BASE_JOB
    base = accepted(job)
    changed = accepted({key: value for key, value in {**job, **FIELD_CHANGES[field]}.items() if value is not None})
    assert changed.content_key() != base.content_key()


def test_content_key_changes_with_the_file_name() -> None:
    assert accepted(BASE_JOB, "a.json").content_key() != accepted(BASE_JOB, "b.json").content_key()


def test_explicit_defaults_give_the_same_content_key() -> None:
    explicit = {**BASE_JOB, "language": "Auto", "format": "wav", "sample_rate": 24_000, "priority": 0}
    assert accepted(explicit).content_key() == accepted(BASE_JOB).content_key()


json_scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=20)
valid_jobs = st.fixed_dictionaries(
    {
        "text": st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=40).filter(
            str.strip
        )
    },
    optional={
        "language": st.sampled_from(["Auto", "English", "Chinese"]),
        "speaker": st.sampled_from(["Vivian", "Ryan"]),
        "priority": st.integers(-1_000_000, 1_000_000),
        "seed": st.integers(0, 2**32 - 1),
        "format": st.sampled_from(FORMATS),
        "cache": st.booleans(),
        "normalize": st.booleans(),
        "id": st.text(alphabet="abc-123", max_size=10),
        "generation": st.fixed_dictionaries(
            {},
            optional={
                "temperature": st.floats(0.01, 5),
                "top_k": st.integers(0, 100),
                "do_sample": st.booleans(),
            },
        ),
        "chunking": st.fixed_dictionaries({}, optional={"max_chars": st.integers(20, 600)}),
    },
)


@settings(deadline=None, max_examples=60)
@given(job=valid_jobs, data=st.data())
def test_content_key_is_stable_under_key_order_and_whitespace(job: Job, data: st.DataObject) -> None:
    order = data.draw(st.permutations(list(job)))
    indent = data.draw(st.sampled_from([None, 0, 2, "\t"]))
    separators = data.draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,  ", " :\n ")]))
    ascii_only = data.draw(st.booleans())
    reordered = json.dumps(
        {key: job[key] for key in order}, indent=indent, separators=separators, ensure_ascii=ascii_only
    )
    padded = data.draw(st.sampled_from(["", "\n", "  \r\n\t"]))
    first = accepted(json.dumps(job))
    assert accepted(padded + reordered + padded).content_key() == first.content_key()


@settings(deadline=None, max_examples=60)
@given(first=valid_jobs, second=valid_jobs)
def test_content_keys_are_equal_exactly_when_the_jobs_are(first: Job, second: Job) -> None:
    one_spec, other_spec = accepted(first), accepted(second)
    assert (one_spec == other_spec) == (one_spec.content_key() == other_spec.content_key())


def test_batch_key_ignores_what_a_batch_may_vary() -> None:
    base = accepted({"text": "One.", "model": "tiny", "generation": {"top_k": 5}}, "a.json")
    varied = accepted(
        {
            "text": "Two.",
            "model": "tiny",
            "speaker": "Ryan",
            "language": "English",
            "generation": {"top_k": 5},
        },
        "b.json",
    )
    assert varied.batch_key() == base.batch_key()
    assert varied.content_key() != base.content_key()


@pytest.mark.parametrize(
    "change",
    [
        {"model": "qwen3-tts-0.6b"},
        {"generation": {"top_k": 6}},
        {"generation": {"top_k": 5, "temperature": 0.5}},
        {"generation": {}},
    ],
)
def test_batch_key_separates_models_and_sampling(change: Job) -> None:
    base = accepted({"text": "One.", "model": "tiny", "generation": {"top_k": 5}})
    other = accepted({"text": "One.", "model": "tiny", "generation": {"top_k": 5}, **change})
    assert other.batch_key() != base.batch_key()


def test_a_seeded_job_gets_a_batch_of_its_own() -> None:
    plain = accepted({"text": "One.", "model": "tiny"})
    seeded = accepted({"text": "One.", "model": "tiny", "seed": 1})
    seeded_other_text = accepted({"text": "Two.", "model": "tiny", "seed": 1})
    assert len({plain.batch_key(), seeded.batch_key(), seeded_other_text.batch_key()}) == 3
    assert accepted({"text": "One.", "model": "tiny", "seed": 1}).batch_key() == seeded.batch_key()


# -- properties: anything in, a typed answer out, quickly ----------------------------------------


def check_entries(entries: list[ParsedEntry], elapsed: float) -> None:
    assert elapsed < TIME_BOUND_S
    assert entries
    for entry in entries:
        assert (entry.spec is None) != (entry.rejection is None)
        assert name_problem(entry.name) is None, entry.name
        if entry.spec is not None:
            assert entry.spec.name == entry.name
            # The keys feed the queue: they must compute for any accepted job.
            assert len(entry.spec.content_key()) == len(entry.spec.batch_key()) == 64
        else:
            assert entry.rejection is not None
            assert entry.rejection.code
            assert_names_field(entry.rejection)
            # Messages go into UTF-8 status files: no lone surrogate may leak into them.
            entry.rejection.message.encode("utf-8")


def timed_parse(file_name: str, data: bytes) -> None:
    start = time.perf_counter()
    entries = parse_job_file(file_name, data, DEFAULTS)
    check_entries(entries, time.perf_counter() - start)


file_names = st.builds(
    lambda stem, suffix: stem + suffix,
    st.text(max_size=30),
    st.sampled_from([*JOB_SUFFIXES, ".JSON", ".yaml", ""]),
)


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(file_name=file_names, data=st.binary(max_size=2_000))
def test_arbitrary_bytes_never_raise(file_name: str, data: bytes) -> None:
    timed_parse(file_name, data)


json_values = st.recursive(
    json_scalars | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(deadline=None, max_examples=200)
@given(value=json_values, suffix=st.sampled_from([".json", ".jsonl"]))
def test_arbitrary_json_values_never_raise(value: Any, suffix: str) -> None:
    timed_parse("value" + suffix, json.dumps(value).encode())


job_keys = st.sampled_from([*JobFile.model_fields, "voice", "Text", ""]) | st.text(max_size=10)
job_values = (
    json_values
    | st.sampled_from([*DEFAULTS.registry, "wav", "mp3", "v.wav", "../x", "http://x", "\x00"])
    | st.text(alphabet=st.characters(codec="utf-8"), max_size=200)
)


@settings(deadline=None, max_examples=300)
@given(
    job=st.dictionaries(job_keys, job_values, max_size=8),
    text=st.none() | st.text(max_size=50),
    lines=st.integers(1, 3),
)
def test_dicts_with_random_fields_never_raise(job: Job, text: str | None, lines: int) -> None:
    if text is not None:
        job = {**job, "text": text}
    line = json.dumps(job, ensure_ascii=False)
    timed_parse("random.json", line.encode())
    timed_parse("random.jsonl", "\n".join([line] * lines).encode())


@settings(deadline=None, max_examples=100)
@given(text=st.text(max_size=300), file_name=st.text(max_size=120))
def test_arbitrary_txt_jobs_never_raise(text: str, file_name: str) -> None:
    timed_parse(file_name + ".txt", text.encode())


# Fragments that are each harmless alone but can assemble into the decoder's hard cases: lone
# surrogate escapes, huge or non-finite numbers, raw line separators, path-like names.
json_soup = st.lists(
    st.sampled_from(
        [
            *"{}[]:,",
            '"text"',
            '"model"',
            '"output"',
            '"ref_audio"',
            '"generation"',
            '"temperature"',
            '"tiny-base"',
            '"a/"',
            '"x"',
            '"\\ud800"',
            '"\\ud83d\\ude00"',
            '"\\u0000"',
            "1",
            "-0",
            "1e999",
            "9" * 5_000,
            "NaN",
            "-Infinity",
            "true",
            "null",
            " ",
            "\n",
            "\u2028",
        ]
    ),
    max_size=40,
).map("".join)


@settings(deadline=None, max_examples=300)
@given(soup=json_soup, suffix=st.sampled_from([".json", ".jsonl"]))
def test_json_token_soup_never_raises(soup: str, suffix: str) -> None:
    timed_parse("soup" + suffix, soup.encode())
