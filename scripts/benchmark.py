"""Throughput and latency of ttsd against bare qwen-tts, on one checkpoint, in one run.

Every measurement uses the same checkpoint, device and dtype, the same N distinct short texts, the
same speaker and language, and the same `max_new_tokens` (the jobs carry it in `generation`):

  bare sequential  one `generate_custom_voice` call per text, one after the other: the naive script
  bare batched     ceil(N / B) calls of B texts, for `--batch` and each of `--try-batches`; the
                   fastest is reported as "bare optimal", the physical best for this engine here
  ttsd             a real `python -m ttsd run` (TTS_MAX_BATCH=--batch, model loaded and warm): N job
                   files renamed into its inbox at once; from the first rename until every status
                   file says done. The texts are all new, so the cache (on, as by default) never hits
  intake           a second daemon whose jobs name a model that never finishes loading (its hub is a
                   socket that accepts and never answers), so no synthesis competes with intake:
                   `--intake-files` job files renamed in at once, until every one is a row in the
                   queue (files/s); then single files, one at a time, rename -> status says queued
  cache            back on the first daemon: a job identical to one already done, under a new output
                   name (the cache key ignores the name), one at a time, rename -> status says done

Percentiles are nearest-rank (p99 of 50 samples is the largest). The targets are reported, not
asserted. Progress goes to stderr; stdout gets the table, or with --json one JSON object.

    .venv/bin/python scripts/benchmark.py                       # tiny checkpoint, 64 jobs, table
    .venv/bin/python scripts/benchmark.py --jobs 16 --json
    .venv/bin/python scripts/benchmark.py --model qwen3-tts-0.6b --max-new-tokens 120 --device auto
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from ttsd.catalog import build_registry, checkpoint_kind
from ttsd.client import read_status, stage_job, status_path
from ttsd.jobqueue.store import Store
from ttsd.synth.engine.base import DevicePlan
from ttsd.synth.engine.device import plan_device
from ttsd.synth.engine.qwen_import import import_qwen_tts_quietly
from ttsd.synth.engine.weights import resolve_checkpoint

READY_LINE = "serving"
SPEAKER = "Ryan"
LANGUAGE = "Auto"
# The intake daemon's jobs name this model; its weights "download" from a hub that never answers.
PARKED_MODEL = "parked"
PARKED_REPO = "ttsd-benchmark/never-downloaded"
# What the daemons call a checkpoint folder given as `--model` (a registry name keeps its own name).
LOCAL_MODEL_NAME = "bench"

# A load average at start above this means something else was running (see render_table).
BUSY_LOAD = 0.5

DONE = "done"
FINAL_STATES = frozenset({"done", "failed", "cancelled", "rejected"})

_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "She said she would be here by noon.",
    "Please leave the parcel at the front door.",
    "The train to the coast leaves at half past nine.",
    "Rain is expected later this afternoon.",
    "Remember to water the plants on Sunday.",
    "The meeting has moved to the second floor.",
    "A cup of tea would be lovely, thank you.",
)


@dataclass(frozen=True)
class Options:
    """The command line, parsed."""

    jobs: int
    batch: int
    try_batches: tuple[int, ...]
    model: str
    max_new_tokens: int
    device: str
    threads: int
    intake_files: int
    latency_samples: int
    cache_samples: int
    timeout_s: float
    workdir: Path | None
    as_json: bool


@dataclass(frozen=True)
class Target:
    """A goal a figure is reported against: `value <op> limit`."""

    op: str
    limit: float

    def met(self, value: float | None) -> bool | None:
        """Whether `value` reaches the target (None when there is no value)."""
        if value is None:
            return None
        return value >= self.limit if self.op == ">=" else value <= self.limit


# The targets: throughput ratios, intake files/s, latencies in milliseconds.
TARGETS: dict[str, Target] = {
    "ttsd_vs_sequential": Target(">=", 2.0),
    "ttsd_vs_optimal": Target(">=", 0.85),
    "intake_files_per_s": Target(">=", 500.0),
    "queued_p50_ms": Target("<=", 100.0),
    "queued_p99_ms": Target("<=", 500.0),
    "cache_p50_ms": Target("<=", 50.0),
}


@dataclass(frozen=True)
class Run:
    """`jobs` texts spoken in `seconds` of wall time with `calls` generate calls (None: not known)."""

    label: str
    jobs: int
    seconds: float
    calls: int | None
    batch: int | None

    @property
    def jobs_per_s(self) -> float:
        """Throughput."""
        return self.jobs / self.seconds


@dataclass(frozen=True)
class Latencies:
    """Per-sample latencies in seconds."""

    samples: tuple[float, ...]

    def percentile_ms(self, percent: float) -> float | None:
        """Nearest-rank percentile in milliseconds (None without samples)."""
        if not self.samples:
            return None
        ordered = sorted(self.samples)
        rank = max(1, math.ceil(percent / 100 * len(ordered)))
        return ordered[rank - 1] * 1000


@dataclass(frozen=True)
class IntakeResult:
    """The burst: files renamed in at once, until all are rows in the queue, and until all are moved."""

    files: int
    recorded_s: float
    moved_s: float

    @property
    def files_per_s(self) -> float:
        """Files recorded per second."""
        return self.files / self.recorded_s


@dataclass
class Report:
    """Everything measured in one run."""

    model: str
    checkpoint: str
    plan: DevicePlan
    jobs: int
    batch: int
    max_new_tokens: int
    threads: int = 0
    sequential: Run | None = None
    batched: list[Run] = field(default_factory=list)
    ttsd: Run | None = None
    intake: IntakeResult | None = None
    queued: Latencies = Latencies(())
    cache: Latencies = Latencies(())
    cache_hits: int = 0
    load_average: tuple[float, float] = (0.0, 0.0)

    def batched_at(self, size: int) -> Run | None:
        """The bare run at batch `size`, if it was measured."""
        return next((run for run in self.batched if run.batch == size), None)

    @property
    def optimal(self) -> Run | None:
        """The fastest bare batched run."""
        return max(self.batched, key=lambda run: run.jobs_per_s, default=None)

    def ratio(self, baseline: Run | None) -> float | None:
        """ttsd throughput over `baseline`'s."""
        if self.ttsd is None or baseline is None:
            return None
        return self.ttsd.jobs_per_s / baseline.jobs_per_s

    def figures(self) -> dict[str, float | None]:
        """The figures that have targets, under the targets' keys."""
        return {
            "ttsd_vs_sequential": self.ratio(self.sequential),
            "ttsd_vs_optimal": self.ratio(self.optimal),
            "intake_files_per_s": self.intake.files_per_s if self.intake else None,
            "queued_p50_ms": self.queued.percentile_ms(50),
            "queued_p99_ms": self.queued.percentile_ms(99),
            "cache_p50_ms": self.cache.percentile_ms(50),
        }


