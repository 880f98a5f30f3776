"""Loaded models: lazy loading, idle unload, and a cap on how many stay in memory at once."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from ttsd.catalog import ModelEntry
from ttsd.errors import PermanentEngineError
from ttsd.synth.engine.base import DevicePlan, Engine
from ttsd.synth.engine.tiny_eos import Ending

log = logging.getLogger(__name__)

EngineLoader = Callable[[ModelEntry], Engine]


@dataclass
class _Slot:
    """One model's place: its lock serialises loading; `engine` is None while unloaded."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    engine: Engine | None = None
    last_used: float = 0.0
    load_s: float = 0.0
    busy: int = 0


class EnginePool:
    """Hands out engines by registry name, loading on first use and unloading when idle."""

    def __init__(
        self,
        registry: Mapping[str, ModelEntry],
        loader: EngineLoader,
        idle_s: float,
        max_loaded: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._loader = loader
        self._idle_s = idle_s
        self._max_loaded = max_loaded
        self._clock = clock
        self._slots: dict[str, _Slot] = {}
        self._guard = threading.Lock()

    def _slot(self, model: str) -> _Slot:
        with self._guard:
            return self._slots.setdefault(model, _Slot())

    @contextmanager
    def use(self, model: str) -> Iterator[Engine]:
        """The engine of `model`, loaded if needed, marked busy while the caller holds it."""
        entry = self._registry.get(model)
        if entry is None:
            raise PermanentEngineError(f"unknown model {model!r}", code="unknown_model")
        slot = self._slot(model)
        if slot.engine is None:
            # Make room before loading: the cap bounds memory, so a new model must never load
            # next to a full set (without taking this slot's lock: two loads must not deadlock).
            self._evict_beyond_cap(keep=model)
        with slot.lock:
            if slot.engine is None:
                started = self._clock()
                slot.engine = self._loader(entry)
                slot.load_s = round(self._clock() - started, 3)
            slot.busy += 1
            slot.last_used = self._clock()
            engine = slot.engine
        self._evict_beyond_cap(keep=model)
        try:
            yield engine
        finally:
            with slot.lock:
                slot.busy -= 1
                slot.last_used = self._clock()

    def _evict_beyond_cap(self, keep: str) -> None:
        loaded = [(name, s) for name, s in self._snapshot() if s.engine is not None and name != keep]
        excess = len(loaded) + 1 - self._max_loaded
        for name, _slot in sorted(loaded, key=lambda item: item[1].last_used)[: max(excess, 0)]:
            self._unload(name, reason="too many models loaded")

    def _snapshot(self) -> list[tuple[str, _Slot]]:
        with self._guard:
            return list(self._slots.items())

    def _unload(self, model: str, reason: str, unused_since: float | None = None) -> bool:
        """Unload `model` unless it is in use (or, with `unused_since`, was used after that time)."""
        slot = self._slot(model)
        with slot.lock:
            if slot.engine is None or slot.busy:
                return False
            if unused_since is not None and slot.last_used > unused_since:
                return False
            engine, slot.engine = slot.engine, None
        engine.close()
        log.info("unloaded model %s (%s)", model, reason)
        return True

    def unload_idle(self) -> list[str]:
        """Unload every model unused for longer than the idle time; returns their names."""
        cutoff = self._clock() - self._idle_s
        idle = [name for name, s in self._snapshot() if s.engine is not None and s.last_used <= cutoff]
        # The cutoff is checked again under the slot's lock: a model used since the snapshot stays.
        reason = f"idle for {self._idle_s:g}s"
        return [name for name in idle if self._unload(name, reason=reason, unused_since=cutoff)]

    def loaded(self) -> list[dict[str, Any]]:
        """What is in memory now, for `ttsd status`."""
        now = self._clock()
        rows = []
        for name, slot in self._snapshot():
            engine = slot.engine
            if engine is not None:
                rows.append(
                    {
                        "model": name,
                        "kind": engine.kind,
                        **engine.plan.as_dict(),
                        "load_s": slot.load_s,
                        "idle_s": 0.0 if slot.busy else round(now - slot.last_used, 1),
                        "busy": slot.busy > 0,
                    }
                )
        return rows

    def close(self) -> None:
        """Unload everything that is not in use."""
        for name, _slot in self._snapshot():
            self._unload(name, reason="shutdown")


@dataclass(frozen=True)
class LoadOptions:
    """How the production loader finds weights and places models."""

    device: str
    dtype: str
    models_dir: Path
    torch_threads: int = 0
    hf_mirror: str | None = None
    tiny_eos: bool = True
    """Tiny checkpoints end each row after a text-paced number of frames, like a trained model
    (`TTS_TINY_EOS`); off, their rows never end and run to the frame budget (for runaway tests)."""
    loop: bool = True
    """Speak with ttsd's own generation loop (`TTS_ENGINE=ttsd`) rather than the official calls."""


def qwen_loader(options: LoadOptions) -> EngineLoader:
    """The production loader: resolve the weights, plan the device once, load with qwen-tts."""
    from ttsd.synth.engine.device import plan_device

    @cache
    def plan() -> DevicePlan:
        chosen = plan_device(options.device, options.dtype)
        if options.torch_threads:
            import torch

            # torch spins one thread per core; beside other busy processes that oversubscription
            # can slow CPU synthesis many times over, so a machine shared with other work may cap it.
            torch.set_num_threads(options.torch_threads)
        log.info("device plan: %s", chosen.as_dict())
        return chosen

    def load(entry: ModelEntry) -> Engine:
        from ttsd.synth.engine.qwen import QwenEngine
        from ttsd.synth.engine.stepping.engine import LoopEngine
        from ttsd.synth.engine.weights import resolve_checkpoint

        checkpoint = resolve_checkpoint(entry, options.models_dir, options.hf_mirror)
        ending: Ending = ("paced" if options.tiny_eos else "never") if entry.tiny else "model"
        engine_class = LoopEngine if options.loop else QwenEngine
        return engine_class.load(entry.name, entry.kind, checkpoint, plan(), ending)

    return load
