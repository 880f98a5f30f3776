"""A job's audio as a stream: each chunk is sent as soon as it is finished, and while a chunk is still
being generated, what it has said so far (the worker decodes a listened-to row window by window).

The pieces are cut exactly as the delivered file joins them (`chunk_piece`), so a stream and the
file hold the same audio. Audio heard live is a chunk's raw start: when the chunk is finished, the
stream goes on from the matching point of its trimmed and faded piece (the file may have trimmed up
to MAX_EDGE_SILENCE_S of leading silence that the stream already sent)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from ttsd.audio import change_speed, chunk_piece, joined_alone, trim_bounds
from ttsd.encoding import STREAM_FORMATS, StreamEncoder, decode_file
from ttsd.http.answers import audio_path, ended_problem, file_blocks, open_audio
from ttsd.http.door import FrontDoor, blocking
from ttsd.jobqueue.states import JobState
from ttsd.jobqueue.tables import ChunkRow, Job
from ttsd.jobspec import JobSpec
from ttsd.synth.engine.progressive import SAMPLE_RATE as CODEC_RATE
from ttsd.synth.script_plan import lead_ms

LIVE_POLL_S = 0.1
"""How often a stream looks for more live audio of the chunk being generated."""
LISTEN_EVERY_S = 1.0
"""How often a stream reminds the model's worker that someone listens (a restarted worker forgets)."""


TAIL_BLOCK_S = 10.0
"""The rest of a delivered file goes out in blocks of this much audio, each encoded off the event loop."""


@dataclass
class _Progress:
    next_index: int = 0
    sent_samples: int = 0  # of the joined waveform, as the delivered file counts them
    live_sent: int = 0  # raw samples of chunk `next_index` already sent live
    rows: list[ChunkRow] | None = None
    attempts: int = 0  # a job taken up again may have planned its chunks again
    listened_at: float = 0.0


def live_audio_possible(spec: JobSpec) -> bool:
    """Live audio is the codec's raw output: only a job at its rate and normal speed can use it as is."""
    return spec.sample_rate == CODEC_RATE and spec.speed == 1.0


def chunks_streamable(spec: JobSpec) -> bool:
    """Whether a job's chunks can be sent as they come. A job at another speed is stretched as one
    waveform when delivered (tempo change is not additive over pieces), an m4b's index and chapters
    exist only at its end, and a script that opens with a pause has silence that is no chunk's: the
    stream of any of them starts when the file exists and is that file."""
    return spec.speed == 1.0 and spec.format in STREAM_FORMATS and lead_ms(spec) == 0


async def first_piece(stream: AsyncIterator[bytes]) -> bytes:
    """Wait for a stream's first bytes, so a job that fails before any audio exists is still an error
    status rather than a 200 with an empty body."""
    async for data in stream:
        if data:
            return data
    return b""


async def audio_stream(door: FrontDoor, job: Job) -> AsyncIterator[bytes]:
    """The job's audio, encoded in its own format, as it is made.

    A job already done is its delivered file, byte for byte. Chunk files are the worker's and go
    when the job is delivered: whatever was not read by then comes from the delivered file."""
    if job.state == JobState.DONE:  # asked again: no need to follow anything
        async for data in _whole_file(door, job):
            yield data
        return
    spec = JobSpec.model_validate_json(job.spec_json)
    if not chunks_streamable(spec):
        async for data in _file_when_done(door, job):
            yield data
        return
    live = live_audio_possible(spec)
    encoder = StreamEncoder(spec.format, spec.sample_rate)
    progress = _Progress(attempts=job.attempts)
    async with door.watch.subscription(job.id) as changes:
        current = await changes.get()
        while True:
            if current.state in (JobState.FAILED, JobState.CANCELLED):
                raise ended_problem(current)
            nothing_sent = progress.next_index == 0 and progress.rows is None and not progress.live_sent
            if current.state == JobState.DONE and nothing_sent:
                async for data in _whole_file(door, current):
                    yield data
                return
            for piece in await blocking(_ready_pieces, door, current, spec, progress, live):
                yield await blocking(encoder.feed, piece)
            if current.state == JobState.DONE:
                if progress.rows is None or progress.next_index < len(progress.rows):
                    rest = await blocking(_rest_of_file, door, current, spec, progress)
                    step = int(TAIL_BLOCK_S * spec.sample_rate)
                    for start in range(0, len(rest), step):
                        yield await blocking(encoder.feed, rest[start : start + step])
                yield await blocking(encoder.finish)
                return
            if live and current.state == JobState.RUNNING:
                _remind_worker(door, current, progress)
            # No change in the queue within the poll: look for more live audio all the same.
            with contextlib.suppress(TimeoutError):
                current = await asyncio.wait_for(changes.get(), LIVE_POLL_S if live else None)