def progress(message: str) -> None:
    """A line on stderr, so stdout stays the table or the JSON."""
    print(f"[benchmark] {message}", file=sys.stderr, flush=True)


def make_texts(count: int, prefix: str = "Number") -> list[str]:
    """`count` distinct short sentences."""
    return [f"{prefix} {i + 1}. {_SENTENCES[i % len(_SENTENCES)]}" for i in range(count)]


# --- the checkpoint ---------------------------------------------------------------------------------


def resolve_model(model: str, work: Path) -> tuple[str, Path]:
    """The daemon-side name and the local checkpoint directory of `--model`.

    A registry name is resolved as ttsd resolves it (tiny built into `work`, official models from the
    Hugging Face cache or downloaded); anything else must be a local checkpoint directory. The
    daemons then get the directory through TTS_MODELS, so all three measurements read the very same
    files and no daemon builds or downloads anything while it is being timed.
    """
    entry = build_registry({}).get(model)
    if entry is not None:
        return model, resolve_checkpoint(entry, work / "models")
    directory = Path(model).expanduser().absolute()
    if not (directory / "config.json").is_file():
        raise SystemExit(f"--model {model!r} is neither a registry name nor a checkpoint directory")
    return LOCAL_MODEL_NAME, directory


def require_custom_voice(checkpoint: Path) -> None:
    """The benchmark speaks with a named speaker: only CustomVoice checkpoints take one."""
    kind = checkpoint_kind(checkpoint)
    if kind != "custom_voice":
        raise SystemExit(f"{checkpoint} is a {kind} checkpoint; the benchmark needs a CustomVoice one")


