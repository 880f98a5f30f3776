"""ttsd: a local text-to-speech job daemon (inbox of job files -> SQLite queue -> Qwen3-TTS -> outbox)."""

__version__ = "0.1.0"
