"""Three hosts on one PostgreSQL queue, under chaos: two `ttsd run` daemons and a `ttsd worker`
(each its own state directory, one database, a shared inbox and outbox) and 300 jobs; one daemon or another is killed
with SIGKILL five times at random moments and started again, and the database server restarts
once. Nothing is lost, nothing is delivered twice, and every status file matches its audio."""

from __future__ import annotations

import hashlib
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.assertions import assert_real_wav
from tests.support.daemon_harness import DaemonEnv, wait_for
from tests.support.hosts import count_messages, host_id_of, leased_by, log_records, running, shared_hosts
from tests.support.postgres import Cluster
from ttsd.intake.folders import INTAKE_FOLDERS
from ttsd.jobqueue.store import Store
from ttsd.ops.lock import INBOX_LOCK_NAME

SEED = 15
ROLES = ("run", "run", "worker")
HOSTS = len(ROLES)
JOBS = 300
FIRST_DROP = 100
KILLS = 5
LATER_DROP = (JOBS - FIRST_DROP) // KILLS
DEADLINE_S = 8 * 60
DONE_LINE = ") done: "
"""What the worker logs when it delivered a job (ttsd.synth.keeping)."""


def job_name(number: int) -> str:
    return f"line-{number:03d}"


def job_text(number: int) -> str:
    return f"Line {number} of the night."


@pytest.fixture
def hosts(tmp_path: Path, tiny_models: Path, pg_url: str) -> Iterator[list[DaemonEnv]]:
    made = shared_hosts(
        tmp_path,
        tiny_models,
        HOSTS,
        TTS_DATABASE_URL=pg_url,
        # A killed host's jobs go stale, and another host takes them, within seconds.
        TTS_LEASE_S="10",
        TTS_MAX_QUEUE_SIZE="1000",
        # Every job is synthesized: none is a copy of another's audio.
        TTS_ENABLE_CACHE="false",
    )
    try:
        yield made
    finally:
        for host in made:
            host.stop_all()


@pytest.fixture
def queue(pg_url: str) -> Iterator[Store]:
    """The hosts' queue, as the test reads it."""
    store = Store(pg_url)
    try:
        yield store
    finally:
        store.close()


def audio_files(outbox: Path) -> int:
    return sum(1 for path in outbox.glob("*.wav") if not path.name.startswith("."))


def wait_for_audio(outbox: Path, count: int, timeout: float, context: str) -> None:
    """Wait until at least `count` jobs delivered their audio."""
    wait_for(
        lambda: audio_files(outbox) >= count,
        timeout,
        lambda: f"{count} audio files (now {audio_files(outbox)}) {context}",
        interval=0.25,
    )


def wait_for_release(queue: Store, owner: str, timeout: float) -> None:
    """Wait until no job is running under a lease of host `owner`."""
    wait_for(
        lambda: not leased_by(queue, owner),
        timeout,
        lambda: f"host {owner}'s jobs to be taken back (still {leased_by(queue, owner)})",
        interval=0.5,
    )


def statuses(env: DaemonEnv, names: list[str]) -> dict[str, dict[str, object] | None]:
    return {name: env.status(name) for name in names}


