"""Inline pause markup (ttsd/markup.py): what a marker is, how markers cut text into runs, every error,
and linear time on hostile input."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ttsd.markup import MAX_PAUSE_MS, Marked, MarkupError, only_pauses, parse_pauses, strip_pauses

# --- the marker syntax ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("marker", "pause_ms"),
    [
        ("[pause 1.5s]", 1500),
        ("[pause 300ms]", 300),
        ("[pause 2s]", 2000),
        ("[pause 0.25 s]", 250),
        ("[PAUSE 1s]", 1000),
        ("[Pause 1s]", 1000),
        ("[  pause   2s  ]", 2000),
        ("[pause 2S]", 2000),
        ("[pause 40 MS]", 40),
        ("[pause .5s]", 500),
        ("[pause 10s]", MAX_PAUSE_MS),
        ("[pause 1ms]", 1),
        ("[pause 0.0015s]", 2),  # rounded to whole milliseconds
        ("[pause\t1s]", 1000),
        ("[pause1s]", 1000),
    ],
)
def test_a_marker_asks_for_its_pause(marker: str, pause_ms: int) -> None:
    assert parse_pauses(f"Hello {marker} world.") == Marked(0, (("Hello ", pause_ms), (" world.", 0)))


@pytest.mark.parametrize(
    "text", ["a [1] b", "[laughs] Ha.", "see [see above]", "[paused here] ok", "[pauses] ok", "[]", "[[x]"]
)
def test_other_brackets_are_ordinary_text(text: str) -> None:
    assert parse_pauses(text) == Marked(0, ((text, 0),))
    assert strip_pauses(text) == text
    assert not only_pauses(text)


def test_text_without_markers_is_one_run_and_blank_text_none() -> None:
    assert parse_pauses("Just words.\n") == Marked(0, (("Just words.\n", 0),))
    assert parse_pauses("") == Marked(0, ())
    assert parse_pauses("  \n ") == Marked(0, ())


# --- runs ----------------------------------------------------------------------------------------


def test_runs_keep_their_original_text() -> None:
    text = "One,\n  two [pause 1s]\tthree  [pause 200ms] four."
    assert parse_pauses(text).runs == (("One,\n  two ", 1000), ("\tthree  ", 200), (" four.", 0))


def test_markers_before_any_words_are_the_lead() -> None:
    assert parse_pauses("[pause 1s] [pause 500ms]  Hello.") == Marked(1500, (("  Hello.", 0),))


def test_adjacent_markers_add_up() -> None:
    assert parse_pauses("A.[pause 1s][pause 2s]\n [pause 300ms]B.") == Marked(0, (("A.", 3300), ("B.", 0)))


def test_a_marker_at_the_end_pauses_after_the_last_run() -> None:
    assert parse_pauses("The end. [pause 2s]  ") == Marked(0, (("The end. ", 2000),))


def test_adjacent_markers_may_reach_the_cap_exactly() -> None:
    assert parse_pauses("A [pause 4s] [pause 6s] B").runs == (("A ", MAX_PAUSE_MS), (" B", 0))


def test_only_pauses() -> None:
    assert only_pauses("[pause 1s]")
    assert only_pauses("  [pause 1s]\n[ PAUSE 300ms ] ")
    assert not only_pauses("a [pause 1s]")
    assert not only_pauses("[pause 1s] b")
    assert not only_pauses("no markers")
    assert not only_pauses("[paus 1s]")
    with pytest.raises(MarkupError):
        only_pauses("[pause oops]")


def test_strip_pauses_removes_markers_and_keeps_words_apart() -> None:
    assert strip_pauses("Hello [pause 1s] world.") == "Hello  world."
    assert strip_pauses("one[pause 1s]two[pause 1s] three") == "one two three"
    assert strip_pauses("[pause 1s]Start.[pause 2s]") == "Start."
    assert strip_pauses("a[pause 1s][pause 1s]b") == "a b"
    assert strip_pauses("No markers [1].") == "No markers [1]."


# --- errors --------------------------------------------------------------------------------------


def error_for(text: str) -> MarkupError:
    with pytest.raises(MarkupError) as caught:
        parse_pauses(text)
    return caught.value


def test_the_message_quotes_the_marker_its_offset_and_the_rule() -> None:
    error = error_for("Hello world [pause 99999s] again")
    assert error.offset == 12
    assert error.message == "[pause 99999s] at character 12: a pause is at most 10 s"
    assert str(error) == error.message
    assert isinstance(error, ValueError)


@pytest.mark.parametrize(
    ("text", "offset", "quoted", "problem"),
    [
        ("x [pause 10.001s]", 2, "[pause 10.001s]", "at most 10 s"),
        ("x [pause 10001ms]", 2, "[pause 10001ms]", "at most 10 s"),
        ("x [pause 0s]", 2, "[pause 0s]", "at least 1 ms"),
        ("x [pause 0.0001s]", 2, "[pause 0.0001s]", "at least 1 ms"),
        ("x [pause -1s]", 2, "[pause -1s]", "at least 1 ms"),
        ("x [pause 5]", 2, "[pause 5]", "no unit"),
        ("x [pause]", 2, "[pause]", "not a duration"),
        ("x [pause 5min]", 2, "[pause 5min]", "unknown unit 'min'"),
        ("x [pause 5 seconds]", 2, "[pause 5 seconds]", "unknown unit 'seconds'"),
        ("x [pause five s]", 2, "[pause five s]", "not a duration"),
        ("x [pause 1,5s]", 2, "[pause 1,5s]", "not a duration"),
        ("x [pause 1e3ms]", 2, "[pause 1e3ms]", "not a duration"),
        ("x [pause 1s 2s]", 2, "[pause 1s 2s]", "not a duration"),
        ("x [pause 1s", 2, "[pause 1s", "not closed"),
        ("x [pause 1s and more words", 2, "[pause 1s and more words", "not closed"),
        ("x [pause [pause 1s]]", 2, "[pause [", "do not nest"),
        ("x [pause 1s [x]]", 2, "[pause 1s [", "do not nest"),
        ("x [pause 1s [more text", 2, "[pause 1s [", "do not nest"),
        ("x [pause 6s][pause 5s]", 12, "[pause 5s]", "adjacent pauses add up to 11 s"),
        ("[pause 9s] [pause 2s] x", 11, "[pause 2s]", "adjacent pauses add up to 11 s"),
        ("[pause 1s]", 0, "[pause 1s]", "no words"),
        (" [pause 1s]\n[pause 2s] ", 1, "[pause 1s]", "no words"),
    ],
)
def test_each_bad_marker_is_named(text: str, offset: int, quoted: str, problem: str) -> None:
    error = error_for(text)
    assert error.offset == offset
    assert error.message.startswith(f"{quoted} at character {offset}: ")
    assert problem in error.message


def test_strip_pauses_raises_like_parse_pauses() -> None:
    with pytest.raises(MarkupError, match="at most 10 s"):
        strip_pauses("Hi [pause 11s] there")


def test_a_long_bad_marker_is_quoted_short() -> None:
    error = error_for("x [pause " + "9" * 1000 + "s] y")
    assert error.message.startswith("[pause 999")
    assert len(error.message) < 200
    assert "at most 10 s" in error.message


def test_the_first_bad_marker_is_reported() -> None:
    assert error_for("a [pause 1s] b [pause 5] c [pause 0s]").offset == 15


# --- speed and properties ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "[" * 200_000,
        "[pause" * 40_000,
        "[ " * 100_000,
        "[pause 1" + " " * 200_000 + "!]",
        "[pause 1" + " " * 100_000 + "s" + " " * 100_000 + "]x",
        "words [pause 1ms] " * 20_000,
        "[x]" * 70_000,
    ],
)
def test_hostile_input_is_linear(text: str) -> None:
    started = time.perf_counter()
    try:
        parse_pauses(text)
        only_pauses(text)
    except MarkupError:
        pass
    assert time.perf_counter() - started < 0.5


@given(
    st.lists(
        st.tuples(st.text(alphabet=st.sampled_from("ab []\n,"), max_size=8), st.integers(0, 3)),
        max_size=12,
    )
)
def test_the_runs_hold_every_word_in_order(pieces: list[tuple[str, int]]) -> None:
    text = "".join(piece + "[pause 1ms]" * count for piece, count in pieces)
    try:
        marked = parse_pauses(text)
    except MarkupError as error:
        assert "no words" in error.message and not text.replace("[pause 1ms]", "").strip()
        return
    compact = "".join(text.replace("[pause 1ms]", "").split())
    assert " ".join(run for run, _ in marked.runs).split() == strip_pauses(text).split()
    assert "".join("".join(run.split()) for run, _ in marked.runs) == compact
    assert all(run.strip() for run, _ in marked.runs)
    assert marked.lead_ms + sum(pause for _, pause in marked.runs) == text.count("[pause 1ms]")
