"""The audio cache's index: one row per cached take (size, last use, for LRU eviction) and the
lifetime hit and miss counters. The waveform files themselves live with `ttsd.synth.audio_cache`.

Every change is one statement that reads and writes at once (an UPDATE of the row itself, an
upsert), so hosts sharing the index never lose a count or collide on a key."""

from __future__ import annotations

from sqlalchemy import delete, func, update
from sqlmodel import Session, col, select

from ttsd.jobqueue.database import Database, transient
from ttsd.jobqueue.records import CacheStats
from ttsd.jobqueue.tables import CacheEntry, Counter

HITS = "cache_hits"
MISSES = "cache_misses"


def _count(session: Session, name: str) -> int:
    counter = session.get(Counter, name)
    return counter.value if counter else 0


class CacheIndex(Database):
    """Which takes are cached, and how often the cache answered."""

    def _bump(self, session: Session, name: str, by: int = 1) -> None:
        insert = self._insert()
        session.execute(
            insert(Counter)
            .values(name=name, value=max(by, 0))
            .on_conflict_do_update(index_elements=["name"], set_={"value": col(Counter.value) + by})
        )

    @transient
    def cache_lookup(self, key: str) -> bool:
        """Whether `key` is cached; counts a hit (and marks the entry used) or a miss."""
        with self._write() as session:
            used = session.execute(
                update(CacheEntry)
                .where(col(CacheEntry.key) == key)
                .values(hits=col(CacheEntry.hits) + 1, last_used_at=self._now(session))
            )
            hit = bool(used.rowcount)  # type: ignore[attr-defined]
            self._bump(session, HITS if hit else MISSES)
            return hit

    @transient
    def cache_record(self, key: str, size: int) -> None:
        """Index a cached file (replacing an older entry of the same key)."""
        with self._write() as session:
            now = self._now(session)
            session.execute(
                self._insert()(CacheEntry)
                .values(key=key, bytes=size, created_at=now, last_used_at=now, hits=0)
                .on_conflict_do_update(index_elements=["key"], set_={"bytes": size, "last_used_at": now})
            )

    @transient
    def cache_forget(self, key: str, count_miss: bool = False) -> None:
        """Drop an entry whose file is unusable; its lookup becomes a miss instead of a hit."""
        with self._write() as session:
            session.execute(delete(CacheEntry).where(col(CacheEntry.key) == key))
            if count_miss:
                session.execute(
                    update(Counter)
                    .where(col(Counter.name) == HITS, col(Counter.value) > 0)
                    .values(value=col(Counter.value) - 1)
                )
                self._bump(session, MISSES)

    @transient
    def cache_evict(self, max_entries: int, max_bytes: int) -> list[str]:
        """Remove least recently used entries until both limits hold; returns their keys."""
        with self._write() as session:
            rows = session.exec(
                select(CacheEntry.key, CacheEntry.bytes).order_by(col(CacheEntry.last_used_at).desc())
            ).all()
            kept = total = 0
            victims = []
            for key, size in rows:
                if kept < max_entries and total + size <= max_bytes:
                    kept += 1
                    total += size
                else:
                    victims.append(key)
            for start in range(0, len(victims), 500):
                session.execute(delete(CacheEntry).where(col(CacheEntry.key).in_(victims[start : start + 500])))
            return victims

    @transient
    def cache_stats(self) -> CacheStats:
        """Entries, bytes and the lifetime hit and miss counts."""
        with self._read() as session:
            entries, size = session.exec(
                select(func.count(), func.coalesce(func.sum(CacheEntry.bytes), 0)).select_from(CacheEntry)
            ).one()
            return CacheStats(
                entries=int(entries), bytes=int(size), hits=_count(session, HITS), misses=_count(session, MISSES)
            )

    @transient
    def cache_clear(self) -> list[str]:
        """Forget every entry and reset the counters; returns the keys that were cached."""
        with self._write() as session:
            keys = list(session.exec(select(CacheEntry.key)))
            session.execute(delete(CacheEntry))
            session.execute(delete(Counter))
            return keys