# --- bare qwen-tts ----------------------------------------------------------------------------------


def load_bare_model(checkpoint: Path, plan: DevicePlan) -> Any:
    """The official model, loaded the way ttsd's engine loads it."""
    import torch

    qwen_tts = import_qwen_tts_quietly()
    model = qwen_tts.Qwen3TTSModel.from_pretrained(
        str(checkpoint),
        device_map=plan.device,
        dtype=getattr(torch, plan.dtype),
        attn_implementation=plan.attention,
    )
    # As ttsd does: otherwise every generate call logs "Setting pad_token_id to eos_token_id".
    model.model.talker.generation_config.pad_token_id = model.model.config.talker_config.codec_eos_token_id
    return model


def speak(model: Any, texts: Sequence[str], max_new_tokens: int) -> None:
    """One generate call for `texts`, with the arguments ttsd's engine passes."""
    count = len(texts)
    model.generate_custom_voice(
        text=list(texts),
        speaker=[SPEAKER] * count,
        language=[LANGUAGE] * count,
        instruct=[""] * count,
        max_new_tokens=max_new_tokens,
    )


def time_batches(model: Any, texts: Sequence[str], size: int, max_new_tokens: int, label: str) -> Run:
    """Speak `texts` in consecutive calls of `size` texts (the last one may be smaller)."""
    groups = [texts[start : start + size] for start in range(0, len(texts), size)]
    started = time.perf_counter()
    for group in groups:
        speak(model, group, max_new_tokens)
    return Run(label, len(texts), time.perf_counter() - started, len(groups), size)


def measure_bare(report: Report, checkpoint: Path, options: Options) -> None:
    """Bare sequential, then bare batched at every size tried; the model is freed afterwards."""
    import torch

    if options.threads:
        torch.set_num_threads(options.threads)
    report.threads = torch.get_num_threads()
    texts = make_texts(options.jobs)
    progress(f"bare qwen-tts: loading {checkpoint} ({report.threads} torch threads)")
    model = load_bare_model(checkpoint, report.plan)
    # The first call pays one-off costs (lazy kernels, allocator growth) that no later call pays.
    speak(model, ["Warm up."], options.max_new_tokens)
    progress(f"bare qwen-tts: {len(texts)} calls of one text")
    report.sequential = time_batches(model, texts, 1, options.max_new_tokens, "bare sequential")
    for size in sorted({options.batch, *options.try_batches}):
        progress(f"bare qwen-tts: batches of {size}")
        report.batched.append(time_batches(model, texts, size, options.max_new_tokens, f"bare batch {size}"))
    del model
    gc.collect()


# --- daemons ----------------------------------------------------------------------------------------


@dataclass
class Daemon:
    """One `python -m ttsd run` subprocess on its own folders."""

    process: subprocess.Popen[bytes]
    log_path: Path
    json_log: Path
    inbox: Path
    outbox: Path
    db_path: Path
    status: StatusReader

    def log(self) -> str:
        """Everything the daemon wrote so far: its log file (JSON lines), then its stdout/stderr
        (where it writes only warnings when it has a log file and no terminal)."""
        paths = [path for path in (self.json_log, self.log_path) if path.exists()]
        return "\n".join(path.read_text(encoding="utf-8", errors="replace") for path in paths)

    def check_alive(self) -> None:
        """Fail with the daemon's log if it has exited."""
        if self.process.poll() is not None:
            raise RuntimeError(f"the daemon exited with {self.process.returncode}:\n{self.log()[-4000:]}")

    def serving(self) -> bool:
        """Whether it logged that it serves (it logs that after preloading); fails if it exited."""
        self.check_alive()
        return READY_LINE in self.log()

    def stop(self) -> None:
        """SIGTERM for a graceful stop; SIGKILL if that takes too long."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


def daemon_environment(root: Path, settings: dict[str, str]) -> dict[str, str]:
    """This process's environment without any TTS_ setting of the user's, plus the folders and
    `settings` (the benchmark must not inherit, say, a TTS_MAX_QUEUE_SIZE or a TTS_FAULT)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TTS_")}
    env.update(
        {
            "TTS_STATE_DIR": str(root / "state"),
            "TTS_INBOX": str(root / "inbox"),
            "TTS_OUTBOX": str(root / "outbox"),
            "HF_HUB_OFFLINE": "1",
            "HF_HOME": str(root / "hf-home"),
            "PYTHONUNBUFFERED": "1",
            **settings,
        }
    )
    return env


