"""The names clients of other services send, in ttsd's terms: OpenAI's model and voice names, and
the original service's language codes. ttsd's own names (registry models, Qwen speakers, files in
the inbox's voices/ folder) always work as they are. The README prints these tables."""

from __future__ import annotations

from collections.abc import Mapping

from ttsd.catalog import ModelEntry

DEFAULT_MODEL_ALIAS = "default"
"""Stands for the daemon's TTS_DEFAULT_MODEL in the table below."""

OPENAI_MODELS: dict[str, str] = {
    "tts-1": DEFAULT_MODEL_ALIAS,
    "gpt-4o-mini-tts": DEFAULT_MODEL_ALIAS,
    "gpt-4o-mini-tts-2025-12-15": DEFAULT_MODEL_ALIAS,
    # OpenAI's higher-quality model: Qwen's larger CustomVoice model.
    "tts-1-hd": "qwen3-tts-1.7b",
}

# OpenAI's 13 voices onto Qwen3-TTS's 9 CustomVoice speakers, by the voice's character (OpenAI's
# female-presenting voices onto Qwen's female speakers, male onto male), so a client that names an
# OpenAI voice gets a stable, similar one.
OPENAI_VOICES: dict[str, str] = {
    "alloy": "serena",
    "ash": "ryan",
    "ballad": "aiden",
    "coral": "vivian",
    "echo": "eric",
    "fable": "dylan",
    "onyx": "uncle_fu",
    "nova": "sohee",
    "sage": "ono_anna",
    "shimmer": "vivian",
    "verse": "ryan",
    "marin": "serena",
    "cedar": "aiden",
}

# The original service's language codes onto the languages Qwen3-TTS names.
LANGUAGE_CODES: dict[str, str] = {
    "auto": "Auto",
    "en": "English",
    "zh": "Chinese",
    "ja": "Japanese",
    "ko": "Korean",
    "fr": "French",
    "de": "German",
    "es": "Spanish",
    "it": "Italian",
    "pt": "Portuguese",
    "ru": "Russian",
}


def model_name(requested: str, registry: Mapping[str, ModelEntry], default_model: str) -> str:
    """A registry name for what a client asked (unknown names pass through: the job's validation
    refuses them naming the known ones)."""
    if requested in registry:
        return requested
    mapped = OPENAI_MODELS.get(requested.lower())
    if mapped is None:
        return requested
    return default_model if mapped == DEFAULT_MODEL_ALIAS else mapped


def speaker_name(requested: str) -> str:
    """A Qwen speaker for an OpenAI voice name; any other name as it is."""
    return OPENAI_VOICES.get(requested.lower(), requested)


def language_name(requested: str | None) -> str | None:
    """A Qwen language for a language code; any other name as it is."""
    if requested is None:
        return None
    return LANGUAGE_CODES.get(requested.lower(), requested)
