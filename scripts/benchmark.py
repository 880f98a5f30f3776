"""Throughput and latency of ttsd against bare qwen-tts, on one checkpoint, in one run.

Every measurement uses the same checkpoint, device and dtype, the same speaker and language, and the
same stopping rule: a row ends at the model's end-of-speech code (a tiny checkpoint's comes after a
length that follows the text, `TTS_TINY_EOS` as ttsd sets it by default), and each generate call's
`max_new_tokens` is bounded from its own texts (ttsd.synth.pacing.frame_budget), lowered to
`--max-new-tokens` when given (the jobs then carry it in `generation`). The bare runs call the
official `generate_custom_voice` with the very end-of-speech processor and budget ttsd's engine
uses, so every text speaks as many frames bare as in ttsd.

  ttsd uniform     a real `python -m ttsd run` (TTS_MAX_BATCH=auto unless --batch forces a number):
                   its worker process is started and warmed by one job (import, load, batch-size
                   probe), and the B it picked is read from `ttsd status --json`; then --jobs short
                   job files are renamed into its inbox at once; from the first rename until every
                   status file says done. The texts are all new, so the cache (on) never hits
  cache            the same daemon: a job identical to one already done, under a new output name (the
                   cache key ignores the name), one at a time, rename -> status says done
  http             the same daemon, serving HTTP on a free loopback port (TTS_HTTP;
                   `scripts/bench_http.py`), after one warm-up request has spoken a text T: "repeat
                   request", the identical `POST /v1/audio/speech` (wav) again and again (it finds
                   the same done job and answers its file); "cache hit, new job", `POST /v1/tts` with
                   T and a new `request_id` each time (a new job, its audio from the cache). Each from
                   --http-clients concurrent clients (threads, one httpx.Client each), --http-requests
                   in all (default 200 and 100): requests/s and p50/p99, beside the cache figure
                   above (p50/file, p99/file). Then a fresh 2,000-character text (several chunks)
                   streamed from `POST /v1/audio/speech` as pcm, --http-stream-repeats times, and
                   once as mp3: sending -> first non-empty body bytes (TTFB) and -> last byte (total),
                   TTFB / total, best and median. HTTP jobs carry no `generation`: with
                   --max-new-tokens they speak to the budget their texts give. --no-http skips it
  mixed            the same daemon: --mixed-jobs jobs, short (one sentence) and long (400-600
                   characters, one chunk) interleaved, renamed in at once, until every one is done
  interactive      the same daemon: one short job (cache off, so each drop is spoken) rename -> done,
                   one at a time with a small gap: first on the idle daemon, then while a
                   --long-chars job runs (600-character chunks), alternately as is and with
                   "priority": 10 (a long job that ends is replaced); the long job is then cancelled
  bare sequential  one `generate_custom_voice` call per uniform text, one after the other
  bare batched     ceil(N / B) calls of B texts, for each of --try-batches, the B ttsd picked and
                   --batch; the fastest is "bare optimal", the physical best for this engine here
  bare mixed       the mixed texts in calls of the best bare B on the uniform texts: in arrival
                   order (FIFO groups), and after sorting them by expected length (sorted groups)
  engines          in this process, no daemon (`scripts/bench_engines.py`): ttsd's own generation loop
                   (`LoopEngine`) against the official qwen-tts `generate` on the same loaded model,
                   generate only, at the same batch sizes (1, --try-batches and ttsd's B, or
                   --engine-batches), --engine-frames frames per row with the checkpoint's sampling
                   and end of speech banned, so both speak exactly as many frames; calls alternate
                   official/ttsd, --engine-repeats each, the best call counts (row-frames/s). Then
                   the same on a random checkpoint at the real 0.6B widths (built into the work
                   folder; --engine-real-batches, default 1,8, --engine-real-frames, default 4).
                   Also the first audio of a 600-character chunk: one row streamed through
                   `LoopEngine.stream()` with ttsd's progressive decoder, frames until its first
                   audio. --no-engines skips the section
  voices           in this process (`scripts/bench_voices.py`): a voice-clone job's prompt built from a
                   5 s recording (`create_voice_clone_prompt`, what a `ref_audio` job costs each
                   worker) against reading a saved voice's prompt (`ttsd voices add`), on a tiny
                   Base checkpoint (--voice-widths tiny,0.6b adds the real 0.6B talker widths), and
                   the saving beside one one-sentence job. --no-voices skips it
  intake           a second daemon whose jobs name a model that never finishes loading (its hub is a
                   socket that accepts and never answers), so no synthesis competes with intake:
                   `--intake-files` job files renamed in at once, until every one is a row in the
                   queue (files/s); then single files, one at a time, rename -> status says queued
  queue            `scripts/bench_queue.py`: claim+finish/s by 1 and 8 processes and intake files/s,
                   SQLite against a throw-away PostgreSQL server (skipped without one); --no-queue

The daemons speak with `--engine` (TTS_ENGINE: ttsd, its own loop with continuous batching, the
default; or qwen-tts, the official calls), so a run can be repeated on the official engine. With
ttsd's loop there are no generate calls: chunks join and leave one running batch, and the daemon logs
"spoke <job>#<chunk>: <F> frames in <S>s" per chunk instead of "generated <N> chunk(s) in <S>s" per
call. The calls column then shows "-"; the long job's figures are its chunks' wall times.

A tiny checkpoint declares a frame cap of 24; paced by the text, ttsd's engine gives it a trained
model's cap (2,048) instead, and so do the bare runs. Any job that does not end done aborts the run.

"idle + one call" (the idle p50 plus the idle short job's own generate call or chunk, from the log)
is shown for information, without a target: with continuous batching a short job joins the running
batch at the next frame step and waits for no call at all.

Percentiles are nearest-rank (p99 of 50 samples is the largest). The targets are reported, not
asserted. Progress goes to stderr; stdout gets the table, or with --json one JSON object.

    .venv/bin/python scripts/benchmark.py --threads 1           # tiny checkpoint, defaults, table
    .venv/bin/python scripts/benchmark.py --jobs 16 --mixed-jobs 8 --long-chars 6000 --drops 3 --json
    .venv/bin/python scripts/benchmark.py --model qwen3-tts-0.6b --device auto
    .venv/bin/python scripts/benchmark.py --threads 1 --engine qwen-tts --no-engines   # the official engine
    .venv/bin/python scripts/benchmark.py --threads 1 --no-engines --http-clients 8 --http-requests 400
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal

from bench_engines import EngineBench, batch_list, bench_engines, ensure_checkpoint, positive
from bench_engines import render as render_engines
from bench_http import NEW_JOB_REQUESTS, REPEAT_REQUESTS, STREAM_CHARS, HttpBench, bench_http, free_port
from bench_http import render as render_http
from bench_voices import WIDTHS as VOICE_WIDTHS
from bench_voices import base_checkpoint, voice_prompt_saving

from ttsd.catalog import build_registry, checkpoint_kind
from ttsd.client import read_status, stage_job, status_path
from ttsd.jobqueue.store import Store
from ttsd.synth.batch_size import MAX_AUTO_BATCH
from ttsd.synth.chunking import split_text
from ttsd.synth.engine.base import DevicePlan
from ttsd.synth.engine.device import plan_device
from ttsd.synth.engine.qwen_import import import_qwen_tts_quietly
from ttsd.synth.engine.talker_hooks import TalkerHooks, install_talker_hooks
from ttsd.synth.engine.tiny_eos import Ending, end_of_speech
from ttsd.synth.engine.weights import resolve_checkpoint
from ttsd.synth.pacing import expected_frames, frame_budget

if TYPE_CHECKING:
    from bench_queue import QueueBench

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
RUNNING = "running"
FINAL_STATES = frozenset({"done", "failed", "cancelled", "rejected"})

# ttsd's default chunk size (TTS_MAX_TEXT_LENGTH): a mixed long text stays one chunk under it.
CHUNK_CHARS = 600
MIXED_LONG_CHARS = (450, 600)
"""Mixed long texts are cut to a length in this range: whole sentences, so 400-600 characters."""
URGENT_PRIORITY = 10
DROP_GAP_S = 0.5
"""Between two latency drops: the next one lands at another point of the long job's call."""
SYNTHESIS_POLL_S = 0.005
"""Polling a job that takes seconds: 5 ms is well below what is measured and costs the daemon little."""
SETTLE_CPU_S = 0.05
IMPORT_SETTLE_S = 15.0
"""Without /proc: how long a fresh worker process is given to finish importing torch and qwen-tts."""

SHORT_TEXT = "Please leave the parcel at the front door."
"""The interactive latency's short job: one sentence, the same every drop (cache off)."""

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


DaemonEngine = Literal["ttsd", "qwen-tts"]


@dataclass(frozen=True)
class Options:
    """The command line, parsed."""

    jobs: int
    batch: int | None
    try_batches: tuple[int, ...]
    model: str
    max_new_tokens: int | None
    device: str
    threads: int
    mixed_jobs: int
    long_chars: int
    drops: int
    intake_files: int
    latency_samples: int
    cache_samples: int
    timeout_s: float
    workdir: Path | None
    as_json: bool
    engine: DaemonEngine = "ttsd"
    engines: bool = True
    engine_batches: tuple[int, ...] | None = None
    """None: 1, --try-batches and the B ttsd picked."""
    engine_frames: int = 48
    engine_repeats: int = 2
    engine_real_batches: tuple[int, ...] = (1, 8)
    engine_real_frames: int = 4
    http: bool = True
    http_clients: int = 4
    http_requests: int | None = None
    """None: bench_http's defaults (200 repeat requests, 100 new jobs)."""
    http_stream_repeats: int = 2
    voice_widths: tuple[str, ...] = ("tiny",)
    """Base checkpoints of the voices section (empty: --no-voices)."""
    queue: bool = True


