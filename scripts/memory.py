"""Resident memory of ttsd's models: a real daemon's processes, and in-process load/unload cycles.

Builds, into a temporary folder, the tiny random checkpoint (scale 1, about 12 MB) and a larger one
(`--scale`, default 8: about 115 MB, 28.5 M parameters), then measures them two ways.

Daemon (the main table). A real `python -m ttsd run` on a temporary state folder, where `tiny` is
the prebuilt tiny checkpoint and `scale-<n>` the larger one (TTS_MODELS), with a short
TTS_MODEL_IDLE_S. The supervisor never imports torch; each model runs in its own worker process,
which exits once idle, so unloading a model is that process's end. The resident memory of the
supervisor and of each worker (its direct child processes) is sampled
  daemon idle      before any job: the supervisor alone;
  loaded           right after one job of the model is done: the worker is idle with its model;
  after idle exit  once the worker exited and the supervisor has reaped it: no worker left;
for the tiny model, then the larger one. Δ is the total (supervisor + workers) minus the first row.
`ttsd status --json` is asked at each stage too: its daemon.loaded_models must list the workers
found under /proc, and nothing once they exited. The larger checkpoint is a plain local one, not of
the `tiny` family whose end of speech ttsd paces by the text: its random weights never end a take by
themselves, so its job ends `failed (quality)` after three runaway takes. Its worker has loaded the
model and generated and decoded those takes all the same, which is what is measured.

In process (kept to explain why workers exist). Each checkpoint goes, in a fresh process, through
the code a worker runs: `EnginePool.use` with the production `qwen_loader` (so `QwenEngine.load`),
one synthesis, then `EnginePool.unload_idle` with an injected clock, repeated `--cycles` times, the
last cycle ending with `EnginePool.close` instead. After the pool is done, on glibc,
`malloc_trim(0)` shows how much of what is left is freed memory that the C allocator keeps rather
than memory still in use. What stays after an in-process unload (tens of MiB, about the same at both
sizes, mostly file-backed: library pages a first synthesis touched) is not the model, since no tensor
is left, but it stays as long as the process does, on top of the import of torch and qwen-tts: only a
process exit surely returns all of it.

In-process columns: rss (resident set), anon / file (its anonymous and file-backed parts), tensors
(bytes of every torch tensor the garbage collector can still reach: nonzero after unload would mean
the model leaked), peak (high-water mark of the resident set), Δ (rss minus the before-load row).
RSS is read from /proc/<pid>/status on Linux, else from psutil when installed, else reported as None.
The device column (cuda/mps allocated memory) appears only with --device cuda/mps.
On the CPU in float32 the weights stay memory-mapped from model.safetensors, so they count under
file, not anon, and go back to the kernel as soon as the model is dropped; other dtypes copy them
into anonymous memory, which glibc may keep after the model is freed (see the malloc_trim row).

    .venv/bin/python scripts/memory.py                       # both tables
    .venv/bin/python scripts/memory.py --part daemon --json
    .venv/bin/python scripts/memory.py --scale 12 --idle-s 5
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import contextlib
import ctypes
import ctypes.util
import gc
import importlib
import json
import multiprocessing
import platform
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar, get_args

import ttsd
from ttsd.config import Device, Dtype

T = TypeVar("T")
Part = Literal["both", "daemon", "in-process"]

_MB = 1024 * 1024
_TEXT = "The quick brown fox jumps over the lazy dog."
# The daemon's jobs: the tiny checkpoints cap a take at 24 frames and `tiny` ends its speech after a
# number of frames that follows the text's length, so a text of about a second is spoken in full.
_JOB_TEXT = "Hello there."
_PROC = Path("/proc")
_TINY = "tiny"
_SPEAKER = "Ryan"  # one of the tiny checkpoints' speakers (the larger scales keep the same ones)
_READY_LINE = "serving"
_WORKER_MODULE = "ttsd.synth.runner"
# The daemon's housekeeping runs every second (ttsd.daemon.HOUSEKEEPING_S): it reaps exited workers
# and writes the heartbeat `ttsd status` reads, so waiting a little longer sees its steady state.
_SETTLE_S = 1.5
_READY_TIMEOUT_S = 60.0
_JOB_TIMEOUT_S = 90.0
_EXIT_MARGIN_S = 30.0


# --- reading memory ---------------------------------------------------------------------------------


def _proc_status_mb(pid: int | Literal["self"] = "self") -> dict[str, float] | None:
    """VmRSS, RssAnon, RssFile and VmHWM from /proc/<pid>/status (Linux), in MiB; None where absent."""
    try:
        text = (_PROC / str(pid) / "status").read_text(encoding="ascii")
    except OSError:
        return None
    wanted = {"VmRSS", "RssAnon", "RssFile", "VmHWM"}
    values: dict[str, float] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in wanted:
            values[key] = int(rest.split()[0]) / 1024  # the kernel reports kB (KiB)
    # A zombie's status has no Vm* lines: it holds no memory any more.
    return values or None


def _psutil_rss_mb(pid: int | None = None) -> float | None:
    try:
        psutil = importlib.import_module("psutil")  # optional: not a ttsd dependency
    except ImportError:
        return None
    try:
        return float(psutil.Process(pid).memory_info().rss) / _MB
    except psutil.Error:
        return None


def _peak_rss_mb() -> float | None:
    """This process's resident high-water mark from getrusage: KiB on Linux, bytes on macOS."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / _MB if sys.platform == "darwin" else peak / 1024


