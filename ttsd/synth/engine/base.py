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


@dataclass(frozen=True)
class Voices:
    """What a model can speak: speakers (CustomVoice only) and languages."""

    speakers: tuple[str, ...]
    languages: tuple[str, ...]


class Engine(Protocol):
    """A loaded model that turns a batch of requests into one float32 mono waveform each."""

    name: str
    kind: ModelKind
    plan: DevicePlan
    sample_rate: int

    def synthesize(
        self, requests: Sequence[SynthesisRequest], generation: Mapping[str, Any], seed: int | None
    ) -> list[np.ndarray]:
        """Speak every request in one call (a batch); raises EngineError subclasses."""
        ...

    def voices(self) -> Voices:
        """The speakers and languages this checkpoint declares."""
        ...

    def close(self) -> None:
        """Free the model's memory."""
        ...
