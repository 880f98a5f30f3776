"""A job's script cut into the chunks a worker speaks: each segment's pause markup splits it into
runs, each run is chunked, and every chunk remembers its segment (whose voice speaks it) and the
silence that follows it. The plan is a pure function of the spec, so a resumed job plans the same
chunks, and the finished job's timings are read off the same plan."""

from __future__ import annotations

from dataclasses import dataclass

from ttsd.errors import PermanentEngineError
from ttsd.jobspec import JobSpec, Segment
from ttsd.markup import MAX_PAUSE_MS, MarkupError, parse_pauses
from ttsd.synth.chunking import DEFAULT_PAUSE_MS, Boundary, split_text


@dataclass(frozen=True)
class PlannedChunk:
    """One chunk of a script: its text, the silence after it, and the segment it belongs to."""

    text: str
    pause_after_ms: int
    segment: int


@dataclass(frozen=True)
class ScriptPlan:
    """Every chunk of a job in order, and the silence before the first one (`[pause]` markup that
    opens the text)."""

    lead_ms: int
    chunks: tuple[PlannedChunk, ...]


class _Planner:
    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        self.lead_ms = 0
        self.texts: list[str] = []
        self.pauses: list[int] = []
        self.segments: list[int] = []

    def add_silence(self, ms: int) -> None:
        if self.pauses:
            self.pauses[-1] += ms
        else:
            self.lead_ms += ms

    def add_segment(self, index: int, segment: Segment, last: bool) -> None:
        marked = parse_pauses(segment.text)
        self.add_silence(marked.lead_ms)
        trailing = 0
        for text, pause_after in marked.runs:
            first = self.spec.chunk_first_chars if not self.texts else None
            cut = split_text(
                text, self.spec.chunk_max_chars, self.spec.gap_ms, first, sentences=self.spec.subtitles is not None
            )
            for chunk in cut:
                self.texts.append(chunk.text)
                self.pauses.append(chunk.pause_after_ms)
                self.segments.append(index)
            self.add_silence(pause_after)
            trailing = pause_after
        if segment.pause_ms is not None:
            # The segment's own pause replaces whatever its text's closing markup asked for.
            self.add_silence(segment.pause_ms - trailing)
        elif not last and not trailing:
            paragraph = self.spec.gap_ms if self.spec.gap_ms is not None else DEFAULT_PAUSE_MS[Boundary.PARAGRAPH]
            self.add_silence(paragraph)

    def plan(self) -> ScriptPlan:
        # Silences meet across segments (a segment's pause, the next one's opening markup): the
        # cap on one pause holds for what they add up to as well.
        pauses = [min(pause, MAX_PAUSE_MS) for pause in self.pauses]
        chunks = zip(self.texts, pauses, self.segments, strict=True)
        return ScriptPlan(min(self.lead_ms, MAX_PAUSE_MS), tuple(PlannedChunk(t, p, s) for t, p, s in chunks))


def plan_script(spec: JobSpec) -> ScriptPlan:
    """The chunks of `spec` (see the module docstring). Markup is checked when a job is accepted;
    a job accepted before markup existed may hold a marker that does not parse, and fails saying
    so."""
    planner = _Planner(spec)
    script = spec.script()
    try:
        for index, segment in enumerate(script):
            planner.add_segment(index, segment, last=index == len(script) - 1)
    except MarkupError as exc:
        raise PermanentEngineError(f"the text's pause markup is invalid: {exc.message}", code="invalid_markup") from exc
    return planner.plan()


def lead_ms(spec: JobSpec) -> int:
    """The silence before a job's first words (its opening pause markup), without planning the whole
    script (0 for markup that does not parse: planning fails the job then)."""
    try:
        return min(parse_pauses(spec.script()[0].text).lead_ms, MAX_PAUSE_MS)
    except MarkupError:
        return 0
