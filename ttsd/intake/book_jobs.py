"""A Markdown book as a job: its front matter is the job file's fields, each heading opens a
chapter, and the chapter's title and paragraphs become the segments of a script, so a book is
spoken, resumed, cached and timed like any other script."""

from __future__ import annotations

from typing import Any, Final

from ttsd.books import BookError, parse_book
from ttsd.errors import JobRejected
from ttsd.jobspec import ChapterStart

BOOK_SUFFIX: Final = ".md"
TITLE_PAUSE_MS: Final = 1_000
"""Silence after a chapter's spoken title."""
CHAPTER_PAUSE_MS: Final = 2_000
"""Silence at the end of a chapter."""
_BODY_FIELDS = ("text", "segments")


def book_object(markdown: str) -> tuple[dict[str, Any], tuple[ChapterStart, ...]]:
    """The job object of a Markdown book (its segments, defaulting to the m4b format) and its
    chapters; JobRejected when the book cannot be read."""
    try:
        book = parse_book(markdown)
    except BookError as exc:
        where = f" (line {exc.line})" if exc.line else ""
        raise JobRejected("invalid_book", f"{exc.message}{where}") from exc
    for field in _BODY_FIELDS:
        if field in book.settings:
            raise JobRejected("invalid_field", f"{field}: a book's text is its Markdown body, not a setting", field)
    segments: list[dict[str, Any]] = []
    chapters: list[ChapterStart] = []
    for chapter in book.chapters:
        start = len(segments)
        if chapter.title:
            segments.append({"text": chapter.title, "pause_ms": TITLE_PAUSE_MS})
        segments.extend({"text": paragraph} for paragraph in chapter.paragraphs)
        if len(segments) == start:
            continue
        segments[-1]["pause_ms"] = CHAPTER_PAUSE_MS
        chapters.append(ChapterStart(title=chapter.title, segment=start))
    if segments:
        del segments[-1]["pause_ms"]
    return {"format": "m4b", **book.settings, "segments": segments}, tuple(chapters)
