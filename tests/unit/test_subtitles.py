"""Subtitle files: each is read back with the real parsers (`srt`, `webvtt-py`) and every cue's
text and times compared to the millisecond."""

from __future__ import annotations

import html
import io
from datetime import timedelta

import pytest
import srt
import webvtt

from ttsd.subtitles import LINE_CHARS, SUBTITLE_FORMATS, Cue, SubtitleFormat, render_subtitles

LONG = " ".join(["Speech", "synthesis", "turns", "written", "text", "into", "audio"] * 8)[:300]
CUES = [
    Cue(0.0, 1.25, "Hello, world."),
    Cue(1.25, 2.5, "这是一个测试。字幕应该正确显示。"),
    Cue(2.5, 2.9, "An arrow --> and <b>bold</b> & more"),
    Cue(3.0, 9.0, LONG),
    Cue(9.0, 11.0, "日本語" * 40),
    Cue(3_725.0, 3_726.5, "An hour later."),
]
NO_BREAK_SPACE = "\u00a0"


def read_back(text: str, fmt: SubtitleFormat) -> list[tuple[int, int, str]]:
    """(start ms, end ms, text with lines joined by "\n") of every cue, as the format's parser reads it."""
    if fmt == "srt":
        return [(ms(sub.start), ms(sub.end), sub.content) for sub in srt.parse(text)]
    return [
        (caption.start_time.in_milliseconds(), caption.end_time.in_milliseconds(), html.unescape(caption.raw_text))
        for caption in webvtt.from_string(text).captions
    ]


def ms(delta: timedelta) -> int:
    return delta // timedelta(milliseconds=1)


def shown(text: str) -> str:
    """A cue's text as one line, as the caller's text reads with its whitespace made single spaces."""
    return text.replace("\n", " ").replace(NO_BREAK_SPACE, " ")


def expected_text(text: str) -> str:
    return " ".join(text.split()).replace("-->", "→")


def squeezed(text: str) -> str:
    """The text without its whitespace: a line break in CJK text stands for no space at all."""
    return "".join(text.split())


@pytest.mark.parametrize("fmt", SUBTITLE_FORMATS)
def test_every_cue_reads_back_with_its_text_and_times(fmt: SubtitleFormat) -> None:
    cues = read_back(render_subtitles(CUES, fmt), fmt)
    assert [(start, end) for start, end, _ in cues] == [(round(c.start_s * 1000), round(c.end_s * 1000)) for c in CUES]
    assert [squeezed(text) for _, _, text in cues] == [squeezed(expected_text(cue.text)) for cue in CUES]
    assert all(len(line) <= LINE_CHARS for _, _, text in cues for line in text.split("\n"))


@pytest.mark.parametrize("fmt", SUBTITLE_FORMATS)
def test_lines_are_at_most_42_characters_and_words_are_kept_whole(fmt: SubtitleFormat) -> None:
    _, _, long_text = read_back(render_subtitles([Cue(0, 1, LONG)], fmt), fmt)[0]
    lines = long_text.split("\n")
    assert len(lines) == 8
    assert all(len(line) <= LINE_CHARS for line in lines)
    words = set(LONG.split())
    assert all(set(line.split()) <= words for line in lines[:-1])  # only the cut at 300 chars ends a word early


@pytest.mark.parametrize("fmt", SUBTITLE_FORMATS)
def test_a_word_longer_than_a_line_is_cut(fmt: SubtitleFormat) -> None:
    _, _, text = read_back(render_subtitles([Cue(0, 1, "日本語" * 40)], fmt), fmt)[0]
    assert [len(line) for line in text.split("\n")] == [42, 42, 36]


def test_vtt_text_is_escaped_so_markup_shows_as_written() -> None:
    text = render_subtitles([Cue(0, 1, "<b>bold</b> & <i>")], "vtt")
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; &lt;i&gt;" in text
    assert [c.text for c in webvtt.from_string(text).captions] == ["&lt;b&gt;bold&lt;/b&gt; &amp; &lt;i&gt;"]


@pytest.mark.parametrize("fmt", SUBTITLE_FORMATS)
def test_blank_lines_and_arrows_cannot_end_a_cue(fmt: SubtitleFormat) -> None:
    cues = [Cue(0, 1, "one\n\n\ntwo --> three\r\n\r\n00:00:05,000 --> 00:00:06,000"), Cue(1, 2, "next")]
    text = render_subtitles(cues, fmt)
    assert text.count("-->") == 2
    assert [shown(t) for _, _, t in read_back(text, fmt)] == [
        "one two → three 00:00:05,000 → 00:00:06,000",
        "next",
    ]


