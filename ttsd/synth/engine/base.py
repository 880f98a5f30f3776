"""What a synthesis engine is to the rest of ttsd: a small protocol and the values it trades in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ttsd.catalog import ModelKind


@dataclass(frozen=True)
class DevicePlan:
    """Where and in what precision a model runs."""

    device: str
    dtype: str
    attention: str

    def as_dict(self) -> dict[str, str]:
        """A JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True)
class SynthesisRequest:
    """One text to speak, with the voice fields its model kind takes."""

    text: str
    language: str = "Auto"
    speaker: str | None = None
    instruct: str | None = None
    ref_audio: Path | None = None
    ref_text: str | None = None
    voice: str | None = None
    """A saved voice's name (for messages; `voice_prompt` is what is spoken)."""
    voice_prompt: Path | None = None
    """A saved voice's prompt file: cloned from it instead of from `ref_audio` (Base models)."""
    voice_sha256: str | None = None
    """The saved prompt file's SHA-256, checked when the file is read."""
    seed: int | None = None
    """This row's own seed (engines with per-row random streams; others seed the whole call)."""


@dataclass(frozen=True)
class Voices:
    """What a model can speak: speakers (CustomVoice only) and languages."""

    speakers: tuple[str, ...]
    languages: tuple[str, ...]


@dataclass(frozen=True)
class Takes:
    """What one generate call produced, before decoding: the engine's own per-row codes plus what the
    scheduler needs to know about each row. `decode` turns it into waveforms, possibly in another
    thread while the next call generates."""

    rows: tuple[Any, ...]
    frames: tuple[int, ...]
    """Frames (80 ms each) generated per row."""
    capped: tuple[bool, ...]
    """Per row: it reached the call's frame budget without stopping (a runaway, cut there)."""
    context: Any = None
    """Whatever the engine needs to decode (or to speak the call again), opaque to the caller; an
    object with a `part(indices)` method is cut down with the rows."""

    def part(self, indices: Sequence[int]) -> Takes:
        """The same takes, only the rows at `indices` (decoded alone, a row's audio is the same: the
        codec decodes each row of a batch on its own, the padding of the others cut off)."""
        part = getattr(self.context, "part", None)
        return Takes(
            rows=tuple(self.rows[i] for i in indices),
            frames=tuple(self.frames[i] for i in indices),
            capped=tuple(self.capped[i] for i in indices),
            context=part(indices) if callable(part) else self.context,
        )


class Engine(Protocol):
    """A loaded model that turns a batch of requests into one float32 mono waveform each, in two
    stages so decoding one call can overlap generating the next."""

    name: str
    kind: ModelKind
    plan: DevicePlan
    sample_rate: int
    max_frames: int
    """The checkpoint's `max_new_tokens`: a call's frame budget unless the call gives a smaller one.
    Under a budget of N a row speaks at most N - 1 frames (qwen-tts never speaks the code it samples
    at the last step)."""
    stops_by_itself: bool
    """Whether rows end at an end-of-speech code; False for a tiny model in never-ending mode, where
    every row runs to its budget and length checks mean nothing."""

    def generate(
        self,
        requests: Sequence[SynthesisRequest],
        generation: Mapping[str, Any],
        seed: int | None,
        max_frames: int | None = None,
    ) -> Takes:
        """Generate the codes of every request in one call under a budget of `max_frames` (passed as
        `max_new_tokens`; None: the model's cap), so at most `max_frames - 1` frames per row; raises
        EngineError subclasses."""
        ...

    def decode(self, takes: Takes) -> list[np.ndarray]:
        """The checked waveforms of a generated call, one per request; raises EngineError subclasses.
        Safe to call from another thread while `generate` runs."""
        ...

    def synthesize(
        self,
        requests: Sequence[SynthesisRequest],
        generation: Mapping[str, Any],
        seed: int | None,
        max_frames: int | None = None,
    ) -> list[np.ndarray]:
        """`generate` then `decode`, for callers that do not overlap them."""
        ...

    def bytes_per_row_frame(self) -> int | None:
        """Memory one row holds per token of its sequence during generation (KV cache plus retained
        hidden states), for bounding the batch size; None when unknown."""
        ...

    def voices(self) -> Voices:
        """The speakers and languages this checkpoint declares."""
        ...

    def close(self) -> None:
        """Free the model's memory."""
        ...
