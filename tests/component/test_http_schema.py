"""The HTTP front door against its own OpenAPI schema: schemathesis generates requests for every
operation the schema declares (valid ones, and invalid ones wherever an operation takes input), the
FOUND requests below go too, and all are sent in-process through the rig, with a fake engine
speaking, so the speech endpoints really make audio. For every response: the app did not crash (an
exception, even in the middle of a streamed answer), no 5xx, schemathesis' standard checks; after
every one, no file anywhere but the outbox and the state directory. At the end, no job failed: the
fake engine fails none.

The one 5xx allowed is the documented one for a failed job, and only for the job seeded to fail (the
fake engine refuses its text): with the fake engine any other failed job is a request the server
took and could not serve.

Where the served schema and the server disagree (the 400/404/409/410/413/415/429 answers it does not
declare, the audio and event-stream media types it does not name, values outside it the server
takes) is reported as a warning, not failed on.

POST /v1/jobs reads its body raw, so its schema declares none: the job-file model's own JSON schema
is put there, or the operation would only ever be sent an empty body. And random strings never name
a known model or job, so every valid request would end in a 400 or 404 before it reached the queue:
half the valid requests are steered onto names the rig serves (a model its worker speaks in a body
that takes one, a seeded job's id, id prefix or output name in the path).
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err
from starlette.types import ASGIApp

from tests.support.daemon_harness import wait_for
from tests.support.fakes import FAKE_MODEL, FakeEngine, scratch_dir
from tests.support.http_rig import HttpRig, http_rig
from ttsd.errors import PermanentEngineError
from ttsd.http.names import OPENAI_MODELS
from ttsd.intake.jobfile import JobFile
from ttsd.jobqueue.states import JobState

BASE_URL = "http://127.0.0.1:8765"
"""The rig's address: the guard answers a loopback server's own Host names only."""

VALID_EXAMPLES = 60
INVALID_EXAMPLES = 40
"""Per operation: about 1,100 requests in all, some 15 s on two cores (more while a FOUND request
still fails: a job failing at delivery is tried again before it fails)."""

SERVED_MODELS = (FAKE_MODEL, *OPENAI_MODELS)
"""Models a request may name and get an answer for in this rig: the worker's model and OpenAI's
names (tts-1-hd maps to a model the rig's registry lacks: a 400). The registry's other fakes are left
out: the rig runs no worker for them, and a streamed answer for their job would wait forever."""

DOOMED = "Doomed seed"
"""A text the fake engine refuses for good: the seeded failed job's (random texts never hold it)."""

FOUND: dict[str, list[dict[str, Any]]] = {
    # A rate the whole-file mp3 (MPEG's nine) or flac (above 65,535 Hz: whole tens only) encoder
    # cannot write: taken, spoken, then failed at delivery (a 500 `delivery_failed`, a failed job).
    # An unpaired surrogate escape in the text: taken by the request model (its length-bounded strings
    # refuse one, `text` and `input` have no bound), then UnicodeEncodeError where the default output
    # name is hashed (ttsd/names.py, default_output_name): a crash. POST /v1/jobs answers 400 `encoding`.
    "POST /v1/tts": [
        {"body": {"text": "An odd rate.", "format": "mp3", "sample_rate": 27_290}},
        {"body": {"text": "An odd rate.", "format": "flac", "sample_rate": 96_001}},
        {"body": {"text": "Half a \ud800 pair."}},
    ],
    "POST /v1/audio/speech": [{"body": {"model": "tts-1", "input": "Half a \ud800 pair."}}],
    "POST /v1/jobs": [{"body": {"text": "An odd rate, queued.", "format": "mp3", "sample_rate": 27_290}}],
    # A moment at the calendar's edge with an offset that takes it past: OverflowError when the
    # queue converts it to UTC (a crash).
    "GET /v1/jobs": [{"query": {"since": "9999-12-31T23:59:59-23:59"}}],
}
"""Requests the schema allows that once found a server bug: every run sends them first (generated
cases rarely or never hold them: Hypothesis's text has no lone surrogates)."""

HARD_CHECKS = [not_a_server_error, response_schema_conformance]
SOFT_CHECKS = [status_code_conformance, content_type_conformance, response_headers_conformance, negative_data_rejection]
"""Where the schema and the server disagree is reported, not failed on."""


@dataclass
class Run:
    """The rig, a client that raises what the app raises, the seeded jobs and what was seen."""

    rig: HttpRig
    client: TestClient
    files_before: set[Path]
    refs: list[str]
    doomed_id: str
    sent: dict[str, int] = field(default_factory=dict)
    mismatches: set[str] = field(default_factory=set)


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    engine = FakeEngine(poison={DOOMED: PermanentEngineError})
    with scratch_dir(tmp_path) as root, http_rig(root, engine=engine, http_wait_s=30.0) as rig:
        files_before = rig.files_outside_outbox()
        app: ASGIApp = rig.client.app
        # The rig's own client turns an exception in the app into a 500; this one raises it, so a
        # crash (even one in the middle of a streamed answer) is told apart from an error answer.
        with TestClient(app, base_url=BASE_URL, raise_server_exceptions=True) as client:
            refs, doomed_id = _seed_jobs(rig, client)
            yield Run(rig, client, files_before, refs, doomed_id)


def _seed_jobs(rig: HttpRig, client: TestClient) -> tuple[list[str], str]:
    """A cancelled, a done and a failed job: their ids, output names and an id prefix; the failed one's id."""
    cancelled = client.post("/v1/jobs", json={"text": "Seed to cancel.", "output": "seed-cancelled"}).json()
    assert client.delete(f"/v1/jobs/{cancelled['job_id']}").json()["state"] == JobState.CANCELLED
    rig.start_worker()
    done = client.post("/v1/jobs", json={"text": "Seed spoken.", "output": "seed-done", "format": "mp3"}).json()
    failed = client.post("/v1/jobs", json={"text": f"{DOOMED}.", "output": "seed-failed"}).json()
    for job, state in ((done, JobState.DONE), (failed, JobState.FAILED)):
        client.get(f"/v1/jobs/{job['job_id']}/events")  # returns once the job has finished
        assert client.get(f"/v1/jobs/{job['job_id']}").json()["state"] == state
    jobs = (cancelled, done, failed)
    return [*(job["job_id"] for job in jobs), *(job["name"] for job in jobs), done["job_id"][:8]], failed["job_id"]


def test_every_operation_of_the_schema_holds_up_to_generated_requests(run: Run) -> None:
    raw = _schema_to_test(run)
    takes_model = _takes_model(raw)
    operations = _operations(raw)
    problems: list[BaseException] = []

    def attempt(check: Callable[[], object]) -> None:
        # Every operation is tried whatever an earlier one found: one run reports every problem.
        try:
            check()
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup is a BaseExceptionGroup
            problems.append(exc)

    for operation in operations:
        for request in FOUND.get(operation.label, []):
            media_type = "application/json" if "body" in request else None
            attempt(partial(_send_and_check, run, operation.Case(media_type=media_type, **request)))
        valid = operation.as_strategy(generation_mode=GenerationMode.POSITIVE)
        attempt(partial(_fuzz, run, _steered(valid, run.refs, operation.label in takes_model), VALID_EXAMPLES))
        if operation.body or any(param.location != "path" for param in operation.iter_parameters()):
            # A bare string in the path has no invalid value: nothing to negate there.
            invalid = operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)
            attempt(partial(_fuzz, run, invalid, INVALID_EXAMPLES))
    attempt(partial(_assert_no_job_failed, run))
    attempt(partial(_assert_covered_and_clean, run, {operation.label for operation in operations}))
    if run.mismatches:
        warnings.warn(
            "the OpenAPI schema and the server disagree:\n  " + "\n  ".join(sorted(run.mismatches)), stacklevel=1
        )
    if problems:
        # pytest shows a group's members only in part: the message names each one.
        listing = "\n".join(f"{n}. {_summary(problem)}" for n, problem in enumerate(problems, 1))
        raise BaseExceptionGroup(f"{len(problems)} problem(s) with the HTTP front door:\n{listing}", problems)


