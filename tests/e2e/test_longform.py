"""Long-form speech through a real daemon on the tiny checkpoint: chunking, joining, resume after a
crash, seeds, formats and sample rates."""

from __future__ import annotations

import hashlib
import re
import sqlite3

import numpy as np
import pytest
import soundfile as sf

from tests.support.daemon_harness import DaemonEnv
from ttsd.synth.chunking import split_text

# In never-ending mode (TTS_TINY_EOS=false) every chunk runs to max_new_tokens - 1 frames.
TINY_CHUNK_S = 23 * 1920 / 24_000

PARAGRAPH = (
    "Mr. Smith went to Washington on a rainy Tuesday. He carried 3.14 kilograms of paper, e.g. letters, "
    "maps and notes; nobody asked why. The train was late, the coffee was cold, and the conductor, a "
    "patient woman from Lyon, explained the delay twice. "
)


def long_text(chars: int) -> str:
    paragraphs: list[str] = []
    while sum(len(p) for p in paragraphs) < chars:
        paragraphs.append(PARAGRAPH * 3)
    return "\n\n".join(paragraphs)[:chars].rsplit(" ", 1)[0] + "."


def synthesized_chunks(log: str, name: str) -> list[int]:
    """The chunk indices of `name` a daemon's log says it spoke."""
    return [int(index) for index in re.findall(rf"\b{re.escape(name)}#(\d+)", log)]


@pytest.mark.slow
def test_long_text_is_chunked_joined_and_resumed_after_a_crash(daemon_env: DaemonEnv) -> None:
    text = long_text(5_000)
    chunks = split_text(text, 600)
    assert 9 <= len(chunks) <= 16

    crashing = daemon_env.start(
        TTS_FAULT="chunk_done:chapter#4", TTS_FAULT_SCOPE="daemon", TTS_ENABLE_CACHE="false", TTS_TINY_EOS="false"
    )
    crashing.wait_ready()
    # Seeded, so every take is repeatable.
    daemon_env.drop_json("chapter.json", {"text": text, "speaker": "Ryan", "seed": 11})
    assert crashing.wait_exit(180) == -9
    with sqlite3.connect(daemon_env.state / "ttsd.sqlite3") as db:
        done_before = {row[0] for row in db.execute('SELECT "index" FROM chunk WHERE done')}
    assert 4 in done_before and len(done_before) < len(chunks)
    progress = daemon_env.status("chapter")
    assert progress is not None and progress["progress"]["chunks_total"] == len(chunks)

    restarted = daemon_env.start(TTS_ENABLE_CACHE="false", TTS_TINY_EOS="false")
    restarted.wait_ready()
    document = daemon_env.wait_state("chapter", ("done", "failed"), timeout=180)
    assert document["state"] == "done", document
    assert restarted.terminate() == 0

    spoken_again = synthesized_chunks(restarted.log(), "chapter")
    assert sorted(spoken_again) == sorted(set(range(len(chunks))) - done_before), "finished chunks were redone"
    audio, rate = sf.read(daemon_env.outbox / "chapter.wav", dtype="float32")
    expected_s = len(chunks) * TINY_CHUNK_S + sum(chunk.pause_after_ms for chunk in chunks) / 1000
    assert rate == 24_000
    assert abs(len(audio) / rate - expected_s) < 0.01
    assert document["progress"] == {
        "chunks_done": len(chunks),
        "chunks_total": len(chunks),
        "audio_s": document["audio"]["duration_s"],
        "eta_s": None,
    }
    assert document["attempts"] == 1, "a kill of the whole daemon costs the job no attempt"
    assert not list((daemon_env.state / "chunks").iterdir()), "chunk files outlived their job"


def test_seeds_formats_sample_rates_and_normalising(daemon_env: DaemonEnv) -> None:
    daemon = daemon_env.start()
    daemon.wait_ready()
    same = {"text": "Exactly the same take, twice.", "speaker": "Ryan", "seed": 42, "cache": False}
    daemon_env.drop_json("seed-a.json", {**same, "output": "seed-a"})
    daemon_env.drop_json("seed-b.json", {**same, "output": "seed-b"})
    formats = {
        "as-flac": {"format": "flac", "sample_rate": 16_000},
        "as-ogg": {"format": "ogg", "sample_rate": 48_000},
        "as-mp3": {"format": "mp3", "sample_rate": 44_100},
        "loud": {"format": "wav", "normalize": True},
    }
    for name, fields in formats.items():
        daemon_env.drop_json(f"{name}.json", {"text": f"Format {name}.", "speaker": "Ryan", **fields})

    first = daemon_env.wait_state("seed-a", ("done",))
    second = daemon_env.wait_state("seed-b", ("done",))
    assert first["seed"] == second["seed"] == 42
    assert first["audio"]["sha256"] == second["audio"]["sha256"], "same seed, same input: same audio"

    for name, fields in formats.items():
        document = daemon_env.wait_state(name, ("done",))
        path = daemon_env.outbox / document["audio"]["file"]
        info = sf.info(path)
        audio, rate = sf.read(path, dtype="float32")
        assert path.suffix == f".{fields['format']}"
        assert rate == document["audio"]["sample_rate"] == fields.get("sample_rate", 24_000)
        assert document["audio"]["bytes"] == path.stat().st_size
        assert document["audio"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert abs(info.duration - document["audio"]["duration_s"]) < 0.1
        if fields.get("normalize"):
            assert abs(float(np.abs(audio).max()) - 0.891) < 0.01
    assert daemon.terminate() == 0