def start_daemon(root: Path, settings: dict[str, str], stack: contextlib.ExitStack, timeout: float) -> Daemon:
    """Start a daemon on folders under `root`, stopped when `stack` closes; wait until it serves."""
    for folder in ("inbox", "outbox", "state"):
        (root / folder).mkdir(parents=True)
    log_path, json_log = root / "daemon.log", root / "ttsd.jsonl"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ttsd", "run"],
            env=daemon_environment(root, {"TTS_LOG_FILE": str(json_log), **settings}),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root,
        )
    outbox = root / "outbox"
    daemon = Daemon(
        process, log_path, json_log, root / "inbox", outbox, root / "state" / "ttsd.sqlite3", StatusReader(outbox)
    )
    stack.callback(daemon.stop)
    wait_until(daemon.serving, timeout, "the daemon to start")
    return daemon


def wait_until(condition: Callable[[], bool | None], timeout: float, what: str, poll_s: float = 0.01) -> float:
    """Poll `condition` until true; returns the perf_counter time it was first seen true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(poll_s)
    return time.perf_counter()


def state_of(outbox: Path, name: str) -> str | None:
    """The state its status file gives output `name`, if any."""
    document = read_status(outbox, name)
    state = document.get("state") if document else None
    return state if isinstance(state, str) else None


class StatusReader:
    """States from status files, re-read only when a file changed: a stat costs far less than a read
    and a JSON parse, so polling takes little CPU from the daemon being measured (on two cores,
    anything runnable beside torch's threads slows it down a lot)."""

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox
        self._seen: dict[str, tuple[tuple[int, int], str | None]] = {}

    def state(self, name: str) -> str | None:
        """The state of output `name` now (None while it has no status file)."""
        try:
            info = status_path(self.outbox, name).stat()
        except FileNotFoundError:
            return None
        # Status files are replaced by rename: a new inode or mtime means a new document.
        stamp = (info.st_ino, info.st_mtime_ns)
        cached = self._seen.get(name)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        state = state_of(self.outbox, name)
        self._seen[name] = (stamp, state)
        return state


def wait_done(daemon: Daemon, names: Sequence[str], timeout: float, poll_s: float) -> float:
    """Wait until every status file of `names` says done; returns the perf_counter time it was seen.

    A job that ends in any other final state aborts the benchmark: its time would mean nothing."""
    pending = set(names)
    deadline = time.monotonic() + timeout
    while pending:
        for name in list(pending):
            state = daemon.status.state(name)
            if state == DONE:
                pending.discard(name)
            elif state in FINAL_STATES:
                raise RuntimeError(f"job {name} ended {state}: {read_status(daemon.outbox, name)}")
        if not pending:
            break
        daemon.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} job(s) not done after {timeout:g}s, e.g. {min(pending)}")
        time.sleep(poll_s)
    return time.perf_counter()


def drop_and_time(daemon: Daemon, name: str, job: dict[str, Any], states: frozenset[str], timeout: float) -> float:
    """Rename one job file in and return the seconds until its status file is in one of `states`."""
    staged = stage_job(daemon.inbox, f"{name}.json", job)
    started = time.perf_counter()
    staged.drop()
    # A 1 ms poll: the latencies measured are tens of milliseconds.
    seen = wait_until(lambda: daemon.status.state(name) in states, timeout, name, poll_s=0.001)
    return seen - started


