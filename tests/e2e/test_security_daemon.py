"""A real daemon started under umask 0 keeps its state private and its outputs safe."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

from tests.support.daemon_harness import DaemonEnv, wait_for
from tests.support.fakes import umask
from ttsd.intake.folders import REASON_SUFFIX, REJECTED_DIR


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_a_daemon_started_under_umask_0_keeps_its_state_private(ghost_env: DaemonEnv) -> None:
    ghost_env.state.chmod(0o777)
    with umask(0):
        daemon = ghost_env.start()
    daemon.wait_ready()
    ghost_env.drop_json("perm.json", {"text": "who may write my status?"})
    ghost_env.drop("broken.json", b"{")
    ghost_env.wait_state("perm", ("failed",), timeout=60)
    ghost_env.wait_state("broken", ("rejected",), timeout=60)
    wait_for(lambda: (ghost_env.inbox / REJECTED_DIR / f"broken.json{REASON_SUFFIX}").exists(), 30, "the reason")
    checks: list[tuple[Path, Callable[[int], bool], str]] = [
        (ghost_env.state, lambda m: m == 0o700, "0700"),
        (ghost_env.state / "ttsd.sqlite3", lambda m: m == 0o600, "0600"),
        (ghost_env.outbox / "perm.status.json", lambda m: m & 0o022 == 0, "not group/world writable"),
        (ghost_env.outbox / "broken.status.json", lambda m: m & 0o022 == 0, "not group/world writable"),
        (ghost_env.inbox / REJECTED_DIR / f"broken.json{REASON_SUFFIX}", lambda m: m & 0o022 == 0, "not g/w writable"),
    ]
    for suffix in ("-wal", "-shm"):
        sidecar = ghost_env.state / f"ttsd.sqlite3{suffix}"
        if sidecar.exists():
            checks.append((sidecar, lambda m: m == 0o600, "0600"))
    problems = [f"{path.name}: {oct(mode(path))}, want {want}" for path, ok, want in checks if not ok(mode(path))]
    assert daemon.terminate() == 0
    assert problems == []
