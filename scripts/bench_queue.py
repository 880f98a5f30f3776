"""Queue throughput on SQLite and on PostgreSQL, side by side in one run (issue 15: the queue on
PostgreSQL, workers on many hosts).

  claims   --jobs jobs (default 2,000) queued at once, then claimed one at a time (batch 1) and
           finished by P worker processes, for each P of --processes (default 1 and 8): each a
           "spawn" process with its own `Store` and lease token, all released together once every
           one has imported and opened the queue; from the release until the last worker finds the
           queue empty: claim+finish per second
  intake   --files `.txt` job files (default 500), one distinct line each, staged under hidden temp
           names and renamed into the inbox at once, as `scripts/benchmark.py`'s intake burst does,
           taken by the real `Intake` thread fed by the real `InboxWatcher` (the daemon's pair,
           in this process); from the first rename until every file is a row in the queue
           (files/s), and until every file was moved to accepted/

Each measurement gets a fresh queue. PostgreSQL is a throw-away server this script starts
(`tests.support.postgres.Cluster`: a unix socket, fsync off); the SQLite files and the inbox live in
RAM (/dev/shm where there is one, else the temp folder), so neither backend waits on a disk: the
figures compare the two engines and ttsd's use of them, not storage. Run it on a quiet machine: the
worker processes, intake and the server share its cores.

Progress goes to stderr; stdout gets the table, or with --json one JSON object.

    .venv/bin/python scripts/bench_queue.py
    .venv/bin/python scripts/bench_queue.py --jobs 5000 --processes 1,4,16 --files 2000 --json
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import multiprocessing
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any, Literal

# The repository root, for `tests.support` (never installed); ttsd is then this checkout's too.
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

import psycopg
from bench_engines import batch_list, positive
from benchmark import count_moved, count_rows, make_texts, progress, wait_until

from tests.support.fakes import FAKE_MODEL, make_spec
from tests.support.postgres import PostgresMissing, postgres_server
from ttsd.client import StagedJob
from ttsd.config import Settings
from ttsd.delivery.outbox import Outbox
from ttsd.fsutil import stage_file
from ttsd.intake.intake import Intake, IntakeSettings
from ttsd.intake.watcher import Hint, InboxWatcher
from ttsd.jobqueue.records import AudioInfo, RunInfo
from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.store import Store

Backend = Literal["sqlite", "postgresql"]
BACKENDS: tuple[Backend, ...] = ("sqlite", "postgresql")

AUDIO = AudioInfo(file="bench.wav", format="wav", sample_rate=24_000, duration_s=1.0, bytes=100, sha256="0" * 64)
RUN = RunInfo(device="cpu", dtype="float32", seed=None, cache_hit=False, synth_s=0.0)
POLL_S = 0.01
"""Polling the queue for the intake burst's rows: well below what is measured (seconds)."""


@dataclass(frozen=True)
class Timed:
    """One backend's run of one measurement: `count` things in `seconds`."""

    count: int
    seconds: float

    @property
    def per_s(self) -> float:
        """Things per second."""
        return self.count / self.seconds


@dataclass(frozen=True)
class Row:
    """One measurement on both backends."""

    label: str
    unit: str
    runs: dict[str, Timed]

    @property
    def ratio(self) -> float | None:
        """PostgreSQL's rate over SQLite's (above 1: PostgreSQL is faster)."""
        sqlite, postgresql = self.runs.get("sqlite"), self.runs.get("postgresql")
        return None if sqlite is None or postgresql is None else postgresql.per_s / sqlite.per_s

    def as_json(self) -> dict[str, Any]:
        """The row as JSON: each backend's count, seconds and rate, and the ratio."""
        backends = {name: {**asdict(run), "per_s": run.per_s} for name, run in self.runs.items()}
        return {"label": self.label, "unit": self.unit, **backends, "pg_over_sqlite": self.ratio}


