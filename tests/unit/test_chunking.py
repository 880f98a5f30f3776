"""The long-text splitter (ttsd/synth/chunking.py): boundaries by rule, with examples, then properties over
generated text in several scripts (nothing dropped, sizes, order, no mid-word cuts, pauses, speed)."""

from __future__ import annotations

import random
import re
import time
import unicodedata
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttsd.synth.chunking import (
    DEFAULT_PAUSE_MS,
    Boundary,
    Chunk,
    _paragraphs,
    _punctuation_cuts,
    normalize_ws,
    split_text,
)


def split_sentences(text: str) -> list[str]:
    """The sentences of `text` as `split_text` sees them (whitespace-collapsed; paragraphs end them)."""
    sentences: list[str] = []
    for paragraph in _paragraphs(text):
        sentence_cuts, _ = _punctuation_cuts(paragraph)
        bounds = sorted({0, *sentence_cuts, len(paragraph)})  # the last sentence may end the paragraph
        sentences.extend(paragraph[a:b].strip() for a, b in pairwise(bounds))
    return sentences


def texts(chunks: list[Chunk]) -> list[str]:
    return [chunk.text for chunk in chunks]


def pauses(chunks: list[Chunk]) -> list[int]:
    return [chunk.pause_after_ms for chunk in chunks]


def compact(text: str) -> str:
    """`text` without any whitespace: what the splitter must keep exactly."""
    return "".join(text.split())


# --- whole texts and arguments ---------------------------------------------------------------------


def test_text_that_fits_is_one_trimmed_chunk_with_no_pause() -> None:
    assert split_text("  Hello there.\n  How are you?  ", 600) == [Chunk(0, "Hello there. How are you?", 0)]


def test_text_that_fits_stays_one_chunk_despite_paragraphs() -> None:
    assert texts(split_text("One.\n\nTwo.", 20)) == ["One. Two."]


def test_fitting_is_measured_after_collapsing_whitespace() -> None:
    assert texts(split_text("a" + " " * 50 + "b", 3)) == ["a b"]


@pytest.mark.parametrize("blank", ["", "   ", "\n\n\t \u3000"])
def test_blank_text_gives_no_chunks(blank: str) -> None:
    assert split_text(blank, 10) == []


@pytest.mark.parametrize(("max_chars", "gap_ms"), [(0, None), (-5, None), (10, -1)])
def test_invalid_arguments_are_refused(max_chars: int, gap_ms: int | None) -> None:
    with pytest.raises(ValueError, match=r"max_chars|gap_ms"):
        split_text("Some text that is long enough.", max_chars, gap_ms)


