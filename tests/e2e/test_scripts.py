"""Scripts through a real daemon on the tiny models: a three-voice dialogue with pauses and
subtitles, a Markdown book delivered as an M4B with chapters (and one file per chapter), hostile
markup refused, and the saved voice library used across a restart.

Times are checked against the audio itself: the tiny models speak noise, never digital silence, so
the silence between two cues is exactly the pause that was asked for, and a cue boundary more than
10 ms away from a chunk join would show as noise inside a gap or silence inside a cue."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import srt
import webvtt
from openai import OpenAI

from tests.support.daemon_harness import DaemonEnv
from tests.support.http import start_http_daemon
from ttsd.encoding import decode_file, read_chapters

TOLERANCE_S = 0.010


def _assert_gap(audio: np.ndarray, rate: int, end_s: float, start_s: float, pause_ms: int) -> None:
    """Between a cue's end and the next one's start: the planned pause, silent, within 10 ms."""
    assert abs((start_s - end_s) - pause_ms / 1000) <= TOLERANCE_S, (end_s, start_s, pause_ms)
    inner = audio[round((end_s + TOLERANCE_S) * rate) : round((start_s - TOLERANCE_S) * rate)]
    assert not np.any(inner), f"sound inside the pause {end_s}..{start_s}"
    assert np.any(audio[round((end_s - TOLERANCE_S) * rate) : round(end_s * rate)]), f"silence before {end_s}"
    assert np.any(audio[round(start_s * rate) : round((start_s + TOLERANCE_S) * rate)]), f"silence after {start_s}"


DIALOGUE: dict[str, Any] = {
    "model": "tiny",
    "language": "English",
    "seed": 7,
    "subtitles": "srt",
    "segments": [
        {"text": "Good evening. Who is there?", "speaker": "Vivian", "pause_ms": 600},
        {"text": "Only me. [pause 1.2s] The narrator.", "speaker": "Ryan"},
        {"text": "Then tell us a story.", "speaker": "Serena", "pause_ms": 400},
    ],
}
# The planned silences after each sentence (cue) of DIALOGUE, in order.
DIALOGUE_PAUSES = (350, 600, 1_200, 700)

BOOK = """---
model: tiny
speaker: Ryan
chapter_files: true
---
# Arrival

The train came in late. Nobody waited on the platform.

# The House

It stood at the end of the lane.

# Departure

