"""The HTTP front door of a real `ttsd run` on the tiny model: OpenAI's own client, binds and keys,
and requests that outlive a kill -9 of the daemon."""

from __future__ import annotations

import concurrent.futures
import hashlib
import socket
from pathlib import Path

import httpx
import numpy as np
import openai

from tests.support.daemon_harness import DaemonEnv, wait_for
from tests.support.decode import decode_audio
from tests.support.http import free_port, start_http_daemon
from ttsd.encoding import decode_file

LONG = " ".join(f"Sentence {n} of a text long enough to be spoken in several chunks." for n in range(10))


def assert_heard_as_delivered(streamed: np.ndarray, delivered: np.ndarray) -> None:
    """What was heard live was decoded window by window (a 25-frame context, about 5e-4 from the
    one-shot decode) and lacks the file's 8 ms fade-in; everything else is the file's own samples."""
    assert len(streamed) == len(delivered)
    difference = streamed - delivered
    assert float(np.max(np.abs(difference))) < 0.05
    assert float(np.sqrt(np.mean(difference**2))) < 2e-3


def test_openais_client_speaks_through_the_daemon(daemon_env: DaemonEnv) -> None:
    served = start_http_daemon(daemon_env)
    client = openai.OpenAI(base_url=f"{served.base_url}/v1", api_key="not-needed-on-loopback", max_retries=0)
    for fmt in ("mp3", "opus", "aac", "flac", "wav", "pcm"):
        speech = client.audio.speech.create(
            model="tts-1", voice="alloy", input="Hello from OpenAI's client.", response_format=fmt
        )
        samples, rate = decode_audio(speech.content, fmt)
        assert len(samples) > rate * 0.3, fmt
        assert speech.response.headers["content-type"] == {"mp3": "audio/mpeg"}.get(fmt, f"audio/{fmt}")
    models = {model.id for model in client.models.list()}
    assert {"tiny", "tts-1", "tts-1-hd"} <= models


def test_a_long_input_streams_and_the_stream_is_the_delivered_file(daemon_env: DaemonEnv) -> None:
    served = start_http_daemon(daemon_env)
    client = openai.OpenAI(base_url=f"{served.base_url}/v1", api_key="x", max_retries=0)
    with client.audio.speech.with_streaming_response.create(
        model="tiny", voice="ryan", input=LONG, response_format="pcm"
    ) as response:
        parts = [part for part in response.iter_bytes() if part]
        job_id = response.headers["x-job-id"]
    assert len(parts) > 1  # sent piece by piece, not in one go at the end
    streamed, _rate = decode_audio(b"".join(parts), "pcm")
    with served.client() as http:
        job = http.get(f"/v1/jobs/{job_id}").json()
    assert job["state"] == "done" and job["progress"]["chunks_total"] > 1
    delivered = decode_file(daemon_env.outbox / job["audio"]["file"], "pcm", job["audio"]["sample_rate"])
    assert_heard_as_delivered(streamed, delivered)


def test_a_chunk_is_heard_while_it_is_made(daemon_env: DaemonEnv) -> None:
    served = start_http_daemon(daemon_env)
    text = "One sentence that fits in a single chunk and takes the tiny model a while to speak aloud"
    with (
        served.client() as http,
        http.stream(
            "POST", "/v1/audio/speech", json={"model": "tiny", "input": text, "response_format": "pcm"}
        ) as answer,
    ):
        parts = [part for part in answer.iter_bytes() if part]
        job = http.get(f"/v1/jobs/{answer.headers['x-job-id']}").json()
    assert job["progress"]["chunks_total"] == 1
    # Without live audio the one chunk would come whole, in one piece, once it was made.
    assert len(parts) >= 2, f"{len(parts)} part(s)"
    streamed, _rate = decode_audio(b"".join(parts), "pcm")
    delivered = decode_file(daemon_env.outbox / job["audio"]["file"], "pcm", job["audio"]["sample_rate"])
    assert_heard_as_delivered(streamed, delivered)


def test_a_bind_beyond_loopback_needs_a_key(daemon_env: DaemonEnv) -> None:
    daemon = daemon_env.start(TTS_HTTP=f"0.0.0.0:{free_port()}")
    assert daemon.wait_exit() != 0
    assert "TTS_API_KEY" in daemon.log()
    key = "a-long-enough-secret-key"
    port = free_port()
    keyed = daemon_env.start(TTS_HTTP=f"0.0.0.0:{port}", TTS_API_KEY=key)
    keyed.wait_ready()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        assert http.get("/health").status_code == 401
        assert http.get("/health", headers={"Authorization": "Bearer wrong-key-wrong-key"}).status_code == 401
        assert http.get("/health", headers={"Authorization": f"Bearer {key}"}).json()["status"] == "ok"


def test_a_port_in_use_stops_the_daemon_saying_so(daemon_env: DaemonEnv) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = daemon_env.start(TTS_HTTP=f"127.0.0.1:{port}")
        assert daemon.wait_exit() != 0
    assert f"cannot serve HTTP on 127.0.0.1:{port}" in daemon.log()


REQUESTS = 200


def _request(base_url: str, index: int) -> str:
    """Send request `index`; 'answered', or 'lost' when the daemon died under it."""
    body = {"text": f"Say {index}.", "request_id": f"r{index}"}  # short: the test is about the queue
    try:
        with httpx.Client(base_url=base_url, timeout=120) as http:
            answer = http.post("/v1/tts", json=body)
    except httpx.TransportError:
        return "lost"
    assert answer.status_code == 200, answer.text
    assert answer.json()["request_id"] == f"r{index}"
    return "answered"


def test_requests_survive_a_kill_and_each_completes_exactly_once(daemon_env: DaemonEnv) -> None:
    port = free_port()
    settings = {"TTS_MAX_QUEUE_SIZE": "1000", "TTS_OUTPUT_MODE": "file"}
    served = start_http_daemon(daemon_env, port=port, **settings)
    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        outcomes = [pool.submit(_request, served.base_url, index) for index in range(REQUESTS)]
        # Half-way: half the requests have become jobs, some of them done.
        wait_for(lambda: len(list(daemon_env.outbox.glob("r*.status.json"))) >= REQUESTS // 2, 120, "half the jobs")
        served.daemon.kill()
        results = [outcome.result() for outcome in outcomes]
    lost = [index for index, result in enumerate(results) if result == "lost"]
    assert lost, "the kill came after every answer: it tested nothing"
    served = start_http_daemon(daemon_env, port=port, **settings)
    # A client whose request died with the daemon sends it again; the same request finds its job.
    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        assert set(pool.map(lambda index: _request(served.base_url, index), lost)) == {"answered"}
    with served.client() as http:
        jobs = http.get("/v1/jobs", params={"limit": 500}).json()["jobs"]
        assert sorted(job["name"] for job in jobs) == sorted(f"r{index}" for index in range(REQUESTS))
        assert {job["state"] for job in jobs} == {"done"}
        for job in jobs:
            audio = http.get(f"/v1/audio/{job['job_id']}")
            assert audio.status_code == 200
            assert hashlib.sha256(audio.content).hexdigest() == job["audio"]["sha256"]
            status = daemon_env.status(job["name"])
            assert status is not None and status["job_id"] == job["job_id"] and status["state"] == "done"
            assert (Path(daemon_env.outbox) / job["audio"]["file"]).read_bytes() == audio.content