# --- sentence boundaries -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("One. Two! Three? Four… Five", ["One.", "Two!", "Three?", "Four…", "Five"]),
        ("Really?! Yes!!! Fine...", ["Really?!", "Yes!!!", "Fine..."]),
        ("Wait... What? Go.", ["Wait...", "What?", "Go."]),
    ],
)
def test_sentences_end_at_terminal_punctuation(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


@pytest.mark.parametrize(
    "abbreviated",
    [
        "Mr. Smith",
        "Mrs. Smith",
        "Ms. Smith",
        "Dr. Jones",
        "Prof. Xu",
        "Sr. Lopez",
        "Smith Jr. and",
        "St. Louis",
        "cats vs. dogs",
        "apples, pears, etc. and",
        "fruit, e.g. apples",
        "one, i.e. this",
        "at 5 a.m. sharp",
        "at 5 p.m. sharp",
        "room No. 5",
        "see Fig. 3",
        "approx. 40",
        "Acme Inc. and",
        "Acme Ltd. and",
        "Acme Co. and",
        "the U.S. Army",
        "MR. SMITH",
    ],
)
def test_abbreviations_do_not_end_a_sentence(abbreviated: str) -> None:
    assert split_sentences(f"It was {abbreviated} here. Next one.") == [f"It was {abbreviated} here.", "Next one."]


def test_no_is_an_abbreviation_only_before_a_number() -> None:
    assert split_sentences("I said no. Then No. 5 won.") == ["I said no.", "Then No. 5 won."]


def test_initials_do_not_end_a_sentence() -> None:
    assert split_sentences("J. R. R. Tolkien wrote it. J.R.R. Martin did not.") == [
        "J. R. R. Tolkien wrote it.",
        "J.R.R. Martin did not.",
    ]


def test_decimals_versions_and_domains_do_not_end_a_sentence() -> None:
    assert split_sentences("Pi is 3.14 and v2.0.1 is out at example.com today. Next.") == [
        "Pi is 3.14 and v2.0.1 is out at example.com today.",
        "Next.",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
        (
            "He nodded (twice!) and left. (It was late.) Then",
            ["He nodded (twice!) and left.", "(It was late.)", "Then"],
        ),
        ("She wrote ‘done.’ Fine.", ["She wrote ‘done.’", "Fine."]),
    ],
)
def test_closing_quotes_and_brackets_stay_with_their_sentence(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


@pytest.mark.parametrize(
    "text",
    ["Well… maybe not. Yes.", "Well... maybe not. Yes.", '"Stop!" he said. Yes.', "It costs approx. five. Yes."],
)
def test_a_lowercase_word_after_the_punctuation_continues_the_sentence(text: str) -> None:
    assert split_sentences(text) == [text.removesuffix(" Yes."), "Yes."]


def test_ellipsis_before_lowercase_is_still_a_clause_boundary() -> None:
    chunks = split_text("Well… maybe not today but some other day.", 20)
    assert chunks[0] == Chunk(0, "Well…", DEFAULT_PAUSE_MS[Boundary.CLAUSE])


def test_paragraphs_end_sentences() -> None:
    assert split_sentences("No stop here\n\nnor here\r\n  \r\nend") == ["No stop here", "nor here", "end"]


# --- other languages -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("今天天气很好。我们去公园吧！你来吗？", ["今天天气很好。", "我们去公园吧！", "你来吗？"]),
        ("今日は晴れです。明日は雨でしょう。", ["今日は晴れです。", "明日は雨でしょう。"]),
        ("他说：「好。」然后走了。", ["他说：「好。」", "然后走了。"]),
        ("版本2.0发布了。", ["版本2.0发布了。"]),
        (
            "안녕하세요. 저는 학생입니다! 만나서 반갑습니다?",
            ["안녕하세요.", "저는 학생입니다!", "만나서 반갑습니다?"],
        ),
        (
            "Das ist z.B. gut. Er sagte: „Halt!“ Dann ging er bzw. lief.",
            ["Das ist z.B. gut.", "Er sagte: „Halt!“", "Dann ging er bzw. lief."],
        ),
        ("Er rief »Halt!« Dann ging er.", ["Er rief »Halt!«", "Dann ging er."]),
        (
            "Bonjour ! Comment allez-vous ? Il dit « Stop. » Puis Mme Durand part.",
            ["Bonjour !", "Comment allez-vous ?", "Il dit « Stop. »", "Puis Mme Durand part."],
        ),
        (
            "Это т.е. пример. А. С. Пушкин родился в Москве. Конец.",
            ["Это т.е. пример.", "А. С. Пушкин родился в Москве.", "Конец."],
        ),
        (
            "¿Cómo estás? ¡Muy bien! El Sr. García llegó.",
            ["¿Cómo estás?", "¡Muy bien!", "El Sr. García llegó."],
        ),
    ],
)
def test_sentences_in_other_languages(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_chinese_without_spaces_splits_at_sentences_then_clauses() -> None:
    text = "我们今天去公园散步，天气很好；然后回家吃饭。明天再去。"
    chunks = split_text(text, 10)
    assert texts(chunks) == ["我们今天去公园散步，", "天气很好；", "然后回家吃饭。", "明天再去。"]
    assert pauses(chunks) == [200, 200, 350, 0]


def test_cjk_without_any_punctuation_is_hard_split_at_max_chars() -> None:
    text = "漢" * 25
    assert texts(split_text(text, 10)) == ["漢" * 10, "漢" * 10, "漢" * 5]


def test_korean_long_sentence_splits_between_words() -> None:
    text = "저는 오늘 아침에 학교에 가서 친구들을 만나고 점심을 먹었습니다."
    chunks = split_text(text, 12)
    assert all(len(chunk.text) <= 12 for chunk in chunks)
    assert " ".join(texts(chunks)) == text  # every cut fell on a space


# --- clause, word and hard splits ------------------------------------------------------------------


def test_an_overlong_sentence_splits_at_clauses() -> None:
    text = "First we walk, then we talk; finally: we rest — and sleep. Short one."
    chunks = split_text(text, 16)
    assert texts(chunks) == ["First we walk,", "then we talk;", "finally:", "we rest —", "and sleep.", "Short one."]
    assert pauses(chunks) == [200, 200, 200, 200, 350, 0]


@pytest.mark.parametrize(
    "text", ["It sold 1,000 units in 1990–2000 via http://x.io ok", "rock-and-roll all night long"]
)
def test_numbers_ranges_urls_and_hyphens_are_not_clause_boundaries(text: str) -> None:
    for chunk in split_text(text, 15):
        assert not chunk.text.endswith((",", "–", ":", "-")), chunk


def test_an_overlong_clause_splits_between_words() -> None:
    text = "the quick brown fox jumps over the lazy dog again and again"
    chunks = split_text(text, 20)
    assert texts(chunks) == ["the quick brown fox", "jumps over the lazy", "dog again and again"]
    assert pauses(chunks) == [100, 100, 0]


def test_a_url_longer_than_max_chars_is_hard_split_and_kept_whole() -> None:
    url = "https://example.com/" + "/".join(["segment"] * 12) + "?q=1"
    text = f"Read this: {url} now."
    chunks = split_text(text, 30)
    assert all(len(chunk.text) <= 30 for chunk in chunks)
    assert chunks[0].text == "Read this:"
    assert "".join(texts(chunks[1:-1])) == url
    assert chunks[-1].text == "now."


def test_a_hard_split_does_not_part_a_letter_from_its_combining_mark() -> None:
    text = "e\u0301" * 30  # é, decomposed
    chunks = split_text(text, 21)
    assert texts(chunks) == ["e\u0301" * 10] * 3
    assert not any(unicodedata.combining(chunk.text[0]) for chunk in chunks)


def test_a_grapheme_longer_than_max_chars_is_cut_anyway() -> None:
    text = "a" + "\u0301" * 9
    assert "".join(texts(split_text(text, 4))) == text


# --- paragraphs, packing and pauses ----------------------------------------------------------------


def test_short_sentences_are_packed_greedily() -> None:
    chunks = split_text("One two. Three four. Five six. Seven.", 20)
    assert texts(chunks) == ["One two. Three four.", "Five six. Seven."]


def test_a_paragraph_break_always_ends_a_chunk() -> None:
    chunks = split_text("A short one.\n\nAnother short.\n\nLast.", 30)
    assert texts(chunks) == ["A short one.", "Another short.", "Last."]
    assert pauses(chunks) == [700, 700, 0]


def test_default_pauses_follow_the_boundary() -> None:
    text = (
        "First paragraph is here. It has two sentences.\n\n"
        "Second, with a clause; and more words that go on and on without any end in sight"
    )
    chunks = split_text(text, 30)
    assert [(c.text, c.pause_after_ms) for c in chunks] == [
        ("First paragraph is here.", 350),
        ("It has two sentences.", 700),
        ("Second, with a clause;", 200),
        ("and more words that go on and", 100),
        ("on without any end in sight", 0),
    ]
    assert DEFAULT_PAUSE_MS == {
        Boundary.PARAGRAPH: 700,
        Boundary.SENTENCE: 350,
        Boundary.CLAUSE: 200,
        Boundary.WORD: 100,
    }


@pytest.mark.parametrize("gap_ms", [0, 250])
def test_gap_ms_overrides_every_pause_but_the_last(gap_ms: int) -> None:
    text = "One sentence here. Another one, with a clause.\n\nA new paragraph that goes on for a while."
    chunks = split_text(text, 20, gap_ms=gap_ms)
    assert len(chunks) > 3
    assert pauses(chunks) == [gap_ms] * (len(chunks) - 1) + [0]


def english_sentence(paragraph: int, sentence: int) -> str:
    text = (
        f"In paragraph {paragraph} the sentence {sentence:02d} describes the quiet harbour town "
        "and its slow grey morning by the sea."
    )
    assert len(text) == 101
    return text


def test_a_5000_character_english_text_packs_three_sentences_per_chunk() -> None:
    paragraphs = [" ".join(english_sentence(p, s) for s in range(10)) for p in range(5)]
    text = "\n\n".join(paragraphs)
    assert len(text) > 5_000
    chunks = split_text(text, 3 * 101 + 2)  # three sentences and the two spaces between them
    # Per paragraph: 3 + 3 + 3 + 1 sentences, never packed across the blank line.
    assert len(chunks) == 20
    assert all(len(chunk.text) <= 305 for chunk in chunks)
    assert [len(split_sentences(chunk.text)) for chunk in chunks] == [3, 3, 3, 1] * 5
    assert pauses(chunks) == [*([350, 350, 350, 700] * 5)[:-1], 0]
    assert "\n\n".join(" ".join(texts(chunks[i : i + 4])) for i in range(0, 20, 4)) == text


# --- properties over generated text ----------------------------------------------------------------

_LATIN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZéüßñçø", min_size=1, max_size=12)
_CYRILLIC = st.text("абвгдежзиклмнопрстуфхцчшщыэюяАБВГДЖЗ", min_size=1, max_size=10)
_HANGUL = st.text(st.characters(min_codepoint=0xAC00, max_codepoint=0xAD00), min_size=1, max_size=5)
_HAN_KANA = st.text(
    st.one_of(
        st.characters(min_codepoint=0x4E00, max_codepoint=0x4FFF),
        st.characters(min_codepoint=0x3041, max_codepoint=0x3096),
    ),
    min_size=1,
    max_size=30,
)
_DECOMPOSED = st.lists(st.sampled_from(["e\u0301", "a\u0308", "n\u0303", "o"]), min_size=1, max_size=6).map("".join)
_FIXED = st.sampled_from(
    [
        "3.14",
        "v2.0.1",
        "1,000",
        "1990–2000",
        "42",
        "Mr.",
        "Dr.",
        "e.g.",
        "i.e.",
        "U.S.",
        "J.",
        "etc.",
        "No. 5",
        "p.m.",
        "https://example.com/a/very/long/path/to/some/resource?query=value&other=1",
    ]
)
_PUNCTUATION = st.sampled_from(
    [
        ".",
        "!",
        "?",
        "…",
        "...",
        ",",
        ";",
        ":",
        "—",
        " – ",
        "。",
        "！",
        "？",
        "；",
        "，",
        "、",
        "：",
        '"',
        "»",
        "«",
        ")",
        "(",
        "「",
        "」",
        "?!",
        '."',
        "。」",
    ]
)
_SEPARATOR = st.sampled_from(["", " ", " ", " ", "  ", "\n", "\n\n", "\t", "\u3000", "\r\n\r\n", " \n \n ", "\u2029"])
_TOKEN = st.one_of(_LATIN, _CYRILLIC, _HANGUL, _HAN_KANA, _DECOMPOSED, _FIXED, _PUNCTUATION)
_TEXT = st.lists(st.tuples(_TOKEN, _SEPARATOR), max_size=60).map(lambda pairs: "".join(t + s for t, s in pairs))
_MAX_CHARS = st.integers(min_value=1, max_value=80)

# Scripts written without spaces: a cut between two of their letters is fine anywhere.
_UNSPACED = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]")
_PROPERTY = settings(deadline=None, max_examples=300)


