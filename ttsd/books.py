"""Markdown audiobooks: front matter (the job's settings), then chapters of plain, speakable text.

Every heading starts a chapter. Paragraphs, list items, block quotes and table cells are spoken as
plain text; code, rules and raw HTML blocks are not. Inline ``[pause 2s]`` markup passes through
as written, for ttsd.markup to read later.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

import yaml
from markdown_it import MarkdownIt
from markdown_it.token import Token

MAX_FRONT_MATTER_CHARS: Final = 10_000
MAX_TITLE_CHARS: Final = 200

_FENCE: Final = re.compile(r"---[ \t]*")
# What safe_load may give a setting: str, int, float, bool and null; dates, binary and sets are not job fields.
_SCALAR_TAGS: Final = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null")
)  # fmt: skip
_STR_TAG: Final = "tag:yaml.org,2002:str"
_MAP_TAG: Final = "tag:yaml.org,2002:map"
_SEQ_TAG: Final = "tag:yaml.org,2002:seq"
# Raw HTML is recognised so that its tags can be dropped; without it they would be read aloud.
_MARKDOWN: Final = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
# Blocks whose text is spoken end a paragraph where they close; list items close on their own.
_PARAGRAPH_ENDS: Final = frozenset({"paragraph_close", "th_close", "td_close"})


class BookError(ValueError):
    """A book that cannot be read: `line` (1-based) is where, when one place is to blame."""

    def __init__(self, message: str, line: int | None = None) -> None:
        self.message = message if line is None else f"line {line}: {message}"
        self.line = line
        super().__init__(self.message)


@dataclass(frozen=True)
class Chapter:
    """A heading's plain text and the plain text of each spoken block under it, in order."""

    title: str
    paragraphs: tuple[str, ...]


@dataclass(frozen=True)
class Book:
    """The front matter's settings (the job file's fields) and the chapters, in order."""

    settings: dict[str, Any]
    chapters: tuple[Chapter, ...]


@dataclass
class _Draft:
    title: str
    paragraphs: list[str] = field(default_factory=list)

    def holds_words(self) -> bool:
        return any(_has_words(paragraph) for paragraph in self.paragraphs)


def parse_book(markdown: str) -> Book:
    """Read a Markdown book: its optional front matter, then one chapter per heading.

    Text before the first heading is a chapter titled "" when it holds words. Raises `BookError`
    for front matter that is not `key: value` lines of plain values (one level of nesting
    allowed), and for a book without a word to speak.
    """
    text = markdown.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    settings, body = _split_front_matter(text)
    drafts = _drafts(_MARKDOWN.parse(body))
    if drafts[0].title == "" and not drafts[0].holds_words():
        drafts.pop(0)
    if not any(draft.holds_words() for draft in drafts):
        raise BookError("the book has no text")
    chapters = tuple(Chapter(title=draft.title, paragraphs=tuple(draft.paragraphs)) for draft in drafts)
    return Book(settings=settings, chapters=chapters)


# --- front matter ----------------------------------------------------------------------------------


def _split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """The settings of the front matter (none without one) and the Markdown after it."""
    first, newline, rest = text.partition("\n")
    if not _FENCE.fullmatch(first):
        return {}, text
    if not newline:
        raise BookError("the front matter opened by '---' is not closed by a '---' line", 1)
    closing = _closing_fence(rest)
    source = rest[:closing]
    after_fence = rest.find("\n", closing)
    body = "" if after_fence == -1 else rest[after_fence + 1 :]
    return _settings(source), body


def _closing_fence(rest: str) -> int:
    """Where the `---` line closing the front matter starts in `rest` (the text after the opening one)."""
    start = 0
    while start <= MAX_FRONT_MATTER_CHARS:
        end = rest.find("\n", start)
        line = rest[start:] if end == -1 else rest[start:end]
        if _FENCE.fullmatch(line):
            return start
        if end == -1:
            raise BookError("the front matter opened by '---' is not closed by a '---' line", 1)
        start = end + 1
    raise BookError(f"the front matter is over {MAX_FRONT_MATTER_CHARS:,} characters (or its '---' is missing)", 1)


def _settings(source: str) -> dict[str, Any]:
    """The front matter as a dict, after checking its shape on the YAML nodes (which know their lines)."""
    try:
        root = yaml.compose(source, Loader=yaml.SafeLoader)
        if root is None:
            return {}
        _check_mapping(root, prefix="")
        # _check_mapping has made sure this is a dict of str keys.
        return cast(dict[str, Any], yaml.safe_load(source))
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = None if mark is None else _line(mark)
        raise BookError(f"the front matter is not valid YAML: {error.problem or error}", line) from error
    except yaml.YAMLError as error:
        raise BookError(f"the front matter is not valid YAML: {error}", 2) from error


