"""`LoopEngine`: a Qwen3-TTS checkpoint spoken by ttsd's own generation loop (`TTS_ENGINE=ttsd`).

It is a `QwenEngine` (same loading, voices, validation, clone prompts, decoding, float32 retry) whose
codes come from `RunningBatch` instead of the official HF `generate`. Two ways in:

- `generate`, the Engine protocol's call: all rows start together and each leaves at its own end;
- `stream()`, a `Stream` the worker keeps open: rows join at any step boundary and leave as they end,
  so a short job starts within one frame step instead of after a whole call.

If the loop fails on a device for a reason that is not the request's or the memory's, the model falls
back to the official path for good (logged with the reason); the stream then refuses new rows with
`LoopUnavailable` and the worker goes back to calls.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ttsd.errors import EngineError, TransientEngineError
from ttsd.synth.engine.base import SynthesisRequest, Takes
from ttsd.synth.engine.progressive import ProgressiveDecoder, speech_tokenizer_decoder
from ttsd.synth.engine.qwen import QwenEngine, SpokenCall, classify_error
from ttsd.synth.engine.qwen_calls import generate_codes
from ttsd.synth.engine.stepping.batch import NEVER, Ended, RunningBatch
from ttsd.synth.engine.stepping.prompts import CallSettings, RowPrompt, split_rows
from ttsd.synth.engine.talker_hooks import PromptCaptured
from ttsd.synth.engine.tiny_eos import paced_frames

log = logging.getLogger(__name__)


class LoopUnavailable(TransientEngineError):
    """ttsd's loop failed on this model's device; its rows must be spoken by the official path."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"ttsd's generation loop is off for this model: {reason}", code="loop_unavailable")


@dataclass(frozen=True)
class Spoken:
    """A row that ended: its caller's tag and its one-row takes, ready to decode."""

    tag: Hashable
    takes: Takes
    seconds: float
    """Its share of the steps it took part in."""
    wall_s: float
    """From its admission to its end."""