@pytest.mark.slow
@pytest.mark.timeout(DEADLINE_S + 120)
def test_three_hosts_kills_and_a_database_restart_lose_nothing(
    hosts: list[DaemonEnv], queue: Store, pg_cluster: Cluster
) -> None:
    rng = random.Random(SEED)
    print(f"chaos seed {SEED}")
    started = time.monotonic()

    def left(cap: float) -> float:
        return max(1.0, min(cap, DEADLINE_S - (time.monotonic() - started)))

    shared = hosts[0]
    names = [job_name(number) for number in range(JOBS)]
    dropped = 0

    def drop(count: int) -> None:
        nonlocal dropped
        for number in range(dropped, dropped + count):
            shared.drop_json(f"{job_name(number)}.json", {"text": job_text(number), "speaker": "Ryan"})
        dropped += count

    daemons = [host.start(role) for host, role in zip(hosts, ROLES, strict=True)]
    for daemon in daemons:
        daemon.wait_ready()
    drop(FIRST_DROP)

    # The plan: five kills, each of a host drawn at random, once a drawn number of jobs are done
    # (and a random moment more); the database restarts between two of them. 40 more jobs after
    # each step but the last, so jobs arrive throughout the chaos.
    steps: list[str] = ["kill"] * KILLS
    steps.insert(rng.randint(1, KILLS - 1), "postgres")
    threshold = 0
    log: list[str] = []
    for number, step in enumerate(steps):
        threshold = max(threshold + 5, LATER_DROP * number + rng.randint(10, 60))
        wait_for_audio(shared.outbox, threshold, left(180), f"before chaos step {number}; {log}")
        pause = rng.uniform(0.0, 1.5)
        if step == "kill":
            victim = rng.randrange(HOSTS)
            daemon = hosts[victim].processes[-1]
            # The random moment: the victim must still be serving until then.
            assert daemon.wait_exit_or(pause) is None, daemon.log()
            daemon.kill()
            owner = host_id_of(hosts[victim])
            held = leased_by(queue, owner)
            at = audio_files(shared.outbox)
            if rng.random() < 0.5:
                # Away until its leases went stale: the other hosts take its jobs back.
                wait_for_release(queue, owner, left(60))
                how = "restarted once the others took its jobs back"
            else:
                how = "restarted at once"
            log.append(f"killed host {victim} holding {len(held)} job(s) at {at} done, {how}")
            hosts[victim].start(ROLES[victim]).wait_ready(timeout=left(90))
        else:
            assert all(daemon.wait_exit_or(pause / HOSTS) is None for daemon in running(hosts))
            pg_cluster.restart("fast")
            log.append(f"restarted PostgreSQL at {audio_files(shared.outbox)} done")
        if dropped < JOBS:
            drop(min(LATER_DROP, JOBS - dropped))
    assert dropped == JOBS
    print("; ".join(log))

    def all_done() -> bool:
        documents = statuses(shared, names)
        finished_otherwise = {
            name: document["error"]
            for name, document in documents.items()
            if document is not None and document.get("state") in ("failed", "cancelled", "rejected")
        }
        # A job that ended any other way will never be done: fail now, saying why.
        assert finished_otherwise == {}, f"jobs that did not end done: {finished_otherwise}; {log}"
        return all(document is not None and document.get("state") == "done" for document in documents.values())

    def how_things_stand() -> str:
        states = Counter(str(d.get("state")) if d else "none" for d in statuses(shared, names).values())
        return f"all {JOBS} jobs done (now {dict(states)}); {log}"

    wait_for(all_done, left(DEADLINE_S), how_things_stand, interval=1.0)
    chaos_s = time.monotonic() - started

    # Every host is still (or again) serving; each stops cleanly.
    final = running(hosts)
    assert len(final) == HOSTS, [host.processes[-1].log()[-3000:] for host in hosts]
    for daemon in final:
        daemon.process.terminate()
    for daemon in final:
        assert daemon.wait_exit(60) == 0, daemon.log()[-3000:]

    # The inbox: every file taken once, moved to accepted/, none rejected, nothing but intake's
    # own folders left behind.
    accepted = shared.inbox / "accepted"
    assert sorted(path.name for path in accepted.iterdir()) == [f"{name}.json" for name in names]
    assert {path.name for path in shared.inbox.iterdir()} <= INTAKE_FOLDERS | {INBOX_LOCK_NAME}
    rejected = shared.inbox / "rejected"
    assert not rejected.exists() or not any(rejected.iterdir())

    # The outbox: one audio file and one status file per job, nothing else (a killed host's temp
    # files are swept after an hour on a shared outbox, so they may be there: counted, not failed).
    visible = sorted(path.name for path in shared.outbox.iterdir() if not path.name.startswith("."))
    assert visible == sorted([f"{name}.wav" for name in names] + [f"{name}.status.json" for name in names])
    leftovers = [path.name for path in shared.outbox.iterdir() if path.name.startswith(".")]

    documents = statuses(shared, names)
    for name, document in documents.items():
        assert document is not None and document["state"] == "done", (name, document)
        audio = document["audio"]
        assert isinstance(audio, dict), (name, document)
        assert audio["file"] == f"{name}.wav", (name, audio)
        data = (shared.outbox / audio["file"]).read_bytes()
        assert audio["bytes"] == len(data), (name, audio)
        assert audio["sha256"] == hashlib.sha256(data).hexdigest(), (name, audio)
        assert_real_wav(shared.outbox / audio["file"], sample_rate=audio["sample_rate"])

    # The queue: 300 jobs, all done once, each with the audio its status file names.
    assert queue.counts() == {"tiny": {"done": JOBS}}
    jobs = {job.name: job for job in queue.jobs(limit=None)}
    assert sorted(jobs) == names
    for name, job in jobs.items():
        document = documents[name]
        assert document is not None and document["job_id"] == job.id
        audio = document["audio"]
        assert isinstance(audio, dict) and audio["sha256"] == job.audio_sha256
        # Killed hosts are not the jobs' fault: a host's own restart gives its jobs back free, and
        # so does another host that takes back the stale leases of a host whose daemon is silent.
        assert job.attempts == 1, (name, job.attempts, job.restarts)
    attempts = Counter(job.attempts for job in jobs.values())

    # No job was delivered twice: each has at most one "done" record in all the hosts' logs (a
    # host killed right after a delivery may not have written its worker's record).
    records = log_records(daemon for host in hosts for daemon in host.processes)
    delivered = count_messages(records, DONE_LINE)
    twice = {job_id: times for job_id, times in delivered.items() if times > 1}
    assert twice == {}
    assert set(delivered) <= {job.id for job in jobs.values()}
    interrupted = sum(count_messages(records, "was interrupted by the daemon's end").values())
    stalled = sum(count_messages(records, "stalled (no heartbeat").values())
    discarded = sum(count_messages(records, "reclaimed before delivery").values())
    print(
        f"chaos took {chaos_s:.0f}s; attempts {dict(attempts)}; {sum(delivered.values())} done records; "
        f"{interrupted} jobs recovered by their restarted host, {stalled} by another; "
        f"{discarded} results discarded; {len(leftovers)} temp files left"
    )