@dataclass(frozen=True)
class Target:
    """A goal a figure is reported against: `value <op> limit`, and optionally a moonshot beyond it."""

    op: str
    limit: float
    moonshot: float | None = None

    def met(self, value: float | None, limit: float | None = None) -> bool | None:
        """Whether `value` reaches `limit` (default: the target's; None when there is no value)."""
        bound = self.limit if limit is None else limit
        if value is None:
            return None
        return value >= bound if self.op == ">=" else value <= bound

    def describe(self) -> str:
        """The target as the table shows it."""
        text = f"{self.op} {self.limit:g}"
        return text if self.moonshot is None else f"{text} (moonshot {self.moonshot:g})"

    def verdict(self, value: float | None) -> str:
        """ok / MISS / - (no value), with the moonshot's verdict when there is one."""
        met = self.met(value)
        if met is None:
            return "-"
        text = "ok" if met else "MISS"
        if self.moonshot is not None:
            text += ", moonshot " + ("ok" if self.met(value, self.moonshot) else "MISS")
        return text


# The targets: throughput ratios, latency ratios, intake files/s, latencies in milliseconds,
# ttsd's loop over the official generate (the worst ratio over the batch sizes), first audio in frames.
TARGETS: dict[str, Target] = {
    "ttsd_vs_sequential": Target(">=", 2.0),
    "ttsd_vs_optimal": Target(">=", 1.5, moonshot=2.5),
    "mixed_ttsd_vs_sorted": Target(">=", 1.0),
    "during_long_vs_idle_p50": Target("<=", 1.3),
    "during_long_priority_vs_idle_p50": Target("<=", 1.3),
    "loop_vs_official_tiny": Target(">=", 1.5, moonshot=2.0),
    "loop_vs_official_0.6b": Target(">=", 1.1),
    "first_audio_frames": Target("<=", 25.0),
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
class Mixed:
    """The mixed workload: the same texts bare in FIFO groups, bare in sorted groups, and in ttsd."""

    jobs: int
    short: int
    long: int
    long_chars: tuple[int, int]
    batch: int | None = None
    batch_source: str = ""
    fifo: Run | None = None
    sorted: Run | None = None
    ttsd: Run | None = None

    def ratio(self, baseline: Run | None) -> float | None:
        """ttsd's throughput over `baseline`'s."""
        if self.ttsd is None or baseline is None:
            return None
        return self.ttsd.jobs_per_s / baseline.jobs_per_s


@dataclass
class Interactive:
    """A short job's rename -> done: idle, during a long job, and during it with priority."""

    short_chars: int
    long_chars: int
    long_chunks: int
    idle: Latencies = Latencies(())
    during: Latencies = Latencies(())
    urgent: Latencies = Latencies(())
    long_jobs: int = 0
    overlapped: int = 0
    """Samples (of during + urgent) whose long job was still running when the short job was done."""
    short_call_s: float | None = None
    """The idle short job's generate call, or with ttsd's loop its chunk's wall time (median, from the
    daemon's log): "idle + one call" adds it to the idle p50."""
    long_calls: tuple[float, ...] = ()
    """The generate calls over long chunks, or with ttsd's loop the long chunks' wall times (seconds,
    from the log); empty when the log has neither."""
    long_source: str = "calls"
    """What `long_calls` holds: "calls" or "chunks"."""

    def ratio(self, latencies: Latencies, percent: float = 50) -> float | None:
        """A percentile of `latencies` over the idle one."""
        return _over(latencies.percentile_ms(percent), self.idle.percentile_ms(percent))

    def moonshot_bound_ms(self) -> float | None:
        """Idle p50 plus one short call: a short job that gets into the very next call after its own
        arrival, as if the call in flight were no longer than its own (information only)."""
        idle = self.idle.percentile_ms(50)
        if idle is None or self.short_call_s is None:
            return None
        return idle + self.short_call_s * 1000

    def over_moonshot(self, latencies: Latencies) -> float | None:
        """p50 of `latencies` over idle + one call (<= 1 meets the moonshot)."""
        return _over(latencies.percentile_ms(50), self.moonshot_bound_ms())


def _over(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base else value / base


@dataclass
class Report:
    """Everything measured in one run."""

    model: str
    checkpoint: str
    plan: DevicePlan
    jobs: int
    batch_setting: str
    """TTS_MAX_BATCH as the daemon got it: "auto", or the number --batch forced."""
    max_new_tokens: int | None
    ending: Ending = "model"
    threads: int = 0
    ttsd_batch: int | None = None
    ttsd_batch_reason: str | None = None
    worker: dict[str, Any] = field(default_factory=dict)
    """The worker as `ttsd status --json` showed it after the warm-up job."""
    warm_up_s: float | None = None
    sequential: Run | None = None
    batched: list[Run] = field(default_factory=list)
    ttsd: Run | None = None
    mixed: Mixed | None = None
    interactive: Interactive | None = None
    intake: IntakeResult | None = None
    queued: Latencies = Latencies(())
    cache: Latencies = Latencies(())
    cache_hits: int = 0
    bare_cut_rows: int = 0
    ttsd_rerenders: int = 0
    load_average: tuple[float, float] = (0.0, 0.0)
    engine: DaemonEngine = "ttsd"
    """TTS_ENGINE of the synthesis daemon."""
    engines: list[EngineBench] = field(default_factory=list)
    """The engine comparison: the benchmark's checkpoint, then the real 0.6B widths."""
    engine_targets: list[str] = field(default_factory=list)
    """Per entry of `engines`, the key of the target its ratios are held to."""
    sections: dict[str, float] = field(default_factory=dict)
    """Wall seconds of each part of the run."""
    http: HttpBench | None = None
    """The HTTP section, on the synthesis daemon (None: --no-http)."""
    voices: list[dict[str, Any]] = field(default_factory=list)
    """The voices section: one bench_voices result per checkpoint."""
    queue: QueueBench | None = None

    def batched_at(self, size: int | None) -> Run | None:
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

    def engine_ratio(self, key: str) -> float | None:
        """The worst ours/official ratio of the engine comparison held to target `key`."""
        ratios = [
            ratio
            for bench, target in zip(self.engines, self.engine_targets, strict=True)
            if target == key and (ratio := bench.worst_ratio()) is not None
        ]
        return min(ratios, default=None)

    def first_audio_frames(self) -> float | None:
        """Frames generated before the first audio of a 600-character chunk (None: not measured)."""
        firsts = [bench.first_audio.frames for bench in self.engines if bench.first_audio is not None]
        return next((float(frames) for frames in firsts if frames is not None), None)

    def figures(self) -> dict[str, float | None]:
        """The figures that have targets, under the targets' keys."""
        mixed, interactive = self.mixed, self.interactive
        return {
            "ttsd_vs_sequential": self.ratio(self.sequential),
            "ttsd_vs_optimal": self.ratio(self.optimal),
            "mixed_ttsd_vs_sorted": mixed.ratio(mixed.sorted) if mixed else None,
            "during_long_vs_idle_p50": interactive.ratio(interactive.during) if interactive else None,
            "during_long_priority_vs_idle_p50": interactive.ratio(interactive.urgent) if interactive else None,
            "loop_vs_official_tiny": self.engine_ratio("loop_vs_official_tiny"),
            "loop_vs_official_0.6b": self.engine_ratio("loop_vs_official_0.6b"),
            "first_audio_frames": self.first_audio_frames(),
            "intake_files_per_s": self.intake.files_per_s if self.intake else None,
            "queued_p50_ms": self.queued.percentile_ms(50),
            "queued_p99_ms": self.queued.percentile_ms(99),
            "cache_p50_ms": self.cache.percentile_ms(50),
        }


def progress(message: str) -> None:
    """A line on stderr, so stdout stays the table or the JSON."""
    print(f"[benchmark] {message}", file=sys.stderr, flush=True)


# --- texts ------------------------------------------------------------------------------------------


def make_texts(count: int, prefix: str = "Number") -> list[str]:
    """`count` distinct short sentences."""
    return [f"{prefix} {i + 1}. {_SENTENCES[i % len(_SENTENCES)]}" for i in range(count)]


def sentences_upto(chars: int, opening: str, first: int = 0) -> str:
    """`opening` followed by the sentences in turn (from the `first`), as many as fit in `chars`."""
    parts = [opening]
    length = len(opening)
    index = first
    while length + 1 + len(sentence := _SENTENCES[index % len(_SENTENCES)]) <= chars:
        parts.append(sentence)
        length += 1 + len(sentence)
        index += 1
    return " ".join(parts)


def mixed_texts(count: int) -> list[str]:
    """Short and long texts interleaved (short first), all distinct; a long one is a single chunk."""
    low, high = MIXED_LONG_CHARS
    texts = []
    for i in range(count):
        if i % 2 == 0:
            texts.append(f"Mixed {i + 1}. {_SENTENCES[i % len(_SENTENCES)]}")
        else:
            # Lengths spread over the range, so the long rows differ as a trained model's would.
            limit = low + (i * 47) % (high - low)
            texts.append(sentences_upto(limit, f"Passage {i + 1}.", first=i))
    return texts


def long_job_text(chars: int) -> str:
    """About `chars` characters of whole sentences: the long job of the interactive measurement."""
    return sentences_upto(chars, "Chapter one.")


def stream_text(chars: int, number: int) -> str:
    """About `chars` characters of whole sentences, each naming stream `number`: no chunk of one
    stream's text is a chunk of another's (the cache keeps chunks one by one), so each is spoken."""
    parts: list[str] = []
    length = -1
    for index in itertools.count():
        sentence = _SENTENCES[index % len(_SENTENCES)]
        sentence = f"In stream {number}, part {index + 1}: {sentence[0].lower()}{sentence[1:]}"
        if length + 1 + len(sentence) > chars:
            break
        parts.append(sentence)
        length += 1 + len(sentence)
    return " ".join(parts)


# --- the checkpoint ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """The model under test: its name in the daemons, its folder, and whether it is a tiny one."""

    name: str
    directory: Path
    tiny: bool

    @property
    def ending(self) -> Ending:
        """Who ends a row, as ttsd's loader decides it with TTS_TINY_EOS on (its default)."""
        return "paced" if self.tiny else "model"


def resolve_model(model: str, work: Path) -> Checkpoint:
    """The daemon-side name and the local checkpoint directory of `--model`.

    A registry name is resolved as ttsd resolves it (tiny built into `work`, official models from
    the Hugging Face cache or downloaded); anything else must be a local checkpoint directory. The
    daemons then read that very directory (see `install_model`), so every
    measurement reads the same files and no daemon builds or downloads anything while it is timed.
    """
    entry = build_registry({}).get(model)
    if entry is not None:
        return Checkpoint(model, resolve_checkpoint(entry, work / "models"), entry.tiny)
    directory = Path(model).expanduser().absolute()
    if not (directory / "config.json").is_file():
        raise SystemExit(f"--model {model!r} is neither a registry name nor a checkpoint directory")
    return Checkpoint(LOCAL_MODEL_NAME, directory, tiny=False)


def require_custom_voice(checkpoint: Path) -> None:
    """The benchmark speaks with a named speaker: only CustomVoice checkpoints take one."""
    kind = checkpoint_kind(checkpoint)
    if kind != "custom_voice":
        raise SystemExit(f"{checkpoint} is a {kind} checkpoint; the benchmark needs a CustomVoice one")


def install_model(checkpoint: Checkpoint, state_dir: Path) -> dict[str, str]:
    """Make `checkpoint` a daemon's model; returns the TTS_MODELS entries it needs.

    A tiny checkpoint is linked where the daemon builds its own (<state>/models/<name>): the registry
    entry stays a tiny one, so the daemon ends its rows by the text's pace. Given as a folder in
    TTS_MODELS it would be a plain local checkpoint, whose random weights never stop.
    """
    if not checkpoint.tiny:
        return {checkpoint.name: str(checkpoint.directory)}
    models = state_dir / "models"
    models.mkdir(parents=True, exist_ok=True)
    (models / checkpoint.name).symlink_to(checkpoint.directory, target_is_directory=True)
    return {}


def call_budget(texts: Sequence[str], cap: int, max_new_tokens: int | None) -> int:
    """A call's `max_new_tokens` as ttsd's worker and engine set it: room for its longest text within
    the model's cap, lowered to the job's own `max_new_tokens` when it gives one."""
    budget = frame_budget(texts, cap)
    return budget if max_new_tokens is None else max(1, min(budget, max_new_tokens))


# --- bare qwen-tts ----------------------------------------------------------------------------------


@dataclass
class BareModel:
    """The official model, called through `generate_custom_voice`, with ttsd's stopping rule: the
    talker hooks ttsd installs add the same end-of-speech processor (paced for a tiny checkpoint, for
    unseeded jobs as ttsd's are), and each call's budget follows its texts as in ttsd."""

    model: Any
    hooks: TalkerHooks
    ending: Ending
    eos_id: int
    cap: int
    max_new_tokens: int | None
    cut_rows: int = 0
    """Rows that reached their call's budget without ending: ttsd would refuse and re-render them."""

    def speak(self, texts: Sequence[str]) -> None:
        """One generate call for `texts`, with the arguments ttsd's engine passes."""
        count = len(texts)
        processor = end_of_speech(self.ending, self.eos_id, texts, None)
        with self.hooks.watching(processor) as call:
            self.model.generate_custom_voice(
                text=list(texts),
                speaker=[SPEAKER] * count,
                language=[LANGUAGE] * count,
                instruct=[""] * count,
                max_new_tokens=call_budget(texts, self.cap, self.max_new_tokens),
            )
        if call.sequences is not None:
            self.cut_rows += int((~(call.sequences == self.eos_id).any(dim=1)).sum())


def load_bare_model(checkpoint: Checkpoint, plan: DevicePlan, max_new_tokens: int | None) -> BareModel:
    """The official model, loaded the way ttsd's engine loads it, with its talker hooks."""
    import torch

    from ttsd.synth.engine.qwen import QWEN_MAX_NEW_TOKENS

    qwen_tts = import_qwen_tts_quietly()
    model = qwen_tts.Qwen3TTSModel.from_pretrained(
        str(checkpoint.directory),
        device_map=plan.device,
        dtype=getattr(torch, plan.dtype),
        attn_implementation=plan.attention,
    )
    eos_id = int(model.model.config.talker_config.codec_eos_token_id)
    # As ttsd does: otherwise every generate call logs "Setting pad_token_id to eos_token_id".
    model.model.talker.generation_config.pad_token_id = eos_id
    # As QwenEngine does: a paced tiny checkpoint gets a trained model's cap, not its declared 24.
    declared = int(model.generate_defaults.get("max_new_tokens", QWEN_MAX_NEW_TOKENS))
    cap = QWEN_MAX_NEW_TOKENS if checkpoint.ending == "paced" else declared
    return BareModel(model, install_talker_hooks(model), checkpoint.ending, eos_id, cap, max_new_tokens)


def time_groups(model: BareModel, groups: Sequence[Sequence[str]], label: str, size: int) -> Run:
    """Speak each group in one call, one after the other."""
    started = time.perf_counter()
    for group in groups:
        model.speak(group)
    seconds = time.perf_counter() - started
    return Run(label, sum(len(group) for group in groups), seconds, len(groups), size)


def in_groups(texts: Sequence[str], size: int) -> list[Sequence[str]]:
    """Consecutive groups of `size` texts (the last one may be smaller)."""
    return [texts[start : start + size] for start in range(0, len(texts), size)]


def bare_sizes(report: Report, options: Options) -> list[int]:
    """The bare batch sizes to time: --try-batches, --batch and the B ttsd picked, up to --jobs."""
    sizes = {*options.try_batches, options.batch, report.ttsd_batch}
    return sorted(size for size in sizes if size is not None and size <= options.jobs)


def measure_bare(report: Report, checkpoint: Checkpoint, options: Options) -> None:
    """Bare sequential and batched on the uniform texts, then the mixed texts in FIFO and sorted
    groups; the model is freed afterwards."""
    import torch

    if options.threads:
        torch.set_num_threads(options.threads)
    report.threads = torch.get_num_threads()
    progress(f"bare qwen-tts: loading {checkpoint.directory} ({report.threads} torch threads)")
    model = load_bare_model(checkpoint, report.plan, options.max_new_tokens)
    # The first call pays one-off costs (lazy kernels, allocator growth) that no later call pays.
    model.speak(["Warm up."])
    texts = make_texts(options.jobs)
    progress(f"bare qwen-tts: {len(texts)} calls of one text")
    report.sequential = time_groups(model, in_groups(texts, 1), "bare sequential", 1)
    for size in bare_sizes(report, options):
        progress(f"bare qwen-tts: batches of {size}")
        report.batched.append(time_groups(model, in_groups(texts, size), f"bare batch {size}", size))
    if report.mixed is not None:
        measure_bare_mixed(report, report.mixed, model, options)
    report.bare_cut_rows = model.cut_rows
    del model
    gc.collect()


def measure_bare_mixed(report: Report, mixed: Mixed, model: BareModel, options: Options) -> None:
    """The mixed texts in calls of the best bare batch size on the uniform texts, in arrival order,
    then sorted by expected length."""
    size, mixed.batch_source = mixed_batch(report.optimal, mixed.jobs)
    mixed.batch = size
    texts = mixed_texts(options.mixed_jobs)
    progress(f"bare qwen-tts: {len(texts)} mixed texts in FIFO groups of {size}")
    mixed.fifo = time_groups(model, in_groups(texts, size), f"bare FIFO groups of {size}", size)
    progress(f"bare qwen-tts: {len(texts)} mixed texts in sorted groups of {size}")
    ordered = sorted(texts, key=expected_frames)
    mixed.sorted = time_groups(model, in_groups(ordered, size), f"bare sorted groups of {size}", size)


def mixed_batch(optimal: Run | None, jobs: int) -> tuple[int, str]:
    """The bare mixed runs' B and where it comes from: the best bare B, at most a third of the jobs
    (with fewer than three groups, FIFO and sorted groups are nearly or wholly the same calls)."""
    best = optimal.batch if optimal is not None and optimal.batch is not None else 1
    limit = max(1, jobs // 3)
    if best <= limit:
        return best, "the best bare B on the uniform texts"
    return limit, f"the best bare B was {best}: at most a third of the jobs, so FIFO and sorted groups differ"


# --- daemons ----------------------------------------------------------------------------------------


@dataclass
class Daemon:
    """One `python -m ttsd run` subprocess on its own folders."""

    process: subprocess.Popen[bytes]
    env: dict[str, str]
    root: Path
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

    def messages(self) -> list[str]:
        """The messages of its log file, in order (its workers' included: they log through it)."""
        if not self.json_log.exists():
            return []
        found = []
        for line in self.json_log.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                found.append(str(json.loads(line).get("message", "")))
        return found

    def check_alive(self) -> None:
        """Fail with the daemon's log if it has exited."""
        if self.process.poll() is not None:
            raise RuntimeError(f"the daemon exited with {self.process.returncode}:\n{self.log()[-4000:]}")

    def serving(self) -> bool:
        """Whether it logged that it serves; fails if it exited."""
        self.check_alive()
        return READY_LINE in self.log()

    def cli(self, *args: str) -> str:
        """Run a `ttsd` command against this daemon's folders; returns its stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "ttsd", *args],
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return done.stdout

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
        (root / folder).mkdir(parents=True, exist_ok=True)
    log_path, json_log = root / "daemon.log", root / "ttsd.jsonl"
    env = daemon_environment(root, {"TTS_LOG_FILE": str(json_log), **settings})
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ttsd", "run"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root
        )
    outbox = root / "outbox"
    daemon = Daemon(
        process,
        env,
        root,
        log_path,
        json_log,
        root / "inbox",
        outbox,
        root / "state" / "ttsd.sqlite3",
        StatusReader(outbox),
    )
    stack.callback(daemon.stop)
    wait_until(daemon.serving, timeout, "the daemon to start")
    return daemon


def device_settings(report: Report, options: Options) -> dict[str, str]:
    """Device, dtype and torch threads, as the bare runs use them."""
    settings = {"TTS_DEVICE": report.plan.device, "TTS_DTYPE": report.plan.dtype}
    if options.threads:
        # The worker sets its pool from TTS_TORCH_THREADS; OpenMP and MKL size theirs from these.
        threads = str(options.threads)
        settings.update({"TTS_TORCH_THREADS": threads, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
    return settings


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


def reached(daemon: Daemon, name: str, states: frozenset[str]) -> bool:
    """Whether job `name` is in one of `states`; a job that ended in another final state aborts the
    benchmark (its time would mean nothing), with its status document."""
    state = daemon.status.state(name)
    if state in states:
        return True
    if state in FINAL_STATES:
        raise RuntimeError(f"job {name} ended {state}: {read_status(daemon.outbox, name)}")
    return False


def wait_done(daemon: Daemon, names: Sequence[str], timeout: float, poll_s: float) -> float:
    """Wait until every status file of `names` says done; returns the perf_counter time it was seen."""
    pending = set(names)
    done = frozenset({DONE})
    deadline = time.monotonic() + timeout
    while pending:
        pending = {name for name in pending if not reached(daemon, name, done)}
        if not pending:
            break
        daemon.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} job(s) not done after {timeout:g}s, e.g. {min(pending)}")
        time.sleep(poll_s)
    return time.perf_counter()


def drop_and_time(
    daemon: Daemon, name: str, job: dict[str, Any], states: frozenset[str], timeout: float, poll_s: float = 0.001
) -> float:
    """Rename one job file in and return the seconds until its status file is in one of `states`
    (the default 1 ms poll suits latencies of tens of milliseconds)."""
    staged = stage_job(daemon.inbox, f"{name}.json", job)
    started = time.perf_counter()
    staged.drop()
    seen = wait_until(lambda: reached(daemon, name, states), timeout, name, poll_s=poll_s)
    return seen - started


# --- what the synthesis daemon's log tells ----------------------------------------------------------

_GENERATED = re.compile(r"generated (\d+) chunk\(s\) in ([0-9.]+)s: (.*)")
"""A generate call (the official engine, or ttsd's loop fallen back to calls)."""
_SPOKE = re.compile(r"spoke (.+)#(\d+): (\d+) frames in ([0-9.]+)s")
"""A chunk that left ttsd's running batch: its frames and its wall time from admission to its end."""


@dataclass(frozen=True)
class Call:
    """One generate call a worker logged: its chunks (job#index) and seconds."""

    chunks: tuple[str, ...]
    seconds: float

    def all_of(self, prefix: str) -> bool:
        """Whether every chunk of the call belongs to a job named `prefix`..."""
        return all(chunk.startswith(prefix) for chunk in self.chunks)

    def any_of(self, prefix: str) -> bool:
        """Whether some chunk of the call belongs to a job named `prefix`..."""
        return any(chunk.startswith(prefix) for chunk in self.chunks)


def logged_calls(daemon: Daemon) -> list[Call]:
    """Every generate call in the daemon's log (re-renders included: they are calls too)."""
    calls = []
    for message in daemon.messages():
        found = _GENERATED.match(message)
        if found is not None:
            chunks = tuple(chunk.strip() for chunk in found.group(3).split(","))
            calls.append(Call(chunks, float(found.group(2))))
    return calls


@dataclass(frozen=True)
class SpokenChunk:
    """One chunk ttsd's loop logged as it left the running batch."""

    job: str
    index: int
    frames: int
    seconds: float


def logged_chunks(daemon: Daemon) -> list[SpokenChunk]:
    """Every chunk ttsd's running batch logged as spoken (none from generate calls)."""
    chunks = []
    for message in daemon.messages():
        found = _SPOKE.match(message)
        if found is not None:
            chunks.append(SpokenChunk(found.group(1), int(found.group(2)), int(found.group(3)), float(found.group(4))))
    return chunks


def count_calls(daemon: Daemon, prefix: str) -> int | None:
    """Calls over jobs named `prefix`... only; None when the daemon logged no generate call at all
    (ttsd's loop: chunks join one running batch, there are no calls to count)."""
    calls = logged_calls(daemon)
    return sum(1 for call in calls if call.all_of(prefix)) if calls else None


def long_and_short(daemon: Daemon, long_prefix: str, short_prefix: str) -> tuple[list[float], list[float], str]:
    """Seconds of the generate calls over `long_prefix` jobs and of those of `short_prefix` jobs alone,
    from the log; with no generate call logged (ttsd's loop), the chunks' wall times instead. The
    third value says which: "calls" or "chunks"."""
    calls = logged_calls(daemon)
    if calls:
        longs = [call.seconds for call in calls if call.any_of(long_prefix)]
        return longs, [call.seconds for call in calls if call.all_of(short_prefix)], "calls"
    chunks = logged_chunks(daemon)
    longs = [chunk.seconds for chunk in chunks if chunk.job.startswith(long_prefix)]
    return longs, [chunk.seconds for chunk in chunks if chunk.job.startswith(short_prefix)], "chunks"


def count_rerenders(daemon: Daemon) -> int:
    """Takes the quality guard refused and spoke again (a cut row among them)."""
    return sum(1 for message in daemon.messages() if "re-rendering (" in message)


def worker_view(daemon: Daemon, model: str, timeout: float) -> dict[str, Any]:
    """`model`'s worker as `ttsd status --json` shows it once it is ready (batch size and reason,
    start-up and load seconds; the daemon's heartbeat records it every few seconds), else what the
    worker's log line says of its batch size."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = json.loads(daemon.cli("status", "--json"))["daemon"].get("loaded_models") or []
        for worker in workers:
            if worker.get("model") == model and worker.get("batch") is not None:
                return dict(worker)
        time.sleep(1.0)
    line = re.compile(rf"worker {re.escape(model)}: batch size (\d+) \((.*)\)$")
    for message in daemon.messages():
        if found := line.match(message):
            return {"batch": int(found.group(1)), "batch_reason": found.group(2)}
    return {}


# --- ttsd end to end, the cache, the mixed workload ------------------------------------------------


def synthesis_job(text: str, options: Options, **extra: Any) -> dict[str, Any]:
    """A job file's content with the fixed settings the bare runs use too, plus `extra` fields."""
    job: dict[str, Any] = {"text": text, "speaker": SPEAKER, "language": LANGUAGE, **extra}
    if options.max_new_tokens is not None:
        job["generation"] = {"max_new_tokens": options.max_new_tokens}
    return job


def warm_up(report: Report, daemon: Daemon, name: str, options: Options) -> None:
    """One job starts the model's worker process (import, load, batch-size probe); then the B it
    picked is read, so nothing timed afterwards pays for the start."""
    progress("ttsd: warming up the worker with one job (start, load, batch-size probe)")
    warm = drop_and_time(
        daemon, "warm-up", synthesis_job("Warm up.", options), frozenset({DONE}), options.timeout_s, SYNTHESIS_POLL_S
    )
    report.worker, report.warm_up_s = worker_view(daemon, name, timeout=20.0), warm
    batch = report.worker.get("batch")
    report.ttsd_batch = None if batch is None else int(batch)
    report.ttsd_batch_reason = report.worker.get("batch_reason")
    progress(f"ttsd: warm-up job done in {warm:.2f}s; worker batch size {batch} ({report.ttsd_batch_reason})")


def drop_all(daemon: Daemon, names: Sequence[str], texts: Sequence[str], options: Options) -> float:
    """Stage the jobs, rename them all in at once, wait until all are done; returns the seconds."""
    staged = [
        stage_job(daemon.inbox, f"{name}.json", synthesis_job(text, options))
        for name, text in zip(names, texts, strict=True)
    ]
    started = time.perf_counter()
    for job in staged:
        job.drop()
    return wait_done(daemon, names, options.timeout_s, poll_s=0.02) - started


def measure_ttsd(report: Report, daemon: Daemon, options: Options) -> None:
    """Rename N short job files in at once and wait for all to be done."""
    progress(f"ttsd: dropping {options.jobs} short jobs at once")
    names = [f"e2e-{i:04d}" for i in range(options.jobs)]
    seconds = drop_all(daemon, names, make_texts(options.jobs), options)
    report.ttsd = Run("ttsd", options.jobs, seconds, count_calls(daemon, "e2e-"), report.ttsd_batch)


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


def measure_http(report: Report, address: str, model: str, options: Options) -> None:
    """The HTTP section on the synthesis daemon (`address`: its TTS_HTTP), beside the inbox cache
    hits just measured."""
    report.http = bench_http(
        f"http://{address}",
        model,
        SPEAKER,
        make_texts(1, prefix="Over HTTP")[0],
        lambda index: stream_text(STREAM_CHARS, index + 1),
        clients=options.http_clients,
        repeat_requests=options.http_requests or REPEAT_REQUESTS,
        new_job_requests=options.http_requests or NEW_JOB_REQUESTS,
        stream_repeats=options.http_stream_repeats,
        timeout_s=options.timeout_s,
        log=progress,
    )
    report.http.file_cache_s = report.cache.samples


def measure_mixed(report: Report, daemon: Daemon, options: Options) -> None:
    """The mixed texts, all renamed in at once, until every one is done."""
    texts = mixed_texts(options.mixed_jobs)
    longs = [len(text) for text in texts if len(text) > CHUNK_CHARS // 2]
    mixed = Mixed(len(texts), len(texts) - len(longs), len(longs), (min(longs, default=0), max(longs, default=0)))
    progress(f"ttsd: dropping {mixed.jobs} mixed jobs at once ({mixed.short} short, {mixed.long} long)")
    names = [f"mixed-{i:04d}" for i in range(len(texts))]
    seconds = drop_all(daemon, names, texts, options)
    mixed.ttsd = Run("ttsd", len(texts), seconds, count_calls(daemon, "mixed-"), report.ttsd_batch)
    report.mixed = mixed


# --- interactive latency ----------------------------------------------------------------------------


class LongJobs:
    """The long jobs of the interactive measurement: one at a time, each dropped fresh."""

    def __init__(self, daemon: Daemon, job: dict[str, Any], timeout: float) -> None:
        self.daemon = daemon
        self.job = job
        self.timeout = timeout
        self.names: list[str] = []

    def start(self) -> None:
        """Drop a new long job and wait until it runs."""
        name = f"long-{len(self.names) + 1}"
        progress(f"interactive: dropping the long job {name}")
        stage_job(self.daemon.inbox, f"{name}.json", self.job).drop()
        self.names.append(name)
        wait_until(lambda: reached(self.daemon, name, frozenset({RUNNING})), self.timeout, f"{name} to run")

    def running(self) -> bool:
        """Whether the latest long job still runs (one that failed or was cancelled aborts the run)."""
        if not self.names:
            return False
        name = self.names[-1]
        # reached() raises when the job ended other than done.
        return not reached(self.daemon, name, frozenset({DONE})) and self.daemon.status.state(name) == RUNNING

    def cancel(self) -> None:
        """Cancel every long job not yet ended: the benchmark does not wait for the rest of it."""
        for name in self.names:
            if self.daemon.status.state(name) not in FINAL_STATES:
                self.daemon.cli("cancel", name)


@dataclass
class Timing:
    """Times single drops of a synthesis job, with a small gap after each."""

    daemon: Daemon
    timeout: float

    def drop(self, name: str, job: dict[str, Any]) -> float:
        """Rename -> done, in seconds."""
        seconds = drop_and_time(self.daemon, name, job, frozenset({DONE}), self.timeout, SYNTHESIS_POLL_S)
        time.sleep(DROP_GAP_S)
        return seconds


def during_long_jobs(
    longs: LongJobs, timing: Timing, jobs: dict[str, dict[str, Any]], drops: int
) -> tuple[dict[str, list[float]], int]:
    """`drops` samples of each kind of short job while a long job runs; also how many of them ended
    while it still ran.

    In rounds of one fresh long job each, kinds take turns one drop at a time until the long job
    ends; the kind that starts swaps every round. The first drop of a round waits for the long job's
    first call (and its decoding), later ones meet it further on: each kind gets both as often.
    """
    samples: dict[str, list[float]] = {kind: [] for kind in jobs}
    kinds, overlapped, rounds = list(jobs), 0, 0
    while any(len(taken) < drops for taken in samples.values()):
        longs.start()
        order = kinds if rounds % 2 == 0 else kinds[::-1]
        rounds += 1
        for kind in itertools.cycle(order):
            wanted = [k for k in kinds if len(samples[k]) < drops]
            if not wanted or not longs.running():
                break
            if kind in wanted:
                samples[kind].append(timing.drop(f"{kind}-{len(samples[kind]):02d}", jobs[kind]))
                overlapped += longs.running()
    return samples, overlapped


def measure_interactive(report: Report, daemon: Daemon, options: Options) -> None:
    """The short job, one drop at a time: on the idle daemon; then during long jobs, as is and urgent."""
    long_text = long_job_text(options.long_chars)
    study = Interactive(len(SHORT_TEXT), len(long_text), len(split_text(long_text, CHUNK_CHARS)))
    report.interactive = study
    short = synthesis_job(SHORT_TEXT, options, cache=False)
    timing = Timing(daemon, options.timeout_s)
    progress(f"interactive: {options.drops} short jobs on the idle daemon")
    study.idle = Latencies(tuple(timing.drop(f"idle-{i:02d}", short) for i in range(options.drops)))
    longs = LongJobs(daemon, synthesis_job(long_text, options, cache=False), options.timeout_s)
    progress(f"interactive: {2 * options.drops} short jobs during {len(long_text)}-character jobs")
    kinds = {"during": short, "urgent": {**short, "priority": URGENT_PRIORITY}}
    try:
        samples, study.overlapped = during_long_jobs(longs, timing, kinds, options.drops)
    finally:
        longs.cancel()
    study.during, study.urgent = Latencies(tuple(samples["during"])), Latencies(tuple(samples["urgent"]))
    study.long_jobs = len(longs.names)
    long_s, short_s, study.long_source = long_and_short(daemon, "long-", "idle-")
    study.long_calls = tuple(long_s)
    study.short_call_s = statistics.median(short_s) if short_s else None


# --- the engines, in this process -------------------------------------------------------------------


def engine_batches(report: Report, options: Options) -> tuple[int, ...]:
    """--engine-batches, else 1, --try-batches and the B ttsd picked."""
    if options.engine_batches is not None:
        return options.engine_batches
    sizes = {1, *options.try_batches, report.ttsd_batch}
    return tuple(sorted(size for size in sizes if size is not None))


def measure_voices(report: Report, options: Options, work: Path) -> None:
    """A saved voice's prompt read against the same prompt built from its recording, per widths."""
    for widths in options.voice_widths:
        progress(f"voices: a Base checkpoint at the {widths} widths")
        checkpoint = base_checkpoint(work / "voices", VOICE_WIDTHS[widths])
        with tempfile.TemporaryDirectory(dir=work) as scratch:
            report.voices.append(voice_prompt_saving(checkpoint, report.plan, Path(scratch)))


def voices_figures(results: Sequence[dict[str, Any]]) -> list[str]:
    """The voices section's figures: per checkpoint, building the prompt against reading it."""
    rows = []
    for result in results:
        name = result["checkpoint"]
        rows += [
            figure_row(f"voice prompt built, {name}", result["compute_prompt_ms"], "ms"),
            figure_row(f"voice prompt read (saved), {name}", result["load_saved_prompt_ms"], "ms"),
            figure_row("  saved per job / one-sentence job", result["saving_share"], "x"),
        ]
    return rows


def measure_engines(report: Report, checkpoint: Checkpoint, options: Options, work: Path) -> None:
    """ttsd's loop against the official generate on the benchmark's checkpoint (with the first audio
    of a 600-character chunk), then at the real 0.6B widths (a random checkpoint built into `work`)."""
    batches = engine_batches(report, options)
    if batches:
        report.engines.append(
            bench_engines(
                checkpoint.directory,
                report.plan,
                batches,
                options.engine_frames,
                options.engine_repeats,
                label=checkpoint.name,
                widths="tiny" if checkpoint.tiny else "checkpoint",
                first_audio=checkpoint.ending,
                threads=options.threads,
                log=progress,
            )
        )
        report.engine_targets.append("loop_vs_official_tiny" if checkpoint.tiny else "loop_vs_official_0.6b")
    if options.engine_real_batches:
        progress("engines: a random checkpoint at the real 0.6B widths (built into the work folder)")
        real = ensure_checkpoint(work / "engines", "0.6b")
        report.engines.append(
            bench_engines(
                real,
                report.plan,
                options.engine_real_batches,
                options.engine_real_frames,
                options.engine_repeats,
                label="0.6b widths",
                widths="0.6b",
                first_audio=None,
                threads=options.threads,
                log=progress,
            )
        )
        report.engine_targets.append("loop_vs_official_0.6b")


# --- intake -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def silent_hub() -> Iterator[str]:
    """A Hugging Face endpoint that accepts connections and never answers.

    The intake daemon's worker asks it for the parked model and waits there (huggingface_hub sets no
    read timeout on that call), so it claims a few jobs and then takes no CPU, writes nothing and
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


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of process `pid` (None without /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the command's closing parenthesis: state is field 3 of stat(5), utime 14, stime 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_quiet(pid: int, timeout: float) -> None:
    """Wait until process `pid` stops using the CPU (a fresh worker imports torch and qwen-tts for
    seconds); without /proc, wait a fixed while."""
    last = cpu_seconds(pid)
    if last is None:
        time.sleep(IMPORT_SETTLE_S)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = cpu_seconds(pid)
        if now is None or now - last < SETTLE_CPU_S:
            return
        last = now


def park_worker(daemon: Daemon, options: Options) -> None:
    """One parked job starts the parked model's worker, which claims it and then hangs on the silent
    hub; the burst starts once that process has finished importing and takes no CPU."""
    progress("intake: one parked job to start the parked model's worker")
    stage_job(daemon.inbox, "parked-warm-up.json", {"text": "Warm up.", "model": PARKED_MODEL}).drop()
    wait_until(lambda: reached(daemon, "parked-warm-up", frozenset({RUNNING})), options.timeout_s, "the parked job")
    started = re.search(rf"started the worker of {re.escape(PARKED_MODEL)} \(pid (\d+)\)", daemon.log())
    if started is not None:
        wait_quiet(int(started.group(1)), timeout=60.0)


def measure_intake(report: Report, daemon: Daemon, options: Options) -> None:
    """The burst, then single files one at a time."""
    park_worker(daemon, options)
    count = options.intake_files
    progress(f"intake: staging {count} job files")
    staged = [
        stage_job(daemon.inbox, f"burst-{i:05d}.json", {"text": text, "model": PARKED_MODEL})
        for i, text in enumerate(make_texts(count, prefix="Burst"))
    ]
    # Creating the hidden files sends the daemon a hint for each (ignored at once); let it drain
    # them before the clock starts.
    time.sleep(1.0)
    # The daemon created and migrated the queue before it said it was serving: this opens it as is.
    with contextlib.closing(Store(daemon.db_path)) as store:
        rows, moved = count_rows(store), count_moved(daemon.inbox)
        progress(f"intake: renaming {count} files into the inbox")
        started = time.perf_counter()
        for job in staged:
            job.drop()
        recorded = wait_until(lambda: count_rows(store) >= rows + count, options.timeout_s, "the burst", 0.01)
    all_moved = wait_until(
        lambda: count_moved(daemon.inbox) >= moved + count, options.timeout_s, "the burst moved", 0.01
    )
    report.intake = IntakeResult(count, recorded - started, all_moved - started)

    progress(f"intake: {options.latency_samples} single files, one at a time")
    queued = frozenset({"queued", RUNNING})
    report.queued = Latencies(
        tuple(
            drop_and_time(daemon, f"single-{i:04d}", {"text": text, "model": PARKED_MODEL}, queued, 30)
            for i, text in enumerate(make_texts(options.latency_samples, prefix="Single"))
        )
    )


def measure_queue(report: Report, options: Options) -> None:
    """SQLite against PostgreSQL (`scripts/bench_queue.py`); skipped without a PostgreSQL server."""
    # Imported here, not at the top: bench_queue imports this module's helpers.
    from bench_queue import bench_queue

    from tests.support.postgres import PostgresMissing

    try:
        report.queue = bench_queue(timeout_s=options.timeout_s)
    except PostgresMissing as exc:
        progress(f"queue: skipped ({exc})")


# --- the run ----------------------------------------------------------------------------------------


def run_synthesis_daemon(report: Report, checkpoint: Checkpoint, options: Options, work: Path) -> None:
    """ttsd end to end, the cache, the mixed workload and the interactive latency, on one daemon."""
    root = work / "ttsd"
    models = install_model(checkpoint, root / "state")
    settings = {
        "TTS_MODELS": json.dumps(models),
        "TTS_DEFAULT_MODEL": checkpoint.name,
        # Starts the worker process at once: its imports overlap the daemon's start.
        "TTS_PRELOAD_MODELS": checkpoint.name,
        "TTS_MAX_BATCH": report.batch_setting,
        "TTS_ENGINE": report.engine,
        # The long job is cancelled at the end: do not wait long for its call in flight.
        "TTS_SHUTDOWN_GRACE_S": "5",
        **device_settings(report, options),
    }
    # The HTTP section's server: idle until then (a thread waiting on its socket).
    address = f"127.0.0.1:{free_port()}" if options.http else None
    if address is not None:
        settings["TTS_HTTP"] = address
    with contextlib.ExitStack() as stack:
        progress("ttsd: starting a daemon" + ("" if address is None else f" (HTTP on {address})"))
        daemon = start_daemon(root, settings, stack, options.timeout_s)
        warm_up(report, daemon, checkpoint.name, options)
        measure_ttsd(report, daemon, options)
        measure_cache(report, daemon, options)
        if address is not None:
            measure_http(report, address, checkpoint.name, options)
        measure_mixed(report, daemon, options)
        measure_interactive(report, daemon, options)
        report.ttsd_rerenders = count_rerenders(daemon)


def run_intake_daemon(report: Report, checkpoint: Checkpoint, options: Options, work: Path) -> None:
    """Intake on a daemon whose jobs name a model that never loads."""
    root = work / "intake"
    models = install_model(checkpoint, root / "state")
    with contextlib.ExitStack() as stack:
        hub = stack.enter_context(silent_hub())
        progress("intake: starting a daemon whose model never loads")
        settings = {
            "TTS_MODELS": json.dumps({**models, PARKED_MODEL: PARKED_REPO}),
            "TTS_DEFAULT_MODEL": checkpoint.name,
            "TTS_HF_MIRROR": hub,
            # The parked model must be "downloaded": from the silent hub, which never answers.
            "HF_HUB_OFFLINE": "0",
            "NO_PROXY": "127.0.0.1",
            "no_proxy": "127.0.0.1",
            "TTS_MAX_QUEUE_SIZE": "1000000",
            # The worker stays stuck in the download: do not wait long for it at shutdown.
            "TTS_SHUTDOWN_GRACE_S": "1",
            **device_settings(report, options),
        }
        daemon = start_daemon(root, settings, stack, options.timeout_s)
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
    """Every measurement, in one work folder: the synthesis daemon first (bare runs use the B its
    worker picked), then bare qwen-tts, then the engines in this process, then intake."""
    plan = plan_device(options.device, "auto")
    # Read before this run adds any load of its own: what else is keeping the CPUs busy.
    started_load = os.getloadavg()[0]
    with work_folder(options.workdir) as work:
        progress(f"resolving model {options.model}")
        checkpoint = resolve_model(options.model, work)
        require_custom_voice(checkpoint.directory)
        batch = "auto" if options.batch is None else str(options.batch)
        report = Report(
            checkpoint.name,
            str(checkpoint.directory),
            plan,
            options.jobs,
            batch,
            options.max_new_tokens,
            checkpoint.ending,
        )
        report.engine = options.engine
        with section(report, "synthesis daemon"):
            run_synthesis_daemon(report, checkpoint, options, work)
        with section(report, "bare qwen-tts"):
            measure_bare(report, checkpoint, options)
        if options.engines:
            with section(report, "engines"):
                measure_engines(report, checkpoint, options, work)
        if options.voice_widths:
            with section(report, "voices"):
                measure_voices(report, options, work)
        with section(report, "intake daemon"):
            run_intake_daemon(report, checkpoint, options, work)
        if options.queue:
            with section(report, "queue"):
                measure_queue(report, options)
        report.load_average = (started_load, os.getloadavg()[0])
    return report


@contextlib.contextmanager
def section(report: Report, name: str) -> Iterator[None]:
    """Time a part of the run into `report.sections`."""
    started = time.perf_counter()
    try:
        yield
    finally:
        report.sections[name] = time.perf_counter() - started
        progress(f"{name}: {report.sections[name]:.1f}s")


# --- output -----------------------------------------------------------------------------------------


def format_value(value: float | None, unit: str) -> str:
    """A figure with its unit, or a dash when it was not measured."""
    if value is None:
        return "-"
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:.1f} {unit}"


def run_row(run: Run, label: str) -> str:
    """One throughput row."""
    calls = "-" if run.calls is None else str(run.calls)
    return f"{label:<36}{run.jobs:>6}{calls:>7}{run.seconds:>10.2f}{run.jobs_per_s:>9.2f}"


RUN_HEADER = f"{'run':<36}{'jobs':>6}{'calls':>7}{'seconds':>10}{'jobs/s':>9}"


def runs_table(report: Report) -> list[str]:
    """One row per uniform throughput measurement."""
    rows = [f"uniform short jobs ({report.jobs})", RUN_HEADER]
    optimal = report.optimal
    for run in (r for r in [report.sequential, *report.batched] if r is not None):
        rows.append(run_row(run, run.label + (" (optimal)" if run is optimal else "")))
    if report.ttsd is not None:
        rows.append(run_row(report.ttsd, f"ttsd end to end ({report.engine}, batch {report.ttsd_batch})"))
    return rows


def mixed_table(mixed: Mixed | None) -> list[str]:
    """The mixed workload's three runs."""
    if mixed is None:
        return []
    low, high = mixed.long_chars
    rows = [
        f"mixed workload: {mixed.jobs} jobs, {mixed.short} short + {mixed.long} long ({low}-{high} chars, one chunk), "
        f"interleaved; bare groups of {mixed.batch} ({mixed.batch_source})",
        RUN_HEADER,
    ]
    for run, label in ((mixed.fifo, "bare FIFO groups"), (mixed.sorted, "bare sorted groups")):
        if run is not None:
            rows.append(run_row(run, label))
    if mixed.ttsd is not None:
        rows.append(run_row(mixed.ttsd, f"ttsd end to end (batch {mixed.ttsd.batch})"))
    return rows


def latency_table(study: Interactive | None) -> list[str]:
    """The interactive latency's three cases."""
    if study is None:
        return []
    short = "-" if study.short_call_s is None else f"{study.short_call_s:.2f}s"
    longs = ", ".join(f"{seconds:.1f}" for seconds in study.long_calls) or "-"
    rows = [
        f"interactive latency: a {study.short_chars}-char job, rename -> done, one at a time "
        f"(its {study.long_source[:-1]} idle: {short})",
        f"long job {study.long_chars} chars, {study.long_chunks} chunks, {study.long_jobs} dropped; "
        f"its {study.long_source} (s): {longs}",
        f"{'case':<36}{'samples':>8}{'p50 ms':>10}{'p99 ms':>10}{'p50/idle':>10}{'p99/idle':>10}",
    ]
    for label, latencies in (
        ("idle daemon", study.idle),
        ("during the long job", study.during),
        (f"during the long job, priority {URGENT_PRIORITY}", study.urgent),
    ):
        p50, p99 = latencies.percentile_ms(50), latencies.percentile_ms(99)
        rows.append(
            f"{label:<36}{len(latencies.samples):>8}{format_value(p50, ''):>10}{format_value(p99, ''):>10}"
            f"{format_value(study.ratio(latencies), 'x'):>10}{format_value(study.ratio(latencies, 99), 'x'):>10}"
        )
    return rows


def engines_table(report: Report) -> list[str]:
    """Each engine comparison, its ratios judged against its target."""
    rows: list[str] = []
    for bench, key in zip(report.engines, report.engine_targets, strict=True):
        rows += [*render_engines(bench, judge(TARGETS[key])), ""]
    return rows[:-1]


def judge(goal: Target) -> Callable[[float], str]:
    """A figure's target and verdict, in words."""
    return lambda value: f"{goal.describe()}: {goal.verdict(value)}"


def figure_row(label: str, value: float | None, unit: str, target_key: str | None = None) -> str:
    """One line of the figures table: label, value, and the target with its verdict when there is one."""
    target, verdict = "", ""
    if target_key is not None:
        goal = TARGETS[target_key]
        target, verdict = goal.describe(), goal.verdict(value)
    return f"{label:<46}{format_value(value, unit):>12}  {target:<24}{verdict}"


def figures_table(report: Report) -> list[str]:
    """Ratios, intake and latencies, with their targets."""
    figures = report.figures()
    optimal = report.optimal
    intake = report.intake
    mixed = report.mixed
    interactive = report.interactive
    return [
        f"{'figure':<46}{'value':>12}  target",
        figure_row("ttsd / bare sequential", figures["ttsd_vs_sequential"], "x", "ttsd_vs_sequential"),
        figure_row(
            f"ttsd / bare batch {report.ttsd_batch} (ttsd's B)", report.ratio(report.batched_at(report.ttsd_batch)), "x"
        ),
        figure_row(
            f"ttsd / bare optimal (batch {optimal.batch if optimal else '-'})",
            figures["ttsd_vs_optimal"],
            "x",
            "ttsd_vs_optimal",
        ),
        figure_row("mixed: ttsd / bare FIFO groups", mixed.ratio(mixed.fifo) if mixed else None, "x"),
        figure_row("mixed: ttsd / bare sorted groups", figures["mixed_ttsd_vs_sorted"], "x", "mixed_ttsd_vs_sorted"),
        figure_row(
            "short job during long / idle, p50", figures["during_long_vs_idle_p50"], "x", "during_long_vs_idle_p50"
        ),
        figure_row(
            "  with priority / idle, p50",
            figures["during_long_priority_vs_idle_p50"],
            "x",
            "during_long_priority_vs_idle_p50",
        ),
        figure_row(
            "short job during long / (idle + 1 short call)",
            interactive.over_moonshot(interactive.during) if interactive else None,
            "x",
        ),
        figure_row(
            "  with priority / (idle + 1 short call)",
            interactive.over_moonshot(interactive.urgent) if interactive else None,
            "x",
        ),
        figure_row(
            "engines: ttsd loop / official, tiny (worst B)",
            figures["loop_vs_official_tiny"],
            "x",
            "loop_vs_official_tiny",
        ),
        figure_row(
            "engines: ttsd loop / official, 0.6B (worst B)",
            figures["loop_vs_official_0.6b"],
            "x",
            "loop_vs_official_0.6b",
        ),
        figure_row("first audio of a 600-char chunk", figures["first_audio_frames"], "frames", "first_audio_frames"),
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
        *http_figures(report.http),
        *voices_figures(report.voices),
    ]


def http_figures(bench: HttpBench | None) -> list[str]:
    """The HTTP section's headline figures (no targets): the cache cases, their p50 over the inbox
    cache hit's, and the streamed text's first bytes."""
    if bench is None:
        return []
    rows = []
    clients = f"{bench.clients} clients"
    for load, name in ((bench.repeat, "repeat request"), (bench.new_job, "cache hit, new job")):
        if load is not None:
            rows += [
                figure_row(f"http {name} ({clients})", load.requests_per_s, "req/s"),
                figure_row("  p50 / cache hit drop -> done p50", bench.versus_file(load), "x"),
            ]
    pcm = bench.streamed("pcm")
    if pcm:
        ttfb = statistics.median(sample.ttfb_s for sample in pcm) * 1000
        ratio = statistics.median(sample.ratio for sample in pcm)
        rows += [
            figure_row(f"http stream of {pcm[0].chars} chars, pcm: TTFB (median)", ttfb, "ms"),
            figure_row("  TTFB / total (median)", ratio, "x"),
        ]
    return rows


def stopping_rule(report: Report) -> str:
    """How rows end, in words."""
    ending = {
        "paced": "end of speech paced by the text (tiny, TTS_TINY_EOS on)",
        "model": "the model's own end of speech",
        "never": "never (every row runs to its budget)",
    }[report.ending]
    cap = "" if report.max_new_tokens is None else f", at most max_new_tokens {report.max_new_tokens}"
    return f"stopping rule (bare and ttsd): {ending}; each call's budget from its texts{cap}"


def worker_start(report: Report) -> str:
    """What starting the worker cost (no measurement pays for it)."""
    worker = report.worker
    warm = "-" if report.warm_up_s is None else f"{report.warm_up_s:.2f}s"
    return (
        f"ttsd worker start, before any timing: warm-up job rename -> done {warm}; worker ready in "
        f"{worker.get('startup_s', '-')}s, model load {worker.get('load_s', '-')}s"
    )


def render_table(report: Report) -> str:
    """The human-readable report."""
    plan = report.plan
    header = [
        f"ttsd benchmark: model {report.model} ({report.checkpoint})",
        f"{plan.device}/{plan.dtype}, {report.threads} torch threads, load average {report.load_average[0]:.1f} -> "
        f"{report.load_average[1]:.1f} on {os.cpu_count()} CPUs",
        stopping_rule(report),
        f"ttsd TTS_ENGINE={report.engine} (its worker says: {report.worker.get('engine', '-')}), "
        f"TTS_MAX_BATCH={report.batch_setting}: its worker picked {report.ttsd_batch} ({report.ttsd_batch_reason})",
        worker_start(report),
        "",
    ]
    notes = [
        "",
        f"cache hits: {report.cache_hits} of {len(report.cache.samples)}; "
        f"latency samples: {len(report.queued.samples)} queued, {len(report.cache.samples)} cache",
        f"rows cut at their budget: bare {report.bare_cut_rows}; ttsd takes re-rendered: {report.ttsd_rerenders}; "
        "failed jobs: 0 (any job that does not end done aborts the run)",
    ]
    if report.interactive is not None:
        study = report.interactive
        notes.append(
            f"interactive: {study.overlapped} of {len(study.during.samples) + len(study.urgent.samples)} "
            "short jobs ended while the long job still ran"
        )
    if report.sections:
        notes.append("sections (s): " + ", ".join(f"{name} {seconds:.1f}" for name, seconds in report.sections.items()))
    if report.load_average[0] >= BUSY_LOAD:
        notes.append(
            f"note: the load average was {report.load_average[0]:.1f} before the run: other processes shared "
            "the CPUs and may have skewed any of the timings (torch's threads suffer most; try --threads 1)"
        )
    sections = [
        runs_table(report),
        mixed_table(report.mixed),
        latency_table(report.interactive),
        engines_table(report),
        [] if report.http is None else render_http(report.http),
        [] if report.queue is None else report.queue.render(),
    ]
    body = [line for section in sections if section for line in [*section, ""]]
    return "\n".join([*header, *body, *figures_table(report), *notes])


def run_json(run: Run | None) -> dict[str, Any] | None:
    """A run as JSON, with its throughput."""
    return None if run is None else {**asdict(run), "jobs_per_s": run.jobs_per_s}


def latency_json(latencies: Latencies) -> dict[str, Any]:
    """Percentiles and the raw samples, in milliseconds."""
    return {
        "p50": latencies.percentile_ms(50),
        "p99": latencies.percentile_ms(99),
        "samples": [round(sample * 1000, 3) for sample in latencies.samples],
    }


def mixed_json(mixed: Mixed | None) -> dict[str, Any] | None:
    """The mixed workload as JSON."""
    if mixed is None:
        return None
    return {
        "jobs": mixed.jobs,
        "short": mixed.short,
        "long": mixed.long,
        "long_chars": list(mixed.long_chars),
        "batch": mixed.batch,
        "batch_source": mixed.batch_source,
        "bare_fifo": run_json(mixed.fifo),
        "bare_sorted": run_json(mixed.sorted),
        "ttsd": run_json(mixed.ttsd),
        "ttsd_vs_fifo": mixed.ratio(mixed.fifo),
        "ttsd_vs_sorted": mixed.ratio(mixed.sorted),
    }


def interactive_json(study: Interactive | None) -> dict[str, Any] | None:
    """The interactive latency as JSON (milliseconds)."""
    if study is None:
        return None
    return {
        "short_chars": study.short_chars,
        "long_chars": study.long_chars,
        "long_chunks": study.long_chunks,
        "long_jobs": study.long_jobs,
        "short_call_s": study.short_call_s,
        "long_calls_s": list(study.long_calls),
        "long_calls_are": study.long_source,
        "overlapped": study.overlapped,
        "idle_ms": latency_json(study.idle),
        "during_long_ms": latency_json(study.during),
        "during_long_priority_ms": latency_json(study.urgent),
        "during_vs_idle_p50": study.ratio(study.during),
        "during_vs_idle_p99": study.ratio(study.during, 99),
        "priority_vs_idle_p50": study.ratio(study.urgent),
        "priority_vs_idle_p99": study.ratio(study.urgent, 99),
        "idle_plus_one_call_ms": study.moonshot_bound_ms(),
        "during_vs_idle_plus_one_call": study.over_moonshot(study.during),
        "priority_vs_idle_plus_one_call": study.over_moonshot(study.urgent),
    }


def report_json(report: Report) -> dict[str, Any]:
    """The report as one JSON-ready object."""
    figures = report.figures()
    return {
        "model": report.model,
        "checkpoint": report.checkpoint,
        "plan": report.plan.as_dict(),
        "jobs": report.jobs,
        "batch_setting": report.batch_setting,
        "ttsd_batch": report.ttsd_batch,
        "ttsd_batch_reason": report.ttsd_batch_reason,
        "ttsd_worker": report.worker,
        "warm_up_s": report.warm_up_s,
        "max_new_tokens": report.max_new_tokens,
        "ending": report.ending,
        "torch_threads": report.threads,
        "bare_sequential": run_json(report.sequential),
        "bare_batched": [run_json(run) for run in report.batched],
        "bare_optimal": run_json(report.optimal),
        "ttsd": run_json(report.ttsd),
        "ratios": {
            "ttsd_vs_sequential": figures["ttsd_vs_sequential"],
            "ttsd_vs_batched_at_ttsd_batch": report.ratio(report.batched_at(report.ttsd_batch)),
            "ttsd_vs_optimal": figures["ttsd_vs_optimal"],
        },
        "mixed": mixed_json(report.mixed),
        "interactive": interactive_json(report.interactive),
        "intake": None
        if report.intake is None
        else {**asdict(report.intake), "files_per_s": report.intake.files_per_s},
        "queued_latency_ms": latency_json(report.queued),
        "cache_latency_ms": {**latency_json(report.cache), "hits": report.cache_hits},
        "bare_cut_rows": report.bare_cut_rows,
        "ttsd_rerenders": report.ttsd_rerenders,
        "engine": report.engine,
        "engines": [
            {**bench.as_json(), "target": key} for bench, key in zip(report.engines, report.engine_targets, strict=True)
        ],
        "http": None if report.http is None else report.http.as_json(),
        "voices": report.voices,
        "queue": None if report.queue is None else report.queue.as_json(),
        "sections_s": report.sections,
        "targets": {
            key: {**asdict(target), "value": figures[key], "met": target.met(figures[key])}
            for key, target in TARGETS.items()
        },
        "load_average": list(report.load_average),
        "cpus": os.cpu_count(),
    }


# --- command line -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The command line's options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--jobs", type=positive, default=64, help="short texts per uniform throughput run (default 64)")
    add("--batch", type=positive, default=None, help="force ttsd's TTS_MAX_BATCH (default: auto, the worker probes)")
    add(
        "--try-batches",
        type=batch_list,
        default=(8, 16, MAX_AUTO_BATCH),
        help=f"bare batch sizes besides ttsd's B and --batch, comma-separated (default 8,16,{MAX_AUTO_BATCH})",
    )
    add("--model", default="tiny", help="registry name or checkpoint folder (default tiny)")
    add("--max-new-tokens", type=positive, default=None, help="cap every call's budget (default: from its texts)")
    add("--device", choices=("cpu", "auto", "cuda", "mps"), default="cpu", help="default cpu")
    add("--threads", type=int, default=0, help="torch CPU threads, bare and ttsd alike (default: torch's)")
    add("--mixed-jobs", type=positive, default=24, help="mixed workload jobs, half short, half long (default 24)")
    add("--long-chars", type=positive, default=20_000, help="the interactive long job's length (default 20000)")
    add("--drops", type=positive, default=4, help="short jobs per interactive latency case (default 4)")
    add("--intake-files", type=positive, default=2000, help="burst size (default 2000)")
    add("--latency-samples", type=positive, default=50, help="single drops into intake (default 50)")
    add("--cache-samples", type=positive, default=30, help="repeated jobs (default 30)")
    add("--timeout", type=float, default=900.0, help="seconds any one wait may take")
    add("--workdir", type=Path, default=None, help="a new folder to work in and keep (default: a temporary one)")
    add("--json", action="store_true", help="print one JSON object instead of the table")
    add(
        "--engine",
        choices=("ttsd", "qwen-tts"),
        default="ttsd",
        help="the daemons' TTS_ENGINE: ttsd's own loop or the official calls (default ttsd)",
    )
    add("--no-engines", dest="engines", action="store_false", help="skip the engine comparison")
    add(
        "--engine-batches",
        type=batch_list,
        default=None,
        help="engine comparison batch sizes on the checkpoint (default: 1, --try-batches and ttsd's B)",
    )
    add("--engine-frames", type=positive, default=48, help="frames per row in the engine comparison (default 48)")
    add("--engine-repeats", type=positive, default=2, help="timed calls per engine and batch size (default 2)")
    add(
        "--engine-real-batches",
        type=batch_list,
        default=(1, 8),
        help="batch sizes at the real 0.6B widths, comma-separated; empty skips them (default 1,8)",
    )
    add("--engine-real-frames", type=positive, default=4, help="frames per row at the 0.6B widths (default 4)")
    add("--no-http", dest="http", action="store_false", help="skip the HTTP section")
    add("--http-clients", type=positive, default=4, help="concurrent HTTP clients of the cache cases (default 4)")
    add(
        "--http-requests",
        type=positive,
        default=None,
        help=f"requests per HTTP cache case (default {REPEAT_REQUESTS} repeat requests, {NEW_JOB_REQUESTS} new jobs)",
    )
    add(
        "--http-stream-repeats",
        type=positive,
        default=2,
        help=f"pcm streams of a fresh {STREAM_CHARS}-character text (default 2; then one mp3)",
    )
    add(
        "--voice-widths",
        type=voice_width_list,
        default=("tiny",),
        help=f"Base checkpoints of the voices section, comma-separated of {', '.join(VOICE_WIDTHS)} (default tiny)",
    )
    add("--no-voices", dest="voice_widths", action="store_const", const=(), help="skip the voices section")
    add("--no-queue", dest="queue", action="store_false", help="skip the queue section (SQLite against PostgreSQL)")
    return parser


def voice_width_list(text: str) -> tuple[str, ...]:
    """`tiny,0.6b` -> ("tiny", "0.6b"), each a width bench_voices knows."""
    widths = tuple(w for w in text.split(",") if w)
    unknown = [w for w in widths if w not in VOICE_WIDTHS]
    if unknown:
        raise argparse.ArgumentTypeError(f"{', '.join(unknown)}: not one of {', '.join(VOICE_WIDTHS)}")
    return widths


def parse_options(argv: Sequence[str] | None) -> Options:
    """The command line -> Options."""
    args = build_parser().parse_args(argv)
    return Options(
        jobs=args.jobs,
        batch=args.batch,
        try_batches=tuple(size for size in args.try_batches if size <= args.jobs),
        model=args.model,
        max_new_tokens=args.max_new_tokens,
        device=args.device,
        threads=max(args.threads, 0),
        mixed_jobs=args.mixed_jobs,
        long_chars=args.long_chars,
        drops=args.drops,
        intake_files=args.intake_files,
        latency_samples=args.latency_samples,
        cache_samples=args.cache_samples,
        timeout_s=args.timeout,
        workdir=args.workdir,
        as_json=args.json,
        engine=args.engine,
        engines=args.engines,
        engine_batches=args.engine_batches,
        engine_frames=args.engine_frames,
        engine_repeats=args.engine_repeats,
        engine_real_batches=args.engine_real_batches,
        engine_real_frames=args.engine_real_frames,
        http=args.http,
        http_clients=args.http_clients,
        http_requests=args.http_requests,
        http_stream_repeats=args.http_stream_repeats,
        voice_widths=args.voice_widths,
        queue=args.queue,
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
