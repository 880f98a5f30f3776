"""Shared fixtures: the tiny checkpoint of the real architecture (built once per session) and
isolated folders for daemon processes; and the lane markers (`unit`, `component`, `e2e`) every test
gets from the folder it lives in."""

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
from tests.support.postgres import Cluster, PostgresMissing, postgres_server

TESTS_ROOT = Path(__file__).parent
# The folder names are the marker names (registered in pyproject.toml, so --strict-markers holds).
LANES = ("unit", "component", "e2e")


def lane_of(path: Path) -> str | None:
    """The lane of a test file: the first folder under tests/ (None for a file outside tests/)."""
    try:
        return path.relative_to(TESTS_ROOT).parts[0]
    except ValueError:
        return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its lane, so `-m unit` (or `-m "not e2e"`) selects by speed class."""
    for item in items:
        lane = lane_of(Path(item.path))
        if lane is None:
            continue
        if lane not in LANES:
            # CI runs the lanes folder by folder: a test elsewhere would run locally and never in CI.
            raise pytest.UsageError(f"{item.nodeid} is in no lane: move it under tests/{{{','.join(LANES)}}}/")
        item.add_marker(lane)


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


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """A throw-away PostgreSQL server for the session (one per xdist worker)."""
    try:
        with postgres_server() as cluster:
            yield cluster
    except PostgresMissing as missing:
        pytest.skip(str(missing))


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> str:
    """A `TTS_DATABASE_URL` naming a fresh, empty database of the session's server."""
    return pg_cluster.create_database()
