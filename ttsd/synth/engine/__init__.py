"""Synthesis engines: the Qwen3-TTS wrapper and the tiny checkpoint builder used by tests."""