# --- ttsd end to end, then the cache ----------------------------------------------------------------


def synthesis_job(text: str, options: Options) -> dict[str, Any]:
    """A job file's content with the fixed settings the bare runs use too."""
    return {
        "text": text,
        "speaker": SPEAKER,
        "language": LANGUAGE,
        "generation": {"max_new_tokens": options.max_new_tokens},
    }


def measure_ttsd(report: Report, daemon: Daemon, options: Options) -> None:
    """Warm the model with one job, then rename N job files in at once and wait for all to be done."""
    progress("ttsd: warming up the model with one job")
    warm = drop_and_time(daemon, "warm-up", synthesis_job("Warm up.", options), frozenset({DONE}), options.timeout_s)
    progress(f"ttsd: warm-up job done in {warm:.2f}s; dropping {options.jobs} jobs at once")
    names = [f"e2e-{i:04d}" for i in range(options.jobs)]
    staged = [
        stage_job(daemon.inbox, f"{name}.json", synthesis_job(text, options))
        for name, text in zip(names, make_texts(options.jobs), strict=True)
    ]
    started = time.perf_counter()
    for job in staged:
        job.drop()
    finished = wait_done(daemon, names, options.timeout_s, poll_s=0.02)
    report.ttsd = Run("ttsd", options.jobs, finished - started, None, options.batch)


def measure_cache(report: Report, daemon: Daemon, options: Options) -> None:
    """Drop a job identical to one already done (first e2e text), under new output names."""
    progress(f"cache: {options.cache_samples} repeats of a finished job, one at a time")
    job = synthesis_job(make_texts(1)[0], options)
    samples = []
    for i in range(options.cache_samples):
        name = f"cache-{i:04d}"
        samples.append(drop_and_time(daemon, name, {**job, "output": name}, frozenset({DONE}), options.timeout_s))
        status = read_status(daemon.outbox, name) or {}
        report.cache_hits += bool(status.get("cache_hit"))
    report.cache = Latencies(tuple(samples))


# --- intake -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def silent_hub() -> Iterator[str]:
    """A Hugging Face endpoint that accepts connections and never answers.

    The intake daemon's worker asks it for the parked model and waits there (huggingface_hub sets no
    read timeout on that call), so it claims one batch and then takes no CPU, writes nothing and
    never fails a job: the burst measures intake alone. The kernel completes the TCP handshake from
    the listen backlog; nobody ever accepts.
    """
    with socket.create_server(("127.0.0.1", 0), backlog=16) as server:
        host, port = server.getsockname()[:2]
        yield f"http://{host}:{port}"


def count_rows(store: Store) -> int:
    """Jobs in the queue, in any state (a WAL reader never blocks the daemon's writes)."""
    return sum(sum(per_state.values()) for per_state in store.counts().values())


def count_moved(inbox: Path) -> int:
    """Files intake has finished with (moved out of the inbox into accepted/)."""
    with os.scandir(inbox / "accepted") as entries:
        return sum(1 for _entry in entries)


def measure_intake(report: Report, daemon: Daemon, options: Options) -> None:
    """The burst, then single files one at a time."""
    count = options.intake_files
    progress(f"intake: staging {count} job files")
    staged = [
        stage_job(daemon.inbox, f"burst-{i:05d}.json", {"text": text, "model": PARKED_MODEL})
        for i, text in enumerate(make_texts(count, prefix="Burst"))
    ]
    # Creating the hidden files sends the daemon a hint for each (ignored at once); let it drain
    # them before the clock starts.
    time.sleep(1.0)
    progress(f"intake: renaming {count} files into the inbox")
    started = time.perf_counter()
    for job in staged:
        job.drop()
    # The daemon created and migrated the queue before it said it was serving: this opens it as is.
    with contextlib.closing(Store(daemon.db_path)) as store:
        recorded = wait_until(lambda: count_rows(store) >= count, options.timeout_s, "the burst", 0.01)
    moved = wait_until(lambda: count_moved(daemon.inbox) >= count, options.timeout_s, "the burst moved", 0.01)
    report.intake = IntakeResult(count, recorded - started, moved - started)

    progress(f"intake: {options.latency_samples} single files, one at a time")
    queued = frozenset({"queued", "running"})
    report.queued = Latencies(
        tuple(
            drop_and_time(daemon, f"single-{i:04d}", {"text": text, "model": PARKED_MODEL}, queued, 30)
            for i, text in enumerate(make_texts(options.latency_samples, prefix="Single"))
        )
    )


