"""From a script to chunks and back to times: the chunk plan of segments and pause markup
(ttsd/synth/script_plan.py), where each chunk lands in the joined waveform (ttsd.audio.join_timed),
and the segment, chapter and cue times read off that (ttsd/delivery/extras.py, script_status.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.unit.test_job_scripts import accepted
from ttsd.audio import join_chunks, join_timed
from ttsd.delivery.extras import Timeline, chapter_spans, segment_spans
from ttsd.delivery.outbox import Outbox
from ttsd.delivery.script_status import outputs_of, script_fields
from ttsd.jobqueue.records import Outputs
from ttsd.jobqueue.tables import ChunkRow, Job
from ttsd.markup import MAX_PAUSE_MS
from ttsd.synth.chunking import DEFAULT_PAUSE_MS, Boundary
from ttsd.synth.script_plan import plan_script

RATE = 1_000  # one sample per millisecond keeps the arithmetic readable


def test_pause_markup_and_segment_pauses_become_the_silence_after_chunks() -> None:
    spec = accepted(
        {
            "segments": [
                {"text": "[pause 200ms] Hello there.", "speaker": "Vivian", "pause_ms": 500},
                {"text": "Hi! [pause 1.5s] Who are you? [pause 300ms]"},
                {"text": "A narrator."},
                {"text": "The end.", "pause_ms": 0},
            ],
            "model": "qwen3-tts-0.6b",
        }
    )
    plan = plan_script(spec)
    assert plan.lead_ms == 200
    assert [(c.text, c.pause_after_ms, c.segment) for c in plan.chunks] == [
        ("Hello there.", 500, 0),
        ("Hi!", 1_500, 1),
        ("Who are you?", 300, 1),  # its closing markup stands in for the paragraph pause
        ("A narrator.", DEFAULT_PAUSE_MS[Boundary.PARAGRAPH], 2),
        ("The end.", 0, 3),
    ]


def test_subtitled_jobs_get_one_chunk_per_sentence() -> None:
    text = "One sentence here. Another one follows. And a third."
    assert len(plan_script(accepted({"text": text})).chunks) == 1
    subtitled = plan_script(accepted({"text": text, "subtitles": "srt"}))
    assert [c.text for c in subtitled.chunks] == ["One sentence here.", "Another one follows.", "And a third."]


def test_a_plain_job_plans_as_before() -> None:
    plan = plan_script(accepted({"text": "Just this."}))
    assert plan.lead_ms == 0 and [(c.text, c.pause_after_ms, c.segment) for c in plan.chunks] == [("Just this.", 0, 0)]


def loud(samples: int) -> np.ndarray:
    return np.full(samples, 0.5, dtype=np.float32)


def test_join_timed_says_where_each_chunk_landed() -> None:
    chunks = [loud(300), loud(200), loud(100)]
    joined, spans = join_timed(chunks, [50, 0, 20], RATE, lead_ms=100)
    assert spans == [(100, 400), (450, 650), (650, 750)]
    assert len(joined) == 770
    assert not joined[:100].any() and not joined[400:450].any() and not joined[750:].any()
    assert np.array_equal(join_chunks(chunks, [50, 0, 20], RATE), joined[100:])
    alone, (span,) = join_timed([loud(300)], [0], RATE)
    assert span == (0, 300) and len(alone) == 300


def test_segment_and_chapter_spans_come_from_chunk_spans() -> None:
    spec = accepted("# One\n\nFirst part.\n\n# Two\n\nSecond part.\n", "book.md")
    assert spec.chapters is not None and [c.segment for c in spec.chapters] == [0, 2]
    timeline = Timeline(
        ((100, 300), (400, 800), (900, 1_000), (1_100, 1_500)), ("a", "b", "c", "d"), (0, 1, 2, 3), 1_600
    )
    assert segment_spans(timeline, 4, RATE) == ((0.1, 0.3), (0.4, 0.8), (0.9, 1.0), (1.1, 1.5))
    assert chapter_spans(spec, timeline, RATE) == ((0.0, 0.9), (0.9, 1.6))
    doubled = timeline.scaled(3_200)
    assert doubled.spans[1] == (800, 1_600) and doubled.total == 3_200


def test_status_fields_of_a_script_and_their_inverse() -> None:
    spec = accepted("# One\n\nFirst part.\n\n# Two\n\nSecond part.\n", "book.md")
    outputs = Outputs(
        segments=((0.1, 0.3), (0.4, 0.8), (0.9, 1.0), (1.1, 1.5)),
        chapters=((0.0, 0.9), (0.9, 1.6)),
        chapter_files=("book.ch01.m4b", "book.ch02.m4b"),
        chapter_chunks=(2, 2),
    )
    job = Job(id="j", content_key="k", name="book", model=spec.model, batch_key="b", spec_json=spec.model_dump_json())
    job.outputs_json = outputs.to_json()
    fields = script_fields(job, spec, None)
    assert [(s["start_s"], s["end_s"]) for s in fields["segments"]] == list(outputs.segments)
    assert [(c["title"], c["start_s"], c["file"]) for c in fields["chapters"]] == [
        ("One", 0.0, "book.ch01.m4b"),
        ("Two", 0.9, "book.ch02.m4b"),
    ]
    assert outputs_of(fields) == outputs
    assert Outputs.from_json(outputs.to_json()) == outputs


def test_a_running_book_counts_progress_per_chapter() -> None:
    spec = accepted("# One\n\nFirst part.\n\n# Two\n\nSecond part.\n", "book.md")
    job = Job(id="j", content_key="k", name="book", model=spec.model, batch_key="b", spec_json=spec.model_dump_json())
    chunks = [
        ChunkRow(job_id="j", index=i, text="t", pause_after_ms=0, segment=segment, done=done)
        for i, (segment, done) in enumerate([(0, True), (1, True), (2, False), (3, False)])
    ]
    chapters = script_fields(job, spec, chunks)["chapters"]
    assert [(c["chunks_done"], c["chunks_total"], c["start_s"]) for c in chapters] == [(2, 2, None), (0, 2, None)]


@pytest.mark.parametrize("document", [{"segments": [{"start_s": "x"}]}, {"chapters": [{}]}, {}])
def test_outputs_of_a_document_that_does_not_hold_them_whole_is_none(document: dict[str, object]) -> None:
    assert outputs_of(document) is None


def test_a_single_chunk_keeps_the_silence_its_markup_asks_for() -> None:
    joined, spans = join_timed([loud(300)], [2_000], RATE)
    assert len(joined) == 300 + 2_000 and spans == [(0, 300)] and not joined[300:].any()
    plan = plan_script(accepted({"text": "Hello there. [pause 2s]"}))
    assert [(c.text, c.pause_after_ms) for c in plan.chunks] == [("Hello there.", 2_000)]


def test_silences_that_meet_across_segments_are_capped_too() -> None:
    spec = accepted({"segments": [{"text": "One.", "pause_ms": 10_000}, {"text": "[pause 10s] Two."}]})
    assert [c.pause_after_ms for c in plan_script(spec).chunks] == [MAX_PAUSE_MS, 0]


def test_a_later_job_of_the_name_removes_the_extras_it_does_not_deliver(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    for name in ("book.srt", "book.vtt", "book.ch01.m4b", "book.ch02.m4b", "book.m4b", "bookish.srt"):
        (tmp_path / name).write_bytes(b"x")
    # Another job's output that only looks like a chapter file: it has a status file of its own.
    (tmp_path / "book.ch03.wav").write_bytes(b"x")
    (tmp_path / "book.ch03.status.json").write_text("{}")
    stale = outbox.stale_extras("book", {"book.vtt", "book.ch01.m4b", "book.m4b"})
    assert sorted(path.name for path in stale) == ["book.ch02.m4b", "book.srt"]