def rss_source() -> str | None:
    """Where resident-memory figures come from on this machine."""
    if _proc_status_mb() is not None:
        return "/proc/<pid>/status"
    if _psutil_rss_mb() is not None:
        return "psutil"
    return None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _minus(value: float | None, base: float | None) -> float | None:
    return None if value is None or base is None else round(value - base, 1)


# --- processes of the daemon ------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessMemory:
    """One process's resident memory, in MiB (None where the platform does not say)."""

    pid: int
    model: str | None
    rss_mb: float | None
    anon_mb: float | None
    file_mb: float | None
    peak_mb: float | None


def process_memory(pid: int, model: str | None = None) -> ProcessMemory | None:
    """The memory of `pid`, or None once it is gone."""
    proc = _proc_status_mb(pid)
    if proc is None:
        rss = _psutil_rss_mb(pid)
        return None if rss is None else ProcessMemory(pid, model, _round(rss), None, None, None)
    return ProcessMemory(
        pid=pid,
        model=model,
        rss_mb=_round(proc.get("VmRSS")),
        anon_mb=_round(proc.get("RssAnon")),
        file_mb=_round(proc.get("RssFile")),
        peak_mb=_round(proc.get("VmHWM")),
    )


def live_children(pid: int) -> list[int]:
    """The live (not zombie) child processes of `pid`: /proc on Linux, else psutil, else none."""
    if not _PROC.is_dir():
        return _psutil_children(pid)
    found = []
    for stat in _PROC.glob("[0-9]*/stat"):
        try:
            # The command name in parentheses may hold spaces: the fields after its last ')' do not.
            fields = stat.read_text(encoding="utf-8", errors="replace").rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return sorted(found)


def _psutil_children(pid: int) -> list[int]:
    try:
        psutil = importlib.import_module("psutil")
    except ImportError:
        return []
    try:
        return sorted(child.pid for child in psutil.Process(pid).children())
    except psutil.Error:
        return []


