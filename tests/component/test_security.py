"""Security: hostile output names, planted symlinks, reference audio escaping voices/, URLs in job
fields, and the permissions of the state and of what ttsd delivers."""

from __future__ import annotations

import json
import os
import queue
import shutil
import stat
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import ttsd.fsutil as fsutil_module
from tests.support.fakes import REGISTRY, scratch_dir, take_now, umask, write_audio
from ttsd.catalog import ModelEntry
from ttsd.config import Settings
from ttsd.delivery.outbox import Outbox, UnsafeOutputPath
from ttsd.errors import JobRejected, PermanentEngineError
from ttsd.fsutil import TEMP_PREFIX, TEMP_SUFFIX
from ttsd.intake.folders import REASON_SUFFIX, REJECTED_DIR
from ttsd.intake.intake import Intake, IntakeSettings
from ttsd.intake.jobfile import JobDefaults, parse_job_file, parse_object
from ttsd.intake.watcher import Hint
from ttsd.jobqueue.store import Store
from ttsd.ops.lock import daemon_lock
from ttsd.synth.references import reference_path

BASE_MODEL = "fake-base"
DEFAULTS = JobDefaults(
    default_model="fake",
    default_sample_rate=24_000,
    max_text_length=600,
    max_job_chars=200_000,
    max_file_bytes=4 * 1024**2,
    registry={**REGISTRY, BASE_MODEL: ModelEntry(name=BASE_MODEL, kind="base", repo_id="test/fake-base")},
)
AUDIO = np.linspace(-0.5, 0.5, 160, dtype=np.float32)
VICTIM_BYTES = b"precious: must never change\n"
SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".status.json")


@contextmanager
def fresh_dir() -> Iterator[Path]:
    """A private folder per hypothesis example (in RAM where there is /dev/shm)."""
    with scratch_dir(Path(tempfile.gettempdir())) as base:
        folder = Path(tempfile.mkdtemp(prefix="ttsd-security-", dir=base))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def tree(root: Path) -> set[str]:
    """Every path under `root`, links not followed."""
    found = set()
    for folder, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            found.add(str(Path(folder, name).relative_to(root)))
    return found


def plant_victim(root: Path) -> Path:
    victim = root / "outside" / "victim"
    victim.parent.mkdir(parents=True, exist_ok=True)
    victim.write_bytes(VICTIM_BYTES)
    return victim


@pytest.fixture
def area(tmp_path: Path) -> Iterator[Path]:
    with scratch_dir(tmp_path) as root:
        yield root


# -- hostile output names ----------------------------------------------------------------------------

FRAGMENTS = (
    *("/", "\\", ".", "..", "~", "-", "_", " ", ":", "\x00", "\n", "\t", "a", "é", "中", "\u0301", "\u202e"),
    *("\u2215", "\u2044", "\uff0f", "\uff3c", "\u200b", "\ufeff", "$", "*", "?", "%2e", "%2f", "CON", "x.wav"),
)
# Path-shaped text: separators, dots and their look-alikes in every order hypothesis can think of.
PATHY = st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join)
# Names close to valid ones (letters, marks, digits, spaces and punctuation of every script), so a good
# share of examples is accepted and really written.
PLAUSIBLE = st.text(
    alphabet=st.characters(categories=("Lu", "Ll", "Lo", "Lm", "Nd", "No", "Mn"), include_characters=" ._-"),
    min_size=1,
    max_size=110,
)
NAMES = st.text(max_size=120) | PATHY | PLAUSIBLE


def check_name_stays_inside(name: str) -> None:
    """Parse `name` as an output; if accepted, every file it names lands inside the outbox."""
    try:
        spec = parse_object({"text": "hello", "output": name}, "default", DEFAULTS)
    except JobRejected as rejection:
        event("refused at parse")
        assert (rejection.code, rejection.field) == ("invalid_output", "output"), rejection
        with fresh_dir() as root, pytest.raises(UnsafeOutputPath):
            Outbox(root / "outbox").path_for(name, ".wav")
        return
    event("accepted, written")
    assert spec.name == name
    with fresh_dir() as root:
        plant_victim(root)
        outbox = Outbox(root / "outbox")
        before = tree(root)
        for suffix in SUFFIXES:
            path = outbox.path_for(name, suffix)
            assert path.resolve().parent == outbox.root.resolve(), (name, suffix)
            assert path.name == name + suffix
        info = write_audio(outbox, name, "wav", AUDIO, 8_000)
        outbox.write_status(name, {"name": name, "state": "done"})
        created = tree(root) - before
        assert created == {f"outbox/{name}.wav", f"outbox/{name}.status.json"}, created
        assert info.file == f"{name}.wav"
        assert (root / "outside" / "victim").read_bytes() == VICTIM_BYTES
        assert outbox.read_status(name) == {"name": name, "state": "done"}


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=NAMES)
@example(name="..")
@example(name="../../etc/passwd")
@example(name="/etc/passwd")
@example(name="a/../../b")
@example(name="~root")
@example(name="nul\x00byte")
@example(name="\u202egnp.exe")
@example(name="CON")
@example(name="x" * 100)
@example(name="中" * 66)
@example(name="a" + "\u0301" * 99)
def test_hostile_output_names_are_refused_or_stay_inside_the_outbox(name: str) -> None:
    check_name_stays_inside(name)


