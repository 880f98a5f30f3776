"""The daemon harness itself (tests/support/daemon_harness.py), without starting a daemon."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.daemon_harness import DaemonEnv, wait_for


@pytest.fixture
def env(tmp_path: Path) -> DaemonEnv:
    no_models = tmp_path / "no-models"
    no_models.mkdir()
    return DaemonEnv.create(tmp_path / "env", no_models)


def test_daemons_get_one_torch_thread(env: DaemonEnv) -> None:
    assert env.env["TTS_TORCH_THREADS"] == "1"


def test_wait_for_returns_the_first_truthy_result() -> None:
    results = iter([None, 0, "", "found"])
    assert wait_for(lambda: next(results), 5, "a result", interval=0.001) == "found"


def test_wait_for_builds_a_callable_message_only_after_the_wait_failed() -> None:
    polls: list[int] = []
    described_at: list[int] = []

    def condition() -> None:
        polls.append(len(polls))

    def what() -> str:
        described_at.append(len(polls))
        return f"the impossible (polled {len(polls)} times)"

    with pytest.raises(AssertionError, match=r"timed out after 0.05s waiting for the impossible \(polled \d+ times\)"):
        wait_for(condition, 0.05, what, interval=0.005)
    assert described_at == [len(polls)], "the message is built once, after the last poll"


def test_wait_for_takes_a_plain_message() -> None:
    with pytest.raises(AssertionError, match="waiting for nothing at all"):
        wait_for(lambda: None, 0.01, "nothing at all", interval=0.005)


def test_drop_json_puts_a_complete_file_under_exactly_the_given_name(env: DaemonEnv) -> None:
    (env.inbox / "job.json").write_text("an older file of that name", encoding="utf-8")
    path = env.drop_json("job.json", {"text": "Grüße"})
    assert path == env.inbox / "job.json"
    assert json.loads(path.read_text(encoding="utf-8")) == {"text": "Grüße"}
    assert sorted(p.name for p in env.inbox.iterdir()) == ["job.json"], "no temp file is left behind"


def test_status_reads_complete_documents_only(env: DaemonEnv) -> None:
    assert env.status("absent") is None
    (env.outbox / "broken.status.json").write_text('{"state": "do', encoding="utf-8")
    assert env.status("broken") is None
    (env.outbox / "good.status.json").write_text('{"state": "done"}', encoding="utf-8")
    assert env.status("good") == {"state": "done"}
