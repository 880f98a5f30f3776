"""Synthesis: model engines, the workers that claim jobs and speak their chunks, quality guards,
finished-chunk files and the persistent audio cache."""
