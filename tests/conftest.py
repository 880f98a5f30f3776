"""Shared fixtures: the tiny checkpoint of the real architecture (built once per session) and
isolated folders for daemon processes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# The tests never reach a model hub; the tiny checkpoints are built locally.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from tests.support.daemon_harness import GHOST_MODEL, DaemonEnv


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the tiny checkpoints of all three kinds, built once for the whole session."""
    from ttsd.catalog import TINY_MODELS
    from ttsd.synth.engine.tiny import ensure_tiny_checkpoint

    root = tmp_path_factory.mktemp("models")
    for name, kind in TINY_MODELS.items():
        ensure_tiny_checkpoint(root / name, kind)
    return root


@pytest.fixture
def daemon_env(tmp_path: Path, tiny_models: Path) -> Iterator[DaemonEnv]:
    """Fresh inbox, outbox and state folders, with the session's tiny checkpoint linked in."""
    env = DaemonEnv.create(tmp_path, tiny_models)
    yield env
    env.stop_all()


@pytest.fixture
def ghost_env(tmp_path: Path) -> Iterator[DaemonEnv]:
    """Daemon folders in RAM whose default model has no weights: intake and the queue run for real,
    jobs fail fast, no model is ever loaded."""
    from tests.support.fakes import scratch_dir

    with scratch_dir(tmp_path) as root:
        no_models = root / "no-models"
        no_models.mkdir()
        env = DaemonEnv.create(root / "env", no_models)
        env.env.update(
            TTS_MODELS=json.dumps({GHOST_MODEL: str(root / "ghost-weights")}),
            TTS_DEFAULT_MODEL=GHOST_MODEL,
            TTS_ENABLE_CACHE="false",
        )
        try:
            yield env
        finally:
            env.stop_all()
