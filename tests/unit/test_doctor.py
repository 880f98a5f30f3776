"""Device planning, doctor and voices: the hardware is simulated through the planner's probe seam."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.support.fakes import deny_access
from ttsd.cli import main
from ttsd.config import LoadedSettings, Settings, load_settings
from ttsd.errors import ConfigError
from ttsd.fsutil import atomic_write, hold_lock
from ttsd.intake.access import RECORD_NAME as INBOX_PROBLEM
from ttsd.intake.access import InboxAccess
from ttsd.jobqueue.store import Store
from ttsd.ops.doctor import Check, diagnose
from ttsd.ops.effective import (
    RECORD_NAME,
    DaemonSettings,
    is_secret,
    record_effective_settings,
    running_daemon_settings,
    settings_view,
)
from ttsd.synth.engine.device import Hardware, plan_device

APPLE = Hardware(mps=True, cuda=False, flash_attn=False)
NVIDIA = Hardware(mps=False, cuda=True, flash_attn=False)
NVIDIA_FLASH = Hardware(mps=False, cuda=True, flash_attn=True)
CPU_ONLY = Hardware(mps=False, cuda=False, flash_attn=False)


@pytest.mark.parametrize(
    ("hardware", "device", "dtype", "expected"),
    [
        (APPLE, "auto", "auto", ("mps", "float16", "sdpa")),
        (NVIDIA, "auto", "auto", ("cuda", "bfloat16", "sdpa")),
        (NVIDIA_FLASH, "auto", "auto", ("cuda", "bfloat16", "flash_attention_2")),
        (CPU_ONLY, "auto", "auto", ("cpu", "float32", "sdpa")),
        (APPLE, "cpu", "auto", ("cpu", "float32", "sdpa")),
        (APPLE, "mps", "float32", ("mps", "float32", "sdpa")),
        (NVIDIA_FLASH, "cpu", "bfloat16", ("cpu", "bfloat16", "sdpa")),
    ],
)
def test_device_plan(hardware: Hardware, device: str, dtype: str, expected: tuple[str, str, str]) -> None:
    plan = plan_device(device, dtype, probe=lambda: hardware)
    assert (plan.device, plan.dtype, plan.attention) == expected


@pytest.mark.parametrize(
    ("hardware", "device", "dtype", "message"),
    [
        (CPU_ONLY, "mps", "auto", "no usable MPS"),
        (APPLE, "cuda", "auto", "no CUDA"),
        (CPU_ONLY, "cpu", "float16", "float16 is not supported on the CPU"),
    ],
)
def test_impossible_device_plans_are_config_errors(hardware: Hardware, device: str, dtype: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        plan_device(device, dtype, probe=lambda: hardware)


def _ok_import() -> Check:
    return Check("qwen-tts import", True, "ok")


def test_doctor_reports_and_blocks(tmp_path: Path) -> None:
    loaded = load_settings(
        overrides={"state_dir": tmp_path / "state", "inbox": tmp_path / "in", "outbox": tmp_path / "out"},
        environ={"TTS_DEFAULT_MODEL": "tiny"},
    )
    report = diagnose(loaded, daemon_running=False, probe=lambda: APPLE, engine_import=_ok_import)
    assert not report.blocked
    assert report.facts["device_plan"] == {"device": "mps", "dtype": "float16", "attention": "sdpa"}
    assert report.facts["settings"]["default_model"] == {"value": "tiny", "source": "env"}
    assert report.facts["versions"]["torch"] is not None
    assert {row["model"] for row in report.facts["models"]} >= {"qwen3-tts-0.6b", "tiny"}

    broken = diagnose(
        loaded, daemon_running=False, probe=lambda: APPLE,
        engine_import=lambda: Check("qwen-tts import", False, "OSError: libc10_cuda.so"),
    )  # fmt: skip
    assert broken.blocked


def test_doctor_blocks_when_the_default_model_cannot_be_had_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    loaded = load_settings(overrides={"state_dir": tmp_path / "state"}, environ={})
    report = diagnose(loaded, daemon_running=False, probe=lambda: CPU_ONLY, engine_import=_ok_import)
    assert report.blocked
    failing = [c for c in report.checks if not c.ok]
    assert [c.name for c in failing if c.blocking] == ["default model"]
    assert "HF_HUB_OFFLINE" in failing[0].detail


def test_voices_from_checkpoint_and_static_table(tmp_path: Path, tiny_models: Path) -> None:
    state = tmp_path / "state"
    (state / "models").mkdir(parents=True)
    (state / "models" / "tiny").symlink_to(tiny_models / "tiny")
    runner = CliRunner()
    result = runner.invoke(main, ["--state-dir", str(state), "voices", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["model"]: row for row in json.loads(result.output)}
    assert rows["tiny"]["source"] == "checkpoint"
    assert "ryan" in rows["tiny"]["speakers"] and "english" in rows["tiny"]["languages"]
    assert rows["qwen3-tts-0.6b"]["source"].startswith("static table")
    assert rows["qwen3-tts-1.7b-design"]["speakers"] == []

    only = runner.invoke(main, ["--state-dir", str(state), "voices", "--model", "tiny", "--refresh", "--json"])
    assert [row["model"] for row in json.loads(only.output)] == ["tiny"]
    assert runner.invoke(main, ["--state-dir", str(state), "voices", "--model", "nope"]).exit_code == 3


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_doctor_fails_on_a_damaged_queue_database(tmp_path: Path, damage: str) -> None:
    loaded = load_settings(overrides={"state_dir": tmp_path / "state"}, environ={"TTS_DEFAULT_MODEL": "tiny"})
    db_path = loaded.settings.db_path
    Store(db_path).close()
    healthy = diagnose(loaded, daemon_running=False, probe=lambda: CPU_ONLY, engine_import=_ok_import)
    assert [c.detail for c in healthy.checks if c.name == "queue database"] == [f"{db_path} (integrity ok)"]
    data = db_path.read_bytes()
    db_path.write_bytes(b"not a database at all" * 300 if damage == "garbage" else data[: len(data) // 2])
    report = diagnose(loaded, daemon_running=False, probe=lambda: CPU_ONLY, engine_import=_ok_import)
    [check] = [c for c in report.checks if c.name == "queue database"]
    assert not check.ok and check.blocking and "damaged" in check.detail
    assert report.blocked


@pytest.mark.parametrize("folder", ["inbox", "outbox", "state_dir"])
def test_doctor_says_a_folder_below_a_file_cannot_be_created(tmp_path: Path, folder: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    overrides = {"state_dir": tmp_path / "state", "inbox": tmp_path / "in", "outbox": tmp_path / "out"}
    loaded = load_settings(overrides={**overrides, folder: blocker / "below"}, environ={"TTS_DEFAULT_MODEL": "tiny"})
    report = diagnose(loaded, daemon_running=False, probe=lambda: CPU_ONLY, engine_import=_ok_import)
    name = {"state_dir": "state"}.get(folder, folder) + " folder"
    [check] = [c for c in report.checks if c.name == name]
    assert not check.ok and f"{blocker} is not a folder" in check.detail
    assert report.blocked


def _folders(tmp_path: Path, environ: dict[str, str] | None = None) -> LoadedSettings:
    overrides = {"state_dir": tmp_path / "state", "inbox": tmp_path / "in", "outbox": tmp_path / "out"}
    return load_settings(overrides=overrides, environ={"TTS_DEFAULT_MODEL": "tiny", **(environ or {})})


def _check(loaded: LoadedSettings, name: str, daemon_running: bool) -> Check:
    report = diagnose(loaded, daemon_running, probe=lambda: CPU_ONLY, engine_import=_ok_import)
    [check] = [c for c in report.checks if c.name == name]
    return check


def test_doctor_names_a_folder_macos_keeps_from_it_and_what_to_grant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = _folders(tmp_path)
    inbox = loaded.settings.inbox
    inbox.mkdir(mode=0o777)  # its mode allows everything: only listing it shows the refusal
    deny_access(monkeypatch, inbox)
    check = _check(loaded, "inbox folder", daemon_running=False)
    assert not check.ok and check.blocking
    assert check.detail.startswith(f"cannot use the inbox {inbox}: Operation not permitted (macOS privacy protection:")
    assert "Full Disk Access" in check.detail
    assert _check(loaded, "outbox folder", daemon_running=False).ok


def test_doctor_says_a_folder_cannot_be_created_inside_a_protected_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    documents = tmp_path / "Documents"
    documents.mkdir()
    outbox = documents / "ttsd" / "out"
    loaded = load_settings(overrides={"state_dir": tmp_path / "state", "outbox": outbox}, environ={})
    deny_access(monkeypatch, documents)
    check = _check(loaded, "outbox folder", daemon_running=False)
    assert not check.ok
    assert check.detail.startswith(
        f"{outbox} cannot be created: cannot use the folder {documents}: Operation not permitted"
    )


def test_doctor_shows_the_running_daemon_s_settings_marking_those_that_differ_here(tmp_path: Path) -> None:
    loaded = _folders(tmp_path)
    daemon = DaemonSettings(
        pid=4242,
        executable="/venv/bin/python",
        config_file=None,
        settings={**settings_view(loaded), "max_batch": {"value": "2", "source": "env"}},
    )
    report = diagnose(
        loaded, daemon_running=True, probe=lambda: CPU_ONLY, engine_import=_ok_import, daemon_settings=daemon
    )
    assert report.facts["settings_of"] == {
        "who": "daemon",
        "pid": 4242,
        "executable": "/venv/bin/python",
        "config_file": None,
    }
    assert report.facts["settings"]["max_batch"] == {
        "value": "2",
        "source": "env",
        "differs": True,
        "here": {"value": "auto", "source": "default"},
    }
    assert report.facts["settings"]["default_model"] == {"value": "tiny", "source": "env", "differs": False}

    for running, why in ((False, "no daemon is running"), (True, "the running daemon recorded none")):
        mine = diagnose(loaded, daemon_running=running, probe=lambda: CPU_ONLY, engine_import=_ok_import)
        assert mine.facts["settings_of"] == {"who": "cli", "why": why}
        assert mine.facts["settings"]["max_batch"] == {"value": "auto", "source": "default"}


def test_the_recorded_settings_count_only_while_their_daemon_holds_the_lock(tmp_path: Path) -> None:
    loaded = _folders(tmp_path, {"TTS_MAX_BATCH": "2"})
    settings = loaded.settings
    settings.state_dir.mkdir()
    with hold_lock(settings.lock_path, str(os.getpid())):
        assert running_daemon_settings(settings) is None, "running, but nothing recorded yet"
        record_effective_settings(loaded)
        recorded = running_daemon_settings(settings)
        assert recorded is not None and recorded.pid == os.getpid()
        assert recorded.settings["max_batch"] == {"value": "2", "source": "env"}
        assert recorded.settings == settings_view(loaded)
    record = settings.state_dir / RECORD_NAME
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert running_daemon_settings(settings) is None, "no daemon runs: the record is stale"
    with hold_lock(settings.lock_path, "1"):
        assert running_daemon_settings(settings) is None, "another daemon holds the lock: not its record"


def test_nothing_named_like_a_secret_is_recorded_or_shown(tmp_path: Path) -> None:
    assert [name for name in Settings.model_fields if is_secret(name)] == ["api_key"]
    assert all(is_secret(name) for name in ("hf_token", "api_key", "webhook_secret", "smtp_password"))
    loaded = _folders(tmp_path)
    settings = loaded.settings
    settings.state_dir.mkdir()
    with hold_lock(settings.lock_path, str(os.getpid())):
        record_effective_settings(loaded)
        record = settings.state_dir / RECORD_NAME
        document = json.loads(record.read_text(encoding="utf-8"))
        document["settings"]["hf_token"] = {"value": "hf_secret", "source": "env"}
        atomic_write(record, json.dumps(document).encode("utf-8"))
        recorded = running_daemon_settings(settings)
        assert recorded is not None and "hf_token" not in recorded.settings
        assert "api_key" not in recorded.settings and "api_key" not in record.read_text(encoding="utf-8")


def test_doctor_blocks_on_the_inbox_problem_the_running_daemon_recorded(tmp_path: Path) -> None:
    loaded = _folders(tmp_path)
    state = loaded.settings.state_dir
    state.mkdir()
    access = InboxAccess(loaded.settings.inbox, state / INBOX_PROBLEM)
    access.failed(PermissionError(errno.EPERM, "Operation not permitted"))
    check = _check(loaded, "daemon's inbox", daemon_running=True)
    assert not check.ok and check.blocking
    assert check.detail.startswith("the running daemon cannot list its inbox (since ")
    assert f"cannot use the inbox {loaded.settings.inbox}: Operation not permitted" in check.detail
    stopped = diagnose(loaded, daemon_running=False, probe=lambda: CPU_ONLY, engine_import=_ok_import)
    assert "daemon's inbox" not in [c.name for c in stopped.checks], "no daemon runs: the record is stale"
