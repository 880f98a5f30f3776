"""Live audio: the audio of a chunk while its row is still generating, for jobs someone listens to.

Someone streaming a job (the HTTP front door) asks its worker to `listen` to it, about once a second
(`Supervisor.listen` -> the `listen` wire event -> `Worker.listen`). After each frame step of the
running batch, every row of a listened job feeds its codes so far to a `ProgressiveDecoder` of its
own (`ttsd.synth.engine.progressive`: a window of 12 frames at a time, behind 25 frames of context),
and the row's audio so far goes to `<chunks>/<job_id>/<index>.live.npy` (`ChunkFiles.save_live`):
raw, at the codec's 24 kHz, untrimmed, as long as the frames decoded so far. A progressive decode
costs about three one-shot decodes of the row, so only listened rows get one; the row is still
decoded once when it ends, and that waveform is the chunk's.

Only ttsd's own loop (`TTS_ENGINE=ttsd`) has a running batch to watch: the official path speaks in
whole calls and has no live audio. Live audio is a convenience: a failure here is logged once and
ends live audio for that row, never the row itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from ttsd.synth.engine.progressive import ProgressiveDecoder
from ttsd.synth.engine.stepping.engine import Stream

log = logging.getLogger(__name__)

WRITE_EVERY_S: Final = 0.25
"""A row's live file is rewritten at most this often (its first audio is written at once)."""

SaveLive = Callable[[str, int, np.ndarray], None]
"""(job id, chunk index, audio so far) -> None: `ChunkFiles.save_live`."""


@dataclass(frozen=True)
class LiveRow:
    """A running row as live audio sees it."""

    tag: Hashable
    job_id: str
    index: int


@dataclass
class _Decoding:
    """One listened row's decoder and the audio it gave so far."""

    decoder: ProgressiveDecoder
    parts: list[np.ndarray] = field(default_factory=list)
    written: float | None = None
    """When the live file was last written (monotonic), None before the first write."""
    unwritten: bool = False
    """Audio came since the last write."""


class LiveRows:
    """The progressive decoders of the listened rows of one running batch (its worker's main
    thread only)."""

    def __init__(self, stream: Stream, save: SaveLive, clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream
        self._save = save
        self._clock = clock
        self._rows: dict[Hashable, _Decoding] = {}
        self._failed: set[Hashable] = set()
        """Rows whose live audio failed: they run on without it."""

    def __len__(self) -> int:
        """Rows with a decoder now."""
        return len(self._rows)

    def update(self, running: Sequence[LiveRow], listened: Collection[str]) -> None:
        """After a step: decode what is new in each running row of a `listened` job and write its
        live file (throttled); forget the decoders of rows that ended, were dropped, or whose job
        left the worker."""
        if not self._rows and not self._failed and not listened:
            return  # the usual case: nobody listens
        wanted = {row.tag for row in running if row.job_id in listened}
        for tag in [tag for tag in self._rows if tag not in wanted]:
            del self._rows[tag]
        self._failed &= wanted
        for row in running:
            if row.tag not in wanted or row.tag in self._failed:
                continue
            try:
                self._advance(row)
            except Exception:
                log.exception("live audio of job %s chunk %d failed; that chunk goes on without it",
                              row.job_id, row.index, extra={"job_id": row.job_id})  # fmt: skip
                self._rows.pop(row.tag, None)
                self._failed.add(row.tag)

    def _advance(self, row: LiveRow) -> None:
        decoding = self._rows.get(row.tag)
        if decoding is None:
            decoder = self._stream.live_decoder(row.tag)
            if decoder is None:
                return  # not in the stream (any more): nothing to decode
            decoding = self._rows[row.tag] = _Decoding(decoder)
        codes = self._stream.partial(row.tag)
        if codes is None:
            return
        audio = decoding.decoder.feed(codes)
        if audio.size:
            decoding.parts.append(audio)
            decoding.unwritten = True
        now = self._clock()
        if not decoding.unwritten or (decoding.written is not None and now - decoding.written < WRITE_EVERY_S):
            return
        # Joined once per write, and kept joined: the next write appends to one array, not to many.
        whole = np.concatenate(decoding.parts) if len(decoding.parts) > 1 else decoding.parts[0]
        decoding.parts = [whole]
        self._save(row.job_id, row.index, whole)
        decoding.written, decoding.unwritten = now, False