@settings(max_examples=300, deadline=None)
@given(name=NAMES)
def test_output_names_through_a_real_job_file_are_refused_or_safe(name: str) -> None:
    # Through the JSON decoder too: escapes can carry what a Python str literal would not.
    raw = json.dumps({"text": "hello", "output": name}).encode("utf-8")
    [entry] = parse_job_file("hostile.json", raw, DEFAULTS)
    if entry.spec is None:
        assert entry.rejection is not None and entry.rejection.field == "output"
        assert entry.rejection.code in ("invalid_output", "encoding")
        return
    check_name_stays_inside(entry.spec.name)


def test_a_lone_surrogate_escape_in_output_is_refused() -> None:
    [entry] = parse_job_file("s.json", b'{"text": "hi", "output": "a\\udc00b"}', DEFAULTS)
    assert entry.rejection is not None and entry.rejection.code == "encoding"


# -- planted symlinks in the outbox -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["audio", "status"])
def test_a_symlink_planted_at_the_output_is_replaced_not_written_through(area: Path, kind: str) -> None:
    victim = plant_victim(area)
    outbox = Outbox(area / "outbox")
    target = outbox.root / ("planted.wav" if kind == "audio" else "planted.status.json")
    target.symlink_to(victim)
    if kind == "audio":
        write_audio(outbox, "planted", "wav", AUDIO, 8_000)
    else:
        outbox.write_status("planted", {"state": "queued"})
    assert victim.read_bytes() == VICTIM_BYTES
    assert not target.is_symlink() and target.is_file()
    assert tree(area) == {"outside", "outside/victim", "outbox", f"outbox/{target.name}"}


def test_a_symlink_to_a_folder_planted_at_the_output_is_replaced(area: Path) -> None:
    elsewhere = area / "elsewhere"
    elsewhere.mkdir()
    outbox = Outbox(area / "outbox")
    (outbox.root / "dir.wav").symlink_to(elsewhere, target_is_directory=True)
    write_audio(outbox, "dir", "wav", AUDIO, 8_000)
    assert list(elsewhere.iterdir()) == []
    assert (outbox.root / "dir.wav").is_file() and not (outbox.root / "dir.wav").is_symlink()


FIXED = uuid.UUID("00000000-0000-4000-8000-0000000000ff")


@pytest.mark.parametrize("planted", ["symlink", "dangling", "file", "fifo"])
def test_a_planted_temp_name_is_never_written_through(
    area: Path, monkeypatch: pytest.MonkeyPatch, planted: str
) -> None:
    victim = plant_victim(area)
    outbox = Outbox(area / "outbox")
    monkeypatch.setattr(fsutil_module, "uuid", SimpleNamespace(uuid4=lambda: FIXED))
    temp = outbox.root / f"{TEMP_PREFIX}{FIXED.hex}{TEMP_SUFFIX}"
    missing = area / "outside" / "created-through-a-dangling-link"
    if planted == "symlink":
        temp.symlink_to(victim)
    elif planted == "dangling":
        temp.symlink_to(missing)
    elif planted == "file":
        temp.write_bytes(VICTIM_BYTES)
    else:
        os.mkfifo(temp)
    with pytest.raises(FileExistsError):
        outbox.write_status("target", {"state": "done"})
    with pytest.raises(FileExistsError):
        write_audio(outbox, "target", "wav", AUDIO, 8_000)
    assert victim.read_bytes() == VICTIM_BYTES
    assert not missing.exists(), "O_CREAT followed a dangling link"
    assert os.path.lexists(temp), "the planted entry is left alone, not deleted through"
    if planted == "file":
        assert temp.read_bytes() == VICTIM_BYTES
    assert not (outbox.root / "target.status.json").exists()
    assert not (outbox.root / "target.wav").exists()


def test_sweep_removes_only_real_temp_files_never_link_targets(area: Path) -> None:
    victim = plant_victim(area)
    outbox = Outbox(area / "outbox")
    (outbox.root / f"{TEMP_PREFIX}link{TEMP_SUFFIX}").symlink_to(victim)
    (outbox.root / f"{TEMP_PREFIX}left-by-a-crash{TEMP_SUFFIX}").write_bytes(b"partial")
    removed = outbox.sweep()
    assert [path.name for path in removed] == [f"{TEMP_PREFIX}left-by-a-crash{TEMP_SUFFIX}"]
    assert victim.read_bytes() == VICTIM_BYTES


