"""Live audio (`ttsd.synth.live`) on a real tiny LoopEngine: a chunk of a job someone listens to
writes its audio while its row runs, decoded window by window, and that audio is the start of the
chunk's finished waveform; a job nobody listens to writes none. The worker runs over a real queue
and chunk files (the rig of `test_streaming`) and is stepped one frame at a time.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

import ttsd.synth.live as live_module
from tests.component import test_streaming as streaming_tests
from tests.component.test_streaming import SENTENCES, MakeRig, Rig
from ttsd.jobqueue.tables import Job
from ttsd.synth.engine.progressive import WINDOW_FRAMES
from ttsd.synth.engine.stepping.engine import LoopEngine
from ttsd.synth.engine.tiny_parts import SAMPLES_PER_FRAME

# The rig and the engine of the running-batch tests (pytest finds fixtures by these names).
loop_engine = streaming_tests.loop_engine
make_rig = streaming_tests.make_rig

MATCH = 1e-2
"""Max abs error of live audio against the one-shot decode (25 frames of context give ~5e-4)."""


@pytest.fixture(scope="module", autouse=True)
def _torch_threads() -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("TTS_TORCH_THREADS") or torch.get_num_threads()))


class Watch:
    """What a rig's chunk files see: every live write, and each finished chunk's waveform (a
    delivered job's chunk files are gone by the time a test looks)."""

    def __init__(self, rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
        self.live: dict[tuple[str, int], list[int]] = {}
        """(job id, chunk index) -> the length of each live write, in order."""
        self.chunks: dict[tuple[str, int], np.ndarray] = {}
        self.last_live: dict[tuple[str, int], np.ndarray] = {}
        save, save_live = rig.chunks.save, rig.chunks.save_live

        def saving(job_id: str, index: int, audio: np.ndarray) -> None:
            # The last live file as a reader would find it, just before the chunk's own file.
            found = rig.chunks.load_live(job_id, index)
            if found is not None:
                self.last_live[(job_id, index)] = found
            self.chunks[(job_id, index)] = np.array(audio)
            save(job_id, index, audio)

        def saving_live(job_id: str, index: int, audio: np.ndarray) -> None:
            save_live(job_id, index, audio)
            self.live.setdefault((job_id, index), []).append(audio.size)

        monkeypatch.setattr(rig.chunks, "save", saving)
        monkeypatch.setattr(rig.chunks, "save_live", saving_live)


def start(rig: Rig, *texts: str) -> list[Job]:
    """Queue one single-chunk job per text and take the first step: the worker holds them all, and
    their rows run."""
    jobs = [rig.add(text, f"job{i}") for i, text in enumerate(texts)]
    assert rig.step()
    assert {job_id for job_id, _ in rig.rows()} == {job.id for job in jobs}
    return jobs


def test_a_listened_chunk_writes_growing_live_audio_that_starts_its_waveform(
    make_rig: MakeRig, loop_engine: LoopEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live_module, "WRITE_EVERY_S", 0.0)  # every window is written
    rig = make_rig(loop_engine)
    watch = Watch(rig, monkeypatch)
    heard, unheard = start(rig, SENTENCES[0], SENTENCES[1])
    rig.worker.listen(heard.id)
    live = (heard.id, 0)
    sizes: list[int] = []
    while (row := rig.rows()) and heard.id in {job_id for job_id, _ in row}:
        found = rig.chunks.load_live(*live)
        sizes.append(0 if found is None else found.size)
        assert rig.step()
    rig.drain()
    assert rig.done(heard) and rig.done(unheard)

    chunk = watch.chunks[live]
    frames = chunk.size // SAMPLES_PER_FRAME
    assert frames >= 2 * WINDOW_FRAMES, "the sentence runs two windows at least"
    # One write per whole window, each the row's audio so far: it grows a window at a time. The
    # row's last frame ends it in the same step (frames - 1 are ever seen running): a window it
    # completes is not written, the chunk's own file follows at once.
    window = WINDOW_FRAMES * SAMPLES_PER_FRAME
    windows = (frames - 1) // WINDOW_FRAMES
    assert watch.live[live] == [window * n for n in range(1, windows + 1)]
    assert sorted(set(sizes)) == [0, *watch.live[live]], "a reader sees each size while the row runs"
    last = watch.last_live[live]
    assert last.dtype == np.float32 and last.size == windows * window
    error = float(np.max(np.abs(last - chunk[: last.size])))
    assert error <= MATCH, f"live audio is {error:.1e} off the chunk's waveform"
    assert unheard.id not in {job_id for job_id, _ in watch.live}, "nobody listened to it"
    assert rig.chunks.load_live(*live) is None, "a delivered job's folder goes, live files with it"
    assert rig.worker._streaming is not None and not len(rig.worker._streaming._live)


def test_a_job_nobody_listens_to_writes_no_live_audio(
    make_rig: MakeRig, loop_engine: LoopEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = make_rig(loop_engine)
    watch = Watch(rig, monkeypatch)
    (job,) = start(rig, SENTENCES[2])
    rig.worker.listen("not-held")  # a job this worker does not hold is not remembered
    assert rig.worker._streaming is not None and not rig.worker._streaming._listened
    rig.drain()
    assert rig.done(job)
    assert watch.live == {} and (job.id, 0) in watch.chunks
    assert not list(rig.chunks.root.rglob("*.live.npy"))


def test_writes_are_throttled_and_listening_ends_when_the_job_leaves(
    make_rig: MakeRig, loop_engine: LoopEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live_module, "WRITE_EVERY_S", 3600.0)
    rig = make_rig(loop_engine)
    watch = Watch(rig, monkeypatch)
    (job,) = start(rig, SENTENCES[3])
    rig.worker.listen(job.id)
    rig.drain()
    # The first audio is written at once; the next windows wait for the throttle, past the row's end.
    assert watch.live[(job.id, 0)] == [WINDOW_FRAMES * SAMPLES_PER_FRAME]
    streaming = rig.worker._streaming
    assert streaming is not None and not streaming._listened, "a delivered job is no longer listened to"


def test_live_audio_costs_a_few_decodes(
    make_rig: MakeRig, loop_engine: LoopEngine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not a limit (the machine is shared): the wall time of one row, listened to and not, reported
    with `-s`. A failing live decode is logged and leaves the row whole."""
    monkeypatch.setattr(live_module, "WRITE_EVERY_S", 0.0)
    times: dict[str, float] = {}
    for mode in ("plain", "live", "plain", "live"):
        rig = make_rig(loop_engine)
        (job,) = start(rig, SENTENCES[0])
        if mode == "live":
            rig.worker.listen(job.id)
        began = time.perf_counter()
        rig.drain()
        times[mode] = min(times.get(mode, float("inf")), time.perf_counter() - began)
        assert rig.done(job)
    with capsys.disabled():
        print(f"\none row: {times['plain']:.3f}s plain, {times['live']:.3f}s live")

    def broken(*_args: Any) -> np.ndarray:
        raise RuntimeError("codec down")

    rig = make_rig(loop_engine)
    (job,) = start(rig, SENTENCES[0])
    streaming = rig.worker._streaming
    assert streaming is not None
    monkeypatch.setattr(streaming._live._stream, "live_decoder", broken)
    rig.worker.listen(job.id)
    rig.drain()
    assert rig.done(job), "live audio that fails never fails its job"
    assert not list(Path(rig.chunks.root).rglob("*.live.npy"))


def test_a_voice_clone_chunk_decodes_behind_its_reference_codes(
    make_rig: MakeRig, tiny_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live_module, "WRITE_EVERY_S", 0.0)
    monkeypatch.setattr(streaming_tests, "MODEL", "tiny-base")
    engine = LoopEngine.load("tiny-base", "base", tiny_models / "tiny-base", streaming_tests.FULL, "paced")
    try:
        rig = make_rig(engine)
        watch = Watch(rig, monkeypatch)
        voices = rig.worker.context.voices_dir
        voices.mkdir(parents=True, exist_ok=True)
        noise = np.random.default_rng(5).standard_normal(32_000).astype(np.float32) * 0.1
        sf.write(voices / "ref.wav", noise, 16_000)
        job = rig.add(SENTENCES[0], "clone", model="tiny-base", ref_audio="ref.wav", ref_text="Hello world.")
        assert rig.step() and rig.rows() == [(job.id, 0)]
        streaming = rig.worker._streaming
        assert streaming is not None
        decoder = streaming._stream.live_decoder((job.id, 0))
        assert decoder is not None and decoder._prefix is not None, "ICL: the reference codes go in front"
        rig.worker.listen(job.id)
        rig.drain()
        assert rig.done(job)
    finally:
        engine.close()
    live, chunk = watch.last_live[(job.id, 0)], watch.chunks[(job.id, 0)]
    assert live.size >= WINDOW_FRAMES * SAMPLES_PER_FRAME
    # The one-shot decode cuts the reference's share proportionally: it may start a sample early or late.
    shifted = [(live, chunk[: live.size]), (live, chunk[1 : live.size + 1]), (live[1:], chunk[: live.size - 1])]
    error = min(float(np.max(np.abs(ours - theirs))) for ours, theirs in shifted)
    assert error <= MATCH, f"live audio is {error:.1e} off the chunk's waveform"
