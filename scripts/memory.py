"""Resident memory of a model going through ttsd's own load and unload path, at two sizes.

Builds, into a temporary folder, the tiny random checkpoint (scale 1, about 12 MB) and a larger one
(`--scale`, default 8: about 115 MB, 28.5 M parameters), then measures each in a fresh process (so
neither the builder nor the other model skews the baseline) along the daemon's code path:
`EnginePool.use` with the production `qwen_loader` (so `QwenEngine.load`), one synthesis, then
`EnginePool.unload_idle` with an injected clock, repeated `--cycles` times, the last cycle ending
with `EnginePool.close` instead. After the pool is done, on glibc, `malloc_trim(0)` shows how much of
what is left is freed memory that the C allocator keeps rather than memory still in use.

Columns: rss (resident set), anon / file (its anonymous and file-backed parts), tensors (bytes of
every torch tensor the garbage collector can still reach: nonzero after unload would mean the model
leaked), peak (high-water mark of the resident set), Δ (rss minus the before-load row).
RSS is read from /proc/self/status on Linux, else from psutil when installed, else reported as None.
The device column (cuda/mps allocated memory) appears only with --device cuda/mps.
On the CPU in float32 the weights stay memory-mapped from model.safetensors, so they count under
file, not anon, and go back to the kernel as soon as the model is dropped; other dtypes copy them
into anonymous memory, which glibc may keep after the model is freed (see the malloc_trim row).

    .venv/bin/python scripts/memory.py                 # table
    .venv/bin/python scripts/memory.py --scale 12 --json
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import ctypes
import ctypes.util
import gc
import importlib
import json
import multiprocessing
import platform
import struct
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, get_args

from ttsd.config import Device, Dtype

_MB = 1024 * 1024
_TEXT = "The quick brown fox jumps over the lazy dog."
_PROC_STATUS = Path("/proc/self/status")


@dataclass(frozen=True)
class Sample:
    """Memory figures at one point of the run, in MiB; None where the platform does not say."""

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
    """One checkpoint's figures."""

    label: str
    scale: int
    bytes_on_disk: int
    parameters: int
    samples: list[Sample] = field(default_factory=list)

    def baseline(self) -> Sample:
        """The row taken after torch and qwen_tts are imported, just before the first load."""
        return next(s for s in self.samples if s.stage == "before load")


# --- reading memory ---------------------------------------------------------------------------------


def _proc_status_mb() -> dict[str, float] | None:
    """VmRSS, RssAnon, RssFile and VmHWM from /proc/self/status (Linux), in MiB."""
    try:
        text = _PROC_STATUS.read_text(encoding="ascii")
    except OSError:
        return None
    wanted = {"VmRSS", "RssAnon", "RssFile", "VmHWM"}
    values: dict[str, float] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in wanted:
            values[key] = int(rest.split()[0]) / 1024  # the kernel reports kB (KiB)
    return values


def _psutil_rss_mb() -> float | None:
    try:
        psutil = importlib.import_module("psutil")  # optional: not a ttsd dependency
    except ImportError:
        return None
    return float(psutil.Process().memory_info().rss) / _MB


