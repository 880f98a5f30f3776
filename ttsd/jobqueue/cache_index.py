"""The audio cache's index: one row per cached take (size, last use, for LRU eviction) and the
lifetime hit and miss counters. The waveform files themselves live with `ttsd.synth.audio_cache`."""

from __future__ import annotations

from sqlalchemy import delete, func
from sqlmodel import Session, col, select

from ttsd.jobqueue.database import Database
from ttsd.jobqueue.records import CacheStats
from ttsd.jobqueue.tables import CacheEntry, Counter, utcnow

HITS = "cache_hits"
MISSES = "cache_misses"


def _bump(session: Session, name: str) -> None:
    counter = session.get(Counter, name) or Counter(name=name)
    counter.value += 1
    session.add(counter)


def _count(session: Session, name: str) -> int:
    counter = session.get(Counter, name)
    return counter.value if counter else 0


class CacheIndex(Database):
    """Which takes are cached, and how often the cache answered."""

    def cache_lookup(self, key: str) -> bool:
        """Whether `key` is cached; counts a hit (and marks the entry used) or a miss."""
        with self._write() as session:
            entry = session.get(CacheEntry, key)
            if entry is None:
                _bump(session, MISSES)
                return False
            entry.hits += 1
            entry.last_used_at = utcnow()
            session.add(entry)
            _bump(session, HITS)
            return True

    def cache_record(self, key: str, size: int) -> None:
        """Index a cached file (replacing an older entry of the same key)."""
        with self._write() as session:
            entry = session.get(CacheEntry, key) or CacheEntry(key=key, bytes=size)
            entry.bytes = size
            entry.last_used_at = utcnow()
            session.add(entry)

    def cache_forget(self, key: str, count_miss: bool = False) -> None:
        """Drop an entry whose file is unusable; its lookup becomes a miss instead of a hit."""
        with self._write() as session:
            entry = session.get(CacheEntry, key)
            if entry is not None:
                session.delete(entry)
            if count_miss:
                hits = session.get(Counter, HITS)
                if hits is not None and hits.value > 0:
                    hits.value -= 1
                    session.add(hits)
                _bump(session, MISSES)

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
            for key in victims:
                entry = session.get(CacheEntry, key)
                if entry is not None:
                    session.delete(entry)
            return victims

    def cache_stats(self) -> CacheStats:
        """Entries, bytes and the lifetime hit and miss counts."""
        with self._read() as session:
            entries, size = session.exec(
                select(func.count(), func.coalesce(func.sum(CacheEntry.bytes), 0)).select_from(CacheEntry)
            ).one()
            return CacheStats(
                entries=int(entries), bytes=int(size), hits=_count(session, HITS), misses=_count(session, MISSES)
            )

    def cache_clear(self) -> list[str]:
        """Forget every entry and reset the counters; returns the keys that were cached."""
        with self._write() as session:
            keys = list(session.exec(select(CacheEntry.key)))
            session.execute(delete(CacheEntry))
            session.execute(delete(Counter))
            return keys