def worker_model(pid: int) -> str | None:
    """The model a worker serves, from its command line (`-m ttsd.synth.runner <model> <token>`):
    read at once from /proc, so it names a worker even if `ttsd status` has not caught up yet."""
    try:
        argv = (_PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    words = [word.decode("utf-8", "replace") for word in argv]
    if _WORKER_MODULE in words and words.index(_WORKER_MODULE) + 1 < len(words):
        return words[words.index(_WORKER_MODULE) + 1]
    return None


def maps_torch(pid: int) -> bool | None:
    """Whether `pid` has libtorch mapped (None where /proc/<pid>/maps cannot be read): the supervisor
    must not, or it would hold torch's memory for the daemon's whole life."""
    try:
        maps = (_PROC / str(pid) / "maps").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return "libtorch" in maps


# --- checkpoints ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A built checkpoint and the registry name the daemon knows it by."""

    label: str
    scale: int
    model: str
    path: Path
    bytes_on_disk: int
    parameters: int


def safetensors_parameters(path: Path) -> int:
    """The number of values stored in a .safetensors file, read from its JSON header."""
    with path.open("rb") as handle:
        (header_size,) = struct.unpack("<Q", handle.read(8))
        header: dict[str, Any] = json.loads(handle.read(header_size))
    total = 0
    for key, entry in header.items():
        if key != "__metadata__":
            count = 1
            for dim in entry["shape"]:
                count *= int(dim)
            total += count
    return total


def build(root: Path, scale: int) -> Checkpoint:
    """Build a custom_voice checkpoint of `scale` under `root` and describe it.

    Scale 1 goes through `ensure_tiny_checkpoint`, whose marker file lets the daemon's `tiny` name
    use it as is (the same bytes as `build_tiny_checkpoint` at scale 1); larger scales are plain
    local checkpoints, named `scale-<n>` through TTS_MODELS.
    """
    from ttsd.synth.engine.tiny import build_tiny_checkpoint, ensure_tiny_checkpoint

    if scale == 1:
        path = ensure_tiny_checkpoint(root / _TINY, "custom_voice")
        label, model = _TINY, _TINY
    else:
        path = build_tiny_checkpoint(root / f"scale-{scale}", "custom_voice", scale=scale).out_dir
        label, model = f"scale {scale}", f"scale-{scale}"
    return Checkpoint(
        label=label,
        scale=scale,
        model=model,
        path=path,
        bytes_on_disk=sum(p.stat().st_size for p in path.rglob("*") if p.is_file()),
        parameters=sum(safetensors_parameters(p) for p in path.rglob("*.safetensors")),
    )


# --- the daemon -------------------------------------------------------------------------------------


def wait_for(condition: Callable[[], T | None], timeout: float, what: Callable[[], str]) -> T:
    """Poll `condition` until it returns something truthy; RuntimeError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what()}")
        time.sleep(0.05)


class Daemon:
    """One `python -m ttsd run` on folders under `root`, killed on the way out whatever happens."""

    def __init__(self, root: Path, models: list[Checkpoint], idle_s: float, device: Device, dtype: Dtype) -> None:
        self.inbox, self.outbox, self.state = root / "inbox", root / "outbox", root / "state"
        self.log_path, self.json_log = root / "daemon.log", root / "daemon.jsonl"
        self.env = self._environment(root, models, idle_s, device, dtype)
        self.process: subprocess.Popen[bytes] | None = None

    def _environment(
        self, root: Path, models: list[Checkpoint], idle_s: float, device: Device, dtype: Dtype
    ) -> dict[str, str]:
        """As tests/support/daemon_harness.py sets it up: `tiny` resolves to the prebuilt checkpoint
        through a link under <state>/models, the others through TTS_MODELS."""
        for folder in (self.inbox, self.outbox, self.state / "models"):
            folder.mkdir(parents=True)
        local = {}
        for checkpoint in models:
            if checkpoint.model == _TINY:
                (self.state / "models" / _TINY).symlink_to(checkpoint.path, target_is_directory=True)
            else:
                local[checkpoint.model] = str(checkpoint.path)
        env = {key: value for key, value in os.environ.items() if not key.startswith("TTS_")}
        # The daemon and its workers must run the ttsd this script imported, not an installed copy.
        source = str(Path(ttsd.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))
        env.update(
            TTS_STATE_DIR=str(self.state),
            TTS_INBOX=str(self.inbox),
            TTS_OUTBOX=str(self.outbox),
            TTS_DEFAULT_MODEL=_TINY,
            TTS_MODELS=json.dumps(local),
            TTS_MODEL_IDLE_S=f"{idle_s:g}",
            TTS_DEVICE=device,
            TTS_DTYPE=dtype,
            TTS_STABLE_S="0.2",
            TTS_SCAN_INTERVAL_S="0.5",
            TTS_LOG_LEVEL="INFO",
            TTS_LOG_FILE=str(self.json_log),
            # Bounded time: a random checkpoint's take that fails a quality check is not retried.
            TTS_MAX_ATTEMPTS="1",
            # One torch thread unless told otherwise: the default, one per core, crawls on a busy
            # small machine (see ttsd.config.torch_threads).
            TTS_TORCH_THREADS=os.environ.get("TTS_TORCH_THREADS", "1"),
            HF_HUB_OFFLINE="1",
            HF_HOME=str(root / "hf-home"),
            PYTHONUNBUFFERED="1",
        )
        return env

    def __enter__(self) -> Daemon:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ttsd", "run"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.state.parent,
            )
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # workers notice the end of their stdin and exit by themselves
            self.process.wait(timeout=30)

    @property
    def pid(self) -> int:
        """The supervisor's process id."""
        assert self.process is not None, "the daemon was not started"
        return self.process.pid

    def log(self) -> str:
        """What the daemon wrote so far: its stdout/stderr and its JSON log."""
        paths = [path for path in (self.log_path, self.json_log) if path.exists()]
        return "\n".join(path.read_text(encoding="utf-8", errors="replace") for path in paths)

    def _alive(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise RuntimeError(f"the daemon exited ({code}):\n{self.log()[-4000:]}")
        return True

    def wait_ready(self) -> None:
        """Until the daemon says it is serving."""
        wait_for(lambda: self._alive() and _READY_LINE in self.log(), _READY_TIMEOUT_S,
                 lambda: f"the daemon to start:\n{self.log()[-4000:]}")  # fmt: skip

    def run_job(self, name: str, model: str) -> dict[str, Any]:
        """Drop one job for `model`; its final status document once it is done (or failed)."""
        from ttsd.client import read_status, stage_job

        stage_job(self.inbox, f"{name}.json", {"text": _JOB_TEXT, "speaker": _SPEAKER, "model": model}).drop()

        def finished() -> dict[str, Any] | None:
            document = read_status(self.outbox, name) if self._alive() else None
            return document if document is not None and document.get("state") in ("done", "failed") else None

        return wait_for(finished, _JOB_TIMEOUT_S, lambda: f"job {name}: {read_status(self.outbox, name)}")

    def reported_workers(self) -> list[dict[str, Any]]:
        """daemon.loaded_models from `ttsd status --json`: the workers as the supervisor reports them."""
        result = subprocess.run(
            [sys.executable, "-m", "ttsd", "status", "--json"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        daemon: dict[str, Any] = json.loads(result.stdout)["daemon"]
        return list(daemon.get("loaded_models") or [])

    def stop(self) -> int:
        """SIGTERM and wait for a clean exit: its exit status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


@dataclass(frozen=True)
class DaemonSample:
    """The daemon's processes at one stage, in MiB."""

    stage: str
    model: str | None
    supervisor: ProcessMemory | None
    workers: list[ProcessMemory]
    supervisor_mb: float | None
    worker_mb: float
    total_mb: float | None
    supervisor_maps_torch: bool | None
    reported: list[dict[str, Any]]
    status_matches_proc: bool
    seconds: float


@dataclass
class DaemonMeasurement:
    """One daemon's run through every checkpoint."""

    idle_s: float
    samples: list[DaemonSample] = field(default_factory=list)
    jobs: dict[str, str] = field(default_factory=dict)
    worker_exits: list[str] = field(default_factory=list)
    exit_code: int | None = None
    seconds: float = 0.0

    def delta(self, sample: DaemonSample) -> float | None:
        """The sample's total minus the first (daemon idle, before any job) row's."""
        return _minus(sample.total_mb, self.samples[0].total_mb)


def sample_daemon(daemon: Daemon, stage: str, model: str | None, started: float) -> DaemonSample:
    """Memory of the supervisor and its live children first (a worker may exit any moment once idle),
    then what `ttsd status --json` reports."""
    supervisor = process_memory(daemon.pid)
    workers = [m for pid in live_children(daemon.pid) if (m := process_memory(pid, worker_model(pid)))]
    maps = maps_torch(daemon.pid)
    seconds = round(time.perf_counter() - started, 1)
    reported = reported_for(daemon, [w.pid for w in workers])
    worker_mb = round(sum((w.rss_mb or 0.0 for w in workers), 0.0), 1)
    supervisor_mb = None if supervisor is None else supervisor.rss_mb
    return DaemonSample(
        stage=stage,
        model=model,
        supervisor=supervisor,
        workers=workers,
        supervisor_mb=supervisor_mb,
        worker_mb=worker_mb,
        total_mb=None if supervisor_mb is None else round(supervisor_mb + worker_mb, 1),
        supervisor_maps_torch=maps,
        reported=reported,
        status_matches_proc=sorted(int(w.get("pid") or 0) for w in reported) == [w.pid for w in workers],
        seconds=seconds,
    )


def reported_for(daemon: Daemon, pids: list[int]) -> list[dict[str, Any]]:
    """What `ttsd status --json` reports once the supervisor's heartbeat (written once a second) has
    caught up with the loaded workers `pids`, or its last answer after `_SETTLE_S`."""
    deadline = time.monotonic() + _SETTLE_S
    while True:
        reported = daemon.reported_workers()
        loaded = {w.get("pid") for w in reported if w.get("device")}
        if loaded >= set(pids) or time.monotonic() > deadline:
            return reported
        time.sleep(0.2)


def measure_daemon(
    root: Path, checkpoints: list[Checkpoint], idle_s: float, device: Device, dtype: Dtype
) -> DaemonMeasurement:
    """Start a daemon; sample it idle, then per checkpoint after one job and after its worker's exit."""
    started = time.perf_counter()
    result = DaemonMeasurement(idle_s=idle_s)
    with Daemon(root, checkpoints, idle_s, device, dtype) as daemon:
        daemon.wait_ready()
        time.sleep(_SETTLE_S)
        result.samples.append(sample_daemon(daemon, "daemon idle", None, started))
        for checkpoint in checkpoints:
            document = daemon.run_job(f"job-{checkpoint.model}", checkpoint.model)
            result.jobs[checkpoint.model] = job_outcome(document)
            loaded = sample_daemon(daemon, "loaded", checkpoint.model, started)
            if not loaded.workers:
                raise RuntimeError(f"the worker of {checkpoint.model} was gone before it was sampled: "
                                   "raise --idle-s")  # fmt: skip
            result.samples.append(loaded)
            wait_idle_exit(daemon, [w.pid for w in loaded.workers], idle_s)
            result.samples.append(sample_daemon(daemon, "after idle exit", checkpoint.model, started))
        result.exit_code = daemon.stop()
        result.worker_exits = [line.strip() for line in daemon.log().splitlines() if " exits: " in line]
    result.seconds = round(time.perf_counter() - started, 1)
    return result


def job_outcome(document: dict[str, Any]) -> str:
    """'done', or 'failed (<error code>)'."""
    state = str(document.get("state"))
    error = document.get("error")
    return f"{state} ({error.get('code')})" if isinstance(error, dict) else state


def wait_idle_exit(daemon: Daemon, pids: list[int], idle_s: float) -> None:
    """Until the workers `pids` are gone and the supervisor no longer reports any."""
    timeout = idle_s + _EXIT_MARGIN_S
    wait_for(lambda: not set(pids) & set(live_children(daemon.pid)), timeout,
             lambda: f"workers {pids} to exit when idle")  # fmt: skip
    wait_for(lambda: daemon.reported_workers() == [], timeout, lambda: "ttsd status to show no worker")
    time.sleep(_SETTLE_S)  # past one more housekeeping tick: the supervisor has settled the exit


# --- one checkpoint in process, in its own process --------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """Memory figures of this process at one point of the in-process run, in MiB."""

    stage: str
    cycle: int | None
    rss_mb: float | None
    anon_mb: float | None
    file_mb: float | None
    peak_mb: float | None
    tensors_mb: float
    device_mb: float | None
    seconds: float


@dataclass
class Measurement:
    """One checkpoint's in-process figures."""

    label: str
    scale: int
    bytes_on_disk: int
    parameters: int
    samples: list[Sample] = field(default_factory=list)

    def baseline(self) -> Sample:
        """The row taken after torch and qwen_tts are imported, just before the first load."""
        return next(s for s in self.samples if s.stage == "before load")


def _live_tensor_mb() -> float:
    """Bytes held by the storages of all torch tensors that the garbage collector still tracks."""
    import torch

    storages: dict[tuple[str, int], int] = {}
    with warnings.catch_warnings():
        # isinstance() on some tracked objects trips torch's deprecated-alias warnings.
        warnings.simplefilter("ignore", FutureWarning)
        tensors = [obj for obj in gc.get_objects() if isinstance(obj, torch.Tensor)]
    for tensor in tensors:
        if tensor.device.type != "meta":
            storage = tensor.untyped_storage()
            storages[(str(tensor.device), storage.data_ptr())] = storage.nbytes()
    return sum(storages.values()) / _MB


def _device_mb(device: str) -> float | None:
    if "torch" not in sys.modules:
        return None
    import torch

    if device == "cuda" and torch.cuda.is_available():
        return torch.cuda.memory_allocated() / _MB
    if device == "mps" and torch.backends.mps.is_available():
        return torch.mps.current_allocated_memory() / _MB
    return None


def _sample(stage: str, cycle: int | None, device: str, started: float) -> Sample:
    gc.collect()
    proc = _proc_status_mb()
    rss = proc.get("VmRSS") if proc else _psutil_rss_mb()
    return Sample(
        stage=stage,
        cycle=cycle,
        rss_mb=_round(rss),
        anon_mb=_round(proc.get("RssAnon") if proc else None),
        file_mb=_round(proc.get("RssFile") if proc else None),
        peak_mb=_round(proc.get("VmHWM") if proc else _peak_rss_mb()),
        tensors_mb=round(_live_tensor_mb(), 1) if "torch" in sys.modules else 0.0,
        device_mb=_round(_device_mb(device)),
        seconds=round(time.perf_counter() - started, 2),
    )


def _malloc_trim() -> bool:
    """Ask glibc to hand freed heap memory back to the kernel; False where there is no glibc."""
    library = ctypes.util.find_library("c")
    if library is None or platform.libc_ver()[0] != "glibc":
        return False
    ctypes.CDLL(library).malloc_trim(0)
    return True


def measure(
    checkpoint: Path, state_dir: Path, cycles: int, max_new_tokens: int, device: Device, dtype: Dtype
) -> list[Sample]:
    """Load, speak, unload `checkpoint` `cycles` times through EnginePool + qwen_loader; sample memory."""
    started = time.perf_counter()
    samples = [_sample("process start", None, device, started)]

    from ttsd.catalog import build_registry
    from ttsd.config import Settings
    from ttsd.synth.engine.base import SynthesisRequest
    from ttsd.synth.engine.pool import EnginePool, qwen_loader
    from ttsd.synth.engine.qwen_import import import_qwen_tts_quietly
    from ttsd.synth.runner import load_options

    import_qwen_tts_quietly()
    name = "measured"
    settings = Settings(
        models={name: str(checkpoint)},
        state_dir=state_dir,
        device=device,
        dtype=dtype,
    )
    now = [0.0]
    pool = EnginePool(
        build_registry(settings.models),
        qwen_loader(load_options(settings)),
        idle_s=settings.model_idle_s,
        clock=lambda: now[0],
    )
    samples.append(_sample("before load", None, device, started))

    for cycle in range(1, cycles + 1):
        with pool.use(name) as engine:
            samples.append(_sample("loaded", cycle, device, started))
            speaker = next(iter(engine.voices().speakers), None)
            request = SynthesisRequest(text=_TEXT, language="English", speaker=speaker)
            engine.synthesize([request], {"max_new_tokens": max_new_tokens}, seed=cycle)
            samples.append(_sample("synthesized", cycle, device, started))
        del engine
        if cycle < cycles:
            now[0] += settings.model_idle_s + 1
            unloaded = pool.unload_idle()
            if unloaded != [name]:
                raise RuntimeError(f"unload_idle unloaded {unloaded}, expected [{name!r}]")
            samples.append(_sample("unload_idle", cycle, device, started))
        else:
            pool.close()
            if pool.loaded():
                raise RuntimeError(f"close left models loaded: {pool.loaded()}")
            samples.append(_sample("close", cycle, device, started))

    if _malloc_trim():
        samples.append(_sample("malloc_trim(0)", None, device, started))
    return samples


def measure_in_process(
    root: Path, checkpoints: list[Checkpoint], cycles: int, max_new_tokens: int, device: Device, dtype: Dtype
) -> list[Measurement]:
    """Measure each checkpoint in a fresh spawned process, so neither the builder (this process) nor
    the other model skews the baseline."""
    results = []
    spawn = multiprocessing.get_context("spawn")
    for checkpoint in checkpoints:
        measurement = Measurement(checkpoint.label, checkpoint.scale, checkpoint.bytes_on_disk, checkpoint.parameters)
        state_dir = root / f"in-process-state-{checkpoint.scale}"
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as executor:
            future = executor.submit(measure, checkpoint.path, state_dir, cycles, max_new_tokens, device, dtype)
            measurement.samples = future.result()
        results.append(measurement)
    return results


# --- output -----------------------------------------------------------------------------------------


def _cell(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def _align(rows: list[list[str]]) -> list[str]:
    """Rows as lines: the first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]


def _describe(checkpoint: Checkpoint | Measurement) -> str:
    return (
        f"{checkpoint.label}: {checkpoint.bytes_on_disk / 1e6:.1f} MB on disk, {checkpoint.parameters / 1e6:.2f} M "
        f"parameters ({checkpoint.parameters * 4 / _MB:.1f} MiB as float32)"
    )


def format_daemon(result: DaemonMeasurement, checkpoints: list[Checkpoint]) -> str:
    """The daemon table: one row per stage, then the workers seen and the verdict lines."""
    lines = [f"daemon: supervisor and worker processes, resident memory in MiB (source: {rss_source() or '-'})"]
    lines += [_describe(c) for c in checkpoints]
    lines.append(f"TTS_MODEL_IDLE_S={result.idle_s:g}; Δ: total minus the daemon-idle row")
    lines.append("")
    header = ["stage", "model", "supervisor", "worker", "total", "Δ", "worker peak", "workers (pid model)", "t (s)"]
    rows = [header]
    for s in result.samples:
        peak = max((w.peak_mb for w in s.workers if w.peak_mb is not None), default=None)
        pids = ", ".join(f"{w.pid} {w.model or '?'}" for w in s.workers) or "none"
        row = [s.stage, s.model or "", _cell(s.supervisor_mb), _cell(s.worker_mb), _cell(s.total_mb)]
        row += [_cell(result.delta(s), True), _cell(peak), pids, f"{s.seconds:.1f}"]
        rows.append(row)
    lines += _align(rows)
    lines.append("")
    lines += [f"status --json, {' '.join(filter(None, (s.stage, s.model)))}: {_reported(s)}" for s in result.samples]
    lines += [f"worker log: {line}" for line in _exit_messages(result.worker_exits)]
    lines.append("")
    lines += daemon_verdict(result)
    return "\n".join(lines)


def _reported(sample: DaemonSample) -> str:
    keys = ("model", "pid", "state", "device", "dtype", "batch")
    workers = "; ".join(", ".join(f"{k}={w.get(k)}" for k in keys if k in w) for w in sample.reported)
    agreement = "same pids as /proc" if sample.status_matches_proc else "NOT the pids found under /proc"
    return f"{workers or 'no worker'} ({agreement})"


def _exit_messages(lines: list[str]) -> list[str]:
    """The 'worker X exits: idle' messages, from the JSON log when it has them, else as logged."""
    messages = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("message"), str):
            messages.append(record["message"])
    return messages or lines


def daemon_verdict(result: DaemonMeasurement) -> list[str]:
    """Per model: what its worker held while loaded, and what is left once it exited."""
    base = result.samples[0]
    lines = []
    for loaded, gone in zip(result.samples[1::2], result.samples[2::2], strict=True):
        peak = max((w.peak_mb for w in loaded.workers if w.peak_mb is not None), default=None)
        supervisor_drift = _minus(gone.supervisor_mb, base.supervisor_mb)
        lines.append(
            f"{loaded.model}: job {result.jobs.get(loaded.model or '', '?')}; worker {_cell(loaded.worker_mb)} MiB "
            f"with the model loaded (peak {_cell(peak)}); after its idle exit {len(gone.workers)} worker(s), "
            f"{_cell(gone.worker_mb)} MiB, supervisor {_cell(supervisor_drift, True)} MiB vs daemon idle"
        )
    torch_seen = [s.supervisor_maps_torch for s in result.samples]
    mapped = "unknown" if None in torch_seen else ("yes" if any(torch_seen) else "never")
    lines.append(f"supervisor mapped libtorch: {mapped}; daemon exit status {result.exit_code}; {result.seconds:.0f} s")
    return lines


def format_in_process(results: list[Measurement]) -> str:
    """A plain-text table, one block per checkpoint, then the verdict lines."""
    show_device = any(s.device_mb is not None for m in results for s in m.samples)
    header = ["stage", "cycle", "rss", "Δ", "anon", "file", "tensors", "peak"]
    header += ["device"] if show_device else []
    header.append("t (s)")
    lines = [f"in process: load/unload cycles in one process, resident memory in MiB (source: {rss_source() or '-'})"]
    for m in results:
        lines.append("")
        lines.append(_describe(m))
        base = m.baseline().rss_mb
        rows = [header]
        for s in m.samples:
            delta = None if s.rss_mb is None or base is None else s.rss_mb - base
            row = [s.stage, "" if s.cycle is None else str(s.cycle), _cell(s.rss_mb), _cell(delta, True)]
            row += [_cell(s.anon_mb), _cell(s.file_mb), _cell(s.tensors_mb), _cell(s.peak_mb)]
            row += [_cell(s.device_mb)] if show_device else []
            row.append(f"{s.seconds:.1f}")
            rows.append(row)
        lines += _align(rows)
    lines.append("")
    lines.extend(verdict(m) for m in results)
    return "\n".join(lines)


def verdict(m: Measurement) -> str:
    """How much the model took while loaded and how much of it stays resident once it is unloaded."""
    base, closed, first_unload = (_stage_rss(m, stage) for stage in ("before load", "close", "unload_idle"))
    in_use = [s.rss_mb for s in m.samples if s.stage in ("loaded", "synthesized") and s.rss_mb is not None]
    if base is None or closed is None or not in_use:
        return f"{m.label}: resident memory unavailable"
    text = f"{m.label}: up to {max(in_use) - base:+.1f} MiB while loaded; {closed - base:+.1f} after close"
    trimmed = _stage_rss(m, "malloc_trim(0)")
    if trimmed is not None:
        text += f" ({trimmed - base:+.1f} after malloc_trim)"
    if first_unload is not None:
        text += f"; later cycles {closed - first_unload:+.1f} over the first unload"
    return text


def summary(daemon: DaemonMeasurement, in_process: list[Measurement]) -> str | None:
    """Both parts side by side: what an in-process unload keeps, and what a worker's exit gives back."""
    loaded = [s.worker_mb for s in daemon.samples if s.stage == "loaded"]
    exits = [s for s in daemon.samples if s.stage == "after idle exit"]
    drift = [d for s in exits if (d := _minus(s.supervisor_mb, daemon.samples[0].supervisor_mb)) is not None]
    before = [s.rss_mb for m in in_process for s in m.samples if s.stage == "before load" and s.rss_mb is not None]
    kept = [d for m in in_process if (d := _minus(_stage_rss(m, "close"), m.baseline().rss_mb)) is not None]
    if not in_process or not loaded or not drift or not before or not kept:
        return None
    return (
        f"summary: in one process, torch and qwen-tts take {max(before):.0f} MiB before any model is loaded and "
        f"an unload leaves up to {max(kept):+.1f} MiB more; a worker's idle exit gave back all of its "
        f"{min(loaded):.0f}-{max(loaded):.0f} MiB, and the supervisor (no torch) stayed within {max(drift):+.1f} "
        f"MiB of its {daemon.samples[0].supervisor_mb} MiB when idle."
    )


def _stage_rss(m: Measurement, stage: str) -> float | None:
    return next((s.rss_mb for s in m.samples if s.stage == stage), None)


# --- main -------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--scale", type=int, default=8, help="size of the larger checkpoint (default 8)")
    parser.add_argument("--part", choices=get_args(Part), default="both", help="what to measure (default both)")
    parser.add_argument("--idle-s", type=float, default=3.0, help="the daemon's TTS_MODEL_IDLE_S (default 3)")
    parser.add_argument("--cycles", type=int, default=2, help="in-process load/unload rounds (default 2)")
    parser.add_argument("--max-new-tokens", type=int, default=8, help="in-process frames per synthesis (default 8)")
    parser.add_argument("--device", choices=get_args(Device), default="cpu", help="default cpu")
    parser.add_argument("--dtype", choices=get_args(Dtype), default="auto", help="default auto")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the tables")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, build the checkpoints, measure, print tables or JSON."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.scale < 1 or args.cycles < 1 or args.max_new_tokens < 2 or args.idle_s <= 0:
        parser.error("--scale and --cycles must be at least 1, --max-new-tokens at least 2, --idle-s above 0")

    scales = [1] if args.scale == 1 else [1, args.scale]
    daemon: DaemonMeasurement | None = None
    in_process: list[Measurement] = []
    root = Path(tempfile.mkdtemp(prefix="ttsd-memory-"))
    try:
        checkpoints = [build(root / "checkpoints", scale) for scale in scales]
        if args.part in ("both", "daemon"):
            daemon = measure_daemon(root / "daemon", checkpoints, args.idle_s, args.device, args.dtype)
        if args.part in ("both", "in-process"):
            in_process = measure_in_process(
                root, checkpoints, args.cycles, args.max_new_tokens, args.device, args.dtype
            )
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(root)

    if args.json:
        print(json.dumps(_payload(args, checkpoints, daemon, in_process), indent=2, ensure_ascii=False, default=str))
        return 0
    blocks = [format_daemon(daemon, checkpoints)] if daemon is not None else []
    blocks += [format_in_process(in_process)] if in_process else []
    blocks += [line] if daemon is not None and (line := summary(daemon, in_process)) else []
    print("\n\n".join(blocks))
    return 0


def _payload(
    args: argparse.Namespace,
    checkpoints: list[Checkpoint],
    daemon: DaemonMeasurement | None,
    in_process: list[Measurement],
) -> dict[str, Any]:
    daemon_view = None
    if daemon is not None:
        daemon_view = asdict(daemon)
        for row, sample in zip(daemon_view["samples"], daemon.samples, strict=True):
            row["delta_mb"] = daemon.delta(sample)
    return {
        "rss_source": rss_source(),
        "platform": platform.platform(),
        "device": args.device,
        "dtype": args.dtype,
        "checkpoints": [asdict(c) for c in checkpoints],
        "daemon": daemon_view,
        "in_process": {
            "cycles": args.cycles,
            "max_new_tokens": args.max_new_tokens,
            "checkpoints": [asdict(m) for m in in_process],
        }
        if in_process
        else None,
    }


if __name__ == "__main__":
    sys.exit(main())