def test_status_files_are_not_read_through_links_or_fifos(area: Path) -> None:
    secret = area / "outside" / "secret.json"
    secret.parent.mkdir()
    secret.write_text(json.dumps({"state": "done", "secret": "token"}), encoding="utf-8")
    outbox = Outbox(area / "outbox")
    (outbox.root / "linked.status.json").symlink_to(secret)
    os.mkfifo(outbox.root / "piped.status.json")
    (outbox.root / "deep.status.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    results: dict[str, object] = {}

    def read_all() -> None:
        for name in ("linked", "piped", "deep"):
            results[name] = outbox.read_status(name)

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():
        os.close(os.open(outbox.root / "piped.status.json", os.O_WRONLY | os.O_NONBLOCK))
        raise AssertionError("read_status blocked on a FIFO")
    assert results == {"linked": None, "piped": None, "deep": None}
    outbox.write_status("linked", {"state": "queued"})  # and rewriting one replaces the link
    assert json.loads(secret.read_text(encoding="utf-8"))["secret"] == "token"


def test_a_symlink_planted_at_a_reason_file_is_not_written_through(area: Path) -> None:
    victim = plant_victim(area)
    inbox = area / "inbox"
    settings = Settings(inbox=inbox, outbox=area / "outbox", state_dir=area / "state", default_model="tiny")

    store = Store(settings.db_path)
    try:
        hints: queue.Queue[Hint | None] = queue.Queue()
        intake = Intake(
            IntakeSettings.from_settings(settings), store, Outbox(settings.outbox), hints, threading.Event()
        )
        reason = inbox / REJECTED_DIR / f"evil.json{REASON_SUFFIX}"
        reason.symlink_to(victim)
        (inbox / "evil.json").write_bytes(b"{ not json")
        take_now(intake, inbox / "evil.json")
    finally:
        store.close()
    assert victim.read_bytes() == VICTIM_BYTES
    assert not reason.is_symlink() and "invalid_json" in reason.read_text(encoding="utf-8")


# -- reference audio ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ref_audio",
    [
        *("../x.wav", "../../etc/passwd", "/etc/passwd", "voices/x.wav", "sub/x.wav", ".hidden.wav", "..", "."),
        *("", "a\\b.wav", "x.wav/", "x.wav/.", "C:\\x.wav"),
    ],
)
def test_reference_paths_that_leave_voices_are_refused_at_parse(ref_audio: str) -> None:
    with pytest.raises(JobRejected) as refused:
        parse_object({"text": "clone me", "model": BASE_MODEL, "ref_audio": ref_audio}, "r", DEFAULTS)
    assert (refused.value.code, refused.value.field) == ("invalid_field", "ref_audio")


@pytest.fixture
def voices(area: Path) -> Path:
    folder = area / "inbox" / "voices"
    folder.mkdir(parents=True)
    (folder / "me.wav").write_bytes(b"RIFF....WAVE")
    (area / "outside").mkdir()
    (area / "outside" / "secret.wav").write_bytes(b"RIFF....WAVE secret")
    (area / "inbox" / "beside.wav").write_bytes(b"RIFF....WAVE beside")
    return folder


def test_a_reference_inside_voices_is_used(voices: Path) -> None:
    assert reference_path(voices, "me.wav") == (voices / "me.wav").resolve()


@pytest.mark.parametrize("ref_audio", ["../beside.wav", "../../outside/secret.wav", "ABSOLUTE"])
def test_worker_refuses_references_that_escape_voices(voices: Path, ref_audio: str) -> None:
    if ref_audio == "ABSOLUTE":
        ref_audio = str(voices.parent.parent / "outside" / "secret.wav")
    with pytest.raises(PermanentEngineError) as refused:
        reference_path(voices, ref_audio)
    assert refused.value.code == "bad_reference"


@pytest.mark.parametrize("layout", ["to-outside", "chain-to-outside", "to-inbox", "dir-link", "into-subdir"])
def test_worker_refuses_a_symlink_in_voices_that_resolves_outside(voices: Path, layout: str) -> None:
    outside = voices.parent.parent / "outside"
    link = voices / "linked.wav"
    if layout == "to-outside":
        link.symlink_to(outside / "secret.wav")
    elif layout == "chain-to-outside":
        (voices / "hop.wav").symlink_to(outside / "secret.wav")
        link.symlink_to(voices / "hop.wav")
    elif layout == "to-inbox":
        link.symlink_to(Path("..") / "beside.wav")  # relative, one level up
    elif layout == "dir-link":
        (voices / "outdir").symlink_to(outside, target_is_directory=True)
        link = voices / "outdir"
    else:
        (voices / "sub").mkdir()
        (voices / "sub" / "deep.wav").write_bytes(b"RIFF")
        link.symlink_to(voices / "sub" / "deep.wav")
    name = link.name if layout != "dir-link" else "outdir/secret.wav"
    with pytest.raises(PermanentEngineError) as refused:
        reference_path(voices, name)
    assert refused.value.code == "bad_reference"