def _check_mapping(node: yaml.Node, prefix: str) -> None:
    """That `node` is `key: value` lines, each value a plain scalar or, at the top, one such block."""
    if not _is_map(node):
        raise BookError("the front matter must be `key: value` lines", _line(node.start_mark))
    seen: set[str] = set()
    for key, value in node.value:
        name = prefix + _key_name(key, prefix)
        if name in seen:
            raise BookError(f"the key {name!r} appears twice", _line(key.start_mark))
        seen.add(name)
        if _is_map(value) and not prefix:
            _check_mapping(value, prefix=f"{name}.")
        elif not (isinstance(value, yaml.ScalarNode) and value.tag in _SCALAR_TAGS):
            raise BookError(f"the key {name!r} {_refusal(value, nested=bool(prefix))}", _line(key.start_mark))


def _key_name(key: yaml.Node, prefix: str) -> str:
    if isinstance(key, yaml.ScalarNode) and key.tag == _STR_TAG:
        return str(key.value)
    if not isinstance(key, yaml.ScalarNode):
        raise BookError(f"a key must be a name, not a {_tag(key)}", _line(key.start_mark))
    raise BookError(
        f"the key {prefix + str(key.value)!r} is not a name (YAML reads it as {_tag(key)}): quote it",
        _line(key.start_mark),
    )


def _refusal(value: yaml.Node, nested: bool) -> str:
    """Why `value` cannot be a setting, and what would do."""
    if _is_map(value):
        return "holds `key: value` lines nested too deep: only one level of nesting is allowed"
    if isinstance(value, yaml.SequenceNode) and value.tag == _SEQ_TAG:
        block = ", or a block of `key: value` lines" if not nested else ""
        return f"holds a list: expected text, a number, true/false or nothing{block}"
    return f"has a value YAML reads as {_tag(value)}: quote it to make it text"


def _is_map(node: yaml.Node) -> bool:
    """Whether `node` is plain `key: value` lines (a `!!set` or `!!omap` is not)."""
    return isinstance(node, yaml.MappingNode) and node.tag == _MAP_TAG


def _tag(node: yaml.Node) -> str:
    """The YAML type of a node, as a word: bool, timestamp, binary, seq, ..."""
    return str(node.tag).removeprefix("tag:yaml.org,2002:")


def _line(mark: yaml.Mark) -> int:
    """The file's line number of a mark in the front matter, which starts on the file's line 2."""
    return int(mark.line) + 2


# --- the Markdown body -----------------------------------------------------------------------------


def _drafts(tokens: Sequence[Token]) -> list[_Draft]:
    """The chapters of the token stream; the first one (titled "") gathers what precedes any heading."""
    reader = _Reader()
    for token in tokens:
        reader.read(token)
    reader.end_paragraph()
    return reader.drafts


class _Reader:
    """Gathers inline text into paragraphs and paragraphs into chapters, one block token at a time."""

    def __init__(self) -> None:
        self.drafts = [_Draft(title="")]
        self.pending: list[str] = []
        self.in_heading = False
        # A list item is one paragraph however many it holds; a nested item starts a new one.
        self.open_items = 0

    def read(self, token: Token) -> None:
        if token.type == "heading_open":
            self.end_paragraph()
            self.in_heading = True
        elif token.type == "inline" and self.in_heading:
            self.drafts.append(_Draft(title=_title(_plain(token.children or []))))
            self.in_heading = False
        elif token.type == "inline":
            self.pending.append(_plain(token.children or []))
        elif token.type in ("list_item_open", "list_item_close"):
            self.end_paragraph()
            self.open_items += 1 if token.type == "list_item_open" else -1
        elif token.type in _PARAGRAPH_ENDS and not (token.type == "paragraph_close" and self.open_items):
            self.end_paragraph()

    def end_paragraph(self) -> None:
        spoken = _normalize(" ".join(self.pending))
        self.pending.clear()
        if spoken:
            self.drafts[-1].paragraphs.append(spoken)


def _plain(children: Sequence[Token]) -> str:
    """The speakable text of inline tokens: markup dropped, link text kept, images as their alt text."""
    parts: list[str] = []
    for child in children:
        if child.type in ("text", "text_special", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif child.type == "image":
            parts.append(_plain(child.children or []))
    return "".join(parts)


def _title(text: str) -> str:
    title = _normalize(text)
    return title if len(title) <= MAX_TITLE_CHARS else title[: MAX_TITLE_CHARS - 1].rstrip() + "…"


def _normalize(text: str) -> str:
    return " ".join(text.split())


def _has_words(text: str) -> bool:
    return any(char.isalnum() for char in text)
