"""Checks shared by the end-to-end tests: real audio files, and a queue left sound by recovery."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import numpy as np
import soundfile as sf

from tests.support.daemon_harness import DaemonEnv


def assert_real_wav(path: Path, sample_rate: int = 24_000) -> np.ndarray:
    """The file is a complete WAV of finite, non-silent float audio at the given rate."""
    audio, rate = sf.read(path, dtype="float32")
    assert rate == sample_rate
    assert audio.ndim == 1 and len(audio) > 0
    assert np.isfinite(audio).all()
    assert float(np.abs(audio).max()) > 0
    return np.asarray(audio)


def assert_queue_sound(env: DaemonEnv) -> None:
    """After recovery: database intact, nothing left running, every done job's audio matches its sha256."""
    with sqlite3.connect(env.state / "ttsd.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT count(*) FROM job WHERE state = 'running'").fetchone()[0] == 0
        for name, audio_file, digest in db.execute(
            "SELECT name, audio_file, audio_sha256 FROM job WHERE state = 'done'"
        ):
            data = (env.outbox / audio_file).read_bytes()
            assert hashlib.sha256(data).hexdigest() == digest, name
    assert not list(env.outbox.glob(".ttsd-*.tmp")), "temp files survived recovery"
