"""The LaunchAgent: the rendered plist, the launchctl commands an install and an uninstall run (seen
through a fake launchctl), the refusal off macOS, and the click group's dry run."""

from __future__ import annotations

import json
import os
import plistlib
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from ttsd.cli import main as ttsd_main
from ttsd.cli.app import Context
from ttsd.cli.launchd import launchd_group
from ttsd.config import LoadedSettings, Settings, load_settings
from ttsd.errors import LaunchdError, LaunchdUnsupported
from ttsd.ops import launchd
from ttsd.ops import plist as agent_plist

UID = 501
PYTHON = Path("/Users/me/ttsd/.venv/bin/python")
PRINT_OUTPUT = "gui/501/com.ttsd.daemon = {\n\tstate = running\n\tpid = 4242\n\tlast exit code = 0\n}\n"


@dataclass
class FakeLaunchctl:
    """Answers like launchctl. A bootout takes `unload_after` more `print`s to let go of the label, and
    `bootstrap` answers the queued return codes first (5 is launchd's EIO race after a bootout)."""

    loaded: bool = False
    unload_after: int = 0
    bootstrap_codes: list[int] = field(default_factory=list)
    calls: list[list[str]] = field(default_factory=list)
    _booted_out: bool = False

    def __call__(self, argv: list[str]) -> tuple[int, str, str]:
        self.calls.append(argv)
        assert argv[0] == launchd.LAUNCHCTL
        verb = argv[1]
        if verb == "print":
            if self._booted_out:
                if self.unload_after == 0:
                    self.loaded = False
                self.unload_after -= 1
            if self.loaded:
                return 0, PRINT_OUTPUT, ""
            return 113, "", "Could not find service"
        if verb == "bootout":
            self._booted_out = True
            return 0, "", ""
        if verb == "bootstrap":
            code = self.bootstrap_codes.pop(0) if self.bootstrap_codes else 0
            if code == 0:
                self.loaded, self._booted_out = True, False
            return code, "", "Bootstrap failed: 5: Input/output error" if code else ""
        return 0, "", ""

    def verbs(self) -> list[str]:
        return [argv[1] for argv in self.calls]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        inbox=tmp_path / "in box",
        outbox=tmp_path / "outbox",
        state_dir=tmp_path / "state",
        default_model="tiny",
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def on_macos(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")


@pytest.fixture
def on_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")


def render(settings: Settings, home: Path, environ: dict[str, str] | None = None, **kw: Any) -> dict[str, Any]:
    document = plistlib.loads(agent_plist.render_plist(settings, PYTHON, home, environ or {}, **kw))
    assert isinstance(document, dict)
    return document


def no_sleep(_seconds: float) -> None:
    """The polls in install and uninstall, without the waiting."""


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if not p.is_dir())


# -- the plist ----------------------------------------------------------------------------------


def test_the_plist_runs_the_venv_python_under_launchd_s_rules(settings: Settings, home: Path) -> None:
    plist = render(settings, home)
    assert plist["Label"] == agent_plist.LABEL == "com.ttsd.daemon"
    assert plist["ProgramArguments"] == [str(PYTHON), "-m", "ttsd", "run"]
    assert Path(plist["ProgramArguments"][0]).is_absolute()
    assert plist["RunAtLoad"] is True and plist["KeepAlive"] is True
    assert plist["ThrottleInterval"] == 10
    assert plist["ProcessType"] == "Interactive"
    assert plist["ExitTimeOut"] > settings.shutdown_grace_s
    assert plist["WorkingDirectory"] == str(settings.state_dir)
    logs = home / "Library" / "Logs" / "ttsd"
    for key in ("StandardOutPath", "StandardErrorPath"):
        assert Path(plist[key]).parent == logs
    assert plist["StandardOutPath"] != plist["StandardErrorPath"]


def test_the_environment_pins_the_folders_and_model(settings: Settings, home: Path) -> None:
    env = render(settings, home)["EnvironmentVariables"]
    assert env["TTS_INBOX"] == str(settings.inbox)
    assert env["TTS_OUTBOX"] == str(settings.outbox)
    assert env["TTS_STATE_DIR"] == str(settings.state_dir)
    assert env["TTS_DEFAULT_MODEL"] == "tiny"
    assert all(Path(env[name]).is_absolute() for name in ("TTS_INBOX", "TTS_OUTBOX", "TTS_STATE_DIR"))
    assert env["PATH"].split(os.pathsep)[0] == str(PYTHON.parent)


@pytest.mark.parametrize("grace", [0.0, 20.0, 45.5])
def test_exit_timeout_outlasts_the_shutdown_grace(settings: Settings, home: Path, grace: float) -> None:
    plist = render(settings.model_copy(update={"shutdown_grace_s": grace}), home)
    assert isinstance(plist["ExitTimeOut"], int)
    assert plist["ExitTimeOut"] >= grace + agent_plist.EXIT_TIMEOUT_MARGIN_S