They left at dawn.
"""


def test_dialogue_subtitles_book_and_hostile_markup(daemon_env: DaemonEnv) -> None:
    daemon = daemon_env.start()
    daemon.wait_ready()
    daemon_env.drop_json("dialogue.json", DIALOGUE)
    daemon_env.drop_json("captions.json", {**DIALOGUE, "subtitles": "vtt", "format": "flac"})
    daemon_env.drop("novel.md", BOOK)
    hostile: dict[str, dict[str, Any]] = {
        "huge-pause": {"text": "Wait [pause 99999s] now."},
        "nested": {"text": "A [pause [pause 1s]] B."},
        "unknown-voice": {"text": "Hello.", "voice": "nobody"},
        "unknown-segment-voice": {"segments": [{"text": "Hi.", "voice": "nobody", "pause_ms": 10}]},
    }
    for name, job in hostile.items():
        daemon_env.drop_json(f"{name}.json", job)

    document = daemon_env.wait_state("dialogue", ("done", "failed"), timeout=120)
    assert document["state"] == "done", document
    audio, rate = sf.read(daemon_env.outbox / "dialogue.wav", dtype="float32")
    cues = list(srt.parse((daemon_env.outbox / "dialogue.srt").read_text(encoding="utf-8")))
    assert [c.content for c in cues] == ["Good evening.", "Who is there?", "Only me.", "The narrator.",
                                         "Then tell us a story."]  # fmt: skip
    times = [(c.start.total_seconds(), c.end.total_seconds()) for c in cues]
    for (_, end), (start, _), pause in zip(times[:-1], times[1:], DIALOGUE_PAUSES, strict=True):
        _assert_gap(audio, rate, end, start, pause)
    assert document["subtitles"] == {"format": "srt", "file": "dialogue.srt", "cues": 5}
    segments = document["segments"]
    assert [s["speaker"] for s in segments] == ["Vivian", "Ryan", "Serena"]
    # A segment runs from its first cue's start to its last cue's end.
    assert [(s["start_s"], s["end_s"]) for s in segments] == [
        (times[0][0], times[1][1]),
        (times[2][0], times[3][1]),
        (times[4][0], times[4][1]),
    ]
    assert abs(times[-1][1] - document["audio"]["duration_s"]) <= TOLERANCE_S + 0.4  # the last pause: 400 ms

    # The same script again (its takes now come from the cache) with WebVTT captions: same cues.
    assert daemon_env.wait_state("captions", ("done", "failed"), timeout=120)["state"] == "done"
    vtt = webvtt.read(str(daemon_env.outbox / "captions.vtt")).captions
    assert [c.text for c in vtt] == [c.content for c in cues]
    assert [(_vtt_seconds(c.start), _vtt_seconds(c.end)) for c in vtt] == times

    book = daemon_env.wait_state("novel", ("done", "failed"), timeout=180)
    assert book["state"] == "done", book
    m4b = daemon_env.outbox / "novel.m4b"
    marks = read_chapters(m4b)
    assert [m.title for m in marks] == ["Arrival", "The House", "Departure"]
    chapters = book["chapters"]
    for mark, chapter in zip(marks, chapters, strict=True):
        assert abs(mark.start_s - chapter["start_s"]) <= TOLERANCE_S
        assert abs(mark.end_s - chapter["end_s"]) <= TOLERANCE_S
    assert [c["file"] for c in chapters] == ["novel.ch01.m4b", "novel.ch02.m4b", "novel.ch03.m4b"]
    assert all(c["chunks_done"] == c["chunks_total"] > 0 for c in chapters)
    _assert_chapters_start_after_silence(m4b, book)

    for name, field in (("huge-pause", "text"), ("nested", "text"), ("unknown-voice", "voice"),
                        ("unknown-segment-voice", "segments.0.voice")):  # fmt: skip
        error = daemon_env.wait_state(name, ("rejected",))["error"]
        assert error["field"] == field, error
    assert "at most 10 s" in daemon_env.status("huge-pause")["error"]["message"]  # type: ignore[index]
    assert "'nobody'" in daemon_env.status("unknown-voice")["error"]["message"]  # type: ignore[index]
    assert daemon.terminate() == 0


def _vtt_seconds(stamp: str) -> float:
    hours, minutes, seconds = stamp.split(":")
    return round(int(hours) * 3600 + int(minutes) * 60 + float(seconds), 3)


def _assert_chapters_start_after_silence(m4b: Path, book: dict[str, Any]) -> None:
    """Each later chapter opens right after the previous one's closing pause (AAC is lossy: "silent"
    means far below the speech, not zero)."""
    rate = book["audio"]["sample_rate"]
    audio = decode_file(m4b, "m4b", rate)
    assert abs(len(audio) / rate - book["audio"]["duration_s"]) < 0.05
    speech = float(np.sqrt(np.mean(audio**2)))
    for chapter in book["chapters"][1:]:
        start = round(chapter["start_s"] * rate)
        before = audio[start - rate : start - rate // 20]
        after = audio[start + rate // 50 : start + rate // 5]
        assert np.sqrt(np.mean(before**2)) < speech / 20, chapter
        assert np.sqrt(np.mean(after**2)) > speech / 4, chapter


def test_saved_voice_round_trip_across_a_restart(daemon_env: DaemonEnv, tmp_path: Path) -> None:
    recording = tmp_path / "me.wav"
    sf.write(recording, np.random.default_rng(3).standard_normal(24_000 * 2).astype(np.float32) * 0.1, 24_000)
    made = daemon_env.cli("voices", "add", "me", "--from", str(recording), "--text", "Hello, this is me.",
                          "--model", "tiny-base", "--json")  # fmt: skip
    assert made.returncode == 0, made.stderr
    voice = json.loads(made.stdout)

    job = {"text": "Spoken by a saved voice.", "voice": "me", "seed": 11, "cache": False}
    daemon = daemon_env.start()
    daemon.wait_ready()
    daemon_env.drop_json("first.json", job)
    first = daemon_env.wait_state("first", ("done", "failed"), timeout=120)
    assert first["state"] == "done" and first["model"] == "tiny-base", first
    assert daemon.terminate() == 0

    served = start_http_daemon(daemon_env)
    daemon = served.daemon
    daemon_env.drop_json("again.json", job)
    again = daemon_env.wait_state("again", ("done", "failed"), timeout=120)
    assert again["state"] == "done", again
    # The same stored prompt after the restart: the same seeded take, sample for sample.
    first_audio, _ = sf.read(daemon_env.outbox / "first.wav", dtype="float32")
    again_audio, _ = sf.read(daemon_env.outbox / "again.wav", dtype="float32")
    assert np.array_equal(first_audio, again_audio)
    # OpenAI's speech API names the saved voice; the job runs on the voice's own model.
    client = OpenAI(base_url=f"{served.base_url}/v1", api_key="unused", max_retries=0)
    spoken = client.audio.speech.with_raw_response.create(
        model="tts-1", voice="me", input="Through the API.", response_format="wav"
    )
    assert spoken.http_response.status_code == 200 and len(spoken.content) > 1_000
    with served.client() as http:
        via_api = http.get(f"/v1/jobs/{spoken.headers['x-job-id']}").json()
    assert (via_api["model"], via_api["state"]) == ("tiny-base", "done")
    shown = json.loads(daemon_env.cli("voices", "show", "me", "--json").stdout)
    assert shown["prompt_sha256"] == voice["prompt_sha256"] and shown["created_at"] == voice["created_at"]

    removed = daemon_env.cli("voices", "remove", "me")
    assert removed.returncode == 0, removed.stderr
    daemon_env.drop_json("after-removal.json", {"text": "Who speaks now?", "voice": "me"})
    error = daemon_env.wait_state("after-removal", ("rejected",))["error"]
    assert error["code"] == "unknown_voice" and "'me'" in error["message"]
    assert json.loads(daemon_env.cli("voices", "list", "--json").stdout) == []
    assert daemon.terminate() == 0