def _summary(problem: BaseException) -> str:
    """What failed, and the request that reproduces it where there is one."""
    lines = [line.strip() for line in [*str(problem).splitlines(), *getattr(problem, "__notes__", [])]]
    lines = [line for line in lines if line]
    curls = [line for line in lines[1:] if line.startswith("curl ")]
    if isinstance(problem, FailureGroup):
        lines = [", ".join(failure.title for failure in problem.exceptions)]
    return "\n   ".join([f"{type(problem).__name__}: {lines[0] if lines else ''}", *curls])


def _operations(raw: dict[str, Any]) -> list[APIOperation[Any, Any, Any, Any]]:
    operations = []
    for result in schemathesis.openapi.from_dict(raw).get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        operations.append(result.ok())
    return operations


def _assert_covered_and_clean(run: Run, labels: set[str]) -> None:
    """Every operation was sent requests, and no file appeared outside the outbox and state directory."""
    assert set(run.sent) == labels, f"never sent a request: {labels - set(run.sent)}"
    assert run.rig.files_outside_outbox() == run.files_before


def _fuzz(run: Run, cases: st.SearchStrategy[Case[Any]], examples: int) -> None:
    @given(case=cases)
    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    def one(case: Case[Any]) -> None:
        _send_and_check(run, case)

    one()


