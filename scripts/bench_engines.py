"""ttsd's own generation loop against the official qwen-tts path: generate-only throughput, side by side.

One checkpoint is loaded once, by `LoopEngine` (ttsd's loop, `TTS_ENGINE=ttsd`), and both engines
speak on that very model in this process: "official" is `QwenEngine.generate` (qwen-tts' own talker
`generate`, the `TTS_ENGINE=qwen-tts` path) and "ttsd" is `LoopEngine.generate` (all rows start
together, each leaves at its end). For each batch size B, B different sentences (`--same-text`: B
copies of one) are spoken with the checkpoint's sampling defaults (greedy off) and end of speech
banned (ending "never"), so both engines generate exactly `--frames` frames per row (a budget of
frames + 1; the code sampled at the last step is never spoken). After one short untimed call of
each at that B, the calls alternate official, ttsd, official, ttsd... (`--repeats` of each), and
each engine's figure is its BEST call (the fastest; every sample is in the JSON, the median beside):
row-frames per second, B x frames / the call's seconds, prompt building and prefill included,
decoding excluded. On CUDA the device is synchronised before every clock reading. The table's
"median" column is the ratio of the median calls, "by CPU" the ratio of the least CPU seconds this
process spent per call: on a CPU that other work shares, wall times swing with the neighbours' load
and CPU time is the steadier measure of the work a call took (the targets use the best wall time).

First audio of a 600-character chunk: one row of that length (paced: it ends after a length that
follows the text) streams through `LoopEngine.stream()`; the row's codes so far are fed to
`ttsd.synth.engine.progressive.ProgressiveDecoder` after every step and the frames generated before
its first audio are reported (target <= 25), beside the row's whole length (without progressive
decode, the first audio comes once the whole row is generated and decoded).

Widths: `tiny` (the test checkpoint; defaults B = 1,8,16,32, 48 frames) or `0.6b` (the published
Qwen3-TTS-12Hz-0.6B talker and code-predictor widths with random weights, 1.2 GB built into the work
folder in a few seconds; defaults B = 1,8, 4 frames, no first-audio row unless `--first-audio`).

    TTS_TORCH_THREADS=1 .venv/bin/python scripts/bench_engines.py                     # tiny, table
    TTS_TORCH_THREADS=1 .venv/bin/python scripts/bench_engines.py --widths 0.6b --json
    .venv/bin/python scripts/bench_engines.py --widths 0.6b --device cuda --dtype bfloat16 --batches 1,8,32

`bench_engines()` is what `scripts/benchmark.py` calls for its engine section.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from ttsd.synth.engine.base import DevicePlan, SynthesisRequest, Takes
from ttsd.synth.engine.progressive import ProgressiveDecoder, speech_tokenizer_decoder
from ttsd.synth.engine.qwen import QwenEngine
from ttsd.synth.engine.stepping.engine import LoopEngine, Stream
from ttsd.synth.engine.tiny import ensure_tiny_checkpoint
from ttsd.synth.engine.tiny_eos import Ending
from ttsd.synth.pacing import frame_budget

if TYPE_CHECKING:
    import torch

Widths = Literal["tiny", "0.6b"]
Statistic = Literal["best", "median"]

SPEAKER: Final = "Ryan"
LANGUAGE: Final = "Auto"
SEED: Final = 1234
"""Every call is seeded alike: the same sampling work for both engines, run after run."""
FIRST_AUDIO_CHARS: Final = 600
"""ttsd's default chunk size (TTS_MAX_TEXT_LENGTH): the longest row a job's chunk makes."""
FIRST_AUDIO_TAG: Final = "first-audio"
WARM_UP_FRAMES: Final = 4
"""Frames per row of the untimed calls before each batch size's timed ones."""

