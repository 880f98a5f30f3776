"""A queue lost or damaged while the daemon was stopped is rebuilt from the job files in
inbox/accepted/ and the status files and audio in the outbox; finished work is not redone."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.fakes import scratch_dir, write_audio
from ttsd.config import Settings
from ttsd.delivery.outbox import Outbox
from ttsd.intake.folders import original_name
from ttsd.intake.jobfile import job_defaults, parse_object
from ttsd.jobqueue.protocols import Queue
from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.store import Store
from ttsd.ops.queue_rebuild import open_queue
from ttsd.synth.audio_cache import AudioCache

AUDIO = np.linspace(-0.5, 0.5, 2400, dtype=np.float32)


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    with scratch_dir(tmp_path) as root:
        yield Settings(inbox=root / "inbox", outbox=root / "outbox", state_dir=root / "state", default_model="tiny")


def accept(settings: Settings, file_name: str, job: dict[str, Any], age_s: int) -> None:
    path = settings.inbox / "accepted" / file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(job), encoding="utf-8")
    os.utime(path, (1_700_000_000 + age_s, 1_700_000_000 + age_s))


def status(settings: Settings, name: str, document: dict[str, Any]) -> None:
    Outbox(settings.outbox).write_status(name, {"name": name, "finished_at": "2026-11-29T10:00:00.000000Z", **document})


def lost_queue(settings: Settings) -> dict[str, str]:
    """Yesterday's work on disk, as a daemon left it: returns the delivered audio's sha256 by name."""
    outbox = Outbox(settings.outbox)
    delivered = write_audio(outbox, "greeting", "wav", AUDIO, 24_000)
    accept(settings, "greeting.json", {"text": "Hello again."}, age_s=10)
    accept(settings, "greeting.20261128T090000000000.json", {"text": "An older take, long replaced."}, age_s=1)
    status(settings, "greeting", {"job_id": "aaaa00000001", "state": "done", "seed": None, "device": "cpu",
                                  "audio": vars(delivered), "timing": {"synth_s": 0.4}})  # fmt: skip
    accept(settings, "waiting.json", {"text": "Still to be spoken."}, age_s=20)
    status(settings, "waiting", {"job_id": "aaaa00000002", "state": "queued"})
    accept(settings, "broken.json", {"text": "It failed."}, age_s=30)
    status(settings, "broken", {"job_id": "aaaa00000003", "state": "failed",
                                "error": {"code": "engine_permanent", "message": "unknown speaker"}})  # fmt: skip
    accept(settings, "lost-audio.json", {"text": "Its audio is gone."}, age_s=40)
    status(
        settings,
        "lost-audio",
        {"job_id": "aaaa00000004", "state": "done", "audio": {**vars(delivered), "file": "lost-audio.wav"}},
    )
    accept(settings, "never-published.txt", {"text": "no status"}, age_s=50)
    cache = AudioCache(settings.cache_dir, Store(settings.state_dir / "scratch.sqlite3"), 100, 10**9)
    cache.put("f" * 64, AUDIO)
    return {"greeting": delivered.sha256}


def rows(store: Queue) -> dict[str, tuple[str, JobState]]:
    return {job.name: (job.id, job.state) for job in store.jobs(limit=None)}


@pytest.mark.parametrize("loss", ["deleted", "emptied", "garbage", "truncated"])
def test_a_lost_or_damaged_queue_is_rebuilt_from_disk(settings: Settings, loss: str) -> None:
    digests = lost_queue(settings)
    before = Store(settings.db_path)
    before.close()
    data = settings.db_path.read_bytes()
    if loss == "deleted":
        settings.db_path.unlink()
    else:
        settings.db_path.write_bytes(
            {"emptied": b"", "garbage": b"\x07not sqlite" * 500, "truncated": data[:1000]}[loss]
        )
    store = open_queue(settings, Outbox(settings.outbox))
    try:
        found = rows(store)
        assert found["greeting"] == ("aaaa00000001", JobState.DONE), "finished work is not redone"
        assert store.get("greeting").audio_sha256 == digests["greeting"]
        assert found["waiting"] == ("aaaa00000002", JobState.QUEUED)
        assert found["broken"] == ("aaaa00000003", JobState.FAILED)
        assert store.get("broken").error_message == "unknown speaker"
        assert found["lost-audio"] == ("aaaa00000004", JobState.QUEUED), "done, but its audio is gone: speak again"
        assert found["never-published"][1] == JobState.QUEUED
        assert len(found) == 5, "an older version of a name is superseded by the newest"
        assert store.cache_stats().entries == 1, "the cache index is rebuilt from the takes on disk"
    finally:
        store.close()
    aside = [
        path for path in settings.state_dir.glob("ttsd.sqlite3.damaged-*") if not path.name.endswith(("-wal", "-shm"))
    ]
    assert len(aside) == (1 if loss in ("garbage", "truncated") else 0)


def test_a_queue_with_jobs_or_without_evidence_is_left_as_it_is(settings: Settings) -> None:
    fresh = open_queue(settings, Outbox(settings.outbox))
    try:
        assert fresh.jobs(limit=None) == [], "a new install has nothing to rebuild"
        lost_queue(settings)
        fresh.enqueue(parse_object({"text": "Today's job."}, "today", job_defaults(settings)))
    finally:
        fresh.close()
    reopened = open_queue(settings, Outbox(settings.outbox))
    try:
        assert [job.name for job in reopened.jobs(limit=None)] == ["today"]
    finally:
        reopened.close()


def test_original_names_of_stamped_files() -> None:
    assert original_name("hello.20261129T101010123456.json") == "hello.json"
    assert original_name("hello.json") == "hello.json"
    assert original_name("a.b.20261129T101010123456.txt") == "a.b.txt"
    assert original_name("2026.20261129T1010.json") == "2026.20261129T1010.json"