@dataclass
class QueueBench:
    """The whole run."""

    jobs: int
    files: int
    processes: tuple[int, ...]
    postgres: str = ""
    """The server's version."""
    sqlite_folder: str = ""
    rows: list[Row] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The run as one JSON-ready object."""
        return {
            "jobs": self.jobs,
            "files": self.files,
            "processes": list(self.processes),
            "postgres": self.postgres,
            "sqlite_folder": self.sqlite_folder,
            "rows": [row.as_json() for row in self.rows],
        }

    def render(self) -> list[str]:
        """The table: one row per measurement, both backends and the ratio."""
        width = max(len(f"{row.label} ({row.unit})") for row in self.rows)
        lines = [
            f"queue: {self.jobs} jobs claimed one at a time, {self.files} intake files; PostgreSQL {self.postgres} "
            f"(fsync off) against SQLite in {self.sqlite_folder}",
            f"{'':{width}} {'SQLite':>10} {'PostgreSQL':>11} {'PG/SQLite':>10}",
        ]
        for row in self.rows:
            cells = [f"{run.per_s:.0f}" if run else "-" for run in (row.runs.get("sqlite"), row.runs.get("postgresql"))]
            ratio = "-" if row.ratio is None else f"{row.ratio:.2f}"
            lines.append(f"{row.label + ' (' + row.unit + ')':{width}} {cells[0]:>10} {cells[1]:>11} {ratio:>10}")
        return lines


# --- claims ------------------------------------------------------------------------------------------


def claim_and_finish(barrier: threading.Barrier, target: str, token: str, timeout_s: float, out: str) -> None:
    """One worker process: claim one job at a time under `token` and finish it, until a claim finds
    the queue empty; writes how many it finished and when it started and ended to `out`."""
    finished = 0
    try:
        store = Store(target)
    except BaseException:
        barrier.abort()  # the others, and run_workers, stop waiting for this one at once
        raise
    try:
        barrier.wait(timeout=timeout_s)
        # time.monotonic is CLOCK_MONOTONIC on Linux: one clock for every process of the machine.
        started = time.monotonic()
        while time.monotonic() < started + timeout_s:
            _token, jobs = store.claim(FAKE_MODEL, max_batch=1, token=token)
            if not jobs:
                break
            finished += sum(store.finish_done(job.id, token, AUDIO, RUN) for job in jobs)
        ended = time.monotonic()
    finally:
        store.close()
    Path(out).write_text(json.dumps({"finished": finished, "started": started, "ended": ended}), encoding="utf-8")


def run_workers(target: str, processes: int, timeout_s: float, folder: Path) -> list[dict[str, float]]:
    """Start `processes` workers on `target`, release them together, wait for all; their reports."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes + 1)
    outs = [folder / f"worker-{n}.json" for n in range(processes)]
    workers: list[SpawnProcess] = [
        context.Process(target=claim_and_finish, args=(barrier, target, f"bench-{n}", timeout_s, str(out)))
        for n, out in enumerate(outs)
    ]
    for worker in workers:
        worker.start()
    try:
        try:
            barrier.wait(timeout=timeout_s)
        except threading.BrokenBarrierError:
            raise RuntimeError(f"a worker failed, or was not ready within {timeout_s:g} s; see stderr") from None
        deadline = time.monotonic() + timeout_s + 30.0
        for worker in workers:
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()
                worker.join(timeout=10)
    failed = [worker.exitcode for worker in workers if worker.exitcode != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} worker process(es) failed (exit codes {failed}); see stderr")
    return [json.loads(out.read_text(encoding="utf-8")) for out in outs]


def measure_claims(target: str, jobs: int, processes: int, timeout_s: float, folder: Path) -> Timed:
    """`jobs` queued, then claimed and finished by `processes` workers."""
    folder.mkdir(parents=True)
    with contextlib.closing(Store(target)) as store:
        specs = [(make_spec(text), None) for text in make_texts(jobs, prefix="Claim")]
        store.enqueue_many(specs)
        reports = run_workers(target, processes, timeout_s, folder)
        counts = store.counts()
    finished = sum(int(report["finished"]) for report in reports)
    if finished != jobs or counts != {FAKE_MODEL: {JobState.DONE: jobs}}:
        raise RuntimeError(f"claims: {finished} of {jobs} jobs finished; the queue says {counts}")
    return Timed(jobs, max(r["ended"] for r in reports) - min(r["started"] for r in reports))


# --- intake ------------------------------------------------------------------------------------------


