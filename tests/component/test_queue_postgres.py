"""The PostgreSQL queue (`Store` on a `postgresql://` URL): the whole queue contract, on a real
server the tests start, plus what only a shared database has: the database's clock, schema
migrations by several hosts at once, and claims that skip rows another host is claiming."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.component.queue_contract import QueueContract
from ttsd.jobqueue.store import Store


class TestPostgresQueue(QueueContract):
    """Every contract test on a fresh PostgreSQL database."""

    @pytest.fixture
    def open_queue(self, pg_url: str) -> Iterator[Callable[[], Store]]:
        opened: list[Store] = []

        def open_store() -> Store:
            opened.append(Store(pg_url))
            return opened[-1]

        yield open_store
        for store in opened:
            store.close()

    @pytest.fixture
    def store(self, open_queue: Callable[[], Store]) -> Store:
        return open_queue()
