"""M4B over HTTP: a job in m4b is made and served whole as `<name>.m4b`, and is never offered or
streamed by the speech APIs (its index and chapters exist only when the file is finished)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.fakes import FAKE_RATE, fake_wave, scratch_dir
from tests.support.http_rig import HttpRig, http_rig
from ttsd.encoding import decode_file, read_chapters
from ttsd.http.streams import audio_stream
from ttsd.jobqueue.states import JobState

AAC_FRAME = 1024


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[HttpRig]:
    with scratch_dir(tmp_path) as root, http_rig(root) as made:
        yield made


def wait_done(rig: HttpRig, job_id: str) -> None:
    events = rig.client.get(f"/v1/jobs/{job_id}/events")
    states = [json.loads(line[6:])["state"] for line in events.text.splitlines() if line.startswith("data: ")]
    assert states[-1] == JobState.DONE


def test_a_job_in_m4b_is_its_outbox_file_served_as_audio_mp4(rig: HttpRig) -> None:
    rig.start_worker()
    posted = rig.client.post("/v1/jobs", json={"text": "A short book.", "format": "m4b", "output": "book"})
    assert posted.status_code == 202, posted.text
    job_id = posted.json()["job_id"]
    wait_done(rig, job_id)
    audio = rig.client.get(f"/v1/jobs/{job_id}/audio")
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/mp4"
    path = rig.outbox.root / "book.m4b"
    assert audio.content == path.read_bytes()
    assert read_chapters(path) == []
    decoded = decode_file(path, "m4b", FAKE_RATE)
    assert 0 <= len(decoded) - len(fake_wave("A short book.")) < AAC_FRAME


def test_a_stream_of_an_m4b_job_is_its_finished_file(rig: HttpRig) -> None:
    job_id = rig.client.post("/v1/jobs", json={"text": "Streamed, but whole.", "format": "m4b"}).json()["job_id"]
    queued = rig.store.get(job_id)  # taken before it is spoken: the stream has to wait for the file
    assert queued.state == JobState.QUEUED
    rig.start_worker()

    async def collected(stream: AsyncIterator[bytes]) -> bytes:
        return b"".join([data async for data in stream])

    streamed = asyncio.run(collected(audio_stream(rig.door, queued)))
    assert streamed == (rig.outbox.root / str(rig.store.get(job_id).audio_file)).read_bytes()


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/tts", {"text": "x", "format": "m4b"}, "format"),
        ("/v1/audio/speech", {"model": "tts-1", "input": "x", "response_format": "m4b"}, "response_format"),
    ],
)
def test_the_speech_apis_refuse_m4b(rig: HttpRig, path: str, body: dict[str, str], field: str) -> None:
    answer = rig.client.post(path, json=body)
    assert answer.status_code == 400, answer.text
    assert field in answer.json()["error"]["message"]
    assert not rig.store.jobs()


def test_the_schema_offers_m4b_only_for_job_files(rig: HttpRig) -> None:
    paths = rig.client.get("/openapi.json").json()["paths"]
    assert "audio/mp4" not in paths["/v1/audio/speech"]["post"]["responses"]["200"]["content"]
    assert "audio/mp4" in paths["/v1/jobs/{job_ref}/audio"]["get"]["responses"]["200"]["content"]
    assert "audio/mp4" in paths["/v1/audio/{audio_id}"]["get"]["responses"]["200"]["content"]