def measure_intake(database_url: str, files: int, timeout_s: float, folder: Path) -> tuple[Timed, Timed]:
    """The burst of `files` .txt files into a fresh inbox, on the queue `database_url` names (empty:
    a SQLite file in the state folder, as a daemon's); (until recorded, until moved)."""
    settings = Settings(
        inbox=folder / "inbox",
        outbox=folder / "outbox",
        state_dir=folder / "state",
        database_url=database_url,
        max_queue_size=1_000_000,
    )
    settings.inbox.mkdir(parents=True)
    # Staged before the watcher starts: the hidden temp files' own events never reach intake (the
    # daemon in benchmark.py sees them, and is given a second to drain them).
    staged = [
        StagedJob(
            stage_file(settings.inbox, f"{text}\n".encode(), durable=False), settings.inbox / f"burst-{n:05d}.txt"
        )
        for n, text in enumerate(make_texts(files, prefix="Intake"))
    ]
    outbox = Outbox(settings.outbox)
    hints: queue.Queue[Hint | None] = queue.Queue()
    stop = threading.Event()
    with (
        contextlib.closing(Store(settings.queue_target)) as store,
        contextlib.closing(Store(settings.queue_target)) as monitor,
    ):
        intake = Intake(IntakeSettings.from_settings(settings, "bench"), store, outbox, hints, stop)
        watcher = InboxWatcher(settings.inbox, hints)
        watcher.start()
        intake.start()
        try:
            started = time.perf_counter()
            for job in staged:
                job.drop()
            recorded = wait_until(lambda: count_rows(monitor) >= files, timeout_s, "the burst", POLL_S)
            moved = wait_until(lambda: count_moved(settings.inbox) >= files, timeout_s, "the burst moved", POLL_S)
        finally:
            stop.set()
            hints.put(None)  # wakes intake from its wait for hints, to see the stop
            watcher.stop()
            intake.join(timeout=10)
        queued = sum(per_state.get(JobState.QUEUED, 0) for per_state in monitor.counts().values())
    if queued != files:
        raise RuntimeError(f"intake: {queued} of {files} files became queued jobs")
    return Timed(files, recorded - started), Timed(files, moved - started)


# --- the run -----------------------------------------------------------------------------------------


def ram_folder() -> str | None:
    """Where to put SQLite files and the inbox: in RAM when this machine has /dev/shm."""
    return "/dev/shm" if Path("/dev/shm").is_dir() else None


def bench_queue(
    jobs: int = 2_000,
    processes: Sequence[int] = (1, 8),
    files: int = 500,
    timeout_s: float = 600.0,
    log: Callable[[str], None] = progress,
) -> QueueBench:
    """Every measurement on both backends (SQLite first each time). Raises `PostgresMissing` when
    there is no PostgreSQL server to start."""
    bench = QueueBench(jobs, files, tuple(processes))
    with tempfile.TemporaryDirectory(prefix="ttsd-bench-queue-", dir=ram_folder()) as temp, postgres_server() as pg:
        work = Path(temp)
        bench.sqlite_folder = str(work)
        with psycopg.connect(pg.url()) as connection:
            version = connection.execute("SHOW server_version").fetchone()
            bench.postgres = str(version[0]).split()[0] if version else "?"
        numbers = itertools.count()  # each run's own folder and queue
        for count in processes:
            runs: dict[str, Timed] = {}
            for backend in BACKENDS:
                n = next(numbers)
                target = pg.create_database() if backend == "postgresql" else str(work / f"q{n}" / "ttsd.sqlite3")
                log(f"claims: {jobs} jobs, {count} process(es), {backend}")
                runs[backend] = measure_claims(target, jobs, count, timeout_s, work / f"claims-{n}")
                log(f"  {runs[backend].per_s:.0f} claim+finish/s")
            bench.rows.append(Row(f"claim+finish, {count} process{'es' if count > 1 else ''}", "jobs/s", runs))
        recorded: dict[str, Timed] = {}
        moved: dict[str, Timed] = {}
        for backend in BACKENDS:
            n = next(numbers)
            log(f"intake: {files} .txt files, {backend}")
            url = pg.create_database() if backend == "postgresql" else ""
            recorded[backend], moved[backend] = measure_intake(url, files, timeout_s, work / f"intake-{n}")
            log(f"  {recorded[backend].per_s:.0f} files/s recorded, {moved[backend].per_s:.0f} files/s moved")
        bench.rows.append(Row("intake, until recorded", "files/s", recorded))
        bench.rows.append(Row("intake, until moved to accepted/", "files/s", moved))
    return bench


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, then print the table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=positive, default=2_000, help="jobs per claim run (default 2000)")
    parser.add_argument(
        "--processes", type=batch_list, default=(1, 8), help="worker processes per claim run, comma-separated (1,8)"
    )
    parser.add_argument("--files", type=positive, default=500, help="intake burst size (default 500)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds any one wait may take")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    try:
        bench = bench_queue(args.jobs, args.processes, args.files, args.timeout)
    except PostgresMissing as exc:
        parser.exit(2, f"bench_queue: {exc}\n")
    print(json.dumps(bench.as_json(), indent=2) if args.json else "\n".join(bench.render()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
