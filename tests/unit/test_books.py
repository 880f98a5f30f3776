"""Markdown books (ttsd/books.py): chapters from headings, what is spoken and what is skipped, the front
matter (valid, and every way it can be wrong), and the edges: empty input, CRLF, a book of headings."""

from __future__ import annotations

import pytest

from ttsd.books import MAX_FRONT_MATTER_CHARS, MAX_TITLE_CHARS, Book, BookError, Chapter, parse_book
from ttsd.markup import parse_pauses

BOOK = """\
---
title: The Lighthouse Keeper
language: English
speaker: Ryan
gap_ms: 400
instruct: null
generation:
  temperature: 0.7
  top_p: 0.9
chunking:
  max_chars: 300
---

A short note before the story begins.

# Chapter One: The Storm

The wind rose at *dusk*, and **Elias** climbed the [ninety-nine steps](https://example.com/steps).
It was, as `always`, cold. [pause 1.5s] Then the lamp went out.

> "Not tonight," he said.

## Chapter Two

- the oil can
- a box of matches
  - two of them damp
- his father's old coat

![A lamp in the fog](lamp.png)

```python
print("never spoken")
```

---

Chapter Three
=============

| Ship | Year |
|------|------|
| Aurora | 1911 |

<!-- a note to the narrator -->

The end.
"""


def test_a_realistic_book() -> None:
    book = parse_book(BOOK)
    assert book.settings == {
        "title": "The Lighthouse Keeper",
        "language": "English",
        "speaker": "Ryan",
        "gap_ms": 400,
        "instruct": None,
        "generation": {"temperature": 0.7, "top_p": 0.9},
        "chunking": {"max_chars": 300},
    }
    assert book.chapters == (
        Chapter("", ("A short note before the story begins.",)),
        Chapter(
            "Chapter One: The Storm",
            (
                "The wind rose at dusk, and Elias climbed the ninety-nine steps. "
                "It was, as always, cold. [pause 1.5s] Then the lamp went out.",
                '"Not tonight," he said.',
            ),
        ),
        Chapter(
            "Chapter Two",
            ("the oil can", "a box of matches", "two of them damp", "his father's old coat", "A lamp in the fog"),
        ),
        Chapter("Chapter Three", ("Ship", "Year", "Aurora", "1911", "The end.")),
    )


def test_pause_markup_passes_through_for_ttsd_markup() -> None:
    book = parse_book("# One\n\nWait [pause 2s] for it.\n\n[pause 1s]\n\n- item [pause 300ms] two\n")
    assert book.chapters[0].paragraphs == ("Wait [pause 2s] for it.", "[pause 1s]", "item [pause 300ms] two")
    assert parse_pauses(book.chapters[0].paragraphs[0]).runs == (("Wait ", 2000), (" for it.", 0))


def test_every_heading_level_and_setext_starts_a_chapter() -> None:
    markdown = "# A\nx\n## B\nx\n### C\nx\n#### D\nx\n##### E\nx\n###### F\nx\n\nG\n===\nx\n\nH\n---\nx\n"
    assert [chapter.title for chapter in parse_book(markdown).chapters] == list("ABCDEFGH")


def test_a_heading_without_text_under_it_is_still_a_chapter() -> None:
    book = parse_book("# Part One\n## Chapter 1\nWords.\n")
    assert book.chapters == (Chapter("Part One", ()), Chapter("Chapter 1", ("Words.",)))


def test_text_before_the_first_heading_is_kept_only_when_it_holds_words() -> None:
    assert parse_book("Hello.\n# One\nx").chapters[0] == Chapter("", ("Hello.",))
    assert [chapter.title for chapter in parse_book("***\n\n```\ncode\n```\n# One\nx").chapters] == ["One"]
    assert [chapter.title for chapter in parse_book("Just a paragraph.").chapters] == [""]


def test_inline_markup_becomes_plain_text() -> None:
    markdown = (
        "# The *first* `night` of [May](https://example.com)\n\n"
        "A _b_ **c** ***d*** ~~e~~ `f()` [g](h 'title') ![i *j*](k.png) <b>l</b> &amp; m\\*n [o] <https://p.q>\n"
    )
    chapter = parse_book(markdown).chapters[0]
    assert chapter.title == "The first night of May"
    assert chapter.paragraphs == ("A b c d e f() g i j l & m*n [o] https://p.q",)


def test_line_breaks_inside_a_paragraph_are_spaces() -> None:
    assert parse_book("one\ntwo  \nthree\\\nfour").chapters[0].paragraphs == ("one two three four",)


def test_nested_lists_give_one_paragraph_per_item_in_order() -> None:
    markdown = """\
# List
1. First
   continued
2. Second

   with a second paragraph
   - nested a
     1. deeper b
   - nested c

   back in second
3. Third
"""
    assert parse_book(markdown).chapters[0].paragraphs == (
        "First continued",
        "Second with a second paragraph",
        "nested a",
        "deeper b",
        "nested c",
        "back in second",
        "Third",
    )


def test_block_quotes_are_spoken_paragraph_by_paragraph() -> None:
    assert parse_book("> One.\n>\n> Two.\n>> Three.\n").chapters[0].paragraphs == ("One.", "Two.", "Three.")


def test_code_rules_and_html_blocks_are_skipped() -> None:
    markdown = "Before.\n\n```\nfenced\n```\n\n~~~\ntilde\n~~~\n\n    indented\n\n***\n\n<div>\nraw\n</div>\n\nAfter.\n"
    assert parse_book(markdown).chapters == (Chapter("", ("Before.", "After.")),)