def test_an_srt_line_is_never_only_a_number() -> None:
    cues = [Cue(0, 1, "x" * 38 + " 42 then"), Cue(1, 2, "7 " + "y" * 39), Cue(2, 3, "In " + "z" * 36 + " 1999")]
    for _, _, text in read_back(render_subtitles(cues, "srt"), "srt"):
        assert not any(line.isdigit() for line in text.split("\n")), text


def test_a_vtt_number_line_stays_as_wrapped() -> None:
    [(_, _, text)] = read_back(render_subtitles([Cue(0, 1, "x" * 40 + " 42")], "vtt"), "vtt")
    assert text == "x" * 40 + "\n42"


@pytest.mark.parametrize(
    ("seconds", "millis"),
    [(0.0015, 2), (0.0025, 3), (1.2344999, 1234), (0.0005, 1), (0.0004999, 0), (59.9995, 60_000), (7.0, 7_000)],
)
@pytest.mark.parametrize("fmt", SUBTITLE_FORMATS)
def test_times_round_half_up_to_the_millisecond(fmt: SubtitleFormat, seconds: float, millis: int) -> None:
    [(start, end, _)] = read_back(render_subtitles([Cue(seconds, seconds + 1, "x")], fmt), fmt)
    assert (start, end) == (millis, millis + 1000)


@pytest.mark.parametrize("fmt", SUBTITLE_FORMATS)
def test_a_cue_ending_at_or_before_its_start_lasts_one_millisecond(fmt: SubtitleFormat) -> None:
    cues = [Cue(1.0, 1.0, "a"), Cue(2.0, 1.5, "b"), Cue(3.0, 3.0004, "c")]
    assert [(s, e) for s, e, _ in read_back(render_subtitles(cues, fmt), fmt)] == [
        (1000, 1001),
        (2000, 2001),
        (3000, 3001),
    ]


@pytest.mark.parametrize("fmt", SUBTITLE_FORMATS)
def test_a_cue_without_text_is_left_out(fmt: SubtitleFormat) -> None:
    cues = [Cue(0, 1, "a"), Cue(1, 2, " \n "), Cue(2, 3, "b")]
    assert read_back(render_subtitles(cues, fmt), fmt) == [(0, 1000, "a"), (2000, 3000, "b")]


@pytest.mark.parametrize(
    ("cues", "message"),
    [
        ([Cue(0, 2, "a"), Cue(1.5, 3, "b")], "cue 1 starts at 1500 ms, before cue 0 ends at 2000 ms"),
        ([Cue(5, 6, "a"), Cue(1, 2, "b")], "cue 1 starts at 1000 ms, before cue 0 ends at 6000 ms"),
        ([Cue(1, 1, "a"), Cue(1, 2, "b")], "cue 1 starts at 1000 ms, before cue 0 ends at 1001 ms"),
        ([Cue(-0.5, 1, "a")], "cue 0 start_s must be a finite number of seconds >= 0, not -0.5"),
        ([Cue(0, float("nan"), "a")], "cue 0 end_s must be a finite number"),
        ([Cue(0, 1, "a"), Cue(float("inf"), 1, "b")], "cue 1 start_s must be a finite number"),
    ],
)
@pytest.mark.parametrize("fmt", SUBTITLE_FORMATS)
def test_bad_times_are_refused(fmt: SubtitleFormat, cues: list[Cue], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_subtitles(cues, fmt)


def test_cues_that_only_touch_are_fine() -> None:
    assert len(read_back(render_subtitles([Cue(0, 1, "a"), Cue(1, 2, "b")], "srt"), "srt")) == 2


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="subtitle format must be one of srt, vtt, not 'ass'"):
        render_subtitles(CUES, "ass")  # type: ignore[arg-type]


def test_no_cues_make_valid_empty_files() -> None:
    vtt = render_subtitles([], "vtt")
    assert vtt.startswith("WEBVTT")
    assert len(webvtt.from_buffer(io.StringIO(vtt))) == 0
    assert list(srt.parse(render_subtitles([], "srt"))) == []


def test_srt_cues_are_numbered_from_one_in_order() -> None:
    assert [sub.index for sub in srt.parse(render_subtitles(CUES, "srt"))] == list(range(1, len(CUES) + 1))
