"""Jobs over HTTP in-process: queue, follow, list, cancel and fetch, on the same queue and status
files as the inbox, with a fake engine speaking."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf

from tests.support.daemon_harness import wait_for
from tests.support.fakes import FAKE_MODEL, FAKE_RATE, fake_wave, scratch_dir
from tests.support.http_rig import HttpRig, http_rig


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[HttpRig]:
    with scratch_dir(tmp_path) as root, http_rig(root) as made:
        yield made


def test_a_job_posted_is_queued_at_once_and_its_status_is_its_status_file(rig: HttpRig) -> None:
    answer = rig.client.post("/v1/jobs", json={"text": "Hello there.", "output": "greeting"})
    assert answer.status_code == 202
    body = answer.json()
    assert body["state"] == "queued" and body["created"] is True and body["name"] == "greeting"
    assert body["status_url"] == f"/v1/jobs/{body['job_id']}"
    on_disk = rig.outbox.read_status("greeting")
    assert on_disk is not None and on_disk["job_id"] == body["job_id"]
    fetched = rig.client.get(body["status_url"]).json()
    assert {k: v for k, v in fetched.items() if not k.endswith("_url")} == on_disk
    assert rig.client.get("/v1/jobs/greeting").json()["job_id"] == body["job_id"]  # by output name too


def test_the_same_job_posted_twice_is_one_job(rig: HttpRig) -> None:
    first = rig.client.post("/v1/jobs", json={"text": "Once only."})
    again = rig.client.post("/v1/jobs", json={"text": "Once only."})
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["created"] is False and again.json()["job_id"] == first.json()["job_id"]


def test_a_posted_job_is_spoken_and_its_audio_fetched(rig: HttpRig) -> None:
    rig.start_worker()
    job_id = rig.client.post("/v1/jobs", json={"text": "Speak me.", "format": "flac"}).json()["job_id"]
    events = rig.client.get(f"/v1/jobs/{job_id}/events")
    states = [json.loads(line[6:])["state"] for line in events.text.splitlines() if line.startswith("data: ")]
    assert states[-1] == "done" and "done" not in states[:-1]
    audio = rig.client.get(f"/v1/jobs/{job_id}/audio")
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/flac"
    samples, rate = sf.read(io.BytesIO(audio.content), dtype="float32")
    assert rate == FAKE_RATE
    assert len(samples) == len(fake_wave("Speak me."))


def test_audio_of_a_job_not_done_is_a_conflict_naming_its_state(rig: HttpRig) -> None:
    job_id = rig.client.post("/v1/jobs", json={"text": "Not yet."}).json()["job_id"]
    answer = rig.client.get(f"/v1/jobs/{job_id}/audio")
    assert answer.status_code == 409
    assert "queued" in answer.json()["error"]["message"]


def test_cancel_then_cancel_again(rig: HttpRig) -> None:
    job_id = rig.client.post("/v1/jobs", json={"text": "Stop me."}).json()["job_id"]
    cancelled = rig.client.delete(f"/v1/jobs/{job_id}")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert rig.outbox.read_status(cancelled.json()["name"])["state"] == "cancelled"  # type: ignore[index]
    again = rig.client.delete(f"/v1/jobs/{job_id}")
    assert again.status_code == 409 and "cancelled" in again.json()["error"]["message"]


def test_list_filters_by_state_and_time(rig: HttpRig) -> None:
    ids = [rig.client.post("/v1/jobs", json={"text": f"Job {n}."}).json()["job_id"] for n in range(3)]
    rig.client.delete(f"/v1/jobs/{ids[0]}")
    queued = rig.client.get("/v1/jobs", params={"state": "queued"}).json()["jobs"]
    assert {doc["job_id"] for doc in queued} == set(ids[1:])
    assert rig.client.get("/v1/jobs", params={"since": "2999-01-01T00:00:00Z"}).json()["jobs"] == []
    assert len(rig.client.get("/v1/jobs", params={"since": "2000-01-01T00:00:00"}).json()["jobs"]) == 3
    sleeping = rig.client.get("/v1/jobs", params={"state": "sleeping"})
    assert sleeping.status_code == 400 and sleeping.json()["error"]["param"] == "state"
    assert rig.client.get("/v1/jobs", params={"limit": 0}).json()["error"]["param"] == "limit"


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"text": "x", "speed": 9}, "speed", "invalid_field"),
        ({"text": "x", "model": "nope"}, "model", "unknown_model"),
        ({"text": "x", "colour": "blue"}, "colour", "unknown_field"),
        ({"text": "   "}, "text", "blank_text"),
        ({"text": "x", "output": "../escape"}, "output", "invalid_output"),
        ({"text": "x", "format": "exe"}, "format", "invalid_field"),
    ],
)
def test_a_bad_job_is_refused_naming_the_field(rig: HttpRig, body: dict[str, object], field: str, code: str) -> None:
    answer = rig.client.post("/v1/jobs", json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert (error["param"], error["code"]) == (field, code)
    assert error["message"]


def test_json_the_job_parser_refuses_is_refused_the_same_way(rig: HttpRig) -> None:
    headers = {"Content-Type": "application/json"}
    duplicate = rig.client.post("/v1/jobs", content=b'{"text": "a", "text": "b"}', headers=headers)
    assert duplicate.status_code == 400 and duplicate.json()["error"]["code"] == "duplicate_key"
    broken = rig.client.post("/v1/jobs", content=b'{"text": ', headers=headers)
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_json"
    listed = rig.client.post("/v1/jobs", content=b"[1, 2]", headers=headers)
    assert listed.status_code == 400 and listed.json()["error"]["code"] == "not_an_object"


def test_a_job_dropped_in_the_inbox_world_is_seen_over_http(rig: HttpRig) -> None:
    from tests.support.fakes import make_spec

    job = rig.store.enqueue(make_spec("From a file.", name="from-file"), source_file="from-file.json").job
    listed = rig.client.get("/v1/jobs").json()["jobs"]
    assert job.id in {doc["job_id"] for doc in listed}
    assert rig.client.get("/v1/jobs/from-file").json()["model"] == FAKE_MODEL


def test_unknown_job_is_404(rig: HttpRig) -> None:
    for path in ("/v1/jobs/nothing-here", "/v1/jobs/nothing-here/audio", "/v1/audio/nothing-here"):
        answer = rig.client.get(path)
        assert answer.status_code == 404, path
        assert answer.json()["error"]["code"] == "not_found"
    assert rig.client.delete("/v1/jobs/nothing-here").status_code == 404


def test_events_of_a_finished_job_end_at_once(rig: HttpRig) -> None:
    rig.start_worker()
    job_id = rig.client.post("/v1/jobs", json={"text": "Quick."}).json()["job_id"]
    wait_for(lambda: rig.store.get(job_id).state.terminal, 10, "the job to finish")
    lines = [line for line in rig.client.get(f"/v1/jobs/{job_id}/events").text.splitlines() if line.startswith("data:")]
    assert len(lines) == 1 and json.loads(lines[0][5:])["state"] == "done"