async def _file_when_done(door: FrontDoor, job: Job) -> AsyncIterator[bytes]:
    """The job's delivered file, once there is one."""
    async with door.watch.subscription(job.id) as changes:
        current = await changes.get()
        while current.state != JobState.DONE:
            if current.state in (JobState.FAILED, JobState.CANCELLED):
                raise ended_problem(current)
            current = await changes.get()
    async for data in _whole_file(door, current):
        yield data


async def _whole_file(door: FrontDoor, job: Job) -> AsyncIterator[bytes]:
    handle, _size = await blocking(open_audio, door, job)
    async for data in file_blocks(handle):
        yield data


def _remind_worker(door: FrontDoor, job: Job, progress: _Progress) -> None:
    now = time.monotonic()
    if now - progress.listened_at >= LISTEN_EVERY_S:
        progress.listened_at = now
        door.listen(job.model, job.id)


def _ready_pieces(door: FrontDoor, job: Job, spec: JobSpec, progress: _Progress, live: bool) -> list[np.ndarray]:
    """Pieces of the chunks finished since the last look, in order, then the live audio of the next
    one if it is being generated; stops at the first chunk that is not finished."""
    if job.attempts != progress.attempts:
        progress.attempts, progress.rows = job.attempts, None  # chunks are kept across attempts; re-read
    if progress.rows is None and job.chunks_total:
        rows = door.store.chunks(job.id)
        progress.rows = rows if rows else None
    pieces: list[np.ndarray] = []
    rows = progress.rows or []
    while progress.next_index < len(rows):
        row = rows[progress.next_index]
        # A chunk file is written whole (atomically) before its chunk is recorded done: there is one
        # exactly when the chunk is finished, in whatever order the batch finishes them.
        audio = door.chunk_files.load(job.id, row.index)
        if audio is None:
            if live:
                pieces.extend(_live_piece(door, job, row, progress))
            break
        alone = joined_alone([r.pause_after_ms for r in rows])
        pieces.append(_finished_piece(audio, row, spec, progress, alone=alone))
    return pieces


def _finished_piece(audio: np.ndarray, row: ChunkRow, spec: JobSpec, progress: _Progress, alone: bool) -> np.ndarray:
    """A finished chunk's piece, less what was already heard of it live."""
    piece = change_speed(chunk_piece(audio, row.pause_after_ms, spec.sample_rate, alone), spec.sample_rate, spec.speed)
    heard = progress.live_sent
    if heard and not alone:
        heard -= trim_bounds(audio, spec.sample_rate)[0]  # the piece starts where the trim cut
    progress.next_index += 1
    progress.sent_samples += len(piece)
    progress.live_sent = 0
    return piece[max(0, heard) :]


def _live_piece(door: FrontDoor, job: Job, row: ChunkRow, progress: _Progress) -> list[np.ndarray]:
    heard = door.chunk_files.load_live(job.id, row.index)
    if heard is None or len(heard) <= progress.live_sent:
        return []
    new = heard[progress.live_sent :]
    progress.live_sent = len(heard)
    return [new]


def _rest_of_file(door: FrontDoor, job: Job, spec: JobSpec, progress: _Progress) -> np.ndarray:
    whole = decode_file(audio_path(door, job), spec.format, spec.sample_rate)
    return whole[progress.sent_samples + progress.live_sent :]
