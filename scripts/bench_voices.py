"""What a saved voice saves per clone job: building the voice-clone prompt from a recording against
reading the saved prompt.

A clone job given `ref_audio` has its prompt built by qwen-tts (`create_voice_clone_prompt`: the
speech tokenizer encodes the recording, the speaker encoder embeds it); a worker keeps it by the
file's content afterwards, but every new worker, and every model reload, builds it again, and each
job still reads and hashes the recording. A job naming a saved voice has its prompt read from the
voice's prompt file once per worker, then kept by the file's hash.

For each checkpoint (the tiny test Base model; a Base model at the real 0.6B widths with random
weights, tiny tokenizer and codec, built into the work folder), on a `--seconds` recording (seeded
noise at 24 kHz: the cost depends on its length, not on what it says):

- `compute_prompt_ms`: `create_voice_clone_prompt` (in-context, with a transcript), the median of
  `--repeats`;
- `load_saved_prompt_ms`: the saved prompt file read, hash-checked and put on the device;
- `cached_reference_ms` / `cached_voice_ms`: a later job's prompt lookup in a warm worker (reading
  and hashing the recording; a dictionary lookup);
- `job_ms`: a one-sentence clone job, generated and decoded (rows end at a text-paced length);
- `saving_ms` = compute - load, and `saving_share` = saving_ms / job_ms.

    TTS_TORCH_THREADS=1 .venv/bin/python scripts/bench_voices.py
    .venv/bin/python scripts/bench_voices.py --widths tiny --device cuda --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from ttsd.synth.engine.base import DevicePlan, SynthesisRequest
from ttsd.synth.engine.clone_prompts import ClonePrompts, make_prompt, prompt_fields, saved_prompt
from ttsd.synth.engine.qwen import QwenEngine
from ttsd.synth.engine.tiny import ensure_tiny_checkpoint
from ttsd.synth.engine.tiny_parts import Widths
from ttsd.voicelib import VoiceLibrary

TRANSCRIPT = "This is the reference recording of the voice that every job will speak in."
SENTENCE = "She said she would be here by noon, and she was."
RATE = 24_000
WIDTHS: dict[str, Widths] = {"tiny": "tiny", "0.6b": "0.6b"}


def timed_ms(call: Callable[[], Any], repeats: int, sync: Callable[[], None]) -> float:
    """The median wall time of `call` in milliseconds, after one untimed warm-up call."""
    call()
    samples = []
    for _ in range(repeats):
        sync()
        started = time.perf_counter()
        call()
        sync()
        samples.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(samples), 3)


def synchronizer(device: str) -> Callable[[], None]:
    """Wait for the device's queued work before a clock is read (CUDA, MPS)."""
    import torch

    if device == "cuda":
        return torch.cuda.synchronize
    if device == "mps":
        return torch.mps.synchronize
    return lambda: None


def voice_prompt_saving(
    checkpoint: Path, plan: DevicePlan, work: Path, seconds: float = 5.0, repeats: int = 5
) -> dict[str, Any]:
    """The figures above for one Base checkpoint (see the module's docstring)."""
    engine = QwenEngine.load(checkpoint.name, "base", checkpoint, plan, "paced")
    try:
        model = engine._model
        sync = synchronizer(plan.device)
        recording = work / "recording.wav"
        audio = np.random.default_rng(7).standard_normal(int(seconds * RATE)).astype(np.float32) * 0.1
        sf.write(recording, audio, RATE, subtype="FLOAT")
        compute = timed_ms(lambda: make_prompt(model, audio, RATE, TRANSCRIPT), repeats, sync)
        library = VoiceLibrary(work / "voices")
        fields = prompt_fields(make_prompt(model, audio, RATE, TRANSCRIPT))
        voice = library.save(
            "bench", model=checkpoint.name, source="recording", prompt=fields, recording=recording, force=True
        )
        by_voice = SynthesisRequest(
            SENTENCE,
            "English",
            voice="bench",
            voice_prompt=library.prompt_path("bench"),
            voice_sha256=voice.prompt_sha256,
        )
        by_reference = SynthesisRequest(SENTENCE, "English", ref_audio=recording, ref_text=TRANSCRIPT)
        load = timed_ms(lambda: saved_prompt(model, by_voice), repeats, sync)
        warm = ClonePrompts()
        cached_reference = timed_ms(lambda: warm.of(model, by_reference), repeats, sync)
        cached_voice = timed_ms(lambda: warm.of(model, by_voice), repeats, sync)
        job = timed_ms(lambda: engine.synthesize([by_voice], {}, seed=1), max(1, repeats // 2), sync)
    finally:
        engine.close()
    return {
        "checkpoint": checkpoint.name,
        "plan": plan.as_dict(),
        "recording_s": seconds,
        "compute_prompt_ms": compute,
        "load_saved_prompt_ms": load,
        "saving_ms": round(compute - load, 3),
        "cached_reference_ms": cached_reference,
        "cached_voice_ms": cached_voice,
        "job_ms": job,
        "saving_share": round((compute - load) / job, 4) if job else None,
    }


def base_checkpoint(work: Path, widths: Widths) -> Path:
    """The random Base checkpoint of `widths` in `work` (built there the first time)."""
    return ensure_tiny_checkpoint(work / f"tiny-base-{widths}", "base", widths=widths)


def main() -> None:
    """Measure each asked-for checkpoint and print a table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", default="tiny,0.6b", help="comma-separated: tiny, 0.6b (default both)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--seconds", type=float, default=5.0, help="the recording's length (default 5)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--work", type=Path, help="where checkpoints are built (default: a temp folder)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import torch

    if os.environ.get("TTS_TORCH_THREADS"):
        torch.set_num_threads(int(os.environ["TTS_TORCH_THREADS"]))
    plan = DevicePlan(args.device, args.dtype, "sdpa")
    with tempfile.TemporaryDirectory(prefix="bench-voices-") as scratch:
        work = args.work or Path(scratch)
        results = []
        for widths in args.widths.split(","):
            if widths not in WIDTHS:
                parser.error(f"--widths: {widths!r} is not one of {', '.join(WIDTHS)}")
            checkpoint = base_checkpoint(work, WIDTHS[widths])
            with tempfile.TemporaryDirectory(dir=work) as run:
                results.append(voice_prompt_saving(checkpoint, plan, Path(run), args.seconds, args.repeats))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'checkpoint':16} {'compute ms':>11} {'load ms':>9} {'saving ms':>10} {'job ms':>9} {'share':>7}")
    for r in results:
        print(
            f"{r['checkpoint']:16} {r['compute_prompt_ms']:11.1f} {r['load_saved_prompt_ms']:9.2f} "
            f"{r['saving_ms']:10.1f} {r['job_ms']:9.0f} {r['saving_share']:7.1%}"
            f"   (warm lookups: reference {r['cached_reference_ms']:.2f} ms, voice {r['cached_voice_ms']:.3f} ms)"
        )


if __name__ == "__main__":
    main()