def test_table_cells_are_spoken_one_by_one_and_empty_ones_skipped() -> None:
    markdown = "| A | B |\n|---|---|\n| *1* | |\n"
    assert parse_book(markdown).chapters[0].paragraphs == ("A", "B", "1")


def test_a_long_title_is_cut_with_an_ellipsis() -> None:
    title = parse_book("# " + "word " * 100 + "\nText.").chapters[0].title
    assert len(title) <= MAX_TITLE_CHARS
    assert title.endswith("word…")
    assert parse_book("# " + "x" * MAX_TITLE_CHARS + "\nText.").chapters[0].title == "x" * MAX_TITLE_CHARS


def test_crlf_and_cr_line_endings_and_a_byte_order_mark() -> None:
    book = "\ufeff---\r\nspeaker: Ryan\r\n---\r\n# One\r\nLine one\r\nline two\r\n\r\nNext.\r\n"
    expected = Book({"speaker": "Ryan"}, (Chapter("One", ("Line one line two", "Next.")),))
    assert parse_book(book) == expected
    assert parse_book(book.replace("\r\n", "\r")) == expected


# --- no text -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "markdown",
    ["", "   \n\n", "# Only a heading\n", "# One\n## Two\n", "```\ncode\n```\n", "---\nspeaker: Ryan\n---\n", "***\n"],
)
def test_a_book_without_words_is_refused(markdown: str) -> None:
    with pytest.raises(BookError) as caught:
        parse_book(markdown)
    assert caught.value.message == "the book has no text"
    assert caught.value.line is None


# --- front matter --------------------------------------------------------------------------------


def test_no_front_matter_means_no_settings() -> None:
    assert parse_book("Hello.").settings == {}


def test_empty_front_matter_and_trailing_spaces_on_the_fences() -> None:
    assert parse_book("---\n---\nHello.").settings == {}
    assert parse_book("--- \nspeaker: Ryan\n---\t\nHello.").settings == {"speaker": "Ryan"}


def test_front_matter_scalars_keep_their_yaml_types() -> None:
    front = "a: text\nb: 'quoted: 2024-01-01'\nc: 3\nd: 1.5\ne: true\nf: ~\ng:\n"
    assert parse_book(f"---\n{front}---\nHello.").settings == {
        "a": "text",
        "b": "quoted: 2024-01-01",
        "c": 3,
        "d": 1.5,
        "e": True,
        "f": None,
        "g": None,
    }


def test_the_body_after_the_front_matter_keeps_its_setext_headings() -> None:
    book = parse_book("---\nspeaker: Ryan\n---\nTitle\n---\nText.\n")
    assert book.chapters == (Chapter("Title", ("Text.",)),)


@pytest.mark.parametrize(
    ("front", "line", "problem"),
    [
        ("speaker: Ryan\ntags: [a, b]\n", 3, "the key 'tags' holds a list: expected text, a number"),
        ("date: 2024-01-01\n", 2, "the key 'date' has a value YAML reads as timestamp: quote it"),
        ("data: !!binary aGk=\n", 2, "the key 'data' has a value YAML reads as binary"),
        ("x: !!set {a}\n", 2, "the key 'x' has a value YAML reads as set"),
        (
            "generation:\n  deeper:\n    x: 1\n",
            3,
            "the key 'generation.deeper' holds `key: value` lines nested too deep",
        ),
        ("generation:\n  stops: [1]\n", 3, "the key 'generation.stops' holds a list"),
        ("speaker: Ryan\nspeaker: Vivian\n", 3, "the key 'speaker' appears twice"),
        ("generation:\n  top_k: 1\n  top_k: 2\n", 4, "the key 'generation.top_k' appears twice"),
        ("yes: 1\n", 2, "the key 'yes' is not a name (YAML reads it as bool): quote it"),
        ("generation:\n  1: x\n", 3, "the key 'generation.1' is not a name (YAML reads it as int)"),
        ("[a]: 1\n", 2, "a key must be a name, not a seq"),
        ("- speaker\n", 2, "the front matter must be `key: value` lines"),
        ("just words\n", 2, "the front matter must be `key: value` lines"),
        ("speaker: Ryan\nx: [\n", 4, "the front matter is not valid YAML"),
        ("a: 1\n b: 2\n", 3, "the front matter is not valid YAML"),
        ("x: !!python/name:os.system\n", 2, "YAML reads as python/name:os.system"),
    ],
)
def test_bad_front_matter_names_the_key_and_line(front: str, line: int, problem: str) -> None:
    with pytest.raises(BookError) as caught:
        parse_book(f"---\n{front}---\n# One\nText.\n")
    assert caught.value.line == line
    assert caught.value.message.startswith(f"line {line}: ")
    assert problem in caught.value.message
    assert str(caught.value) == caught.value.message


def test_unclosed_front_matter_is_refused() -> None:
    for markdown in ("---", "---\nspeaker: Ryan\n# One\nText.\n"):
        with pytest.raises(BookError, match="not closed by a '---' line") as caught:
            parse_book(markdown)
        assert caught.value.line == 1


def test_front_matter_is_capped() -> None:
    fits = "a: " + "x" * (MAX_FRONT_MATTER_CHARS - 4) + "\n"
    assert parse_book(f"---\n{fits}---\nText.").settings == {"a": "x" * (MAX_FRONT_MATTER_CHARS - 4)}
    too_long = "a: " + "x" * MAX_FRONT_MATTER_CHARS + "\n"
    with pytest.raises(BookError, match="over 10,000 characters") as caught:
        parse_book(f"---\n{too_long}---\nText.")
    assert caught.value.line == 1
