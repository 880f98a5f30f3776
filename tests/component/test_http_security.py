"""The guard in front of every route: API key, body limits, JSON only, Host names, and paths that
never leave the outbox."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fakes import scratch_dir
from tests.support.http_rig import HttpRig, http_rig

KEY = "k" * 32


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[HttpRig]:
    with scratch_dir(tmp_path) as root, http_rig(root, http_max_body_bytes=4096) as made:
        yield made


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[HttpRig]:
    with scratch_dir(tmp_path) as root, http_rig(root, api_key=KEY) as made:
        yield made


def test_without_the_key_every_api_call_is_401(keyed: HttpRig) -> None:
    for method, path in (("GET", "/health"), ("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/openapi.json")):
        answer = keyed.client.request(method, path, json={"text": "x"} if method == "POST" else None)
        assert answer.status_code == 401, path
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.json()["error"]["code"] == "unauthorized"


def test_a_wrong_key_is_401_and_the_right_one_passes(keyed: HttpRig) -> None:
    for given in ("Bearer " + "x" * 32, "Bearer " + KEY[:-1], "Basic " + KEY, KEY):
        assert keyed.client.get("/v1/jobs", headers={"Authorization": given}).status_code == 401, given
    assert keyed.client.get("/v1/jobs", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_the_dashboard_page_needs_no_key(keyed: HttpRig) -> None:
    page = keyed.client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")


def test_an_oversized_body_is_413_before_it_is_read(rig: HttpRig) -> None:
    answer = rig.client.post("/v1/jobs", json={"text": "x" * 5000})
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "too_large"


def chunked_json(opening: bytes) -> Iterator[bytes]:
    """A 10 kB JSON body sent without Content-Length, in pieces."""
    yield opening
    for _ in range(10):
        yield b"x" * 1000
    yield b'"}'


@pytest.mark.parametrize(
    ("path", "opening"), [("/v1/jobs", b'{"text": "'), ("/v1/audio/speech", b'{"model": "tts-1", "input": "')]
)
def test_an_oversized_chunked_body_is_413_too(rig: HttpRig, path: str, opening: bytes) -> None:
    answer = rig.client.post(path, content=chunked_json(opening), headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "too_large"


def test_a_body_that_is_not_json_is_415(rig: HttpRig) -> None:
    # A web page may POST a text/plain form to a loopback port without asking; JSON it may not.
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        answer = rig.client.post("/v1/jobs", content=b'{"text": "x"}', headers={"Content-Type": kind})
        assert answer.status_code == 415, kind
    assert rig.store.jobs() == []


def test_a_host_header_naming_another_site_is_refused(rig: HttpRig) -> None:
    assert rig.client.get("/v1/jobs", headers={"Host": "evil.example:8765"}).status_code == 421
    for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765", "localhost"):
        assert rig.client.get("/v1/jobs", headers={"Host": host}).status_code == 200, host


@pytest.mark.parametrize(
    "path",
    [
        "/v1/audio/../../etc/passwd",
        "/v1/audio/..%2F..%2Fetc%2Fpasswd",
        "/v1/audio/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/v1/audio/..%252F..%252Fstate%252Fttsd.sqlite3",
        "/v1/audio/%2Fetc%2Fpasswd",
        "/v1/audio/....//....//etc/passwd",
        "/v1/jobs/..%2F..%2Fstate/audio",
        "/static/../state/ttsd.sqlite3",
        "/static/%2e%2e/%2e%2e/state/ttsd.sqlite3",
    ],
)
def test_paths_that_climb_out_are_404(rig: HttpRig, path: str) -> None:
    answer = rig.client.get(path)
    assert answer.status_code == 404, (path, answer.status_code, answer.text[:200])
    assert b"SQLite" not in answer.content and b"root:" not in answer.content


def test_audio_is_served_from_the_queues_record_only(rig: HttpRig) -> None:
    secret = rig.root / "secret.wav"
    secret.write_bytes(b"RIFF secret")
    (rig.outbox.root / "planted.wav").symlink_to(secret)
    assert rig.client.get("/v1/audio/planted.wav").status_code == 404
    assert rig.client.get("/v1/audio/planted").status_code == 404


def test_a_browser_preflight_passes_without_the_key_and_refusals_carry_cors(tmp_path: Path) -> None:
    origin = "http://localhost:3000"
    with scratch_dir(tmp_path) as root, http_rig(root, api_key=KEY, cors_origins=(origin,)) as rig:
        preflight = rig.client.options(
            "/v1/audio/speech",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == origin
        refused = rig.client.get("/v1/jobs", headers={"Origin": origin})
        assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == origin
        other = rig.client.options(
            "/v1/jobs", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"}
        )
        assert "access-control-allow-origin" not in other.headers


def test_every_refusal_has_the_one_error_shape(rig: HttpRig) -> None:
    headers = {"Content-Type": "application/json"}
    cases = [
        (rig.client.get("/no/such/route"), 404, "not_found"),
        (rig.client.put("/v1/jobs", json={}), 405, "method_not_allowed"),
        (
            rig.client.post("/v1/audio/speech", content=b'{"model": "tts-1", "input": ', headers=headers),
            400,
            "invalid_json",
        ),
        (rig.client.post("/v1/audio/speech", content=b"", headers=headers), 400, "invalid_body"),
    ]
    for answer, status, code in cases:
        assert answer.status_code == status, answer.text
        error = answer.json()["error"]
        assert error["code"] == code and error["message"] and answer.json()["detail"] == error["message"]
        assert error["param"] is None


def test_the_dashboard_cannot_be_framed(rig: HttpRig) -> None:
    page = rig.client.get("/")
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
