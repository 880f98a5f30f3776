"""Handles on a queue for the contract suites: each backend's test module opens its queue through
this, as another process would, and every handle still open is closed when the test ends."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from ttsd.jobqueue.store import Store


def store_opener(target: Path | str) -> Iterator[Callable[[], Store]]:
    """For a fixture to `yield from`: a function opening another `Store` on `target` (a SQLite file
    or a PostgreSQL URL); the handles it opened are closed once the test is done."""
    opened: list[Store] = []

    def open_store() -> Store:
        opened.append(Store(target))
        return opened[-1]

    yield open_store
    for store in opened:
        store.close()