_SENTENCES: Final = (
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
class Defaults:
    """What a run at these widths measures unless told otherwise."""

    batches: tuple[int, ...]
    frames: int
    first_audio: bool


DEFAULTS: Final[dict[Widths, Defaults]] = {
    "tiny": Defaults(batches=(1, 8, 16, 32), frames=48, first_audio=True),
    "0.6b": Defaults(batches=(1, 8), frames=4, first_audio=False),
}


# --- results -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """Both engines at one batch size: each call's seconds, in the order they ran (ABAB)."""

    batch: int
    frames: int
    """Frames per row of every call."""
    official_s: tuple[float, ...]
    ours_s: tuple[float, ...]
    official_cpu_s: tuple[float, ...] = ()
    """This process's CPU seconds per call (all its threads): on a machine other work shares, a
    steadier measure of the compute a call took than its wall time."""
    ours_cpu_s: tuple[float, ...] = ()

    @property
    def row_frames(self) -> int:
        """Frames one call generates over all its rows."""
        return self.batch * self.frames

    def rate(self, samples: Sequence[float], statistic: Statistic = "best") -> float:
        """Row-frames per second of the fastest (best) or the median call."""
        seconds = min(samples) if statistic == "best" else statistics.median(samples)
        return self.row_frames / seconds

    def official_fps(self, statistic: Statistic = "best") -> float:
        """The official path's row-frames per second."""
        return self.rate(self.official_s, statistic)

    def ours_fps(self, statistic: Statistic = "best") -> float:
        """ttsd's loop's row-frames per second."""
        return self.rate(self.ours_s, statistic)

    def ratio(self, statistic: Statistic = "best") -> float:
        """ttsd's loop over the official path (> 1: ours is faster)."""
        return self.ours_fps(statistic) / self.official_fps(statistic)

    def cpu_ratio(self) -> float | None:
        """The same by CPU time, least over least (None when not measured)."""
        if not self.official_cpu_s or not self.ours_cpu_s:
            return None
        return min(self.official_cpu_s) / min(self.ours_cpu_s)

    def as_json(self) -> dict[str, Any]:
        """JSON-ready, with both statistics."""
        return {
            "batch": self.batch,
            "frames": self.frames,
            "official_s": [round(s, 6) for s in self.official_s],
            "ours_s": [round(s, 6) for s in self.ours_s],
            "official_cpu_s": [round(s, 6) for s in self.official_cpu_s],
            "ours_cpu_s": [round(s, 6) for s in self.ours_cpu_s],
            "official_fps": self.official_fps(),
            "ours_fps": self.ours_fps(),
            "ratio": self.ratio(),
            "official_fps_median": self.official_fps("median"),
            "ours_fps_median": self.ours_fps("median"),
            "ratio_median": self.ratio("median"),
            "ratio_cpu": self.cpu_ratio(),
        }


@dataclass(frozen=True)
class FirstAudio:
    """One long row streamed through ttsd's loop: when its first audio came, and its whole length."""

    chars: int
    ending: str
    row_frames: int
    """Frames the whole row took (it ends by itself: paced on a tiny checkpoint)."""
    row_s: float
    """Admission to the row's end: generation only."""
    decode_s: float
    """One decode of the whole row: without progressive decode, its audio comes after row_s + this."""
    frames: int | None
    """Frames generated when the progressive decoder gave the first audio (None: the row spoke none)."""
    seconds: float | None
    """Admission to the first audio, generation and decoding (None: the row spoke none)."""
    decoder: str
    """The progressive decoder used, in words."""

    @property
    def without_progressive_s(self) -> float:
        """When the first audio comes without progressive decode: the whole row, then its decode."""
        return self.row_s + self.decode_s


@dataclass
class EngineBench:
    """One checkpoint's comparison, with the conditions it ran under."""

    label: str
    widths: str
    checkpoint: str
    plan: DevicePlan
    threads: int
    frames: int
    repeats: int
    same_text: bool
    statistic: Statistic = "best"
    load_s: float = 0.0
    seconds: float = 0.0
    """The whole section: load, warm-up, every call, the first-audio row."""
    comparisons: list[Comparison] = field(default_factory=list)
    first_audio: FirstAudio | None = None

    def ratios(self) -> dict[int, float]:
        """ours/official per batch size."""
        return {c.batch: c.ratio(self.statistic) for c in self.comparisons}

    def worst_ratio(self) -> float | None:
        """The smallest ours/official over the batch sizes (None when nothing was measured)."""
        return min(self.ratios().values(), default=None)

    def as_json(self) -> dict[str, Any]:
        """JSON-ready."""
        first = self.first_audio
        return {
            "label": self.label,
            "widths": self.widths,
            "checkpoint": self.checkpoint,
            "plan": self.plan.as_dict(),
            "torch_threads": self.threads,
            "frames_per_row": self.frames,
            "repeats": self.repeats,
            "same_text": self.same_text,
            "statistic": self.statistic,
            "load_s": self.load_s,
            "seconds": self.seconds,
            "comparisons": [c.as_json() for c in self.comparisons],
            "worst_ratio": self.worst_ratio(),
            "first_audio": None
            if first is None
            else {**asdict(first), "without_progressive_s": first.without_progressive_s},
        }


# --- texts and checkpoints ---------------------------------------------------------------------------


def batch_texts(count: int, same: bool = False) -> list[str]:
    """`count` different sentences, or `count` copies of the first."""
    if same:
        return [f"Number 1. {_SENTENCES[0]}"] * count
    return [f"Number {i + 1}. {_SENTENCES[i % len(_SENTENCES)]}" for i in range(count)]


def long_text(chars: int) -> str:
    """Whole sentences in turn, as many as fit in `chars` characters."""
    parts, length, index = ["Chapter one."], len("Chapter one."), 0
    while length + 1 + len(sentence := _SENTENCES[index % len(_SENTENCES)]) <= chars:
        parts.append(sentence)
        length += 1 + len(sentence)
        index += 1
    return " ".join(parts)


def ensure_checkpoint(work: Path, widths: Widths) -> Path:
    """The random CustomVoice checkpoint of `widths` in `work` (built there the first time)."""
    return ensure_tiny_checkpoint(work / f"tiny-custom-voice-{widths}", "custom_voice", widths=widths)


def requests_for(texts: Sequence[str]) -> list[SynthesisRequest]:
    """One request per text, all in the same voice."""
    return [SynthesisRequest(text, LANGUAGE, SPEAKER) for text in texts]


# --- clocks ------------------------------------------------------------------------------------------


def synchronizer(device: str) -> Callable[[], None]:
    """What to call before reading a clock: wait for the device's queued work (CUDA, MPS)."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.synchronize
    if device == "mps":
        return torch.mps.synchronize
    return lambda: None


def timed(call: Callable[[], Takes], sync: Callable[[], None]) -> tuple[Takes, float, float]:
    """`call`'s result, its wall seconds and this process's CPU seconds, the device drained before
    every clock reading."""
    sync()
    started, cpu = time.perf_counter(), time.process_time()
    result = call()
    sync()
    return result, time.perf_counter() - started, time.process_time() - cpu


# --- the comparison ----------------------------------------------------------------------------------


def official_generate(engine: LoopEngine, requests: Sequence[SynthesisRequest], frames: int) -> Takes:
    """The official path on the loop engine's own model: qwen-tts' talker `generate`."""
    return QwenEngine.generate(engine, requests, {}, SEED, frames + 1)


def ours_generate(engine: LoopEngine, requests: Sequence[SynthesisRequest], frames: int) -> Takes:
    """ttsd's loop; refuses to report a silent fallback to the official path as the loop's figure."""
    takes = engine.generate(requests, {}, SEED, frames + 1)
    if engine.loop_failed is not None:
        raise RuntimeError(f"ttsd's loop failed and fell back to the official path: {engine.loop_failed}")
    return takes


def check_frames(takes: Takes, batch: int, frames: int, who: str) -> None:
    """Both engines must have spoken exactly `frames` frames per row, or the rates mean nothing."""
    if takes.frames != (frames,) * batch:
        raise RuntimeError(f"{who} spoke {takes.frames} frames per row; expected {frames} in each of {batch} rows")


def compare_at(
    engine: LoopEngine,
    batch: int,
    frames: int,
    repeats: int,
    same_text: bool,
    sync: Callable[[], None],
) -> Comparison:
    """`repeats` calls of each engine at batch size `batch`, alternating official and ours, after one
    short untimed call of each at this batch size (one-off costs of new shapes: allocator growth,
    kernel selection)."""
    requests = requests_for(batch_texts(batch, same_text))
    official_generate(engine, requests, min(frames, WARM_UP_FRAMES))
    ours_generate(engine, requests, min(frames, WARM_UP_FRAMES))
    official: list[tuple[float, float]] = []
    ours: list[tuple[float, float]] = []
    for _ in range(repeats):
        takes, seconds, cpu = timed(lambda: official_generate(engine, requests, frames), sync)
        check_frames(takes, batch, frames, "the official path")
        official.append((seconds, cpu))
        takes, seconds, cpu = timed(lambda: ours_generate(engine, requests, frames), sync)
        check_frames(takes, batch, frames, "ttsd's loop")
        ours.append((seconds, cpu))
    return Comparison(
        batch,
        frames,
        official_s=tuple(wall for wall, _ in official),
        ours_s=tuple(wall for wall, _ in ours),
        official_cpu_s=tuple(cpu for _, cpu in official),
        ours_cpu_s=tuple(cpu for _, cpu in ours),
    )


# --- first audio -------------------------------------------------------------------------------------


def progressive_decoder(engine: QwenEngine) -> tuple[ProgressiveDecoder, str]:
    """A progressive decoder (its default window and context) for one row of `engine`'s model, and
    its description."""
    tokenizer = engine._model.model.speech_tokenizer
    decoder = ProgressiveDecoder(speech_tokenizer_decoder(tokenizer), int(tokenizer.get_decode_upsample_rate()))
    return decoder, f"ProgressiveDecoder(window {decoder.window_frames}, context {decoder.context_frames})"


def codes_so_far(stream: Stream, tag: Hashable) -> torch.Tensor:
    """A running row's frames so far (F x 16)."""
    codes: torch.Tensor | None = stream.partial(tag)
    if codes is None:
        raise RuntimeError(f"no row {tag!r} runs in the stream")
    return codes


def measure_first_audio(
    engine: LoopEngine, chars: int = FIRST_AUDIO_CHARS, sync: Callable[[], None] = lambda: None
) -> FirstAudio:
    """Stream one `chars`-character row through `engine` (loaded with an ending that stops rows by
    themselves: paced on tiny checkpoints) until it ends; with a progressive decoder, note when its
    first audio came. Then decode the whole row once, as without progressive decode."""
    text = long_text(chars)
    request = SynthesisRequest(text, LANGUAGE, SPEAKER, seed=SEED)
    budget = frame_budget([text], engine.max_frames)
    decoder, described = progressive_decoder(engine)
    stream = engine.stream()
    first_frames: int | None = None
    first_s: float | None = None
    decoding_s = 0.0
    sync()
    started = time.perf_counter()
    ended = stream.admit([FIRST_AUDIO_TAG], [request], {}, [budget])
    while not ended:
        ended = stream.step()
        if first_frames is not None:
            continue
        codes = ended[0].takes.rows[0] if ended else codes_so_far(stream, FIRST_AUDIO_TAG)
        sync()
        decoding = time.perf_counter()
        audio = decoder.finish(codes) if ended else decoder.feed(codes)
        sync()
        decoding_s += time.perf_counter() - decoding
        if len(audio):
            first_frames, first_s = int(codes.shape[0]), time.perf_counter() - started
    sync()
    # Generation only: the progressive decoder's calls (up to its first audio) are not the row's.
    row_s = time.perf_counter() - started - decoding_s
    takes = ended[0].takes
    _, decode_s, _ = timed(lambda: _decoded(engine, takes), sync)
    return FirstAudio(
        chars=len(text),
        ending=engine._ending,
        row_frames=takes.frames[0],
        row_s=row_s,
        decode_s=decode_s,
        frames=first_frames,
        seconds=first_s,
        decoder=described,
    )


def _decoded(engine: LoopEngine, takes: Takes) -> Takes:
    engine.decode(takes)
    return takes


# --- the section -------------------------------------------------------------------------------------


def bench_engines(
    checkpoint: Path,
    plan: DevicePlan,
    batches: Sequence[int],
    frames: int,
    repeats: int = 2,
    *,
    label: str = "tiny",
    widths: str = "tiny",
    same_text: bool = False,
    first_audio: Ending | None = "paced",
    threads: int = 0,
    log: Callable[[str], None] = lambda _message: None,
) -> EngineBench:
    """Both engines on `checkpoint` at each of `batches`, `frames` frames per row, `repeats` calls
    each (ABAB, best call reported); then, unless `first_audio` is None, the first-audio row on the
    checkpoint loaded again with that ending. `threads` > 0 sets torch's CPU threads."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    section_started = time.perf_counter()
    bench = EngineBench(label, widths, str(checkpoint), plan, torch.get_num_threads(), frames, repeats, same_text)
    sync = synchronizer(plan.device)
    log(f"engines ({label}): loading {checkpoint} on {plan.device}/{plan.dtype}")
    started = time.perf_counter()
    engine = LoopEngine.load(label, "custom_voice", checkpoint, plan, "never")
    bench.load_s = time.perf_counter() - started
    try:
        for batch in batches:
            log(f"engines ({label}): B={batch}, {frames} frames per row, {repeats} calls each (ABAB)")
            comparison = compare_at(engine, batch, frames, repeats, same_text, sync)
            bench.comparisons.append(comparison)
            log(
                f"engines ({label}): B={batch}: official {comparison.official_fps():.1f}, "
                f"ttsd {comparison.ours_fps():.1f} row-frames/s, {comparison.ratio():.2f}x"
            )
    finally:
        engine.close()
        del engine
        gc.collect()
    if first_audio is not None:
        log(f"engines ({label}): first audio of a {FIRST_AUDIO_CHARS}-character row ({first_audio})")
        streaming = LoopEngine.load(label, "custom_voice", checkpoint, plan, first_audio)
        try:
            ours_generate(streaming, requests_for(batch_texts(1)), WARM_UP_FRAMES)  # untimed
            bench.first_audio = measure_first_audio(streaming, FIRST_AUDIO_CHARS, sync)
        finally:
            streaming.close()
            del streaming
            gc.collect()
    bench.seconds = time.perf_counter() - section_started
    return bench


# --- output ------------------------------------------------------------------------------------------


def first_audio_lines(first: FirstAudio | None) -> list[str]:
    """The first-audio row in words."""
    if first is None:
        return []
    if first.frames is None:
        progressive = f"with progressive decode: no audio ({first.decoder})"
    else:
        progressive = f"with progressive decode: after {first.frames} frames, {first.seconds:.2f}s ({first.decoder})"
    return [
        f"first audio of a {first.chars}-char chunk ({first.ending}, one row through LoopEngine.stream()): "
        + progressive,
        f"  without: after the whole row, {first.row_frames} frames in {first.row_s:.2f}s "
        f"+ decode {first.decode_s:.2f}s = {first.without_progressive_s:.2f}s",
    ]


def render(bench: EngineBench, target: Callable[[float], str] | None = None) -> list[str]:
    """The comparison as table lines; `target` gives a ratio's verdict (benchmark.py's targets)."""
    plan = bench.plan
    lines = [
        f"engines, {bench.label} ({bench.widths} widths, {bench.checkpoint}): {plan.device}/{plan.dtype}, "
        f"{bench.threads} torch threads; load {bench.load_s:.1f}s, section {bench.seconds:.1f}s",
        f"generate only, {bench.frames} frames per row, sampling (checkpoint defaults), end of speech banned, "
        f"{'one text repeated' if bench.same_text else 'different texts'}; {bench.statistic} of {bench.repeats} "
        "calls each, official and ttsd alternating",
        f"{'B':>4}{'official fr/s':>15}{'ttsd fr/s':>12}{'ttsd/official':>15}{'median':>8}{'by CPU':>8}  "
        + ("target" if target else ""),
    ]
    for c in bench.comparisons:
        verdict = target(c.ratio(bench.statistic)) if target else ""
        cpu = c.cpu_ratio()
        lines.append(
            f"{c.batch:>4}{c.official_fps(bench.statistic):>15.1f}{c.ours_fps(bench.statistic):>12.1f}"
            f"{c.ratio(bench.statistic):>14.2f}x{c.ratio('median'):>7.2f}x"
            f"{'-' if cpu is None else f'{cpu:.2f}x':>8}  {verdict}"
        )
    return lines + first_audio_lines(bench.first_audio)


# --- command line ------------------------------------------------------------------------------------


def positive(raw: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def batch_list(raw: str) -> tuple[int, ...]:
    """argparse type: comma-separated batch sizes (may be empty)."""
    return tuple(positive(part) for part in raw.split(",") if part.strip())


def build_parser() -> argparse.ArgumentParser:
    """The command line's options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--widths", choices=tuple(DEFAULTS), default="tiny", help="the random checkpoint's widths (default tiny)")
    add("--checkpoint", type=Path, default=None, help="a CustomVoice checkpoint folder instead of a random one")
    add("--batches", type=batch_list, default=None, help="batch sizes (default tiny 1,8,16,32; 0.6b 1,8)")
    add("--frames", type=positive, default=None, help="frames per row (default tiny 48; 0.6b 4)")
    add("--repeats", type=positive, default=2, help="timed calls per engine and batch size (default 2)")
    add("--same-text", action="store_true", help="B copies of one sentence instead of B different ones")
    add("--device", default="cpu", help="torch device, as DevicePlan takes it (default cpu)")
    add("--dtype", default="float32", help="float32, bfloat16 or float16 (default float32)")
    add("--attention", default="sdpa", help="attention implementation (default sdpa)")
    first = parser.add_mutually_exclusive_group()
    first.add_argument("--first-audio", dest="first_audio", action="store_true", default=None, help="measure it")
    first.add_argument("--no-first-audio", dest="first_audio", action="store_false", help="skip it")
    add(
        "--threads",
        type=int,
        default=int(os.environ.get("TTS_TORCH_THREADS") or 0),
        help="torch CPU threads (default TTS_TORCH_THREADS, else torch's)",
    )
    add("--workdir", type=Path, default=None, help="where the checkpoint is built and kept (default: a temp folder)")
    add("--json", action="store_true", help="print one JSON object instead of the table")
    return parser


