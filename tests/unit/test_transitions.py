"""Job state transitions: each move is allowed exactly where the table says, refused clearly
elsewhere (leaving the job as it was), and no other code in ttsd assigns a job's state."""

from __future__ import annotations

import ast
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

import ttsd
from ttsd.jobqueue import transitions
from ttsd.jobqueue.records import AudioInfo, Finished, Rejection, RunInfo
from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.tables import Job, utcnow
from ttsd.jobqueue.transitions import MOVES, IllegalTransition, Transition

NOW = utcnow()
AUDIO = AudioInfo(file="x.wav", format="wav", sample_rate=24_000, duration_s=1.0, bytes=100, sha256="0" * 64)
BLANK = Rejection(name="n", source_file="n.json", code="blank_text", message="text: must not be blank", field="text")
RUN = RunInfo(device="cpu", dtype="float32", seed=None, cache_hit=False, synth_s=0.1)

CALLS: dict[Transition, Callable[[Job], object]] = {
    Transition.CLAIM: lambda job: transitions.claim(job, "token", NOW),
    Transition.SUCCEED: lambda job: transitions.succeed(job, AUDIO, RUN, NOW),
    Transition.FAIL: lambda job: transitions.fail(job, "boom", "it broke", 3, None, NOW),
    Transition.INTERRUPT: lambda job: transitions.interrupt(job, 3, NOW),
    Transition.RELEASE: transitions.release,
    Transition.CANCEL: lambda job: transitions.cancel(job, NOW),
    Transition.RETRY: lambda job: transitions.retry(job, NOW),
    Transition.RESTORE: lambda job: transitions.restore(job, Finished(JobState.DONE, NOW, audio=AUDIO, run=RUN)),
    Transition.REJECT: lambda job: transitions.reject(
        job, Rejection("n", "n.json", "blank_text", "blank", "text"), NOW
    ),
    Transition.POSTPONE: lambda job: transitions.postpone(job, "no_space", "no space left", NOW),
    Transition.RESUME: transitions.resume,
}


def make_job(state: JobState, attempts: int = 0) -> Job:
    lease = "token" if state == JobState.RUNNING else None
    return Job(
        id="j1",
        content_key="k",
        name="n",
        model="m",
        batch_key="b",
        spec_json="{}",
        state=state,
        attempts=attempts,
        lease_token=lease,
    )


def test_every_transition_has_a_function() -> None:
    assert set(CALLS) == set(Transition) == set(MOVES)


@pytest.mark.parametrize("state", list(JobState))
@pytest.mark.parametrize("transition", list(Transition))
def test_a_move_happens_only_where_the_table_allows_it(transition: Transition, state: JobState) -> None:
    sources, targets = MOVES[transition]
    job = make_job(state)
    before = job.model_dump()
    if state in sources:
        CALLS[transition](job)
        assert job.state in targets
        assert (job.lease_token is not None) == (job.state == JobState.RUNNING)
    else:
        with pytest.raises(IllegalTransition, match=f"cannot {transition.value} job j1: it is {state.value}"):
            CALLS[transition](job)
        assert job.model_dump() == before


def test_the_refusal_says_what_the_move_needs() -> None:
    with pytest.raises(IllegalTransition) as refused:
        transitions.cancel(make_job(JobState.DONE), NOW)
    assert str(refused.value) == "cannot cancel job j1: it is done (cancel applies to queued or running jobs only)"


def test_a_failed_try_requeues_while_attempts_last_and_only_when_transient() -> None:
    later = NOW + timedelta(seconds=30)
    job = make_job(JobState.RUNNING, attempts=1)
    assert transitions.fail(job, "flaky", "again", 3, later, NOW) == JobState.QUEUED
    assert (job.attempts, job.not_before, job.finished_at, job.lease_token) == (2, later, None, None)
    job = make_job(JobState.RUNNING, attempts=2)
    assert transitions.fail(job, "flaky", "again", 3, later, NOW) == JobState.FAILED
    assert not transitions.runs_alone(job), "a clean failure does not make a job suspect"
    assert (job.attempts, job.finished_at, job.error_code) == (3, NOW, "flaky")
    job = make_job(JobState.RUNNING)
    assert transitions.fail(job, "bad_speaker", "no such voice", 3, None, NOW) == JobState.FAILED


def test_an_interrupted_try_counts_and_fails_the_job_at_max_attempts() -> None:
    job = make_job(JobState.RUNNING, attempts=1)
    assert transitions.interrupt(job, 3, NOW) == JobState.QUEUED
    assert (job.attempts, job.error_code) == (2, "interrupted")
    assert transitions.runs_alone(job), "a job whose worker died holding it runs alone next"
    assert transitions.interrupt(make_job(JobState.RUNNING, attempts=2), 3, NOW) == JobState.FAILED


def test_release_does_not_count_the_try_and_retry_resets_the_budget() -> None:
    job = make_job(JobState.RUNNING, attempts=2)
    transitions.release(job)
    assert (job.state, job.attempts, job.lease_token) == (JobState.QUEUED, 2, None)
    failed = make_job(JobState.FAILED, attempts=3)
    transitions.retry(failed, utcnow())
    assert failed.named_at is not None
    assert (failed.state, failed.attempts, failed.attempt_base) == (JobState.QUEUED, 3, 3)


def test_no_other_code_assigns_a_job_state() -> None:
    root = Path(ttsd.__file__).parent
    assigners = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[ast.expr] = node.targets if isinstance(node, ast.Assign) else []
            if isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                targets = [node.target]
            assigners += [
                f"{path.relative_to(root)}:{target.lineno}"
                for target in targets
                if isinstance(target, ast.Attribute) and target.attr == "state"
            ]
    assert {spot.split(":")[0] for spot in assigners} == {"jobqueue/transitions.py"}, assigners