# --- the run ----------------------------------------------------------------------------------------


def run_daemons(report: Report, name: str, checkpoint: Path, options: Options, work: Path) -> None:
    """ttsd end to end and the cache on one daemon; intake on another. Both are stopped on return."""
    models = {name: str(checkpoint)}
    plan = {"TTS_DEVICE": report.plan.device, "TTS_DTYPE": report.plan.dtype}
    if options.threads:
        # torch sizes its CPU thread pool from these when it starts.
        plan.update({"OMP_NUM_THREADS": str(options.threads), "MKL_NUM_THREADS": str(options.threads)})
    with contextlib.ExitStack() as stack:
        progress("ttsd: starting a daemon")
        synthesis_settings = {
            "TTS_MODELS": json.dumps(models),
            "TTS_DEFAULT_MODEL": name,
            "TTS_PRELOAD_MODELS": name,
            "TTS_MAX_BATCH": str(options.batch),
            **plan,
        }
        daemon = start_daemon(work / "ttsd", synthesis_settings, stack, options.timeout_s)
        measure_ttsd(report, daemon, options)
        measure_cache(report, daemon, options)
    with contextlib.ExitStack() as stack:
        hub = stack.enter_context(silent_hub())
        progress("intake: starting a daemon whose model never loads")
        intake_settings = {
            "TTS_MODELS": json.dumps({**models, PARKED_MODEL: PARKED_REPO}),
            "TTS_DEFAULT_MODEL": name,
            # Loading the benchmark's model before "serving" also imports qwen-tts, which otherwise a
            # warm-up thread does for seconds after start, holding the GIL against the intake thread.
            "TTS_PRELOAD_MODELS": name,
            "TTS_HF_MIRROR": hub,
            # The parked model must be "downloaded": from the silent hub, which never answers.
            "HF_HUB_OFFLINE": "0",
            "NO_PROXY": "127.0.0.1",
            "no_proxy": "127.0.0.1",
            "TTS_MAX_QUEUE_SIZE": "1000000",
            # The worker stays stuck in the download: do not wait long for it at shutdown.
            "TTS_SHUTDOWN_GRACE_S": "1",
            **plan,
        }
        daemon = start_daemon(work / "intake", intake_settings, stack, options.timeout_s)
        measure_intake(report, daemon, options)


@contextlib.contextmanager
def work_folder(kept: Path | None) -> Iterator[Path]:
    """`kept` (created, and left behind with the daemons' logs, queues and outboxes), or else a
    temporary folder removed afterwards."""
    if kept is not None:
        kept.mkdir(parents=True, exist_ok=False)
        yield kept.absolute()
        return
    with tempfile.TemporaryDirectory(prefix="ttsd-benchmark-") as temp:
        yield Path(temp)


def benchmark(options: Options) -> Report:
    """Every measurement, in one work folder."""
    plan = plan_device(options.device, "auto")
    # Read before this run adds any load of its own: what else is keeping the CPUs busy.
    started_load = os.getloadavg()[0]
    with work_folder(options.workdir) as work:
        progress(f"resolving model {options.model}")
        name, checkpoint = resolve_model(options.model, work)
        require_custom_voice(checkpoint)
        report = Report(name, str(checkpoint), plan, options.jobs, options.batch, options.max_new_tokens)
        measure_bare(report, checkpoint, options)
        run_daemons(report, name, checkpoint, options, work)
        report.load_average = (started_load, os.getloadavg()[0])
    return report


# --- output -----------------------------------------------------------------------------------------