def is_spaced_letter(char: str) -> bool:
    return char.isalpha() and not _UNSPACED.match(char)


@_PROPERTY
@given(_TEXT, _MAX_CHARS, st.none() | st.integers(min_value=0, max_value=2_000))
def test_no_text_is_dropped_or_added(text: str, max_chars: int, gap_ms: int | None) -> None:
    chunks = split_text(text, max_chars, gap_ms)
    assert "".join(compact(chunk.text) for chunk in chunks) == compact(text)


@_PROPERTY
@given(_TEXT, _MAX_CHARS)
def test_chunks_fit_are_non_empty_collapsed_and_numbered(text: str, max_chars: int) -> None:
    chunks = split_text(text, max_chars)
    assert [chunk.index for chunk in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert 0 < len(chunk.text) <= max_chars
        assert chunk.text == normalize_ws(chunk.text)


@_PROPERTY
@given(_TEXT, _MAX_CHARS, st.none() | st.integers(min_value=0, max_value=2_000))
def test_the_last_pause_is_zero_and_the_others_are_known(text: str, max_chars: int, gap_ms: int | None) -> None:
    chunks = split_text(text, max_chars, gap_ms)
    allowed = set(DEFAULT_PAUSE_MS.values()) if gap_ms is None else {gap_ms}
    if chunks:
        assert chunks[-1].pause_after_ms == 0
        assert {chunk.pause_after_ms for chunk in chunks[:-1]} <= allowed


@_PROPERTY
@given(_TEXT, _MAX_CHARS)
def test_no_cut_inside_a_word_that_fits(text: str, max_chars: int) -> None:
    words = text.split()
    joined = compact(text)
    offset = 0
    for chunk in split_text(text, max_chars)[:-1]:
        offset += len(compact(chunk.text))
        word = word_around(words, offset)
        if word is None:  # the cut fell on whitespace
            continue
        if is_spaced_letter(joined[offset - 1]) and is_spaced_letter(joined[offset]):
            assert len(word) > max_chars, (word, max_chars)
        if max_chars >= 2:  # the generated graphemes are at most two code points long
            assert not unicodedata.combining(joined[offset]), (word, max_chars)


def word_around(words: list[str], offset: int) -> str | None:
    """The word that whitespace-free position `offset` falls strictly inside, if any."""
    position = 0
    for word in words:
        position += len(word)
        if position >= offset:
            return word if position > offset else None
    return None


# --- speed -----------------------------------------------------------------------------------------


def mixed_text(length: int) -> str:
    """A deterministic text of about `length` characters mixing scripts, punctuation and paragraphs."""
    rng = random.Random(7)
    parts = [
        "The quick brown fox, Mr. Smith said, jumps over 3.14 lazy dogs.",
        "今天天气很好，我们去公园吧！",
        "Это т.е. пример; конец.",
        "안녕하세요 여러분 반갑습니다.",
        "Well… maybe",
        "https://example.com/" + "x" * 700,
        "漢字" * 400,
    ]
    pieces: list[str] = []
    size = 0
    while size < length:
        piece = rng.choice(parts) + rng.choice([" ", " ", "\n", "\n\n"])
        pieces.append(piece)
        size += len(piece)
    return "".join(pieces)[:length]


@pytest.mark.parametrize(
    "text",
    [
        mixed_text(200_000),
        "." * 200_000,
        "," * 200_000,
        "、" * 200_000,
        "a" * 200_000,
        "word " * 40_000,
        "Mr. " * 50_000,
        " " * 100_000 + "a" + "\n " * 50_000,
        "\n" + " " * 199_998 + "a",
    ],
    ids=["mixed", "dots", "commas", "cjk-commas", "one-word", "words", "abbreviations", "spaces", "newline-run"],
)
def test_200000_characters_split_in_bounded_time(text: str) -> None:
    started = time.perf_counter()
    chunks = split_text(text, 600)
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0
    assert "".join(compact(chunk.text) for chunk in chunks) == compact(text)


@_PROPERTY
@given(_TEXT, _MAX_CHARS, _MAX_CHARS, st.none() | st.integers(min_value=0, max_value=2_000))
def test_a_short_first_chunk_keeps_every_character_and_the_rest_as_usual(
    text: str, max_chars: int, first_max_chars: int, gap_ms: int | None
) -> None:
    chunks = split_text(text, max_chars, gap_ms, first_max_chars)
    assert "".join(compact(chunk.text) for chunk in chunks) == compact(text)
    assert [chunk.index for chunk in chunks] == list(range(len(chunks)))
    if chunks:
        assert 0 < len(chunks[0].text) <= min(first_max_chars, max_chars)
        assert all(0 < len(chunk.text) <= max_chars for chunk in chunks)
        assert chunks[-1].pause_after_ms == 0


def test_a_short_first_chunk_ends_at_the_first_sentence_that_fits() -> None:
    text = "Hello there. " + "This sentence is long enough to need its own chunk, and then some more words. " * 8
    chunks = split_text(text, 300, first_max_chars=60)
    assert chunks[0].text == "Hello there."
    assert chunks[0].pause_after_ms == DEFAULT_PAUSE_MS[Boundary.SENTENCE]
    assert chunks[1:] == [
        Chunk(chunk.index + 1, chunk.text, chunk.pause_after_ms)
        for chunk in split_text(text[len("Hello there. ") :], 300)
    ]
    assert split_text("Short.", 300, first_max_chars=60) == split_text("Short.", 300)


# --- one sentence per chunk (subtitles) -----------------------------------------------------------


def test_sentence_mode_ends_a_chunk_at_every_sentence_even_when_more_fits() -> None:
    chunks = split_text("Hello there. How are you? Fine!\n\nA new paragraph.", 600, sentences=True)
    assert texts(chunks) == ["Hello there.", "How are you?", "Fine!", "A new paragraph."]
    sentence, paragraph = DEFAULT_PAUSE_MS[Boundary.SENTENCE], DEFAULT_PAUSE_MS[Boundary.PARAGRAPH]
    assert pauses(chunks) == [sentence, sentence, paragraph, 0]


def test_sentence_mode_keeps_one_sentence_whole_and_gives_no_chunk_for_blank_text() -> None:
    assert split_text("  Just one sentence here  ", 600, sentences=True) == [Chunk(0, "Just one sentence here", 0)]
    assert split_text(" \n\n ", 600, sentences=True) == []


def test_sentence_mode_does_not_end_a_sentence_at_an_abbreviation() -> None:
    text = "Dr. Smith met Mr. J. R. Jones at 3.14 p.m. on St. Mark's day. They talked, e.g. about No. 5."
    assert texts(split_text(text, 600, sentences=True)) == [
        "Dr. Smith met Mr. J. R. Jones at 3.14 p.m. on St. Mark's day.",
        "They talked, e.g. about No. 5.",
    ]


def test_sentence_mode_keeps_quotes_and_lowercase_continuations_with_their_sentence() -> None:
    text = '"Stop!" he said. «Bien.» Puis il partit… and came back.'
    assert texts(split_text(text, 600, sentences=True)) == [
        '"Stop!" he said.',
        "«Bien.»",
        "Puis il partit… and came back.",
    ]


def test_sentence_mode_splits_cjk_without_spaces() -> None:
    chunks = split_text("今天天气很好。我们去公园吧！你呢？「好。」", 600, sentences=True)
    assert texts(chunks) == ["今天天气很好。", "我们去公园吧！", "你呢？", "「好。」"]


def test_sentence_mode_cuts_a_long_sentence_at_clauses_then_words() -> None:
    text = "Short one. This sentence runs long, with a clause, and then a great many more words after it. End."
    assert texts(split_text(text, 30, sentences=True)) == [
        "Short one.",
        "This sentence runs long,",
        "with a clause,",
        "and then a great many more",
        "words after it.",
        "End.",
    ]


def test_sentence_mode_with_a_short_first_chunk() -> None:
    text = "Hello there. This second sentence is rather long, so it needs a clause cut. Bye."
    chunks = split_text(text, 60, first_max_chars=8, sentences=True)
    assert texts(chunks) == [
        "Hello",
        "there.",
        "This second sentence is rather long,",
        "so it needs a clause cut.",
        "Bye.",
    ]
    assert [chunk.index for chunk in chunks] == list(range(5))
    assert pauses(chunks)[:2] == [DEFAULT_PAUSE_MS[Boundary.WORD], DEFAULT_PAUSE_MS[Boundary.SENTENCE]]
    assert texts(split_text(text, 60, first_max_chars=20, sentences=True))[:2] == [
        "Hello there.",
        "This second sentence is rather long,",
    ]


def test_sentence_mode_takes_gap_ms() -> None:
    assert pauses(split_text("One. Two.\n\nThree.", 600, gap_ms=50, sentences=True)) == [50, 50, 0]


def sentence_ends(pieces: list[str]) -> set[int]:
    """The whitespace-free offsets where each of `pieces` ends, laid end to end."""
    ends, offset = set(), 0
    for piece in pieces:
        offset += len(compact(piece))
        ends.add(offset)
    return ends


@_PROPERTY
@given(_TEXT, _MAX_CHARS, st.none() | _MAX_CHARS)
def test_sentence_mode_keeps_the_invariants_and_never_packs_two_sentences(
    text: str, max_chars: int, first_max_chars: int | None
) -> None:
    chunks = split_text(text, max_chars, first_max_chars=first_max_chars, sentences=True)
    assert "".join(compact(chunk.text) for chunk in chunks) == compact(text)
    assert [chunk.index for chunk in chunks] == list(range(len(chunks)))
    assert all(0 < len(chunk.text) <= max_chars and chunk.text == normalize_ws(chunk.text) for chunk in chunks)
    if chunks:
        assert chunks[-1].pause_after_ms == 0
        assert {chunk.pause_after_ms for chunk in chunks[:-1]} <= set(DEFAULT_PAUSE_MS.values())
    if first_max_chars is None:
        assert sentence_ends(split_sentences(text)) <= sentence_ends(texts(chunks))


@_PROPERTY
@given(_TEXT)
def test_sentence_mode_with_room_to_spare_is_exactly_the_sentences(text: str) -> None:
    assert texts(split_text(text, 10_000, sentences=True)) == split_sentences(text)
