"""The two speech APIs in-process: the original service's `/v1/tts` field by field, and OpenAI's
`/v1/audio/speech` in every format, whole and streamed, with a fake engine speaking."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.support.daemon_harness import wait_for
from tests.support.decode import decode_audio
from tests.support.fakes import FAKE_MODEL, FAKE_RATE, fake_wave, scratch_dir
from tests.support.http_rig import HttpRig, http_rig
from ttsd.catalog import ModelEntry
from ttsd.encoding import decode_file
from ttsd.http.answers import ended_problem
from ttsd.http.speech import STREAM_FIRST_CHARS, voice_fields
from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.tables import Job
from ttsd.voicelib import VoiceLibrary

LONG = " ".join(f"Sentence number {n} is here to make the text long enough for chunks." for n in range(12))


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[HttpRig]:
    with scratch_dir(tmp_path) as root, http_rig(root, max_text_length=120) as made:
        made.start_worker()
        yield made


def expected_audio(rig: HttpRig, job_id: str) -> np.ndarray:
    """What the delivered file holds, read back."""
    job = rig.store.get(job_id)
    return decode_file(rig.outbox.root / str(job.audio_file), job.audio_format, FAKE_RATE)  # type: ignore[arg-type]


def test_tts_answers_the_original_fields_with_base64_audio(rig: HttpRig) -> None:
    answer = rig.client.post("/v1/tts", json={"text": "Hello.", "voice": "alloy", "request_id": "req-1"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {
        "request_id",
        "job_id",
        "audio_format",
        "sample_rate",
        "duration_sec",
        "audio_base64",
        "audio_url",
    }
    assert body["request_id"] == "req-1" and body["audio_format"] == "wav" and body["audio_url"] is None
    samples, rate = sf.read(io.BytesIO(base64.b64decode(body["audio_base64"])), dtype="float32")
    assert rate == body["sample_rate"] == FAKE_RATE
    assert body["duration_sec"] == round(len(samples) / rate, 3)
    # The request id is the output name; the status file follows the queue a moment later.
    status = wait_for(lambda: (s := rig.outbox.read_status("req-1")) and s["state"] == "done" and s, 10, "status")
    assert status["client_id"] == "req-1"
    assert status["speaker"] == "serena"  # OpenAI's alloy, in Qwen's speakers


def test_tts_in_file_mode_answers_a_url_that_serves_the_file(tmp_path: Path) -> None:
    with scratch_dir(tmp_path) as root, http_rig(root, output_mode="file") as rig:
        rig.start_worker()
        body = rig.client.post("/v1/tts", json={"text": "A file.", "format": "mp3", "language": "en"}).json()
        assert body["audio_base64"] is None and body["audio_url"] == f"/v1/audio/{body['job_id']}"
        audio = rig.client.get(body["audio_url"])
        assert audio.status_code == 200 and audio.headers["content-type"] == "audio/mpeg"
        assert audio.content == (rig.outbox.root / f"{rig.store.get(body['job_id']).name}.mp3").read_bytes()
        assert json.loads(rig.store.get(body["job_id"]).spec_json)["language"] == "English"


def test_tts_fields_are_checked_like_a_job_file(rig: HttpRig) -> None:
    for body, field in (
        ({"text": "x", "speed": 0.1}, "speed"),
        ({"text": "x", "format": "exe"}, "format"),
        ({"text": "x", "request_id": "../../x"}, "request_id"),
        ({"text": "x", "mood": "sunny"}, "mood"),
        ({"text": 5}, "text"),
    ):
        answer = rig.client.post("/v1/tts", json=body)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error"]["param"] == field


def test_tts_is_429_with_retry_after_only_when_the_models_queue_is_full(tmp_path: Path) -> None:
    with scratch_dir(tmp_path) as root, http_rig(root, max_queue_size=2) as rig:
        for n in range(3):  # the asynchronous form takes jobs past the limit
            assert rig.client.post("/v1/jobs", json={"text": f"Waiting {n}."}).status_code == 202
        full = rig.client.post("/v1/tts", json={"text": "One more."})
        assert full.status_code == 429
        assert int(full.headers["Retry-After"]) > 0
        assert "POST /v1/jobs" in full.json()["error"]["message"]
        rig.start_worker()
        wait_for(lambda: rig.store.pending_count(FAKE_MODEL) < 2, 10, "room in the queue")
        assert rig.client.post("/v1/tts", json={"text": "One more."}).status_code == 200


def test_tts_stream_sends_the_audio_itself(rig: HttpRig) -> None:
    answer = rig.client.post("/v1/tts", json={"text": LONG, "stream": True, "request_id": "streamed"})
    assert answer.status_code == 200 and answer.headers["x-request-id"] == "streamed"
    streamed, rate = decode_audio(answer.content, "wav")
    assert rate == FAKE_RATE
    np.testing.assert_allclose(streamed, expected_audio(rig, answer.headers["x-job-id"]), atol=1e-4)


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_speech_in_every_openai_format_decodes_to_the_jobs_audio(rig: HttpRig, fmt: str) -> None:
    answer = rig.client.post(
        "/v1/audio/speech", json={"model": "tts-1", "input": "Hello.", "voice": "nova", "response_format": fmt}
    )
    assert answer.status_code == 200, answer.text
    samples, _rate = decode_audio(answer.content, fmt)
    expected = len(fake_wave("Hello.")) * (_rate / FAKE_RATE)
    assert abs(len(samples) - expected) < 0.1 * _rate, (fmt, len(samples), expected)  # codec delay and padding
    job = rig.store.get(answer.headers["x-job-id"])
    assert job.model == FAKE_MODEL and job.audio_format == fmt  # tts-1 is the default model


def test_a_long_input_streams_chunk_by_chunk_and_equals_the_file(rig: HttpRig) -> None:
    with rig.client.stream(
        "POST", "/v1/audio/speech", json={"model": FAKE_MODEL, "input": LONG, "response_format": "pcm"}
    ) as answer:
        assert answer.status_code == 200
        parts = [part for part in answer.iter_bytes() if part]
    job = rig.store.get(answer.headers["x-job-id"])
    assert job.chunks_total > 1
    assert json.loads(job.spec_json)["chunk_first_chars"] == STREAM_FIRST_CHARS  # its first audio comes early
    streamed, _rate = decode_audio(b"".join(parts), "pcm")
    np.testing.assert_allclose(streamed, expected_audio(rig, job.id), atol=1 / 16384)


def test_sse_sends_deltas_then_done_with_usage(rig: HttpRig) -> None:
    answer = rig.client.post(
        "/v1/audio/speech", json={"model": "tts-1", "input": LONG, "response_format": "pcm", "stream_format": "sse"}
    )
    events = [json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1) and len(events) > 2
    assert events[-1]["type"] == "speech.audio.done" and events[-1]["usage"]["input_tokens"] == len(LONG)
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    streamed, _rate = decode_audio(audio, "pcm")
    np.testing.assert_allclose(streamed, expected_audio(rig, answer.headers["x-job-id"]), atol=1 / 16384)


def test_speed_changes_the_length_not_the_job_count(rig: HttpRig) -> None:
    normal = rig.client.post(
        "/v1/audio/speech", json={"model": "tts-1", "input": "Faster now.", "response_format": "wav"}
    )
    fast = rig.client.post(
        "/v1/audio/speech", json={"model": "tts-1", "input": "Faster now.", "response_format": "wav", "speed": 2.0}
    )
    normal_len = len(decode_audio(normal.content, "wav")[0])
    fast_len = len(decode_audio(fast.content, "wav")[0])
    assert abs(fast_len - normal_len / 2) < 0.05 * normal_len
    assert rig.client.post("/v1/audio/speech", json={"model": "tts-1", "input": "x", "speed": 5}).status_code == 400


def test_speech_refuses_what_it_cannot_do_naming_the_field(rig: HttpRig) -> None:
    for body, field in (
        ({"model": "tts-1", "input": "x", "response_format": "ogg"}, "response_format"),
        ({"model": "no-such-model", "input": "x"}, "model"),
        ({"model": "tts-1"}, "input"),
        ({"model": "tts-1", "input": "x", "stream_format": "carrier-pigeon"}, "stream_format"),
    ):
        answer = rig.client.post("/v1/audio/speech", json=body)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error"]["param"] == field


def test_a_failed_job_is_an_error_status_not_an_empty_200(tmp_path: Path) -> None:
    from tests.support.fakes import FakeEngine
    from ttsd.errors import PermanentEngineError

    engine = FakeEngine(poison={"Doomed": PermanentEngineError})
    with scratch_dir(tmp_path) as root, http_rig(root, engine=engine, max_attempts=1) as rig:
        rig.start_worker()
        answer = rig.client.post("/v1/audio/speech", json={"model": "tts-1", "input": "Doomed."})
        assert answer.status_code == 500
        assert "refuses 'Doomed'" in answer.json()["error"]["message"]


def test_models_voices_and_health(rig: HttpRig) -> None:
    models = {m["id"] for m in rig.client.get("/v1/models").json()["data"]}
    assert {FAKE_MODEL, "tts-1", "tts-1-hd", "gpt-4o-mini-tts"} <= models
    voices = rig.client.get("/v1/audio/voices").json()["voices"]
    assert {"id": "alloy", "name": "alloy", "kind": "openai", "speaker": "serena"} in voices
    original = rig.client.get("/v1/voices", params={"model": FAKE_MODEL}).json()["voices"]
    assert [v["model"] for v in original] == [FAKE_MODEL]
    unknown = rig.client.get("/v1/voices", params={"model": "nope"})
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "model"
    health = rig.client.get("/health").json()
    assert health["status"] == "ok" and health["device"] == "cpu" and health["models_loaded"] == [FAKE_MODEL]
    assert health["uptime_sec"] >= 0 and set(health["queue"]) >= {"queued", "running"}


def test_a_job_failing_under_sse_ends_with_an_error_event(tmp_path: Path) -> None:
    from tests.support.fakes import FakeEngine
    from ttsd.errors import PermanentEngineError

    engine = FakeEngine(poison={"Doomed": PermanentEngineError})
    with scratch_dir(tmp_path) as root, http_rig(root, engine=engine, max_attempts=1) as rig:
        rig.start_worker()
        body = {"model": "tts-1", "input": "Doomed.", "stream_format": "sse"}
        answer = rig.client.post("/v1/audio/speech", json=body)
        events = [json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: ")]
        assert [event["type"] for event in events] == ["error"]
        assert events[0]["error"]["code"] == "fake_doomed"


def test_live_audio_of_a_chunk_goes_out_while_the_chunk_is_made(tmp_path: Path) -> None:
    """The worker's side is simulated here (tests/component/test_live.py has the real one): the chunk's
    live file grows, the stream sends each new part at once, then the finished chunk's rest."""
    import threading

    from ttsd.delivery.deliver import deliver
    from ttsd.jobqueue.records import RunInfo
    from ttsd.jobspec import JobSpec

    with scratch_dir(tmp_path) as root, http_rig(root) as rig:
        received: list[bytes] = []
        body = {"model": FAKE_MODEL, "input": "One chunk, heard as it is made.", "response_format": "pcm"}

        def listen() -> None:
            with rig.client.stream("POST", "/v1/audio/speech", json=body) as answer:
                received.extend(answer.iter_bytes())

        listener = threading.Thread(target=listen)
        listener.start()
        job = wait_for(lambda: next(iter(rig.store.jobs()), None), 10, "the request's job")
        token, _claimed = rig.store.claim(FAKE_MODEL, 4)
        assert rig.store.plan_chunks(job.id, token, [(body["input"], 0, 0)]) is not None
        audio = fake_wave(body["input"])
        quarter = len(audio) // 4
        for part in (1, 2, 3):
            rig.door.chunk_files.save_live(job.id, 0, audio[: part * quarter])
            wait_for(partial(_received_at_least, received, part * quarter * 2), 10, f"live part {part} sent")
        rig.door.chunk_files.save(job.id, 0, audio)
        assert rig.store.chunk_done(job.id, token, 0, len(audio) / FAKE_RATE, 0.1, cache_hit=False)
        spec = JobSpec.model_validate_json(job.spec_json)
        run = RunInfo(device="cpu", dtype="float32", seed=None, cache_hit=False, synth_s=0.1)
        assert deliver(rig.store, rig.outbox, token, job.id, spec, audio, run) is not None
        listener.join(timeout=20)
        streamed, _rate = decode_audio(b"".join(received), "pcm")
        np.testing.assert_allclose(streamed, audio, atol=1 / 16384)