def test_hf_token_is_never_written(settings: Settings, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    monkeypatch.setenv("HF_HOME", "/Users/me/hf")
    plan = launchd.plan_install(settings, PYTHON, home, UID)
    env = plistlib.loads(plan.plist)["EnvironmentVariables"]
    assert "HF_TOKEN" not in env and b"hf_secret_value" not in plan.plist
    assert env["HF_HOME"] == "/Users/me/hf"
    assert any("HF_TOKEN" in note for note in plan.notes)


def test_a_database_password_is_never_written(settings: Settings, home: Path) -> None:
    url = "postgresql://ttsd:s3cret-pw@db.local:5432/ttsd"
    environ = {"TTS_DATABASE_URL": url}
    plan = launchd.plan_install(settings.model_copy(update={"database_url": url}), PYTHON, home, UID, environ)
    env = plistlib.loads(plan.plist)["EnvironmentVariables"]
    assert env["TTS_DATABASE_URL"] == "postgresql://ttsd@db.local:5432/ttsd"
    assert b"s3cret-pw" not in plan.plist
    assert any("~/.pgpass" in note for note in plan.notes)


def test_only_the_daemon_s_variables_pass_through(settings: Settings, home: Path) -> None:
    environ = {
        "TTS_MAX_BATCH": "8",
        "TTS_FAULT": "after_audio",
        "TTS_INBOX": "/somewhere/else",
        "SSH_AUTH_SOCK": "/tmp/agent",
        "TTS_LOG_LEVEL": "",
    }
    env = render(settings, home, environ)["EnvironmentVariables"]
    assert env["TTS_MAX_BATCH"] == "8"
    assert env["TTS_INBOX"] == str(settings.inbox)
    for name in ("TTS_FAULT", "SSH_AUTH_SOCK", "TTS_LOG_LEVEL"):
        assert name not in env


def test_a_config_file_is_pinned_only_where_the_daemon_would_not_find_it(
    settings: Settings, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    elsewhere = render(settings, home, {"TTS_CONFIG": "my.toml"}, config_file=Path("my.toml"))
    assert elsewhere["EnvironmentVariables"]["TTS_CONFIG"] == str(tmp_path / "my.toml")
    default = render(settings, home, config_file=settings.state_dir / "ttsd.toml")
    assert "TTS_CONFIG" not in default["EnvironmentVariables"]


def test_odd_characters_in_paths_survive(settings: Settings, home: Path, tmp_path: Path) -> None:
    odd = tmp_path / "a&b <c> 'd' \"e\" ünï ${X}"
    plist = render(settings.model_copy(update={"inbox": odd}), home)
    assert plist["EnvironmentVariables"]["TTS_INBOX"] == str(odd)


def test_a_relative_python_is_refused(settings: Settings, home: Path) -> None:
    with pytest.raises(LaunchdError, match="absolute"):
        agent_plist.render_plist(settings, Path(".venv/bin/python"), home, {})


# -- install, uninstall, status (a fake launchctl) ----------------------------------------------


@pytest.mark.usefixtures("on_macos")
def test_install_writes_the_plist_0644_and_bootstraps_it(settings: Settings, home: Path) -> None:
    plan = launchd.plan_install(settings, PYTHON, home, UID, {})
    fake = FakeLaunchctl()
    old_umask = os.umask(0o077)  # the plist must come out 0644 whatever the umask
    try:
        launchd.install(plan, fake, no_sleep)
    finally:
        os.umask(old_umask)
    plist_path = home / "Library" / "LaunchAgents" / "com.ttsd.daemon.plist"
    assert plan.agent.plist_path == plist_path
    assert plist_path.read_bytes() == plan.plist
    info = plist_path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o644 and info.st_uid == os.getuid()
    assert (home / "Library" / "Logs" / "ttsd").is_dir() and settings.state_dir.is_dir()
    assert files_under(home) == [plist_path]
    assert fake.calls == [
        [launchd.LAUNCHCTL, "print", f"gui/{UID}/com.ttsd.daemon"],
        [launchd.LAUNCHCTL, "enable", f"gui/{UID}/com.ttsd.daemon"],
        [launchd.LAUNCHCTL, "bootstrap", f"gui/{UID}", str(plist_path)],
    ]
    assert fake.calls[1:] == plan.commands[1:]


@pytest.mark.usefixtures("on_macos")
def test_reinstall_boots_out_waits_and_rides_out_the_eio_race(settings: Settings, home: Path) -> None:
    plan = launchd.plan_install(settings, PYTHON, home, UID, {})
    fake = FakeLaunchctl(loaded=True, unload_after=2, bootstrap_codes=[5, 5, 0])
    launchd.install(plan, fake, no_sleep)
    assert fake.verbs() == [
        "print",
        "bootout",
        "print",
        "print",
        "print",
        "enable",
        "bootstrap",
        "bootstrap",
        "bootstrap",
    ]
    assert fake.loaded


@pytest.mark.usefixtures("on_macos")
def test_a_failed_bootstrap_is_an_error_that_says_so(settings: Settings, home: Path) -> None:
    plan = launchd.plan_install(settings, PYTHON, home, UID, {})
    with pytest.raises(LaunchdError, match=r"bootstrap .* failed \(37\)"):
        launchd.install(plan, FakeLaunchctl(bootstrap_codes=[37]), no_sleep)


@pytest.mark.usefixtures("on_macos")
def test_an_agent_that_never_unloads_is_an_error(settings: Settings, home: Path) -> None:
    plan = launchd.plan_install(settings, PYTHON, home, UID, {})
    with pytest.raises(LaunchdError, match="still loaded"):
        launchd.install(plan, FakeLaunchctl(loaded=True, unload_after=10**6), no_sleep)


@pytest.mark.usefixtures("on_macos")
def test_uninstall_boots_out_and_removes_the_plist(settings: Settings, home: Path) -> None:
    launchd.install(launchd.plan_install(settings, PYTHON, home, UID, {}), FakeLaunchctl(), no_sleep)
    fake = FakeLaunchctl(loaded=True)
    plan = launchd.plan_uninstall(settings, home, UID)
    assert launchd.uninstall(plan, fake, no_sleep) is True
    assert [launchd.LAUNCHCTL, "bootout", f"gui/{UID}/com.ttsd.daemon"] in fake.calls
    assert fake.calls[1] == plan.commands[0]
    assert not plan.agent.plist_path.exists() and not fake.loaded
    again = FakeLaunchctl()
    assert launchd.uninstall(plan, again, no_sleep) is False
    assert again.verbs() == ["print"]


@pytest.mark.usefixtures("on_macos")
def test_status_reports_launchd_s_account(home: Path) -> None:
    agent = launchd.Agent(home=home, uid=UID)
    loaded = launchd.status(agent, FakeLaunchctl(loaded=True))
    assert loaded.loaded and not loaded.installed
    assert loaded.fields == {"state": "running", "pid": "4242", "last_exit_code": "0"}
    assert loaded.detail == PRINT_OUTPUT
    gone = launchd.status(agent, FakeLaunchctl())
    assert not gone.loaded and gone.detail == "not loaded"


@pytest.mark.usefixtures("on_linux")
def test_off_macos_install_and_uninstall_refuse_and_change_nothing(settings: Settings, home: Path) -> None:
    fake = FakeLaunchctl()
    with pytest.raises(LaunchdUnsupported) as refused:
        launchd.install(launchd.plan_install(settings, PYTHON, home, UID, {}), fake, no_sleep)
    for hint in ("macOS-only", "--dry-run", "systemd", "ttsd run"):
        assert hint in refused.value.message
    with pytest.raises(LaunchdUnsupported):
        launchd.uninstall(launchd.plan_uninstall(settings, home, UID), fake, no_sleep)
    assert fake.calls == [] and files_under(home) == [] and not settings.state_dir.exists()
    status = launchd.status(launchd.Agent(home=home, uid=UID), fake)
    assert not status.loaded and "macOS-only" in status.detail and fake.calls == []


# -- the click group ----------------------------------------------------------------------------


@pytest.fixture
def loaded(settings: Settings, home: Path, monkeypatch: pytest.MonkeyPatch) -> LoadedSettings:
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    return load_settings(
        overrides={"inbox": settings.inbox, "outbox": settings.outbox, "state_dir": settings.state_dir},
        environ={},
    )


def invoke(loaded: LoadedSettings, *args: str) -> Result:
    return CliRunner().invoke(launchd_group, list(args), obj=Context(loaded=loaded))


def test_install_dry_run_json_prints_the_plan_and_writes_nothing(loaded: LoadedSettings, home: Path) -> None:
    result = invoke(loaded, "install", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    plist_path = home / "Library" / "LaunchAgents" / "com.ttsd.daemon.plist"
    assert plan["dry_run"] is True and plan["plist_path"] == str(plist_path)
    plist = plistlib.loads(plan["plist"].encode("utf-8"))
    assert plist["ProgramArguments"] == [plan["python"], "-m", "ttsd", "run"]
    assert Path(plan["python"]).is_absolute()
    assert plist["EnvironmentVariables"]["TTS_STATE_DIR"] == str(loaded.settings.state_dir)
    assert "hf_secret_value" not in result.output
    assert [launchd.LAUNCHCTL, "bootstrap", f"gui/{os.getuid()}", str(plist_path)] in plan["commands"]
    assert files_under(home) == [] and not loaded.settings.state_dir.exists()


def test_install_dry_run_shows_the_plist_and_commands(loaded: LoadedSettings, home: Path) -> None:
    result = invoke(loaded, "install", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would write" in result.output and "<key>ProcessType</key>" in result.output
    assert f"/bin/launchctl bootstrap gui/{os.getuid()}" in result.output
    assert "note" in result.output and files_under(home) == []


@pytest.mark.usefixtures("on_linux")
def test_install_off_macos_fails_with_the_way_forward(loaded: LoadedSettings, home: Path) -> None:
    result = invoke(loaded, "install")
    assert result.exit_code != 0
    assert isinstance(result.exception, LaunchdUnsupported)
    assert "--dry-run" in result.exception.message
    assert files_under(home) == []


@pytest.mark.usefixtures("on_linux")
def test_uninstall_dry_run_and_status_off_macos(loaded: LoadedSettings, home: Path) -> None:
    dry = json.loads(invoke(loaded, "uninstall", "--dry-run", "--json").output)
    assert dry["commands"] == [[launchd.LAUNCHCTL, "bootout", f"gui/{os.getuid()}/com.ttsd.daemon"]]
    assert dry["removed"] is None
    status = json.loads(invoke(loaded, "status", "--json").output)
    assert status["installed"] is False and status["loaded"] is False
    assert "macOS-only" in invoke(loaded, "status").output


def test_the_group_takes_the_folders_given_to_ttsd(loaded: LoadedSettings, tmp_path: Path) -> None:
    inbox = tmp_path / "elsewhere" / "inbox"
    args = ["--state-dir", str(loaded.settings.state_dir), "--inbox", str(inbox), "--outbox", str(tmp_path / "out")]
    result = CliRunner().invoke(ttsd_main, [*args, "launchd", "install", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    plist = plistlib.loads(json.loads(result.output)["plist"].encode("utf-8"))
    assert plist["EnvironmentVariables"]["TTS_INBOX"] == str(inbox)


# -- folders macOS keeps from an agent ------------------------------------------------------------------


def test_folders_macos_keeps_from_an_agent_are_noted(settings: Settings, home: Path) -> None:
    guarded = Settings(
        inbox=home / "Desktop" / "tts" / "inbox",
        outbox=home / "Documents" / "speech",
        state_dir=home / "Library" / "Application Support" / "ttsd",
        default_model="tiny",
    )
    notes = launchd.plan_install(guarded, PYTHON, home, UID, environ={}).notes
    assert [note.split(" is in ")[0] for note in notes] == [
        f"the inbox {guarded.inbox}",
        f"the outbox {guarded.outbox}",
    ]
    assert " is in Desktop, " in notes[0] and " is in Documents, " in notes[1]
    for note in notes:
        assert f"give ttsd's python ({PYTHON}) Full Disk Access, or Files and Folders access" in note
        assert "choose a folder outside Desktop, Documents, Downloads, iCloud Drive and /Volumes" in note
    assert launchd.plan_install(settings, PYTHON, home, UID, environ={}).notes == ()


def test_a_folder_reached_through_a_symlink_is_judged_where_it_leads(home: Path, tmp_path: Path) -> None:
    real = home / "Downloads" / "ttsd-out"
    real.mkdir(parents=True)
    link = tmp_path / "outbox-link"
    link.symlink_to(real, target_is_directory=True)
    linked = Settings(inbox=tmp_path / "inbox", outbox=link, state_dir=tmp_path / "state", default_model="tiny")
    [note] = launchd.plan_install(linked, PYTHON, home, UID, environ={}).notes
    assert note.startswith(f"the outbox {link} is in Downloads, ")


@pytest.fixture
def on_desktop(home: Path, monkeypatch: pytest.MonkeyPatch) -> LoadedSettings:
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    overrides = {"inbox": home / "Desktop" / "inbox", "outbox": home / "out", "state_dir": home / "state"}
    return load_settings(overrides=overrides, environ={})


def test_install_warns_of_a_protected_folder_in_dry_run_and_json(on_desktop: LoadedSettings, home: Path) -> None:
    expected = f"the inbox {home / 'Desktop' / 'inbox'} is in Desktop"
    human = invoke(on_desktop, "install", "--dry-run")
    assert human.exit_code == 0, human.output
    assert f"note     {expected}" in human.output
    [note] = json.loads(invoke(on_desktop, "install", "--dry-run", "--json").output)["notes"]
    assert note.startswith(expected)


@pytest.mark.usefixtures("on_linux")
def test_install_says_the_warning_before_it_changes_anything(on_desktop: LoadedSettings, home: Path) -> None:
    result = invoke(on_desktop, "install", "--json")
    assert isinstance(result.exception, LaunchdUnsupported), "the install itself refuses off macOS"
    assert f"note     the inbox {home / 'Desktop' / 'inbox'} is in Desktop" in result.stderr
