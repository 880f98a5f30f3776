"""The chunk scheduler alone: which chunks share each generate call."""

from __future__ import annotations

from collections.abc import Sequence

from ttsd.synth.scheduler import STARVE_CALLS, ChunkScheduler, Piece

SHORT, LONG = 6.0, 200.0


def pieces(job: str, count: int, frames: float = SHORT, alone: bool = False) -> list[Piece]:
    return [Piece(job, index, frames, alone) for index in range(count)]


def ids(call: Sequence[Piece]) -> list[tuple[str, int]]:
    return [(piece.job_id, piece.index) for piece in call]


def finish(scheduler: ChunkScheduler, call: Sequence[Piece]) -> None:
    for piece in call:
        scheduler.finished(piece)


def test_a_call_takes_up_to_max_rows_and_a_job_is_complete_when_its_chunks_are_kept() -> None:
    scheduler = ChunkScheduler(max_rows=3)
    scheduler.admit("a", 0, "g", pieces("a", 5))
    first = scheduler.next_call()
    assert ids(first) == [("a", 0), ("a", 1), ("a", 2)]
    finish(scheduler, first)
    assert not scheduler.is_complete("a")
    second = scheduler.next_call()
    assert ids(second) == [("a", 3), ("a", 4)]
    assert not scheduler.is_complete("a"), "chunks inside a call are not kept yet"
    finish(scheduler, second)
    assert scheduler.is_complete("a") and scheduler.next_call() == []


def test_jobs_share_a_call_fairly_one_chunk_each_in_turn() -> None:
    scheduler = ChunkScheduler(max_rows=4)
    scheduler.admit("a", 0, "g", pieces("a", 10))
    scheduler.admit("b", 0, "g", pieces("b", 10))
    call = scheduler.next_call()
    assert sorted(piece.job_id for piece in call) == ["a", "a", "b", "b"]


def test_a_short_job_that_arrives_while_a_long_one_runs_goes_at_the_next_call() -> None:
    scheduler = ChunkScheduler(max_rows=8)
    scheduler.admit("long", 0, "g", pieces("long", 40, LONG))
    finish(scheduler, scheduler.next_call())
    scheduler.admit("hello", 0, "g", pieces("hello", 1))
    call = scheduler.next_call()
    # The short job anchors the call, and the long chunks, which would make it long, wait.
    assert ids(call) == [("hello", 0)]
    finish(scheduler, call)
    assert scheduler.is_complete("hello")
    assert {piece.job_id for piece in scheduler.next_call()} == {"long"}


def test_higher_priority_anchors_first_even_when_longer() -> None:
    scheduler = ChunkScheduler(max_rows=4)
    scheduler.admit("short", 0, "g", pieces("short", 1))
    scheduler.admit("urgent", 5, "g", pieces("urgent", 2, LONG))
    call = scheduler.next_call()
    assert ids(call)[:2] == [("urgent", 0), ("urgent", 1)]
    # A shorter chunk rides along: it does not make the call any longer.
    assert ("short", 0) in ids(call)


def test_similar_lengths_share_a_call() -> None:
    scheduler = ChunkScheduler(max_rows=16)
    for n in range(4):
        scheduler.admit(f"long{n}", 0, "g", pieces(f"long{n}", 1, LONG))
        scheduler.admit(f"short{n}", 0, "g", pieces(f"short{n}", 1))
    first = scheduler.next_call()
    assert sorted(piece.job_id for piece in first) == [f"short{n}" for n in range(4)]
    second = scheduler.next_call()
    assert sorted(piece.job_id for piece in second) == [f"long{n}" for n in range(4)]


def test_a_long_job_passed_over_too_often_anchors_the_next_call() -> None:
    scheduler = ChunkScheduler(max_rows=4)
    scheduler.admit("long", 0, "g", pieces("long", 5, LONG))
    for n in range(STARVE_CALLS):
        scheduler.admit(f"short{n}", 0, "g", pieces(f"short{n}", 1))
        call = scheduler.next_call()
        assert ids(call) == [(f"short{n}", 0)]
        finish(scheduler, call)
    scheduler.admit("another", 0, "g", pieces("another", 1))
    call = scheduler.next_call()
    assert call[0].job_id == "long", "a stream of short jobs must not starve a long one"
    assert ("another", 0) in ids(call)


def test_only_one_group_shares_a_call() -> None:
    scheduler = ChunkScheduler(max_rows=4)
    scheduler.admit("plain", 0, "sampling-a", pieces("plain", 2))
    scheduler.admit("warm", 0, "sampling-b", pieces("warm", 2))
    first = scheduler.next_call()
    assert len({piece.job_id for piece in first}) == 1
    second = scheduler.next_call()
    assert {piece.job_id for piece in second} != {piece.job_id for piece in first}


def test_a_seeded_chunk_is_spoken_alone() -> None:
    scheduler = ChunkScheduler(max_rows=4)
    scheduler.admit("seeded", 0, "g", pieces("seeded", 2, alone=True))
    scheduler.admit("plain", 0, "g", pieces("plain", 3))
    calls = [ids(scheduler.next_call()) for _ in range(3)]
    assert [("seeded", 0)] in calls and [("seeded", 1)] in calls
    assert [("plain", 0), ("plain", 1), ("plain", 2)] in calls


def test_chunks_put_back_after_a_failed_call_are_tried_alone() -> None:
    scheduler = ChunkScheduler(max_rows=4)
    scheduler.admit("a", 0, "g", pieces("a", 1))
    scheduler.admit("b", 0, "g", pieces("b", 1))
    call = scheduler.next_call()
    assert len(call) == 2
    scheduler.put_back(call, alone=True)
    assert len(scheduler.next_call()) == 1
    assert len(scheduler.next_call()) == 1
    assert scheduler.next_call() == []


def test_a_dropped_job_is_never_scheduled_again() -> None:
    scheduler = ChunkScheduler(max_rows=2)
    scheduler.admit("gone", 0, "g", pieces("gone", 4))
    scheduler.admit("kept", 0, "g", pieces("kept", 1))
    scheduler.drop("gone")
    assert not scheduler.holds("gone") and scheduler.holds("kept")
    assert ids(scheduler.next_call()) == [("kept", 0)]
    scheduler.finished(Piece("gone", 0, SHORT))  # a late report of a dropped job is ignored
    assert scheduler.next_call() == []


def test_a_job_with_nothing_left_to_speak_is_complete_at_once() -> None:
    scheduler = ChunkScheduler(max_rows=2)
    scheduler.admit("cached", 0, "g", [])
    assert scheduler.is_complete("cached") and scheduler.holds("cached")