@contextlib.contextmanager
def work_folder(kept: Path | None) -> Iterator[Path]:
    """`kept` (created if missing, left behind with the checkpoint), or a temporary folder."""
    if kept is not None:
        kept.mkdir(parents=True, exist_ok=True)
        yield kept.absolute()
        return
    with tempfile.TemporaryDirectory(prefix="ttsd-bench-engines-") as temp:
        yield Path(temp)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print."""
    args = build_parser().parse_args(argv)
    widths: Widths = args.widths
    defaults = DEFAULTS[widths]
    batches = defaults.batches if args.batches is None else args.batches
    frames = defaults.frames if args.frames is None else args.frames
    measure_first = defaults.first_audio if args.first_audio is None else args.first_audio
    plan = DevicePlan(args.device, args.dtype, args.attention)
    load_before = os.getloadavg()

    def log(message: str) -> None:
        print(f"[bench_engines] {message}", file=sys.stderr, flush=True)

    with work_folder(args.workdir) as work:
        checkpoint = args.checkpoint.absolute() if args.checkpoint else ensure_checkpoint(work, widths)
        bench = bench_engines(
            checkpoint,
            plan,
            batches,
            frames,
            args.repeats,
            label=widths if args.checkpoint is None else checkpoint.name,
            widths=widths if args.checkpoint is None else "checkpoint",
            same_text=args.same_text,
            # A random checkpoint never ends a row by itself: it is paced; a given one ends its own.
            first_audio=None if not measure_first else "paced" if args.checkpoint is None else "model",
            threads=args.threads,
            log=log,
        )
    load = f"load average {load_before[0]:.2f} -> {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    if args.json:
        print(json.dumps({**bench.as_json(), "load_average": [load_before[0], os.getloadavg()[0]]}, indent=2))
    else:
        print("\n".join([*render(bench), load]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
