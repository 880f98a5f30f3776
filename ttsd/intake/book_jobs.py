"""A Markdown book as a job: its front matter is the job file's fields, each heading opens a
chapter, and the chapter's title and paragraphs become the segments of a script, so a book is
spoken, resumed, cached and timed like any other script."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from ttsd.books import BookError, parse_book
from ttsd.errors import JobRejected
from ttsd.intake.scripts import MAX_SEGMENTS
from ttsd.jobspec import ChapterStart
from ttsd.markup import MarkupError, only_pauses, strip_pauses

BOOK_SUFFIX: Final = ".md"
TITLE_PAUSE_MS: Final = 1_000
"""Silence after a chapter's spoken title."""
CHAPTER_PAUSE_MS: Final = 2_000
"""Silence at the end of a chapter."""
_BODY_FIELDS = ("text", "segments")


@dataclass(frozen=True)
class BookJob:
    """A book as a job object, its chapters, and where in the book each segment comes from (so a
    rejection of `segments.12.text` can say which chapter and paragraph that is)."""

    job: dict[str, Any]
    chapters: tuple[ChapterStart, ...]
    places: tuple[str, ...]

    def in_book_terms(self, rejection: JobRejected) -> JobRejected:
        """A segment's rejection, naming the chapter and paragraph it comes from."""
        field = rejection.field or ""
        parts = field.split(".")
        if len(parts) < 2 or parts[0] != "segments" or not parts[1].isdigit() or int(parts[1]) >= len(self.places):
            return rejection
        message = rejection.message.replace(f"{field}: ", f"{field} ({self.places[int(parts[1])]}): ", 1)
        return JobRejected(rejection.code, message, rejection.field)


def book_object(markdown: str) -> BookJob:
    """The job object of a Markdown book (its segments, defaulting to the m4b format) and its
    chapters; JobRejected when the book cannot be read."""
    try:
        book = parse_book(markdown)
    except BookError as exc:
        raise JobRejected("invalid_book", exc.message) from exc
    for field in _BODY_FIELDS:
        if field in book.settings:
            raise JobRejected("invalid_field", f"{field}: a book's text is its Markdown body, not a setting", field)
    segments: list[dict[str, Any]] = []
    chapters: list[ChapterStart] = []
    places: list[str] = []
    for number, chapter in enumerate(book.chapters, start=1):
        start = len(segments)
        named = f"chapter {number} ({chapter.title!r})" if chapter.title else f"chapter {number}"
        if chapter.title:
            segments.append({"text": chapter.title, "pause_ms": TITLE_PAUSE_MS})
            places.append(f"{named}, its title")
        _add_paragraphs(chapter.paragraphs, segments, places, named, first=start)
        if len(segments) == start:
            continue
        segments[-1]["pause_ms"] = CHAPTER_PAUSE_MS
        chapters.append(ChapterStart(title=_shown(chapter.title), segment=start))
    if len(segments) > MAX_SEGMENTS:
        raise JobRejected(
            "too_many_segments", f"the book has {len(segments)} titles and paragraphs; the limit is {MAX_SEGMENTS}"
        )
    if segments:
        segments[-1].pop("pause_ms", None)
    return BookJob({"format": "m4b", **book.settings, "segments": segments}, tuple(chapters), tuple(places))


def _add_paragraphs(
    paragraphs: Sequence[str], segments: list[dict[str, Any]], places: list[str], chapter: str, first: int
) -> None:
    """A chapter's paragraphs as segments. A paragraph of nothing but pause markup (`[pause 2s]` on
    a line of its own) is no segment: its pause joins the paragraph before it (or the one after)."""
    pending = ""
    for number, paragraph in enumerate(paragraphs, start=1):
        if _only_pauses(paragraph):
            if len(segments) > first and "pause_ms" not in segments[-1]:
                segments[-1]["text"] += " " + paragraph
            else:
                pending += paragraph + " "
            continue
        segments.append({"text": pending + paragraph})
        places.append(f"{chapter}, paragraph {number}")
        pending = ""
    if pending and len(segments) > first:
        # Only a title before it: the markup stands in for the title's pause.
        segments[-1]["text"] += " " + pending
        segments[-1].pop("pause_ms", None)


def _only_pauses(text: str) -> bool:
    try:
        return only_pauses(text)
    except MarkupError:
        return False  # refused, naming the marker, when its segment is checked


def _shown(title: str) -> str:
    """A chapter's title as players show it: its pause markup left out."""
    try:
        return strip_pauses(title).strip()
    except MarkupError:
        return title