def _received_at_least(received: list[bytes], count: int) -> bool:
    return len(b"".join(received)) >= count  # pcm: two bytes a sample


def test_a_stream_at_another_speed_is_its_file(rig: HttpRig) -> None:
    body = {"model": FAKE_MODEL, "input": LONG, "response_format": "wav", "speed": 1.5}
    answer = rig.client.post("/v1/audio/speech", json=body)
    streamed, _rate = decode_audio(answer.content, "wav")
    np.testing.assert_allclose(streamed, expected_audio(rig, answer.headers["x-job-id"]), atol=1e-4)


def test_a_stream_that_gets_no_audio_in_time_is_504_naming_the_job(tmp_path: Path) -> None:
    with scratch_dir(tmp_path) as root, http_rig(root, http_wait_s=0.5) as rig:  # no worker: nothing is spoken
        answer = rig.client.post("/v1/audio/speech", json={"model": "tts-1", "input": "Nobody speaks."})
        assert answer.status_code == 504
        job_id = rig.store.jobs()[0].id
        assert f"/v1/jobs/{job_id}" in answer.json()["error"]["message"]


def test_the_same_request_again_is_answered_even_when_the_queue_is_full(tmp_path: Path) -> None:
    with scratch_dir(tmp_path) as root, http_rig(root, max_queue_size=1) as rig:
        rig.start_worker()
        body = {"text": "Asked twice.", "request_id": "twice"}
        assert rig.client.post("/v1/tts", json=body).status_code == 200
        rig.worker.stop_event.set()  # nothing is spoken from now on: the filler keeps the queue full
        wait_for(lambda: not rig.worker.wake.is_set(), 1, "the worker to idle")
        assert rig.client.post("/v1/jobs", json={"text": "Filler."}).status_code == 202
        assert rig.client.post("/v1/tts", json={"text": "Someone new."}).status_code == 429
        assert rig.client.post("/v1/tts", json=body).status_code == 200


