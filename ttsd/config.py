"""One frozen settings object, built once from defaults, an optional `ttsd.toml`, the environment and
explicit overrides (in rising precedence), validated once, with the source of every value kept."""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from ttsd.database_url import check_url, is_postgres_url, scheme_of
from ttsd.errors import ConfigError
from ttsd.templates import DRAIN_PLACEHOLDERS, JOB_PLACEHOLDERS, parse_template

ENV_PREFIX = "TTS_"
CONFIG_FILE_NAME = "ttsd.toml"
VOICES_DIR = "voices"
"""The inbox folder of reference recordings that voice-clone jobs name."""

Device = Literal["auto", "mps", "cuda", "cpu"]
Dtype = Literal["auto", "float16", "bfloat16", "float32"]


def default_state_dir() -> Path:
    """The per-user state folder (queue database, cache, built models): platformdirs' standard place."""
    return platformdirs.user_state_path("ttsd", appauthor=False)


def default_stable_s() -> float:
    """How long a file written in place must stay unchanged before intake takes it. On Linux intake
    also sees whether a process still holds the file open for writing, so the window is only a safety
    net; elsewhere (macOS) it is the whole rule, and a longer one lets a slow writer pause."""
    return 0.3 if sys.platform.startswith("linux") else 2.0


def parse_http_address(address: str) -> tuple[str, int]:
    """`host:port` (`[v6]:port` for IPv6, or a bare port for loopback) -> (host, port)."""
    text = address.strip()
    if text.isdigit():
        text = f"127.0.0.1:{text}"
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port (like 127.0.0.1:8765), got {address!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseModel):
    """Every tunable of the daemon and CLI. Env names are `TTS_` plus the field name in capitals."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    inbox: Path = Field(default_factory=lambda: Path("inbox").absolute())
    outbox: Path = Field(default_factory=lambda: Path("outbox").absolute())
    state_dir: Path = Field(default_factory=default_state_dir)

    default_model: str = "qwen3-tts-0.6b"
    models: dict[str, str] = Field(default_factory=dict)
    preload_models: tuple[str, ...] = ()
    device: Device = "auto"
    dtype: Dtype = "auto"
    hf_mirror: str | None = None

    # "ttsd": ttsd's own generation loop (continuous batching, per-row seeds); "qwen-tts": the
    # official generate calls. The loop falls back to the official path by itself if it fails.
    engine: Literal["ttsd", "qwen-tts"] = "ttsd"

    max_queue_size: int = Field(32, ge=1)
    max_concurrency_per_model: int = Field(1, ge=1, le=16)
    # "auto": each worker measures the batch size when it loads its model (ttsd.synth.batch_size).
    max_batch: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = "auto"
    max_attempts: int = Field(3, ge=1, le=100)
    model_idle_s: float = Field(600.0, gt=0)
    max_loaded_models: int = Field(2, ge=1, le=16)
    # "auto": one thread on small machines, where torch's one per core collapses beside any other
    # load; half the cores on bigger ones (ttsd.config.torch_threads). 0: torch's own default.
    torch_threads: Annotated[int, Field(ge=0, le=256)] | Literal["auto"] = "auto"
    # The tiny test models end their speech after a length that follows the text, like trained ones;
    # off, they never stop by themselves (for runaway tests).
    tiny_eos: bool = True

    enable_cache: bool = True
    cache_size: int = Field(2048, ge=0)
    cache_max_bytes: int = Field(2 * 1024**3, ge=0)

    max_text_length: int = Field(600, ge=20, le=10_000)
    max_job_chars: int = Field(200_000, ge=1)
    max_job_file_bytes: int = Field(4 * 1024**2, ge=1024)
    default_sample_rate: int = Field(24_000, ge=8_000, le=192_000)

    lease_s: float = Field(60.0, gt=0)
    # Empty: the SQLite file in the state directory (one machine). A postgresql:// URL: the queue in
    # PostgreSQL, shared by every host that names it (ttsd.jobqueue.postgres).
    database_url: str = ""
    # On a shared database, idle workers are woken by LISTEN/NOTIFY; this slow poll is the safety net.
    database_poll_s: float = Field(5.0, gt=0, le=300)
    # None: <state_dir>/cache. Hosts sharing a database share the cache index: point them all at one
    # shared folder here, or hits made elsewhere are misses.
    cache_folder: Path | None = None
    scan_interval_s: float = Field(2.0, gt=0)
    stable_s: float = Field(default_factory=default_stable_s, ge=0)
    shutdown_grace_s: float = Field(20.0, ge=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # None: <state_dir>/logs/ttsd.log (ttsd.ops.logs.log_file_path).
    log_file: Path | None = None
    log_max_bytes: int = Field(10 * 1024**2, ge=1024)
    # At least one: with none, RotatingFileHandler never rolls over and the file grows without end.
    log_backups: int = Field(5, ge=1, le=100)

    # Completion hooks (ttsd.ops.hooks): command templates run without a shell. Only the settings can
    # name a command; a job file never can.
    on_job_done: str | None = None
    on_queue_drained: str | None = None
    hook_timeout_s: float = Field(30.0, gt=0, le=3600)
    notify: bool = False

    # The HTTP front door (ttsd.http): off unless an address is given. Any local user can reach a
    # loopback port; binding anything else needs `api_key`.
    http: str | None = None
    api_key: str | None = Field(None, min_length=16)
    # How `POST /v1/tts` hands back audio: inline (base64) or as a URL to fetch (file).
    output_mode: Literal["base64", "file"] = "base64"
    cors_origins: tuple[str, ...] = ()
    http_max_body_bytes: int = Field(1024**2, ge=1024, le=64 * 1024**2)
    # How long a request that answers with audio waits for its job; the job itself goes on after.
    http_wait_s: float = Field(600.0, gt=0)

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, url: str) -> str:
        url = url.strip()
        if url and not is_postgres_url(url):
            # Never the URL itself: it may hold a password.
            raise ValueError(
                f"expected empty (SQLite in the state directory) or a postgresql:// URL, got {scheme_of(url)}"
            )
        if url:
            check_url(url)
        return url

    @field_validator("cache_folder")
    @classmethod
    def _absolute_cache_folder(cls, path: Path | None) -> Path | None:
        return None if path is None else path.expanduser().absolute()

    @field_validator("inbox", "outbox", "state_dir")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        # normpath folds "x/../y", so two spellings of one folder compare (and display) equal.
        return Path(os.path.normpath(path.expanduser().absolute()))

    @field_validator("outbox")
    @classmethod
    def _apart_from_inbox(cls, outbox: Path, info: ValidationInfo) -> Path:
        # Status files end in .json: written into the inbox they would be taken as job files.
        if outbox == info.data.get("inbox"):
            raise ValueError("must not be the inbox folder")
        return outbox

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, level: object) -> object:
        return level.upper() if isinstance(level, str) else level

    @field_validator("log_file")
    @classmethod
    def _absolute_log_file(cls, path: Path | None) -> Path | None:
        return None if path is None else Path(os.path.normpath(path.expanduser().absolute()))

    @field_validator("on_job_done", "on_queue_drained")
    @classmethod
    def _hook_template(cls, template: str | None, info: ValidationInfo) -> str | None:
        # Checked here, once, so a typo in a placeholder stops the daemon at start rather than
        # failing every job's hook later.
        if template is None or not template.strip():
            return None
        placeholders = JOB_PLACEHOLDERS if info.field_name == "on_job_done" else DRAIN_PLACEHOLDERS
        parse_template(template, placeholders)
        return template

    @field_validator("http")
    @classmethod
    def _http_address(cls, address: str | None) -> str | None:
        if address is None or not address.strip():
            return None
        parse_http_address(address)
        return address.strip()

    @model_validator(mode="after")
    def _key_for_open_binds(self) -> Settings:
        # Anyone on the network could otherwise queue work, read every job and fetch its audio.
        if self.http is not None and not is_loopback(parse_http_address(self.http)[0]) and not self.api_key:
            raise ValueError(f"http binds {self.http}, which is not a loopback address: set TTS_API_KEY as well")
        return self

    @property
    def db_path(self) -> Path:
        """The SQLite queue file inside the state directory (used unless `database_url` is set)."""
        return self.state_dir / "ttsd.sqlite3"

    @property
    def queue_target(self) -> Path | str:
        """Where the queue is: the PostgreSQL URL when one is set, else the SQLite file."""
        return self.database_url or self.db_path

    @property
    def shared_queue(self) -> bool:
        """Whether the queue is a database several hosts may share (PostgreSQL)."""
        return bool(self.database_url)

    @property
    def queue_poll_s(self) -> float:
        """How often an idle worker looks at the queue unasked: each second on SQLite (cheap, one
        host); slowly on a shared database, where notifications wake it."""
        return self.database_poll_s if self.shared_queue else 1.0

    @property
    def lock_path(self) -> Path:
        """The file whose lock marks the one daemon serving this state directory."""
        return self.state_dir / "daemon.lock"

    @property
    def voices_dir(self) -> Path:
        """Reference recordings for voice-clone jobs (`ref_audio` names a file here)."""
        return self.inbox / VOICES_DIR

    @property
    def voices_cache(self) -> Path:
        """What `ttsd voices` found in the checkpoints last time (finding them is slow)."""
        return self.state_dir / "voices.json"

    @property
    def saved_voices_dir(self) -> Path:
        """The saved voice library (`ttsd voices add`): one folder per voice."""
        return self.state_dir / "voices"

    @property
    def models_dir(self) -> Path:
        """Where locally built checkpoints (the `tiny` family) live."""
        return self.state_dir / "models"

    @property
    def cache_dir(self) -> Path:
        """Where cached audio lives."""
        return self.cache_folder or self.state_dir / "cache"


class LoadedSettings(BaseModel):
    """The settings plus, for each field that was not a default, where its value came from."""

    model_config = ConfigDict(frozen=True)

    settings: Settings
    sources: dict[str, str]
    config_file: Path | None


SMALL_MACHINE_CORES = 4


def torch_threads(settings: Settings, cores: int | None = None) -> int:
    """The torch threads a worker uses (0: torch's default). On a machine of `SMALL_MACHINE_CORES` or
    fewer, one: with more, OpenMP's spinning threads made calls 5-20x slower whenever anything else
    ran, while one thread is within about 10 % on an idle machine. On a bigger one, half the cores:
    the other half serve the codec thread, intake and whatever else the Mac is doing."""
    if settings.torch_threads != "auto":
        return settings.torch_threads
    cores = cores or os.cpu_count() or 1
    return 1 if cores <= SMALL_MACHINE_CORES else cores // 2


def _parse_models(raw: str) -> dict[str, str]:
    """`TTS_MODELS` is a JSON object or `name=dir,name2=dir2`."""
    raw = raw.strip()
    if raw.startswith("{"):
        parsed = json.loads(raw)
        # str() would turn a null or a number into a plausible-looking but bogus model path.
        if not isinstance(parsed, dict) or not all(
            isinstance(v, str) and v.strip() and k.strip() for k, v in parsed.items()
        ):
            raise ValueError("expected a JSON object of name -> directory or id (non-empty strings)")
        return dict(parsed)
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, sep, target = item.partition("=")
        if not sep or not name.strip() or not target.strip():
            raise ValueError(f"expected name=directory, got {item!r}")
        pairs[name.strip()] = target.strip()
    return pairs


def _env_values(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in Settings.model_fields:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is None or raw == "":
            continue
        try:
            if name == "models":
                values[name] = _parse_models(raw)
            elif name in ("preload_models", "cors_origins"):
                values[name] = tuple(part.strip() for part in raw.split(",") if part.strip())
            else:
                values[name] = raw
        except ValueError as exc:
            raise ConfigError(f"{ENV_PREFIX}{name.upper()}: {exc}") from exc
    return values


def _file_values(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    section = data.get("ttsd", data)
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: [ttsd] must be a table")
    if section is not data and len(data) > 1:
        # Keys above a [ttsd] table would otherwise be ignored without a word.
        stray = ", ".join(sorted(set(data) - {"ttsd"}))
        raise ConfigError(f"{path}: settings belong inside the [ttsd] table, not beside it: {stray}")
    unknown = sorted(set(section) - set(Settings.model_fields))
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}")
    return dict(section)


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> LoadedSettings:
    """Build the settings: defaults < ttsd.toml < TTS_* environment < overrides (CLI flags).

    The config file is `config_file`, else `$TTS_CONFIG`, else `<state_dir>/ttsd.toml` if it exists.
    """
    environ = os.environ if environ is None else environ
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    env_values = _env_values(environ)

    if config_file is None and environ.get("TTS_CONFIG"):
        config_file = Path(environ["TTS_CONFIG"])
    if config_file is None:
        state_dir = overrides.get("state_dir") or env_values.get("state_dir") or default_state_dir()
        candidate = Path(state_dir).expanduser() / CONFIG_FILE_NAME
        config_file = candidate if candidate.is_file() else None
    file_values = _file_values(config_file) if config_file is not None else {}

    sources: dict[str, str] = {}
    merged: dict[str, Any] = {}
    for layer, label in ((file_values, f"file {config_file}"), (env_values, "env"), (overrides, "flag")):
        for key, value in layer.items():
            merged[key] = value
            sources[key] = label
    try:
        settings = Settings(**merged)
    except ValidationError as exc:
        problems = "; ".join(_problem(err["loc"], err["msg"], sources) for err in exc.errors())
        raise ConfigError(f"invalid settings: {problems}") from exc
    return LoadedSettings(settings=settings, sources=sources, config_file=config_file)


def with_override(loaded: LoadedSettings, field: str, value: Any) -> LoadedSettings:
    """`loaded` with one more setting given as a flag, validated like every other."""
    merged = {**loaded.settings.model_dump(exclude_unset=True), field: value}
    sources = {**loaded.sources, field: "flag"}
    try:
        settings = Settings(**merged)
    except ValidationError as exc:
        problems = "; ".join(_problem(err["loc"], err["msg"], sources) for err in exc.errors())
        raise ConfigError(f"invalid settings: {problems}") from exc
    return LoadedSettings(settings=settings, sources=sources, config_file=loaded.config_file)


def _problem(loc: tuple[int | str, ...], message: str, sources: Mapping[str, str]) -> str:
    # A check across several settings has no single field to name.
    return f"{_setting_label(str(loc[0]), sources)}: {message}" if loc else message.removeprefix("Value error, ")


def _setting_label(field: str, sources: Mapping[str, str]) -> str:
    source = sources.get(field)
    if source == "env":
        return ENV_PREFIX + field.upper()
    return f"{field} ({source})" if source else field
