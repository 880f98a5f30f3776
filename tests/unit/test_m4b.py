"""M4B audiobooks: AAC in an MP4 container with chapters, read back with PyAV (`read_chapters`,
`decode_file`) and checked to the millisecond and to the AAC frame."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from ttsd.encoding import (
    CHAPTER_END_SLACK_S,
    AudioFormat,
    ChapterMark,
    StreamEncoder,
    decode_file,
    encode,
    rate_problem,
    read_chapters,
)

AAC_FRAME = 1024
CHAPTERS = [
    ChapterMark("Prologue", 0.0, 1.2345),
    ChapterMark("Kapitel 2: Über die Brücke — „Anfang“", 1.2345, 2.5),
    ChapterMark("第三章 终わり", 2.5, 4.0),
]


def noise(seconds: float, rate: int) -> np.ndarray:
    return np.random.default_rng(3).uniform(-0.5, 0.5, round(seconds * rate)).astype(np.float32)


def written(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "book.m4b"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("rate", [24_000, 44_100])
def test_chapters_read_back_with_their_titles_and_times(tmp_path: Path, rate: int) -> None:
    path = written(tmp_path, encode(noise(4.0, rate), rate, "m4b", CHAPTERS))
    chapters = read_chapters(path)
    assert [chapter.title for chapter in chapters] == [chapter.title for chapter in CHAPTERS]
    for got, wanted in zip(chapters, CHAPTERS, strict=True):
        assert got.start_s == pytest.approx(wanted.start_s, abs=0.001)
        assert got.end_s == pytest.approx(wanted.end_s, abs=0.001)


@pytest.mark.parametrize("rate", [24_000, 44_100])
def test_the_audio_decodes_to_its_duration_within_one_aac_frame(tmp_path: Path, rate: int) -> None:
    audio = noise(4.0, rate)
    decoded = decode_file(written(tmp_path, encode(audio, rate, "m4b", CHAPTERS)), "m4b", rate)
    assert 0 <= len(decoded) - len(audio) < AAC_FRAME


def test_the_priming_is_dropped_so_the_audio_starts_on_time(tmp_path: Path) -> None:
    rate = 24_000
    audio = np.zeros(rate, dtype=np.float32)
    audio[rate // 2 :] = 0.5  # a step at 0.5 s
    decoded = decode_file(written(tmp_path, encode(audio, rate, "m4b")), "m4b", rate)
    step = int(np.argmax(np.abs(decoded) > 0.25))
    assert abs(step - rate // 2) < 64


def test_the_file_is_an_mp4_branded_as_an_audiobook_with_its_index_first() -> None:
    data = encode(noise(0.5, 24_000), 24_000, "m4b")
    assert data[4:12] == b"ftypM4B "
    assert data.index(b"moov") < data.index(b"mdat")


def test_an_m4b_without_chapters_is_a_valid_m4b(tmp_path: Path) -> None:
    path = written(tmp_path, encode(noise(1.0, 24_000), 24_000, "m4b"))
    assert read_chapters(path) == []
    with av.open(str(path)) as container:
        assert container.streams.audio[0].codec_context.name == "aac"


def test_a_last_chapter_just_past_the_end_is_cut_to_it(tmp_path: Path) -> None:
    late = [ChapterMark("one", 0.0, 1.0), ChapterMark("two", 1.0, 2.0 + CHAPTER_END_SLACK_S)]
    chapters = read_chapters(written(tmp_path, encode(noise(2.0, 24_000), 24_000, "m4b", late)))
    assert chapters[-1].end_s == pytest.approx(2.0, abs=0.001)


def test_mp4_keeps_where_chapters_start_so_a_gap_joins_the_chapter_before(tmp_path: Path) -> None:
    spaced = [ChapterMark("a", 0.5, 1.0), ChapterMark("b", 1.0, 1.5), ChapterMark("c", 1.8, 1.9)]
    chapters = read_chapters(written(tmp_path, encode(noise(2.0, 24_000), 24_000, "m4b", spaced)))
    times = [time for chapter in chapters for time in (chapter.start_s, chapter.end_s)]
    assert times == pytest.approx([0.0, 1.0, 1.0, 1.8, 1.8, 1.9], abs=0.001)


def test_a_file_without_chapters_reads_as_none(tmp_path: Path) -> None:
    path = tmp_path / "plain.aac"
    path.write_bytes(encode(noise(0.5, 24_000), 24_000, "aac"))
    assert read_chapters(path) == []


@pytest.mark.parametrize("rate", [8_000, 22_050, 96_000, 11_111])
def test_any_rate_can_be_an_m4b(rate: int) -> None:
    assert rate_problem("m4b", rate) is None


@pytest.mark.parametrize(
    ("chapters", "message"),
    [
        (
            [ChapterMark("a", 0.0, 2.0), ChapterMark("b", 1.5, 3.0)],
            r"chapter 1 \('b'\) starts at 1.500s, before the chapter before it ends \(2.000s\)",
        ),
        (
            [ChapterMark("a", 2.0, 3.0), ChapterMark("b", 0.0, 1.0)],
            r"chapter 1 \('b'\) starts at 0.000s, before the chapter before it ends \(3.000s\)",
        ),
        ([ChapterMark("a", 1.0, 1.0)], r"chapter 0 \('a'\) ends at 1.000s, not at least 1 ms after its start"),
        ([ChapterMark("a", 2.0, 1.0)], r"chapter 0 \('a'\) ends at 1.000s, not at least 1 ms after its start"),
        ([ChapterMark("a", -1.0, 1.0)], r"chapter 0 \('a'\): start_s and end_s must be finite seconds >= 0"),
        ([ChapterMark("a", 0.0, float("nan"))], r"chapter 0 \('a'\): start_s and end_s must be finite"),
        ([ChapterMark("a", 0.0, 4.1)], r"chapter 0 \('a'\) ends at 4.100s, after the end of the audio \(4.000s\)"),
        (
            [ChapterMark("a", 0.0, 4.005), ChapterMark("b", 4.005, 4.006)],
            r"chapter 0 \('a'\) ends at 4.005s, after the end of the audio",
        ),
    ],
)
def test_bad_chapters_are_refused(chapters: list[ChapterMark], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode(noise(4.0, 24_000), 24_000, "m4b", chapters)


@pytest.mark.parametrize("fmt", ["wav", "mp3", "aac", "opus"])
def test_chapters_in_another_format_are_refused(fmt: AudioFormat) -> None:
    with pytest.raises(ValueError, match=f"chapters can only be written in m4b, not {fmt}"):
        encode(noise(1.0, 24_000), 24_000, fmt, CHAPTERS[:1])


def test_an_m4b_of_no_audio_is_refused() -> None:
    with pytest.raises(ValueError, match="an m4b needs some audio"):
        encode(np.zeros(0, dtype=np.float32), 24_000, "m4b")


def test_an_m4b_cannot_be_streamed() -> None:
    with pytest.raises(ValueError, match="m4b cannot be streamed"):
        StreamEncoder("m4b", 24_000)