def _send_and_check(run: Run, case: Case[Any]) -> None:
    request = case.as_transport_kwargs(base_url=BASE_URL)
    request.pop("cookies", None)  # the schema declares none; httpx deprecates per-request cookies
    if "json" in request:
        # Serialized here, ASCII-escaped: httpx would encode the text as UTF-8 and refuse a lone
        # surrogate, which JSON can carry (as an escape) and so the schema's strings can too.
        request["content"] = json.dumps(request.pop("json")).encode("ascii")
    elif "data" in request:
        request["content"] = request.pop("data")  # the raw bytes of an invalid body
    try:
        response = run.client.request(**request)
    except Exception as exc:
        raise AssertionError(f"the app crashed on: {case.as_curl_command(base_url=BASE_URL)}") from exc
    label = case.operation.label
    run.sent[label] = run.sent.get(label, 0) + 1
    if not _is_the_seeded_failure(run, response.status_code, response.headers, response.content):
        case.validate_response(response, checks=HARD_CHECKS)
    try:
        case.validate_response(response, checks=SOFT_CHECKS)
    except FailureGroup as group:
        kind = response.headers.get("content-type", "-").split(";")[0]
        for failure in group.exceptions:
            run.mismatches.add(f"{label} -> {response.status_code} {kind}: {failure.title}")
    stray = run.rig.files_outside_outbox() - run.files_before
    assert not stray, (
        f"files outside the outbox and state directory: {stray} after {case.as_curl_command(base_url=BASE_URL)}"
    )


def _is_the_seeded_failure(run: Run, status: int, headers: Mapping[str, str], content: bytes) -> bool:
    """The documented 500 for a failed job (its error names the job), for the job seeded to fail."""
    if status != 500 or headers.get("content-type") != "application/json":
        return False
    message = str(json.loads(content).get("error", {}).get("message", ""))
    return message.startswith(f"job {run.doomed_id} failed: ")


def _assert_no_job_failed(run: Run) -> None:
    """Every job the run queued finishes, and none fails but the seeded one."""
    store = run.rig.store

    def finished() -> bool:
        return not any(store.jobs(state, limit=1) for state in (JobState.QUEUED, JobState.RUNNING))

    wait_for(finished, 30.0, "the jobs the run queued to finish")
    failed = [job for job in store.jobs(JobState.FAILED, limit=None) if job.id != run.doomed_id]
    described = [f"{job.error_code}: {job.error_message} (job {job.spec_json})" for job in failed]
    codes = ", ".join(sorted({str(job.error_code) for job in failed}))
    assert not failed, f"{len(failed)} job(s) the server took failed ({codes}):\n" + "\n".join(described)


def _schema_to_test(run: Run) -> dict[str, Any]:
    """The schema the app serves, with POST /v1/jobs's body declared (the job-file model's schema)."""
    served: dict[str, Any] = run.client.get("/openapi.json").json()
    schema = copy.deepcopy(served)
    components: dict[str, Any] = schema["components"]["schemas"]
    job_file = JobFile.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in job_file.pop("$defs", {}).items():
        assert name not in components, f"the job-file schema's {name} would replace the app's"
        components[name] = definition
    submit = schema["paths"]["/v1/jobs"]["post"]
    assert "requestBody" not in submit, "POST /v1/jobs declares its body now: drop this addition"
    submit["requestBody"] = {"required": True, "content": {"application/json": {"schema": job_file}}}
    return schema


def _takes_model(schema: dict[str, Any]) -> set[str]:
    """The operations whose JSON body has a `model` field."""
    labels = set()
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            if "$ref" in body:
                body = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
            if "model" in body.get("properties", {}):
                labels.add(f"{method.upper()} {path}")
    return labels


def _steered(cases: st.SearchStrategy[Case[Any]], refs: list[str], takes_model: bool) -> st.SearchStrategy[Case[Any]]:
    """Valid cases, each path parameter and a body's model now and then replaced by a name the rig
    serves (both are plain strings in the schema: any value stays valid)."""

    @st.composite
    def steer(draw: st.DrawFn) -> Case[Any]:
        case = draw(cases)
        for name in case.path_parameters:
            ref = draw(st.none() | st.sampled_from(refs))
            if ref is not None:
                case.path_parameters[name] = ref
        if takes_model and isinstance(case.body, dict):
            model = draw(st.none() | st.sampled_from(SERVED_MODELS))
            if model is not None:
                case.body["model"] = model
        return case

    return steer()
