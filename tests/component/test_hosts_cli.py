"""Several machines, as the CLI shows them: `ttsd status` and `ttsd doctor` list every host serving
the queue, `ttsd worker` runs only workers and only on a shared queue. Real queues (SQLite, and the
session's throw-away PostgreSQL server), click's runner, no daemon."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner, Result

import ttsd.daemon as daemon_module
import ttsd.ops.logs as logs_module
from ttsd.cli import main
from ttsd.cli.views import HOSTS_GONE_SHOWN, hosts_view
from ttsd.config import Settings, load_settings
from ttsd.daemon import refuse_a_twin
from ttsd.database_url import masked
from ttsd.errors import DaemonAlreadyRunning
from ttsd.jobqueue.store import Store
from ttsd.jobqueue.tables import DaemonRecord
from ttsd.ops.doctor import Check, diagnose
from ttsd.synth.engine.device import Hardware

UNREACHABLE = "postgresql://nobody:hunter2@/nodb?host=/tmp/no-such-dir&port=5432"
CPU_ONLY = Hardware(mps=False, cuda=False, flash_attn=False)
WORKER = {"model": "tiny", "pid": 4242, "state": "busy", "device": "cuda", "dtype": "bfloat16", "attention": "sdpa"}


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    return {name: tmp_path / name for name in ("state", "inbox", "outbox")}


def invoke(folders: dict[str, Path], *args: str, env: dict[str, str] | None = None) -> Result:
    prefix = [item for name, path in folders.items() for item in (f"--{name.replace('state', 'state-dir')}", str(path))]
    return CliRunner().invoke(main, [*prefix, *args], env=env, catch_exceptions=False)


def register_two(target: Path | str, folders: dict[str, Path]) -> tuple[str, str]:
    """A worker daemon alive with a model loaded, and a run daemon that stopped."""
    store = Store(target)
    try:
        gone = store.register_daemon(folders["inbox"], folders["outbox"], "0.9.0", role="run")
        store.daemon_stopped(gone.id)
        alive = store.register_daemon(folders["inbox"], folders["outbox"], "1.0.0", role="worker")
        store.daemon_heartbeat(alive.id, json.dumps(WORKER), json.dumps([WORKER]))
        return alive.id, gone.id
    finally:
        store.close()


def _ok_import() -> Check:
    return Check("qwen-tts import", True, "ok")


def test_status_lists_every_daemon_alive_first_with_its_workers(folders: dict[str, Path]) -> None:
    alive_id, gone_id = register_two(Settings(state_dir=folders["state"]).db_path, folders)
    result = invoke(folders, "status", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["shared_queue"] is False
    assert data["queue_location"] == str(folders["state"] / "ttsd.sqlite3")
    first, second = data["hosts"]
    assert (first["id"], first["role"], first["alive"], first["version"]) == (alive_id, "worker", True, "1.0.0")
    assert first["loaded_models"] == [WORKER]
    assert 0 <= first["heartbeat_age_s"] < 60
    assert (second["id"], second["role"], second["alive"]) == (gone_id, "run", False)
    assert second["stopped_at"] is not None and second["loaded_models"] == [], "a gone daemon has nothing loaded"
    assert "daemon" in data, "the one-host view stays for compatibility"
    # On one machine the hosts block is one line: the daemon lines above say the rest.
    human = invoke(folders, "status").stdout
    assert f"queue    {folders['state'] / 'ttsd.sqlite3'} (this machine only)" in human
    assert "alive" not in human


def test_status_measures_heartbeats_by_the_queue_s_clock(
    folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    register_two(Settings(state_dir=folders["state"]).db_path, folders)
    # The database's clock an hour ahead of this host's: the worker's heartbeat is an hour old.
    ahead = datetime.now(UTC) + timedelta(hours=1)
    monkeypatch.setattr(Store, "clock", lambda _self: ahead)
    hosts = json.loads(invoke(folders, "status", "--json").stdout)["hosts"]
    assert [host["alive"] for host in hosts] == [False, False]
    assert hosts[0]["heartbeat_age_s"] > 3500


def test_hosts_view_keeps_the_live_ones_and_the_latest_gone_ones() -> None:
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

    def record(name: str, heartbeat_age_s: float, stopped: bool = False) -> DaemonRecord:
        beat = now - timedelta(seconds=heartbeat_age_s)
        return DaemonRecord(
            id=name, pid=1, hostname=name, started_at=beat - timedelta(hours=1), heartbeat_at=beat,
            stopped_at=beat if stopped else None, inbox="/in", outbox="/out", loaded_models=json.dumps([WORKER]),
        )  # fmt: skip

    silent = record("silent", 61)  # not stopped, but quiet for longer than a lease: killed, or cut off
    gone = [record(f"old{i}", 100 + i, stopped=True) for i in range(HOSTS_GONE_SHOWN + 2)]
    rows = hosts_view([silent, record("mac", 0.5), *gone, record("gpu", 2)], now, silent_after_s=60)
    assert [row["host"] for row in rows[:3]] == ["mac", "gpu", "silent"]
    assert [row["alive"] for row in rows[:3]] == [True, True, False]
    assert rows[2]["heartbeat_age_s"] == 61 and rows[2]["loaded_models"] == []
    assert len(rows) == 2 + HOSTS_GONE_SHOWN, "the live ones, then the latest gone ones only"


def test_status_on_a_shared_queue_lists_every_host(folders: dict[str, Path], pg_url: str) -> None:
    alive_id, gone_id = register_two(pg_url, folders)
    env = {"TTS_DATABASE_URL": pg_url}
    data = json.loads(invoke(folders, "status", "--json", env=env).stdout)
    assert data["shared_queue"] is True
    assert data["queue_location"] == masked(pg_url)
    assert [(host["id"], host["alive"]) for host in data["hosts"]] == [(alive_id, True), (gone_id, False)]
    assert data["hosts"][0]["loaded_models"] == [WORKER]
    human = invoke(folders, "status", env=env).stdout
    assert f"queue    {masked(pg_url)} (shared)" in human
    assert "hosts    1 alive, 1 gone" in human
    assert "tiny on cuda/bfloat16, busy" in human
    assert "  stopped " in human


def test_worker_refuses_without_a_database_url(folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TTS_DATABASE_URL", raising=False)
    started: list[Settings] = []

    def run_daemon(settings: Settings, **_options: object) -> int:
        started.append(settings)
        return 0

    monkeypatch.setattr(daemon_module, "run_daemon", run_daemon)
    result = invoke(folders, "worker")
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("ttsd: ttsd worker needs a shared queue: set TTS_DATABASE_URL")
    assert started == [] and not folders["state"].exists(), "refused before anything was made"


def test_worker_runs_the_worker_role_without_an_inbox(
    folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[dict[str, object]] = []

    def run_daemon(settings: Settings, **options: object) -> int:
        started.append(options)
        return 0

    monkeypatch.setattr(daemon_module, "run_daemon", run_daemon)
    monkeypatch.setattr(logs_module, "setup_logging", lambda *_args, **_kwargs: None)
    result = invoke(folders, "worker", env={"TTS_DATABASE_URL": UNREACHABLE})
    assert result.exit_code == 0, result.output
    assert [options["role"] for options in started] == ["worker"]
    assert folders["state"].is_dir() and folders["outbox"].is_dir()
    assert not folders["inbox"].exists(), "a worker takes no job files"


def test_doctor_fails_the_queue_check_quickly_on_an_unreachable_server(tmp_path: Path) -> None:
    loaded = load_settings(
        overrides={"state_dir": tmp_path / "state"},
        environ={"TTS_DEFAULT_MODEL": "tiny", "TTS_DATABASE_URL": UNREACHABLE},
    )
    began = time.monotonic()
    report = diagnose(loaded, daemon_running=False, probe=lambda: CPU_ONLY, engine_import=_ok_import)
    assert time.monotonic() - began < 15, "no retrying for minutes: one connection attempt"
    [check] = [c for c in report.checks if c.name == "queue database"]
    assert not check.ok and check.blocking and report.blocked
    assert check.detail.startswith("postgresql://nobody:***@/nodb") and " unreachable: " in check.detail
    assert "hunter2" not in json.dumps(report.as_dict(), default=str)
    assert report.facts["queue"]["readable"] is False


def test_doctor_cli_on_an_unreachable_server_lists_no_hosts(folders: dict[str, Path]) -> None:
    result = invoke(folders, "doctor", "--json", env={"TTS_DATABASE_URL": UNREACHABLE, "TTS_DEFAULT_MODEL": "tiny"})
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    [check] = [c for c in data["checks"] if c["name"] == "queue database"]
    assert not check["ok"] and "unreachable" in check["detail"]
    assert data["hosts"] == [] and data["workers"] == []


def test_doctor_on_a_shared_queue(folders: dict[str, Path], pg_url: str, tmp_path: Path) -> None:
    alive_id, _ = register_two(pg_url, folders)
    environ = {"TTS_DEFAULT_MODEL": "tiny", "TTS_DATABASE_URL": pg_url}
    loaded = load_settings(overrides={"state_dir": folders["state"]}, environ=environ)
    report = diagnose(loaded, daemon_running=False, probe=lambda: CPU_ONLY, engine_import=_ok_import)
    checks = {c.name: c for c in report.checks}
    assert checks["queue database"].ok and "PostgreSQL " in checks["queue database"].detail
    assert report.facts["queue"]["server_version"] and report.facts["queue"]["readable"]
    # The cache folder inside this host's state directory: a warning, never a block.
    cache = checks["shared cache"]
    assert not cache.ok and not cache.blocking and "TTS_CACHE_FOLDER" in cache.detail
    shared = load_settings(
        overrides={"state_dir": folders["state"]}, environ={**environ, "TTS_CACHE_FOLDER": str(tmp_path / "shared")}
    )
    report = diagnose(shared, daemon_running=False, probe=lambda: CPU_ONLY, engine_import=_ok_import)
    assert [c.ok for c in report.checks if c.name == "shared cache"] == [True]

    result = invoke(folders, "doctor", "--json", env=environ)
    assert [host["id"] for host in json.loads(result.stdout)["hosts"] if host["alive"]] == [alive_id]


def test_doctor_on_sqlite_has_no_shared_cache_check(tmp_path: Path) -> None:
    loaded = load_settings(overrides={"state_dir": tmp_path / "state"}, environ={"TTS_DEFAULT_MODEL": "tiny"})
    report = diagnose(loaded, daemon_running=False, probe=lambda: CPU_ONLY, engine_import=_ok_import)
    assert "shared cache" not in {c.name for c in report.checks}
    assert not (tmp_path / "state").exists(), "doctor creates nothing"


def test_a_copied_state_directory_is_refused_while_its_twin_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(state_dir=tmp_path / "state", inbox=tmp_path / "in", outbox=tmp_path / "out")
    store = Store(settings.db_path)
    try:
        store.register_daemon(settings.inbox, settings.outbox, "1.0", host_id="abcdef012345")
        # The same host id on this machine (a restart) or a stopped twin is fine; a live one elsewhere is not.
        refuse_a_twin(store, "abcdef012345", settings)
        monkeypatch.setattr(os, "uname", lambda: SimpleNamespace(nodename="another-mac"))
        refuse_a_twin(store, "0123456789ab", settings)
        with pytest.raises(DaemonAlreadyRunning, match="this state directory was copied from there"):
            refuse_a_twin(store, "abcdef012345", settings)
    finally:
        store.close()