def _peak_rss_mb() -> float | None:
    """The process's resident high-water mark from getrusage: KiB on Linux, bytes on macOS."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / _MB if sys.platform == "darwin" else peak / 1024


def rss_source() -> str | None:
    """Where resident-memory figures come from on this machine."""
    if _proc_status_mb() is not None:
        return "/proc/self/status"
    if _psutil_rss_mb() is not None:
        return "psutil"
    return None


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


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _malloc_trim() -> bool:
    """Ask glibc to hand freed heap memory back to the kernel; False where there is no glibc."""
    library = ctypes.util.find_library("c")
    if library is None or platform.libc_ver()[0] != "glibc":
        return False
    ctypes.CDLL(library).malloc_trim(0)
    return True


# --- one checkpoint, in its own process -------------------------------------------------------------


def measure(
    checkpoint: Path, state_dir: Path, cycles: int, max_new_tokens: int, device: Device, dtype: Dtype
) -> list[Sample]:
    """Load, speak, unload `checkpoint` `cycles` times through EnginePool + qwen_loader; sample memory."""
    started = time.perf_counter()
    samples = [_sample("process start", None, device, started)]

    from ttsd.catalog import build_registry
    from ttsd.config import Settings
    from ttsd.synth.runner import load_options
    from ttsd.synth.engine.base import SynthesisRequest
    from ttsd.synth.engine.pool import EnginePool, qwen_loader
    from ttsd.synth.engine.qwen_import import import_qwen_tts_quietly

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


# --- checkpoints ------------------------------------------------------------------------------------


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


def build(root: Path, scale: int) -> Measurement:
    """Build a custom_voice checkpoint of `scale` under `root` and describe it."""
    from ttsd.synth.engine.tiny import build_tiny_checkpoint

    report = build_tiny_checkpoint(root / f"scale-{scale}", "custom_voice", scale=scale)
    parameters = sum(safetensors_parameters(p) for p in report.out_dir.rglob("*.safetensors"))
    label = "tiny" if scale == 1 else f"scale {scale}"
    return Measurement(label=label, scale=scale, bytes_on_disk=report.bytes_on_disk, parameters=parameters)


def run(scales: list[int], cycles: int, max_new_tokens: int, device: Device, dtype: Dtype) -> list[Measurement]:
    """Build every scale, then measure each in a fresh spawned process."""
    results = []
    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="ttsd-memory-") as tmp:
        root = Path(tmp)
        for scale in scales:
            measurement = build(root, scale)
            with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as executor:
                future = executor.submit(
                    measure,
                    root / f"scale-{scale}",
                    root / f"state-{scale}",
                    cycles,
                    max_new_tokens,
                    device,
                    dtype,
                )
                measurement.samples = future.result()
            results.append(measurement)
    return results


# --- output -----------------------------------------------------------------------------------------


def _cell(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def format_table(results: list[Measurement]) -> str:
    """A plain-text table, one block per checkpoint, then the verdict lines."""
    show_device = any(s.device_mb is not None for m in results for s in m.samples)
    header = ["stage", "cycle", "rss", "Δ", "anon", "file", "tensors", "peak"]
    header += ["device"] if show_device else []
    header.append("t (s)")
    lines = [f"resident memory in MiB (source: {rss_source() or 'unavailable'})"]
    for m in results:
        lines.append("")
        lines.append(
            f"{m.label}: {m.bytes_on_disk / 1e6:.1f} MB on disk, {m.parameters / 1e6:.2f} M parameters "
            f"({m.parameters * 4 / _MB:.1f} MiB as float32)"
        )
        base = m.baseline().rss_mb
        rows = [header]
        for s in m.samples:
            delta = None if s.rss_mb is None or base is None else s.rss_mb - base
            row = [s.stage, "" if s.cycle is None else str(s.cycle), _cell(s.rss_mb), _cell(delta, True)]
            row += [_cell(s.anon_mb), _cell(s.file_mb), _cell(s.tensors_mb), _cell(s.peak_mb)]
            row += [_cell(s.device_mb)] if show_device else []
            row.append(f"{s.seconds:.1f}")
            rows.append(row)
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        for r in rows:
            lines.append(
                "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            )
    lines.append("")
    lines.extend(verdict(m) for m in results)
    return "\n".join(lines)


def verdict(m: Measurement) -> str:
    """How much the model took while loaded and how much of it stays resident once it is unloaded."""

    def rss(stage: str) -> float | None:
        return next((s.rss_mb for s in m.samples if s.stage == stage), None)

    base, closed, first_unload = rss("before load"), rss("close"), rss("unload_idle")
    in_use = [s.rss_mb for s in m.samples if s.stage in ("loaded", "synthesized") and s.rss_mb is not None]
    if base is None or closed is None or not in_use:
        return f"{m.label}: resident memory unavailable"
    text = f"{m.label}: up to {max(in_use) - base:+.1f} MiB while loaded; {closed - base:+.1f} after close"
    trimmed = rss("malloc_trim(0)")
    if trimmed is not None:
        text += f" ({trimmed - base:+.1f} after malloc_trim)"
    if first_unload is not None:
        text += f"; later cycles {closed - first_unload:+.1f} over the first unload"
    return text


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, measure, print a table or JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--scale", type=int, default=8, help="size of the larger checkpoint (default 8)")
    parser.add_argument("--cycles", type=int, default=2, help="load/synthesize/unload rounds (default 2)")
    parser.add_argument("--max-new-tokens", type=int, default=8, help="frames per synthesis cap (default 8)")
    parser.add_argument("--device", choices=get_args(Device), default="cpu", help="default cpu")
    parser.add_argument("--dtype", choices=get_args(Dtype), default="auto", help="default auto")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    if args.scale < 1 or args.cycles < 1 or args.max_new_tokens < 2:
        parser.error("--scale and --cycles must be at least 1, --max-new-tokens at least 2")

    scales = [1] if args.scale == 1 else [1, args.scale]
    results = run(scales, args.cycles, args.max_new_tokens, args.device, args.dtype)
    if args.json:
        payload = {
            "rss_source": rss_source(),
            "platform": platform.platform(),
            "device": args.device,
            "dtype": args.dtype,
            "cycles": args.cycles,
            "max_new_tokens": args.max_new_tokens,
            "checkpoints": [asdict(m) for m in results],
        }
        print(json.dumps(payload, indent=2, ensure_ascii=False))
    else:
        print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
