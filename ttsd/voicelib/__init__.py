"""Saved voices: a Base model's clone prompt computed once, stored with its reference audio, named."""

from __future__ import annotations

from ttsd.voicelib.errors import DamagedVoice, VoiceNotFound, VoiceRejected, voice_name_problem
from ttsd.voicelib.library import PROMPT_FILE, REFERENCE_FILE, VOICE_FILE, SavedVoice, Source, VoiceLibrary
from ttsd.voicelib.prompt_file import load_prompt

__all__ = [
    "PROMPT_FILE",
    "REFERENCE_FILE",
    "VOICE_FILE",
    "DamagedVoice",
    "SavedVoice",
    "Source",
    "VoiceLibrary",
    "VoiceNotFound",
    "VoiceRejected",
    "load_prompt",
    "voice_name_problem",
]
