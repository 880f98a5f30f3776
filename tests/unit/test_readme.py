"""The README documents every setting and every command (sqlite-utils' docs-coverage pattern): adding
a setting or a command without a line in the README's tables fails here."""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import click

from ttsd.cli import main
from ttsd.config import ENV_PREFIX, Settings

README = Path(__file__).resolve().parents[2] / "README.md"
ENV_NAME = re.compile(rf"\b{ENV_PREFIX}[A-Z0-9_]+\b")
CODE_SPAN = re.compile(r"`([^`]+)`")
# A command word in `ttsd cache stats\|clear`; arguments (JOB, TEXT\|-) and options end the command.
COMMAND_WORD = re.compile(r"[a-z][a-z0-9-]*")


@cache
def readme() -> str:
    return README.read_text(encoding="utf-8")


def section(title: str) -> str:
    """The text of the README section headed `## title`, up to the next `## ` heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", readme(), flags=re.MULTILINE | re.DOTALL)
    assert match is not None, f"README.md has no '## {title}' section"
    return match.group(1)


def first_cells(text: str) -> Iterator[str]:
    """The first cell of each row of the tables in `text` (header and rule rows included)."""
    for line in text.splitlines():
        if line.startswith("|"):
            # An escaped pipe (`stats\|clear`) belongs to the cell.
            yield re.split(r"(?<!\\)\|", line)[1]


def commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every visible command and subcommand under `group`, as word paths: ("cache",), ("cache", "clear")."""
    for name, command in sorted(group.commands.items()):
        if command.hidden:
            continue
        yield (*path, name)
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))


def table_commands(cell: str) -> Iterator[tuple[str, ...]]:
    """The command paths a CLI table cell names: `ttsd launchd install\\|uninstall\\|status [--dry-run]`
    names ("launchd",), ("launchd", "install"), ("launchd", "uninstall") and ("launchd", "status")."""
    for span in CODE_SPAN.findall(cell):
        words = span.split()
        if not words or words[0] != "ttsd":
            continue
        paths: list[tuple[str, ...]] = [()]
        for word in words[1:]:
            choices = word.replace("\\|", "|").split("|")
            if not all(COMMAND_WORD.fullmatch(choice) for choice in choices):
                break
            paths = [(*path, choice) for path in paths for choice in choices]
            yield from paths


def test_every_setting_is_in_the_settings_table() -> None:
    documented = {name for cell in first_cells(section("Settings")) for name in ENV_NAME.findall(cell)}
    expected = {ENV_PREFIX + field.upper() for field in Settings.model_fields}
    missing = sorted(expected - documented)
    assert not missing, f"settings missing from the README's settings table: {', '.join(missing)}"
    stale = sorted(documented - expected)
    assert not stale, f"the README's settings table names settings that do not exist: {', '.join(stale)}"


def test_every_command_is_in_the_readme() -> None:
    in_table = {path for cell in first_cells(section("The CLI")) for path in table_commands(cell)}
    text = readme()
    missing = [
        "ttsd " + " ".join(path)
        for path in commands(main)
        if path not in in_table and f"ttsd {' '.join(path)}" not in text
    ]
    assert not missing, f"commands missing from the README (its CLI table): {', '.join(missing)}"


def test_table_cells_name_commands_with_their_alternatives() -> None:
    cell = " `ttsd launchd install\\|uninstall\\|status [--dry-run]` · `ttsd retry JOB\\|--all-failed` "
    assert sorted(table_commands(cell)) == [
        ("launchd",),
        ("launchd", "install"),
        ("launchd", "status"),
        ("launchd", "uninstall"),
        ("retry",),
    ]
