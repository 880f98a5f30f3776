"""Output names (ttsd/names.py): the only job strings that become file names in the outbox."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttsd.names import MAX_NAME_BYTES, MAX_NAME_CHARS, name_problem, sanitize_name


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "_hidden_not",
        "Chapter 1 - intro.v2",
        "第一章",  # Chinese
        "こんにちは世界",  # Japanese
        "カタカナ_ﾃｽﾄ",  # Japanese, half-width forms
        "Привет мир",  # Cyrillic
        "नमस्ते दुनिया",  # Devanagari: vowel signs and virama are combining marks
        "مرحبا بالعالم",  # Arabic
        "한국어",  # Hangul syllables
        "٣٤٥",  # Arabic-Indic digits
        "x" * MAX_NAME_CHARS,
        "é" * MAX_NAME_CHARS,  # 200 UTF-8 bytes: exactly the cap
    ],
)
def test_names_in_any_script_are_accepted(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("a/b", "'/'"),
        ("a\\b", "'\\\\'"),
        ("a\x00b", "'\\x00'"),
        ("..", "start with '.'"),
        (".", "start with '.'"),
        (".hidden", "start with '.'"),
        ("-rf", "start with '-'"),
        (" lead", "start with ' '"),
        ("trail.", "end with"),
        ("trail ", "end with"),
        ("a:b", "':'"),
        ("a\nb", "'\\n'"),
        ("a\u200bb", "'\\u200b'"),  # zero-width space: invisible in a listing
        ("a\u202egnp.wav", "'\\u202e'"),  # right-to-left override: spoofs the extension
        ("x" * (MAX_NAME_CHARS + 1), f"at most {MAX_NAME_CHARS} characters"),
        ("中" * 67, f"at most {MAX_NAME_BYTES} bytes"),
        ("e\u0301", "NFC"),
        ("\u0301a", "start with"),  # a combining mark has nothing to attach to
    ],
)
def test_unsafe_names_are_refused_with_a_reason(name: str, reason: str) -> None:
    problem = name_problem(name)
    assert problem is not None
    assert reason in problem


@pytest.mark.parametrize(
    ("stem", "name"),
    [
        ("", "job"),
        ("...", "_"),
        ("  ", "_"),
        ("../etc/passwd", "_._etc_passwd"),
        ("-rf", "_rf"),
        (".bashrc", "_bashrc"),
        ("a:b\\c", "a_b_c"),
        ("report .", "report"),
        ("e\u0301t\u00e9", "\u00e9t\u00e9"),
        ("\U0001f600 smile", "_ smile"),
        ("x" * 300, "x" * MAX_NAME_CHARS),
        ("中" * 100, "中" * (MAX_NAME_BYTES // 3)),
        ("ok name", "ok name"),
    ],
)
def test_sanitize_examples(stem: str, name: str) -> None:
    assert sanitize_name(stem) == name


def test_a_suffix_is_kept_whole_and_the_stem_makes_room() -> None:
    assert sanitize_name("x" * 150, "-12") == "x" * (MAX_NAME_CHARS - 3) + "-12"
    assert sanitize_name("中" * 100, "-7") == "中" * ((MAX_NAME_BYTES - 2) // 3) + "-7"
    assert sanitize_name("", "-3") == "job-3"
    assert sanitize_name("end. ", "-1") == "end-1"


# Text heavy in the characters names must handle: separators, controls, dots, spaces, combining
# marks, and multi-byte letters. Hypothesis' default alphabet never yields lone surrogates.
hostile_text = st.text(
    st.sampled_from([*"/\\\x00\n\t. -_:", "\u0301", "\u200b", "\u202e", "é", "中", "\U0001f600", "a"])
    | st.characters(),
    max_size=150,
)


@settings(deadline=None, max_examples=400)
@given(stem=hostile_text, line=st.none() | st.integers(1, 100_000))
def test_sanitize_always_gives_a_valid_name(stem: str, line: int | None) -> None:
    suffix = "" if line is None else f"-{line}"
    name = sanitize_name(stem, suffix)
    assert name_problem(name) is None, name
    assert name.endswith(suffix)


def _fit_valid(first: str, rest: list[str]) -> str:
    """NFC, then shortened until within both caps and not ending in a space or a dot. The first
    character is a letter or digit, so something always remains."""
    name = unicodedata.normalize("NFC", first + "".join(rest))
    while (
        len(name) > MAX_NAME_CHARS
        or len(name.encode("utf-8")) > MAX_NAME_BYTES
        or name.endswith((" ", "."))
        or name != unicodedata.normalize("NFC", name)
    ):
        name = unicodedata.normalize("NFC", name[:-1])
    return name


# Names valid by construction: a letter or digit of any script first, then letters, digits,
# combining marks (Devanagari vowel signs, an acute accent) and the four punctuation characters.
# Multi-byte characters are weighted in, and some names start out past the caps, so both the
# character cap and the byte cap are reached, not only short names.
_multibyte = st.sampled_from(["é", "中", "한", "ﾃ", "न", "ि", "्", "\u0301", "٣", "Ж", "\U00020000"])
_name_char = st.characters(categories=("L", "N", "M")) | st.sampled_from([*" ._-"]) | _multibyte
valid_names = st.builds(
    _fit_valid,
    st.characters(categories=("L", "N")) | st.sampled_from(["a", "Z", "7", "中", "٣"]),
    st.lists(_name_char, max_size=30)
    | st.lists(_name_char, min_size=MAX_NAME_CHARS - 10, max_size=MAX_NAME_CHARS + 20),
)


@settings(deadline=None, max_examples=300)
@given(name=valid_names)
def test_sanitize_leaves_valid_names_alone(name: str) -> None:
    assert name_problem(name) is None, name
    assert sanitize_name(name) == name


@settings(deadline=None, max_examples=300)
@given(name=hostile_text)
def test_accepted_names_are_plain_file_names(name: str) -> None:
    # Whatever the rules say in detail, an accepted name must be one path component, visible,
    # printable, NFC and small enough for `<name>.status.json` on any file system.
    if name_problem(name) is not None:
        return
    assert "/" not in name and "\\" not in name and name not in (".", "..")
    assert not name.startswith((".", "-", " "))
    assert all(unicodedata.category(char)[0] not in "CZ" or char == " " for char in name)
    assert unicodedata.normalize("NFC", name) == name
    assert len((name + ".status.json").encode("utf-8")) <= 255