def format_value(value: float | None, unit: str) -> str:
    """A figure with its unit, or a dash when it was not measured."""
    if value is None:
        return "-"
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:.1f} {unit}"


def runs_table(report: Report) -> list[str]:
    """One row per throughput measurement."""
    rows = [f"{'run':<34}{'jobs':>6}{'calls':>7}{'seconds':>10}{'jobs/s':>9}"]
    optimal = report.optimal
    runs = [report.sequential, *report.batched, report.ttsd]
    for run in (r for r in runs if r is not None):
        label = run.label + (" (optimal)" if run is optimal else "")
        if run is report.ttsd:
            label = f"ttsd end to end (max batch {run.batch})"
        calls = "-" if run.calls is None else str(run.calls)
        rows.append(f"{label:<34}{run.jobs:>6}{calls:>7}{run.seconds:>10.2f}{run.jobs_per_s:>9.2f}")
    return rows


def figure_row(label: str, value: float | None, unit: str, target_key: str | None = None) -> str:
    """One line of the figures table: label, value, and the target with ok/MISS when there is one."""
    target, verdict = "", ""
    if target_key is not None:
        goal = TARGETS[target_key]
        met = goal.met(value)
        target, verdict = f"{goal.op} {goal.limit:g}", "-" if met is None else "ok" if met else "MISS"
    return f"{label:<40}{format_value(value, unit):>14}  {target:<10}{verdict}"


def figures_table(report: Report) -> list[str]:
    """Ratios, intake and latencies, with their targets."""
    figures = report.figures()
    optimal = report.optimal
    intake = report.intake
    return [
        f"{'figure':<40}{'value':>14}  target",
        figure_row("ttsd / bare sequential", figures["ttsd_vs_sequential"], "x", "ttsd_vs_sequential"),
        figure_row(f"ttsd / bare batch {report.batch}", report.ratio(report.batched_at(report.batch)), "x"),
        figure_row(
            f"ttsd / bare optimal (batch {optimal.batch if optimal else '-'})",
            figures["ttsd_vs_optimal"],
            "x",
            "ttsd_vs_optimal",
        ),
        figure_row(
            f"intake: {intake.files if intake else 0} files recorded",
            figures["intake_files_per_s"],
            "files/s",
            "intake_files_per_s",
        ),
        figure_row("intake: all moved to accepted/", intake.files / intake.moved_s if intake else None, "files/s"),
        figure_row("drop -> queued p50", figures["queued_p50_ms"], "ms", "queued_p50_ms"),
        figure_row("drop -> queued p99", figures["queued_p99_ms"], "ms", "queued_p99_ms"),
        figure_row("cache hit drop -> done p50", figures["cache_p50_ms"], "ms", "cache_p50_ms"),
        figure_row("cache hit drop -> done p99", report.cache.percentile_ms(99), "ms"),
    ]


def render_table(report: Report) -> str:
    """The human-readable report."""
    plan = report.plan
    header = [
        f"ttsd benchmark: model {report.model} ({report.checkpoint})",
        f"{plan.device}/{plan.dtype}, {report.jobs} jobs, max_new_tokens {report.max_new_tokens}, "
        f"ttsd max batch {report.batch}, {report.threads} torch threads, load average {report.load_average[0]:.1f} -> "
        f"{report.load_average[1]:.1f} on {os.cpu_count()} CPUs",
        "",
    ]
    notes = [
        "",
        f"cache hits: {report.cache_hits} of {len(report.cache.samples)}; "
        f"latency samples: {len(report.queued.samples)} queued, {len(report.cache.samples)} cache",
    ]
    if report.load_average[0] >= BUSY_LOAD:
        notes.append(
            f"note: the load average was {report.load_average[0]:.1f} before the run: other processes shared "
            "the CPUs and may have skewed any of the timings (torch's threads suffer most; try --threads 1)"
        )
    return "\n".join([*header, *runs_table(report), "", *figures_table(report), *notes])