def test_a_symlink_between_files_inside_voices_is_fine_and_a_fifo_is_not_a_reference(voices: Path) -> None:
    (voices / "alias.wav").symlink_to(voices / "me.wav")
    assert reference_path(voices, "alias.wav") == (voices / "me.wav").resolve()
    os.mkfifo(voices / "pipe.wav")
    with pytest.raises(PermanentEngineError) as refused:
        reference_path(voices, "pipe.wav")  # checked with stat, never opened
    assert refused.value.code == "missing_reference"


# -- URLs in job fields -------------------------------------------------------------------------------

URL_FIELDS = ("model", "speaker", "language", "instruct", "ref_audio", "ref_text", "id")
URLS = ("https://example.com/voice.wav", "HTTP://EXAMPLE.COM", "file:///etc/passwd", "  s3://bucket/key", "ftp://x/y")


@pytest.mark.parametrize("field", URL_FIELDS)
@pytest.mark.parametrize("url", URLS)
def test_a_url_in_any_string_field_is_refused(field: str, url: str) -> None:
    model = BASE_MODEL if field in ("ref_audio", "ref_text") else "fake"
    job = {"text": "hello", "model": model, field: url}
    raw = json.dumps(job).encode("utf-8")
    [entry] = parse_job_file("url.json", raw, DEFAULTS)
    assert entry.rejection is not None
    assert (entry.rejection.code, entry.rejection.field) == ("url_refused", field)


@settings(max_examples=100, deadline=None)
@given(
    field=st.sampled_from(URL_FIELDS),
    url=st.from_regex(r"\A\s?[A-Za-z][A-Za-z0-9+.\-]{0,12}://[!-~]{0,40}\Z"),
)
def test_any_scheme_url_in_any_string_field_is_refused(field: str, url: str) -> None:
    with pytest.raises(JobRejected) as refused:
        parse_object({"text": "hello", field: url}, "u", DEFAULTS)
    assert (refused.value.code, refused.value.field) == ("url_refused", field)


def test_a_url_may_be_read_out_but_never_names_an_output() -> None:
    spec = parse_object({"text": "Visit https://example.com today."}, "spoken", DEFAULTS)
    assert spec.text == "Visit https://example.com today."
    with pytest.raises(JobRejected) as refused:
        parse_object({"text": "x", "output": "https://example.com/x"}, "u", DEFAULTS)
    assert (refused.value.code, refused.value.field) == ("invalid_output", "output")


# -- permissions --------------------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_outputs_are_not_group_or_world_writable_even_under_umask_0(area: Path) -> None:
    outbox = Outbox(area / "outbox")
    with umask(0):
        write_audio(outbox, "loud", "wav", AUDIO, 8_000)
        outbox.write_status("loud", {"state": "done"})
    for name in ("loud.wav", "loud.status.json"):
        assert mode(outbox.root / name) & 0o022 == 0, f"{name}: {oct(mode(outbox.root / name))}"


def test_folders_ttsd_creates_are_not_group_or_world_writable_under_umask_0(area: Path) -> None:
    settings = Settings(inbox=area / "inbox", outbox=area / "outbox", state_dir=area / "state", default_model="tiny")

    with umask(0):
        outbox = Outbox(settings.outbox)
        store = Store(settings.db_path)
        try:
            hints: queue.Queue[Hint | None] = queue.Queue()
            Intake(IntakeSettings.from_settings(settings), store, outbox, hints, threading.Event())
        finally:
            store.close()
    for folder in (
        settings.outbox,
        settings.inbox / "accepted",
        settings.inbox / REJECTED_DIR,
        settings.inbox / "voices",
    ):
        assert mode(folder) & 0o022 == 0, f"{folder.name}: {oct(mode(folder))}"
    assert mode(settings.state_dir) & 0o077 == 0


def test_the_state_is_private_even_when_it_existed_with_open_modes(area: Path) -> None:
    settings = Settings(inbox=area / "inbox", outbox=area / "outbox", state_dir=area / "state")
    settings.state_dir.mkdir(mode=0o755)
    settings.state_dir.chmod(0o755)
    settings.db_path.write_bytes(b"")
    settings.db_path.chmod(0o644)
    with daemon_lock(settings):
        store = Store(settings.db_path)
        store.close()
    assert mode(settings.state_dir) == 0o700
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{settings.db_path}{suffix}")
        if path.exists():
            assert mode(path) == 0o600, f"{path.name}: {oct(mode(path))}"