class LoopEngine(QwenEngine):
    """A QwenEngine whose codes come from ttsd's own step loop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loop_failed: str | None = None

    def generate(
        self,
        requests: Sequence[SynthesisRequest],
        generation: Mapping[str, Any],
        seed: int | None,
        max_frames: int | None = None,
    ) -> Takes:
        """The codes of every request, each row leaving at its own end (see `QwenEngine.generate` for
        the budget); the official call when the loop is off."""
        if self.loop_failed is not None:
            return super().generate(requests, generation, seed, max_frames)
        stream = self.stream()
        budget = self._budget(generation, max_frames)
        # A call's seed gives each row a stream of its own, so equal texts in one call still differ.
        seeded = [
            r if r.seed is not None or seed is None else replace(r, seed=seed + i) for i, r in enumerate(requests)
        ]
        try:
            tags = list(range(len(requests)))
            budgets = [budget] * len(requests)
            done = {s.tag: s for s in stream.admit(tags, seeded, generation, budgets, pace_seed=seed)}
            while len(stream):
                done.update((s.tag, s) for s in stream.step())
        except LoopUnavailable:
            return super().generate(requests, generation, seed, max_frames)
        ordered = [done[i].takes for i in range(len(requests))]
        return Takes(
            rows=tuple(t.rows[0] for t in ordered),
            frames=tuple(t.frames[0] for t in ordered),
            capped=tuple(t.capped[0] for t in ordered),
            context=SpokenCall(
                tuple(requests),
                dict(generation),
                seed,
                budget,
                tuple(spoken_ref(t) for t in ordered),
            ),
        )

    def stream(self) -> Stream:
        """A new running batch on this model."""
        return Stream(self)

    # -- what a Stream asks of its engine ---------------------------------------------------------

    def prompts(
        self, requests: Sequence[SynthesisRequest], generation: Mapping[str, Any], budget: int
    ) -> tuple[list[RowPrompt], CallSettings, list[Any]]:
        """The rows' prompts as qwen-tts builds them, the call's settings, and each row's reference
        codes (voice clone in context mode, else None)."""
        self._validate(requests)
        batch = self._batch(requests)
        kwargs = {**generation, "max_new_tokens": budget}
        try:
            with self._hooks.capturing():
                generate_codes(self._model, self.kind, batch, kwargs)
        except PromptCaptured as captured:
            rows, settings = split_rows(captured.kwargs)
        else:
            raise TransientEngineError("qwen-tts never reached the talker's generate", code="engine_error")
        refs = [getattr(p, "ref_code", None) for p in batch.clone_prompts] or [None] * len(rows)
        return rows, settings, refs

    def ends(self, requests: Sequence[SynthesisRequest], pace_seed: int | None) -> list[int | None]:
        """Per row, when a tiny model ends it (see `ttsd.synth.engine.tiny_eos`; paced by
        `pace_seed`, else by the row's own seed); None for real models."""
        if self._ending == "model":
            return [None] * len(requests)
        if self._ending == "never":
            return [NEVER] * len(requests)
        return [paced_frames([r.text], r.seed if pace_seed is None else pace_seed)[0] for r in requests]

    def fail_loop(self, exc: Exception) -> EngineError:
        """What a failure inside the loop means: the request's or the memory's error as it is;
        anything else turns the loop off for this model."""
        error = classify_error(exc)
        if error.code in ("out_of_memory", "invalid_request") or isinstance(exc, EngineError):
            return error
        reason = f"{type(exc).__name__}: {str(exc)[:300]}"
        self.loop_failed = reason
        log.warning(
            "model %s: ttsd's generation loop failed on %s (%s); using the official qwen-tts path from now on",
            self.name,
            self.plan.device,
            reason,
        )
        return LoopUnavailable(reason)


class Stream:
    """Rows generating together on one LoopEngine; each method holds the engine's lock."""

    def __init__(self, engine: LoopEngine) -> None:
        self._engine = engine
        self._batch: RunningBatch | None = None
        self._paused: RunningBatch | None = None
        self._requests: dict[Hashable, tuple[SynthesisRequest, Mapping[str, Any], int, Any]] = {}

    def __len__(self) -> int:
        """Rows in the stream, stepping or paused."""
        return sum(len(batch) for batch in self._batches())

    @property
    def paused(self) -> int:
        """Rows paused (see `pause`)."""
        return 0 if self._paused is None else len(self._paused)

    def _batches(self) -> list[RunningBatch]:
        return [batch for batch in (self._batch, self._paused) if batch is not None]

    def frames(self) -> dict[Hashable, int]:
        """Frames generated so far per row."""
        return {tag: n for batch in self._batches() for tag, n in batch.frames().items()}

    def partial(self, tag: Hashable) -> Any:
        """A row's codes so far (F x 16 tensor), or None; see `RunningBatch.codes_of`."""
        found = (batch.codes_of(tag) for batch in self._batches())
        return next((codes for codes in found if codes is not None), None)

    def live_decoder(self, tag: Hashable) -> ProgressiveDecoder | None:
        """A progressive decoder for a running row's audio while it grows (None: no such row): its
        voice clone's reference codes, if any, stand in front as context, as in the one-shot decode;
        each window decodes under the engine's decode lock, beside the rows decoded as they end."""
        entry = self._requests.get(tag)
        if entry is None:
            return None
        engine = self._engine
        tokenizer = engine._model.model.speech_tokenizer
        decode_window = speech_tokenizer_decoder(tokenizer)

        def decode(codes: Any) -> np.ndarray:
            with engine._decode_lock:
                return decode_window(codes)

        return ProgressiveDecoder(decode, int(tokenizer.get_decode_upsample_rate()), prefix=entry[3])

    def pause(self, running: Collection[Hashable]) -> None:
        """Step only the rows `running` until `resume` (or until none of them is left): the others
        keep their state aside, so a short urgent row steps at the speed of a small batch."""
        if self._batch is None:
            return
        with self._engine._lock:
            try:
                held = self._batch.split_off([tag for tag in self.tags() if tag not in running])
                if self._paused is None:
                    self._paused = held
                else:
                    self._paused.absorb(held)
            except Exception as exc:
                raise self._engine.fail_loop(exc) from exc

    def resume(self) -> None:
        """Every paused row steps again."""
        if self._paused is None:
            return
        with self._engine._lock:
            try:
                if self._batch is None:
                    self._batch = self._paused
                else:
                    self._batch.absorb(self._paused)
                self._paused = None
            except Exception as exc:
                raise self._engine.fail_loop(exc) from exc

    def admit(
        self,
        tags: Sequence[Hashable],
        requests: Sequence[SynthesisRequest],
        generation: Mapping[str, Any],
        budgets: Sequence[int],
        pace_seed: int | None = None,
    ) -> list[Spoken]:
        """Start rows (they share `generation`); each request's `seed` seeds its row (and paces a tiny
        model's rows, unless `pace_seed` paces them all as one official call would). Returns rows that
        ended at once."""
        engine = self._engine
        if engine.loop_failed is not None:
            raise LoopUnavailable(engine.loop_failed)
        # A job's own `max_new_tokens` lowers its rows' budgets, as in a call.
        budgets = [engine._budget(generation, budget) for budget in budgets]
        with engine._lock:
            try:
                prompts, settings, refs = engine.prompts(requests, generation, max(budgets))
                prompts = [replace(p, budget=b) for p, b in zip(prompts, budgets, strict=True)]
                if self._batch is None:
                    self._batch = RunningBatch(engine._model.model.talker, settings)
                for tag, request, budget, ref in zip(tags, requests, budgets, refs, strict=True):
                    self._requests[tag] = (request, generation, budget, ref)
                ended = self._batch.admit(tags, prompts, [r.seed for r in requests], engine.ends(requests, pace_seed))
            except Exception as exc:
                self._forget(tags)
                raise engine.fail_loop(exc) from exc
        return self._spoken(ended)

    def step(self) -> list[Spoken]:
        """One frame for every row not paused; the rows that ended. With none left stepping, the
        paused rows resume."""
        if self._batch is None or not len(self._batch):
            self.resume()
        if self._batch is None or not len(self._batch):
            return []
        engine = self._engine
        with engine._lock:
            try:
                ended = self._batch.step()
            except Exception as exc:
                tags = self.tags()
                self._batch = self._paused = None
                self._forget(tags)
                raise engine.fail_loop(exc) from exc
        return self._spoken(ended)

    def drop(self, tags: Sequence[Hashable]) -> None:
        """Stop rows without a result (their job is gone); on failure nothing is dropped."""
        with self._engine._lock:
            try:
                for batch in self._batches():
                    batch.drop(tags)
            except Exception as exc:
                raise self._engine.fail_loop(exc) from exc
        self._forget(tags)

    def abandon(self) -> None:
        """Forget every row (the caller fails or re-queues them)."""
        with self._engine._lock:
            self._batch = self._paused = None
            self._requests.clear()

    def tags(self) -> list[Hashable]:
        """The rows in the stream, stepping or paused."""
        return [row.tag for batch in self._batches() for row in batch.rows]

    def _forget(self, tags: Sequence[Hashable]) -> None:
        for tag in tags:
            self._requests.pop(tag, None)

    def _spoken(self, ended: Sequence[Ended]) -> list[Spoken]:
        spoken = []
        for row in ended:
            request, generation, budget, ref = self._requests.pop(row.tag)
            takes = Takes(
                rows=(row.codes,),
                frames=(int(row.codes.shape[0]),),
                capped=(row.capped,),
                context=SpokenCall((request,), dict(generation), request.seed, budget, (ref,)),
            )
            spoken.append(Spoken(row.tag, takes, row.seconds, row.wall_s))
        return spoken


def spoken_ref(takes: Takes) -> Any:
    """The reference codes of a one-row take."""
    context = takes.context
    return context.ref_codes[0] if isinstance(context, SpokenCall) else None