def report_json(report: Report) -> dict[str, Any]:
    """The report as one JSON-ready object."""
    figures = report.figures()

    def run_json(run: Run | None) -> dict[str, Any] | None:
        return None if run is None else {**asdict(run), "jobs_per_s": run.jobs_per_s}

    return {
        "model": report.model,
        "checkpoint": report.checkpoint,
        "plan": report.plan.as_dict(),
        "jobs": report.jobs,
        "batch": report.batch,
        "max_new_tokens": report.max_new_tokens,
        "torch_threads": report.threads,
        "bare_sequential": run_json(report.sequential),
        "bare_batched": [run_json(run) for run in report.batched],
        "bare_optimal": run_json(report.optimal),
        "ttsd": run_json(report.ttsd),
        "ratios": {
            "ttsd_vs_sequential": figures["ttsd_vs_sequential"],
            "ttsd_vs_batched": report.ratio(report.batched_at(report.batch)),
            "ttsd_vs_optimal": figures["ttsd_vs_optimal"],
        },
        "intake": None
        if report.intake is None
        else {**asdict(report.intake), "files_per_s": report.intake.files_per_s},
        "queued_latency_ms": latency_json(report.queued),
        "cache_latency_ms": {**latency_json(report.cache), "hits": report.cache_hits},
        "targets": {
            key: {
                "op": target.op,
                "limit": target.limit,
                "value": figures[key],
                "met": target.met(figures[key]),
            }
            for key, target in TARGETS.items()
        },
        "load_average": list(report.load_average),
        "cpus": os.cpu_count(),
    }


def latency_json(latencies: Latencies) -> dict[str, Any]:
    """Percentiles and the raw samples, in milliseconds."""
    return {
        "p50": latencies.percentile_ms(50),
        "p99": latencies.percentile_ms(99),
        "samples": [round(sample * 1000, 3) for sample in latencies.samples],
    }


# --- command line -----------------------------------------------------------------------------------


def positive(raw: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def batch_list(raw: str) -> tuple[int, ...]:
    """argparse type: comma-separated batch sizes (may be empty)."""
    return tuple(positive(part) for part in raw.split(",") if part.strip())


def parse_options(argv: Sequence[str] | None) -> Options:
    """The command line -> Options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=positive, default=64, help="texts per throughput run (default 64)")
    parser.add_argument("--batch", type=positive, default=4, help="ttsd's TTS_MAX_BATCH and the bare batch (default 4)")
    parser.add_argument(
        "--try-batches",
        type=batch_list,
        default=None,
        help="more bare batch sizes for 'optimal', comma-separated (default: 4x --batch, and --jobs)",
    )
    parser.add_argument("--model", default="tiny", help="registry name or checkpoint folder (default tiny)")
    parser.add_argument(
        "--max-new-tokens", type=positive, default=24, help="generation cap for every call (default 24)"
    )
    parser.add_argument("--device", choices=("cpu", "auto", "cuda", "mps"), default="cpu", help="default cpu")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads, bare and ttsd alike (default: torch's)"
    )
    parser.add_argument("--intake-files", type=positive, default=2000, help="burst size (default 2000)")
    parser.add_argument("--latency-samples", type=positive, default=50, help="single drops (default 50)")
    parser.add_argument("--cache-samples", type=positive, default=30, help="repeated jobs (default 30)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds any one wait may take")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="a new folder to work in and keep (default: a temporary one)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    try_batches = args.try_batches if args.try_batches is not None else (4 * args.batch, args.jobs)
    return Options(
        jobs=args.jobs,
        batch=args.batch,
        try_batches=tuple(size for size in try_batches if size <= args.jobs),
        model=args.model,
        max_new_tokens=args.max_new_tokens,
        device=args.device,
        threads=max(args.threads, 0),
        intake_files=args.intake_files,
        latency_samples=args.latency_samples,
        cache_samples=args.cache_samples,
        timeout_s=args.timeout,
        workdir=args.workdir,
        as_json=args.json,
    )


def exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM becomes SystemExit, so the daemons are stopped on the way out as on Ctrl-C."""
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run every measurement and print the report."""
    options = parse_options(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    report = benchmark(options)
    print(json.dumps(report_json(report), indent=2) if options.as_json else render_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
