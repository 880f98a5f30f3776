"""Settings (ttsd/config.py): defaults < ttsd.toml < TTS_* environment < overrides, validated once.

Every test passes its own `environ` and points TTS_STATE_DIR (or the config file) into tmp_path, so
neither the real environment nor a real ~/.../ttsd.toml can leak in.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from ttsd.config import CONFIG_FILE_NAME, Settings, load_settings
from ttsd.errors import ConfigError


def write_toml(directory: Path, text: str) -> Path:
    path = directory / CONFIG_FILE_NAME
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_with_nothing_set(tmp_path: Path) -> None:
    loaded = load_settings(environ={"TTS_STATE_DIR": str(tmp_path)})
    settings = loaded.settings
    assert loaded.sources == {"state_dir": "env"}
    assert loaded.config_file is None
    assert settings.default_model == "qwen3-tts-0.6b"
    assert (settings.device, settings.dtype) == ("auto", "auto")
    assert (settings.max_queue_size, settings.max_text_length, settings.default_sample_rate) == (
        32,
        600,
        24_000,
    )
    assert (settings.models, settings.preload_models) == ({}, ())
    assert settings.db_path == tmp_path / "ttsd.sqlite3"
    assert settings.models_dir == tmp_path / "models"
    assert settings.cache_dir == tmp_path / "cache"
    assert settings.lock_path == tmp_path / "daemon.lock"


@pytest.mark.parametrize(("platform", "expected"), [("linux", 0.3), ("darwin", 2.0)])
def test_the_stability_window_is_longer_where_intake_cannot_see_writers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, platform: str, expected: float
) -> None:
    monkeypatch.setattr(sys, "platform", platform)
    assert load_settings(environ={"TTS_STATE_DIR": str(tmp_path)}).settings.stable_s == expected
    overridden = load_settings(environ={"TTS_STATE_DIR": str(tmp_path), "TTS_STABLE_S": "0.5"}).settings
    assert overridden.stable_s == 0.5


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = load_settings(environ={"TTS_STATE_DIR": str(tmp_path)}).settings
    with pytest.raises(ValidationError):
        settings.max_batch = 9  # type: ignore[misc]


@pytest.mark.parametrize("in_table", [True, False])
def test_precedence_defaults_file_env_overrides(tmp_path: Path, in_table: bool) -> None:
    body = 'max_batch = 2\ndevice = "cpu"\nmax_attempts = 5\nlog_level = "debug"\n'
    config = write_toml(tmp_path, ("[ttsd]\n" if in_table else "") + body)
    environ = {"TTS_STATE_DIR": str(tmp_path), "TTS_MAX_BATCH": "3", "TTS_DEVICE": "cuda"}
    loaded = load_settings({"max_batch": 4, "dtype": None}, environ)
    settings = loaded.settings
    assert loaded.config_file == config
    assert (settings.max_batch, settings.device, settings.max_attempts, settings.log_level) == (
        4,
        "cuda",
        5,
        "DEBUG",
    )
    assert settings.dtype == "auto"  # a None override means "not given"
    assert loaded.sources == {
        "max_batch": "flag",
        "device": "env",
        "state_dir": "env",
        "max_attempts": f"file {config}",
        "log_level": f"file {config}",
    }


def test_env_beats_file_for_every_layered_key(tmp_path: Path) -> None:
    write_toml(tmp_path, '[ttsd]\ndefault_model = "tiny"\npreload_models = ["tiny"]\n')
    environ = {"TTS_STATE_DIR": str(tmp_path), "TTS_DEFAULT_MODEL": "tiny-base", "TTS_PRELOAD_MODELS": ""}
    settings = load_settings(environ=environ).settings
    # An empty variable counts as unset, so the file's preload list stays.
    assert (settings.default_model, settings.preload_models) == ("tiny-base", ("tiny",))


def test_config_file_is_found_in_the_state_dir_from_overrides(tmp_path: Path) -> None:
    config = write_toml(tmp_path, "max_batch = 7\n")
    loaded = load_settings({"state_dir": tmp_path}, environ={})
    assert (loaded.config_file, loaded.settings.max_batch) == (config, 7)


def test_tts_config_names_the_file_and_an_explicit_file_wins(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    from_env = write_toml(tmp_path / "a", "max_batch = 5\n")
    explicit = write_toml(tmp_path / "b", "max_batch = 6\n")
    environ = {"TTS_STATE_DIR": str(tmp_path), "TTS_CONFIG": str(from_env)}
    assert load_settings(environ=environ).settings.max_batch == 5
    assert load_settings(environ=environ, config_file=explicit).settings.max_batch == 6


def test_tts_models_as_json(tmp_path: Path) -> None:
    environ = {
        "TTS_STATE_DIR": str(tmp_path),
        "TTS_MODELS": ' {"mine": "/models/mine", "hub": "Org/Some-Model"} ',
    }
    settings = load_settings(environ=environ).settings
    assert settings.models == {"mine": "/models/mine", "hub": "Org/Some-Model"}


def test_tts_models_as_pairs(tmp_path: Path) -> None:
    environ = {"TTS_STATE_DIR": str(tmp_path), "TTS_MODELS": "a=/x, b = /y ,,"}
    assert load_settings(environ=environ).settings.models == {"a": "/x", "b": "/y"}


def test_tts_preload_models_is_a_comma_list(tmp_path: Path) -> None:
    environ = {"TTS_STATE_DIR": str(tmp_path), "TTS_PRELOAD_MODELS": " tiny, qwen3-tts-0.6b,, "}
    assert load_settings(environ=environ).settings.preload_models == ("tiny", "qwen3-tts-0.6b")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TTS_MODELS", "nonsense"),
        ("TTS_MODELS", "a="),
        ("TTS_MODELS", "=/x"),
        ("TTS_MODELS", "{not json"),
        ("TTS_MODELS", '{"a": 1}'),
        ("TTS_MODELS", '{"a": null}'),
        ("TTS_MODELS", '{"a": ""}'),
        ("TTS_MAX_BATCH", "many"),
        ("TTS_MAX_BATCH", "0"),
        ("TTS_MAX_QUEUE_SIZE", "1.5"),
        ("TTS_DEVICE", "gpu"),
        ("TTS_DTYPE", "float8"),
        ("TTS_ENABLE_CACHE", "maybe"),
        ("TTS_LOG_LEVEL", "verbose"),
        ("TTS_MODEL_IDLE_S", "-1"),
        ("TTS_MAX_TEXT_LENGTH", "5"),
        ("TTS_DEFAULT_SAMPLE_RATE", "1000"),
    ],
)
def test_invalid_env_values_name_the_variable(tmp_path: Path, variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_settings(environ={"TTS_STATE_DIR": str(tmp_path), variable: value})


@pytest.mark.parametrize(("value", "expected"), [("false", False), ("0", False), ("yes", True)])
def test_env_booleans(tmp_path: Path, value: str, expected: bool) -> None:
    environ = {"TTS_STATE_DIR": str(tmp_path), "TTS_ENABLE_CACHE": value}
    assert load_settings(environ=environ).settings.enable_cache is expected


def test_an_invalid_file_value_names_the_key_and_the_file(tmp_path: Path) -> None:
    config = write_toml(tmp_path, "max_batch = 0\n")
    with pytest.raises(ConfigError, match=rf"max_batch \(file {config}\)"):
        load_settings(environ={"TTS_STATE_DIR": str(tmp_path)})


def test_an_invalid_override_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"max_attempts \(flag\)"):
        load_settings({"max_attempts": 0}, environ={"TTS_STATE_DIR": str(tmp_path)})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[ttsd]\nmax_bacth = 2\n", "unknown setting(s) max_bacth"),
        ("max_bacth = 2\nwhatever = 1\n", "unknown setting(s) max_bacth, whatever"),
        ("max_batch = 2\n[ttsd]\ndevice = 'cpu'\n", "not beside it: max_batch"),
        ("ttsd = 5\n", "[ttsd] must be a table"),
        ("max_batch = \n", "ttsd.toml"),
    ],
)
def test_bad_config_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    write_toml(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"TTS_STATE_DIR": str(tmp_path)})
    assert message in caught.value.message


def test_a_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml"):
        load_settings(environ={"TTS_STATE_DIR": str(tmp_path)}, config_file=tmp_path / "missing.toml")


def test_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    environ = {"TTS_STATE_DIR": "state", "TTS_INBOX": "~/in", "TTS_OUTBOX": "../out"}
    settings = load_settings(environ=environ).settings
    assert settings.state_dir == tmp_path / "state"
    assert settings.inbox == tmp_path / "home" / "in"
    assert settings.outbox == tmp_path.parent / "out"
    assert Settings(state_dir=Path("s")).state_dir == tmp_path / "s"


def test_relative_state_dir_from_env_finds_its_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "state").mkdir()
    write_toml(tmp_path / "state", "max_batch = 8\n")
    assert load_settings(environ={"TTS_STATE_DIR": "state"}).settings.max_batch == 8


@pytest.mark.parametrize("outbox", ["box", "./box", "box/", "other/../box"])
def test_the_outbox_must_not_be_the_inbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, outbox: str) -> None:
    monkeypatch.chdir(tmp_path)
    environ = {"TTS_STATE_DIR": str(tmp_path), "TTS_INBOX": "box", "TTS_OUTBOX": outbox}
    with pytest.raises(ConfigError, match="TTS_OUTBOX: Value error, must not be the inbox"):
        load_settings(environ=environ)