def test_refusals_name_the_fields_the_client_sent(rig: HttpRig) -> None:
    for body, field in (
        ({"model": "tts-1", "input": "  "}, "input"),
        ({"model": "tts-1", "input": "x", "voice": 5}, "voice"),
        ({"model": "tts-1", "input": "x", "speed": True}, "speed"),
        ({"model": "tts-1", "input": "x", "speed": "1.5"}, "speed"),
        ({"model": "tts-1", "input": "x", "instructions": "x" * 5000}, "instructions"),
    ):
        answer = rig.client.post("/v1/audio/speech", json=body)
        assert answer.status_code == 400, (body, answer.text)
        error = answer.json()["error"]
        assert error["param"] == field and error["message"].startswith(f"{field}: "), error
    tone = rig.client.post("/v1/tts", json={"text": "x", "model": FAKE_MODEL, "tone": "calm", "voice": "x\x01"})
    assert tone.json()["error"]["param"] == "voice"


def test_a_saved_voice_speaks_as_itself_but_never_takes_a_speakers_name(rig: HttpRig) -> None:
    recording = rig.root / "take.wav"
    sf.write(recording, np.zeros(8_000, dtype=np.float32), 16_000)
    prompt = {
        "ref_code": np.arange(48, dtype=np.int64).reshape(3, 16),
        "ref_spk_embedding": np.linspace(-1, 1, 8, dtype=np.float32),
        "x_vector_only_mode": False,
        "icl_mode": True,
        "ref_text": "Hello there.",
    }
    VoiceLibrary(rig.settings.saved_voices_dir).save(
        "vivian", model="tiny-base", source="recording", prompt=prompt, recording=recording
    )
    # No model of its own (an OpenAI alias): the saved voice, on the model it was made for.
    assert voice_fields(rig.door, FAKE_MODEL, "vivian", None) == {"voice": "vivian", "model": "tiny-base"}
    # A CustomVoice model named: Vivian is its speaker, whatever the library holds.
    assert voice_fields(rig.door, "tiny", "vivian", None, explicit_model=True) == {"speaker": "vivian"}
    with_base = replace(
        rig.door, registry={**rig.door.registry, "tiny-base": ModelEntry("tiny-base", "base", tiny=True)}
    )
    assert voice_fields(with_base, "tiny-base", "vivian", None, explicit_model=True) == {"voice": "vivian"}
    assert voice_fields(rig.door, FAKE_MODEL, "alloy", None) == {"speaker": "serena"}


def test_a_job_failed_by_what_the_request_named_is_the_clients_error() -> None:
    job = Job(id="j", content_key="k", name="n", model="m", batch_key="b", spec_json="{}", state=JobState.FAILED)
    job.error_code, job.error_message = "unknown_speaker", "speaker 'GOOD' is not a voice of model 'tiny'"
    assert ended_problem(job).status == 400
    job.error_code = "engine_error"
    assert ended_problem(job).status == 500
