"""What each model can speak: read from its checkpoint when it is on this machine, otherwise from
the official model card (marked as such, since a checkpoint is the only authority)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ttsd.catalog import ModelEntry, ModelKind
from ttsd.synth.engine.weights import locate_checkpoint

OFFICIAL_SPEAKERS = ("aiden", "dylan", "eric", "ono_anna", "ryan", "serena", "sohee", "uncle_fu", "vivian")
OFFICIAL_LANGUAGES = (
    "auto", "chinese", "english", "french", "german", "italian", "japanese", "korean", "portuguese",
    "russian", "spanish",
)  # fmt: skip
SOURCE_CHECKPOINT = "checkpoint"
SOURCE_STATIC = "static table (weights not on this machine)"


@dataclass(frozen=True)
class ModelVoices:
    """The voices and languages of one registry model, and where that knowledge came from."""

    model: str
    kind: ModelKind
    speakers: tuple[str, ...]
    languages: tuple[str, ...]
    source: str
    checkpoint: str | None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return asdict(self)


def checkpoint_voices(directory: Path) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """Speakers and languages as qwen-tts derives them from a checkpoint's config.json."""
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        talker = config["talker_config"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    speakers = tuple(sorted(str(s).lower() for s in (talker.get("spk_id") or {})))
    # qwen-tts lists "auto" plus every codec language except the Chinese dialects.
    codec_languages = sorted(str(lang).lower() for lang in (talker.get("codec_language_id") or {}))
    languages = ("auto", *(lang for lang in codec_languages if "dialect" not in lang))
    return speakers, languages


def voices_of(entry: ModelEntry, models_dir: Path) -> ModelVoices:
    """One model's voices, from its checkpoint if present, else the static table."""
    checkpoint = locate_checkpoint(entry, models_dir)
    found = checkpoint_voices(checkpoint) if checkpoint is not None else None
    if found is not None:
        speakers, languages = found
        if entry.kind != "custom_voice":
            speakers = ()
        return ModelVoices(entry.name, entry.kind, speakers, languages, SOURCE_CHECKPOINT, str(checkpoint))
    speakers = OFFICIAL_SPEAKERS if entry.kind == "custom_voice" else ()
    return ModelVoices(entry.name, entry.kind, speakers, OFFICIAL_LANGUAGES, SOURCE_STATIC, None)


def list_voices(
    registry: Mapping[str, ModelEntry], models_dir: Path, cache_file: Path, refresh: bool
) -> list[ModelVoices]:
    """Every model's voices. Answers come from `cache_file` unless `refresh` (or no cache yet):
    looking for Hugging Face snapshots is slow enough to remember."""
    if not refresh:
        cached = _read_cache(cache_file)
        if cached is not None and set(cached) == set(registry):
            return [cached[name] for name in registry]
    listing = [voices_of(entry, models_dir) for entry in registry.values()]
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    cache_file.write_text(json.dumps([v.as_dict() for v in listing], indent=1), encoding="utf-8")
    return listing


def _read_cache(cache_file: Path) -> dict[str, ModelVoices] | None:
    try:
        rows = json.loads(cache_file.read_text(encoding="utf-8"))
        return {
            row["model"]: ModelVoices(
                model=row["model"],
                kind=row["kind"],
                speakers=tuple(row["speakers"]),
                languages=tuple(row["languages"]),
                source=row["source"],
                checkpoint=row["checkpoint"],
            )
            for row in rows
        }
    except (OSError, ValueError, KeyError, TypeError):
        return None
