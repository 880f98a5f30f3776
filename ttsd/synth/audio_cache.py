"""The persistent audio cache: identical requests are answered from disk without touching a model.

Entries are content-addressed by everything that changes the audio (model and weights revision,
kind, normalised text, voice fields, reference audio content, seed, sampling settings, sample rate)
and hold the raw float32 waveform at that rate, so every output format and loudness setting of the
same take shares one entry. The index (sizes, last use, hit counters) lives in the queue database;
eviction is least-recently-used within an entry and a byte budget. A file that is missing or does
not decode is a miss and is forgotten, never delivered.
"""

from __future__ import annotations

import hashlib
import json
import logging
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

from ttsd.fsutil import sweep_temp_files
from ttsd.jobqueue.protocols import CacheIndexStore
from ttsd.jobqueue.records import CacheStats
from ttsd.jobspec import JobSpec, VoiceFields
from ttsd.synth.waveform_files import load_waveform, save_waveform

log = logging.getLogger(__name__)

KEY_VERSION = 1


def normalize_text(text: str) -> str:
    """The text as the model sees it: NFC, whitespace runs collapsed, ends stripped."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def cache_key(
    spec: JobSpec, text: str, revision: str, reference_sha256: str | None, voice: VoiceFields | None = None
) -> str:
    """The content address of one take of `text` (the job's whole text, or one of its chunks),
    spoken by `voice` (a script segment's; default: the job's own)."""
    voice = voice or spec.voice_fields()
    fields: dict[str, Any] = {
        "v": KEY_VERSION,
        "model": spec.model,
        "revision": revision,
        "kind": spec.kind,
        "text": normalize_text(text),
        "speaker": voice.speaker.lower() if voice.speaker else None,
        "language": voice.language.lower(),
        "instruct": normalize_text(voice.instruct) if voice.instruct else None,
        "reference": reference_sha256,
        "ref_text": normalize_text(voice.ref_text) if voice.ref_text else None,
        "seed": spec.seed,
        "generation": spec.generation.as_kwargs(),
        "sample_rate": spec.sample_rate,
    }
    if voice.voice_sha256 is not None:
        # Only when set, so every key made before saved voices existed stays valid.
        fields["saved_voice"] = voice.voice_sha256
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def file_sha256(path: Path) -> str:
    """The content hash of a file (reference audio), read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class AudioCache:
    """Waveforms on disk under `root`, indexed in the store."""

    def __init__(self, root: Path, store: CacheIndexStore, max_entries: int, max_bytes: int) -> None:
        self.root = root
        self.store = store
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        """The cached waveform for `key`, or None (a miss); counts the hit or miss."""
        if not self.store.cache_lookup(key):
            return None
        path = self._path(key)
        audio = load_waveform(path)
        if audio is None:
            log.warning("cache entry %s is missing or damaged; forgetting it", key[:12])
            self.store.cache_forget(key, count_miss=True)
            path.unlink(missing_ok=True)
        return audio

    def put(self, key: str, audio: np.ndarray) -> None:
        """Remember a take (atomically), then evict beyond the limits."""
        if self.max_entries == 0 or self.max_bytes == 0:
            return
        path = self._path(key)
        save_waveform(path, audio)
        self.store.cache_record(key, path.stat().st_size)
        for victim in self.store.cache_evict(self.max_entries, self.max_bytes):
            self._path(victim).unlink(missing_ok=True)

    def reindex(self) -> int:
        """Index every sound take on disk (after the queue, which holds the index, was lost); a file
        that does not load is removed. Returns how many takes were indexed."""
        indexed = 0
        for path in sorted(self.root.glob("*/*.npy")):
            if load_waveform(path) is None:
                path.unlink(missing_ok=True)
                continue
            self.store.cache_record(path.stem, path.stat().st_size)
            indexed += 1
        return indexed

    def stats(self) -> CacheStats:
        """Entries, bytes, hits, misses."""
        return self.store.cache_stats()

    def clear(self) -> int:
        """Forget every entry and delete its file; returns how many there were."""
        keys = self.store.cache_clear()
        for key in keys:
            self._path(key).unlink(missing_ok=True)
        sweep_temp_files(self.root, recursive=True)
        return len(keys)
