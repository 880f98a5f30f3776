"""The audio cache: its key, its files, its limits, and a worker that answers hits without a model."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.fakes import DEFAULTS, FAKE_MODEL, REGISTRY, FakeEngine, fake_wave, make_spec, scratch_dir
from ttsd.catalog import ModelEntry
from ttsd.config import Settings
from ttsd.delivery.outbox import Outbox
from ttsd.delivery.publish import StatusPublisher
from ttsd.intake.jobfile import parse_job_file
from ttsd.jobqueue.store import Store
from ttsd.synth.audio_cache import AudioCache, cache_key
from ttsd.synth.chunk_files import ChunkFiles
from ttsd.synth.context import WorkContext
from ttsd.synth.engine.base import Engine
from ttsd.synth.engine.pool import EnginePool
from ttsd.synth.worker import Worker


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with scratch_dir(tmp_path) as root:
        opened = Store(root / "q.sqlite3")
        yield opened
        opened.close()


def key_of_file(content: str) -> str:
    [entry] = parse_job_file("job.json", content.encode(), DEFAULTS)
    assert entry.spec is not None, entry.rejection
    return cache_key(entry.spec, entry.spec.text, "rev1", None)


def test_key_ignores_key_order_whitespace_and_delivery_options() -> None:
    base = key_of_file('{"text": "Hello there.", "speaker": "Ryan", "language": "English"}')
    assert base == key_of_file('{\n  "language": "english",\n "speaker":"ryan",  "text":"Hello  there. "\n}')
    # Delivery options shape the file, not the take: one entry serves them all.
    for delivery in ('"format": "flac"', '"normalize": true', '"priority": 9', '"output": "x"', '"id": "r1"'):
        assert key_of_file(f'{{"text": "Hello there.", "speaker": "Ryan", "language": "English", {delivery}}}') == base


VARIATIONS: dict[str, Any] = {
    "text": "Another text.",
    "speaker": "Vivian",
    "language": "German",
    "instruct": "Whisper.",
    "seed": 7,
    "sample_rate": 16_000,
    "generation": {"temperature": 0.5},
    "model": "fake-b",
}


@given(field=st.sampled_from(sorted(VARIATIONS)), revision=st.sampled_from(["rev1", "rev2"]))
@settings(max_examples=40, deadline=None)
def test_key_changes_with_every_field_that_changes_the_audio(field: str, revision: str) -> None:
    base_fields: dict[str, Any] = {"text": "Hello there.", "speaker": "Ryan", "language": "English"}
    base = make_spec(**base_fields, name="n")
    changed = make_spec(**{**base_fields, field: VARIATIONS[field]}, name="n")
    assert cache_key(base, base.text, "rev1", None) != cache_key(changed, changed.text, "rev1", None)
    assert (cache_key(base, base.text, revision, None) == cache_key(base, base.text, "rev1", None)) == (
        revision == "rev1"
    )
    assert cache_key(base, base.text, "rev1", "aa") != cache_key(base, base.text, "rev1", "bb")


def test_put_get_and_stats(tmp_path: Path, store: Store) -> None:
    cache = AudioCache(tmp_path / "cache", store, max_entries=10, max_bytes=10**9)
    audio = fake_wave("stored")
    assert cache.get("k1") is None
    cache.put("k1", audio)
    got = cache.get("k1")
    assert got is not None and np.array_equal(got, audio)
    stats = cache.stats()
    assert (stats.entries, stats.hits, stats.misses, stats.hit_rate) == (1, 1, 1, 0.5)
    assert stats.bytes == (tmp_path / "cache" / "k1"[:2] / "k1.npy").stat().st_size
    assert cache.clear() == 1
    assert cache.stats().entries == 0 and cache.get("k1") is None


@pytest.mark.parametrize("damage", ["truncate", "delete", "garbage", "nan"])
def test_damaged_entries_are_misses_and_forgotten(tmp_path: Path, store: Store, damage: str) -> None:
    cache = AudioCache(tmp_path / "cache", store, max_entries=10, max_bytes=10**9)
    cache.put("key", fake_wave("x" * 50))
    path = tmp_path / "cache" / "ke" / "key.npy"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "delete":
        path.unlink()
    elif damage == "garbage":
        path.write_bytes(b"not an array at all")
    else:
        np.save(path, np.full(10, np.nan, dtype=np.float32))
    assert cache.get("key") is None
    assert not path.exists()
    stats = cache.stats()
    assert (stats.entries, stats.hits, stats.misses) == (0, 0, 1)


def test_eviction_is_lru_within_entries_and_bytes(tmp_path: Path, store: Store) -> None:
    one = fake_wave("a" * 100)
    size = len(one) * 4 + 128  # .npy header
    cache = AudioCache(tmp_path / "cache", store, max_entries=3, max_bytes=10**9)
    for key in ("k1", "k2", "k3"):
        cache.put(key, one)
    assert cache.get("k1") is not None  # k1 is now the most recently used
    cache.put("k4", one)
    assert cache.get("k2") is None and cache.get("k1") is not None
    assert cache.stats().entries == 3

    small = AudioCache(tmp_path / "small", store, max_entries=100, max_bytes=2 * size + 10)
    small.clear()
    for key in ("b1", "b2", "b3"):
        small.put(key, one)
    stats = small.stats()
    assert stats.entries == 2 and stats.bytes <= 2 * size + 10
    assert small.get("b1") is None and small.get("b3") is not None
    assert len(list((tmp_path / "small").rglob("*.npy"))) == 2


def test_a_hit_is_delivered_without_loading_the_model(tmp_path: Path) -> None:
    with scratch_dir(tmp_path) as root:
        config = Settings(inbox=root / "in", outbox=root / "out", state_dir=root / "state", max_batch=4)
        store = Store(config.db_path)
        loads: list[str] = []
        engine = FakeEngine()

        def load(entry: ModelEntry) -> Engine:
            loads.append(entry.name)
            return engine

        outbox = Outbox(config.outbox)

        def worker() -> Worker:
            context = WorkContext(
                settings=config,
                store=store,
                outbox=outbox,
                publisher=StatusPublisher(store, outbox),
                engines=EnginePool(REGISTRY, load, idle_s=600),
                voices_dir=config.inbox / "voices",
                chunks=ChunkFiles(config.state_dir / "chunks"),
                cache=AudioCache(config.cache_dir, store, 100, 10**9),
                revision=lambda model: "rev1" if model == FAKE_MODEL else None,
            )
            return Worker(FAKE_MODEL, context, threading.Event())

        first = store.enqueue(make_spec("Speak once.", name="first", format="wav")).job
        assert worker().work_once()
        assert loads == [FAKE_MODEL]

        again = store.enqueue(make_spec("Speak once.", name="again", format="flac", normalize=True)).job
        assert worker().work_once()
        assert loads == [FAKE_MODEL], "a cache hit must not load the model"
        done = store.get(again.id)
        assert done.state == "done" and done.cache_hit and done.device is None
        status = json.loads((config.outbox / "again.status.json").read_text())
        assert status["cache_hit"] is True and status["audio"]["format"] == "flac"
        assert store.get(first.id).cache_hit is False

        fresh = store.enqueue(make_spec("Speak once.", name="fresh", cache=False)).job
        assert worker().work_once()
        assert loads == [FAKE_MODEL, FAKE_MODEL] and store.get(fresh.id).cache_hit is False
        assert store.cache_stats().hits == 1
        store.close()


def test_takes_rendered_before_a_lease_was_lost_are_still_cached(tmp_path: Path) -> None:
    with scratch_dir(tmp_path) as root:
        config = Settings(inbox=root / "in", outbox=root / "out", state_dir=root / "state", max_batch=4)
        store = Store(config.db_path)
        text = "The first sentence is here. The second one follows. And the third one ends it."
        job = store.enqueue(make_spec(text, name="cancelled", chunking={"max_chars": 30})).job

        # The job is cancelled while its chunks are being spoken: the worker loses its lease.
        def cancel(_requests: object) -> None:
            store.cancel(job.id)

        engine = FakeEngine(on_synthesize=cancel)
        context = WorkContext(
            settings=config,
            store=store,
            outbox=Outbox(config.outbox),
            publisher=StatusPublisher(store, Outbox(config.outbox)),
            engines=EnginePool(REGISTRY, lambda _entry: engine, idle_s=600),
            voices_dir=config.inbox / "voices",
            chunks=ChunkFiles(config.state_dir / "chunks"),
            cache=AudioCache(config.cache_dir, store, 100, 10**9),
            revision=lambda model: "rev1",
        )
        assert Worker(FAKE_MODEL, context, threading.Event()).work_once()
        assert engine.calls == [3], "the three chunks share one generate call"
        assert store.get(job.id).state == "cancelled"
        assert store.cache_stats().entries == 3, "every take the engine made is kept for a retry"
        store.close()
