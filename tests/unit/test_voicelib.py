"""The saved voice library on disk: names, saving whole or not at all, reading back, damage."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

import ttsd.voicelib.library as library_module
from ttsd.fsutil import temp_name
from ttsd.voicelib import (
    PROMPT_FILE,
    REFERENCE_FILE,
    VOICE_FILE,
    DamagedVoice,
    VoiceLibrary,
    VoiceNotFound,
    VoiceRejected,
    load_prompt,
    voice_name_problem,
)
from ttsd.voicelib.prompt_file import sha256_of


def icl_prompt(ref_text: str = "Hello there.") -> dict[str, Any]:
    return {
        "ref_code": np.arange(48, dtype=np.int64).reshape(3, 16),
        "ref_spk_embedding": np.linspace(-1, 1, 8, dtype=np.float32),
        "x_vector_only_mode": False,
        "icl_mode": True,
        "ref_text": ref_text,
    }


def xvector_prompt() -> dict[str, Any]:
    return {**icl_prompt(), "ref_code": None, "x_vector_only_mode": True, "icl_mode": False, "ref_text": None}


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    path = tmp_path / "take.wav"
    sf.write(path, np.zeros(8_000, dtype=np.float32), 16_000)
    return path


@pytest.fixture
def library(tmp_path: Path) -> VoiceLibrary:
    return VoiceLibrary(tmp_path / "state" / "voices")


def save(library: VoiceLibrary, recording: Path, name: str = "narrator", **kwargs: Any) -> Any:
    fields = {"model": "tiny-base", "source": "recording", "prompt": icl_prompt(), "recording": recording, **kwargs}
    return library.save(name, **fields)


@pytest.mark.parametrize("name", ["narrator", "Ann-2", "a", "v1.0_final", "x" * 64, "_hidden-not"])
def test_good_names(name: str) -> None:
    assert voice_name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "empty"),
        ("x" * 65, "at most 64"),
        (".secret", "start with '.'"),
        ("..", "start with '.'"),
        ("a/b", "letters, digits"),
        ("café", "letters, digits"),
        ("two words", "letters, digits"),
    ],
)
def test_bad_names_say_why(name: str, problem: str) -> None:
    assert problem in (voice_name_problem(name) or "")


def test_a_saved_voice_reads_back_whole(library: VoiceLibrary, recording: Path) -> None:
    saved = save(library, recording, description=None)
    folder = library.root / "narrator"
    assert sorted(p.name for p in folder.iterdir()) == sorted([VOICE_FILE, PROMPT_FILE, REFERENCE_FILE])
    assert library.get("narrator") == saved
    assert saved.ref_text == "Hello there." and not saved.x_vector_only and saved.duration_s == 0.5
    assert json.loads((folder / VOICE_FILE).read_text())["prompt_sha256"] == saved.prompt_sha256
    assert (folder / REFERENCE_FILE).read_bytes() == recording.read_bytes()
    assert library.prompt_path("narrator") == folder / PROMPT_FILE
    fields = load_prompt(library.prompt_path("narrator"), saved.prompt_sha256, "narrator")
    expected = icl_prompt()
    assert np.array_equal(fields["ref_code"], expected["ref_code"])
    assert np.array_equal(fields["ref_spk_embedding"], expected["ref_spk_embedding"])
    assert {k: fields[k] for k in ("x_vector_only_mode", "icl_mode", "ref_text")} == {
        "x_vector_only_mode": False,
        "icl_mode": True,
        "ref_text": "Hello there.",
    }


def test_an_x_vector_voice_has_no_codes_and_no_text(library: VoiceLibrary, recording: Path) -> None:
    saved = save(library, recording, prompt=xvector_prompt())
    fields = load_prompt(library.prompt_path("narrator"), saved.prompt_sha256, "narrator")
    assert saved.x_vector_only and saved.ref_text is None
    assert fields["ref_code"] is None and fields["ref_text"] is None and fields["x_vector_only_mode"]


def test_the_prompt_hash_covers_the_transcript(library: VoiceLibrary, recording: Path) -> None:
    one = save(library, recording, "one", prompt=icl_prompt("Hello there."))
    other = save(library, recording, "other", prompt=icl_prompt("Hello, there."))
    assert one.prompt_sha256 != other.prompt_sha256
    assert one.recording_sha256 == other.recording_sha256


def test_list_is_sorted_and_skips_damaged_voices(
    library: VoiceLibrary, recording: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("zed", "Amy", "bob"):
        save(library, recording, name)
    (library.root / "bob" / VOICE_FILE).write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert [v.name for v in library.list()] == ["Amy", "zed"]
    assert "bob" in caplog.text


def test_a_missing_voice_names_the_saved_ones(library: VoiceLibrary, recording: Path) -> None:
    with pytest.raises(VoiceNotFound, match="saved voices: none yet"):
        library.get("narrator")
    save(library, recording, "Amy")
    with pytest.raises(
        VoiceNotFound, match=r"no saved voice 'amy' \(did you mean 'Amy'\?.*saved voices: Amy"
    ) as caught:
        library.get("amy")
    assert caught.value.voice == "amy" and caught.value.code == "missing_voice"
    with pytest.raises(VoiceNotFound, match="cannot start with"):
        library.get("../Amy")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{broken", "voice.json is invalid"),
        ('{"name": "narrator"}', "voice.json is invalid at model"),
        (None, "voice.json is missing"),
    ],
)
def test_a_damaged_voice_file_says_what_is_wrong(
    library: VoiceLibrary, recording: Path, content: str | None, problem: str
) -> None:
    save(library, recording)
    voice_file = library.root / "narrator" / VOICE_FILE
    if content is None:
        voice_file.unlink()
    else:
        voice_file.write_text(content)
    with pytest.raises(DamagedVoice, match=f"'narrator' is damaged: {problem}") as caught:
        library.get("narrator")
    assert caught.value.code == "damaged_voice"


def test_a_voice_file_naming_another_voice_is_damaged(library: VoiceLibrary, recording: Path) -> None:
    save(library, recording)
    (library.root / "narrator").rename(library.root / "copy")
    with pytest.raises(DamagedVoice, match="names the voice 'narrator'"):
        library.get("copy")


def test_a_changed_or_missing_prompt_file_is_refused(library: VoiceLibrary, recording: Path) -> None:
    saved = save(library, recording)
    path = library.prompt_path("narrator")
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(DamagedVoice, match="'narrator' is damaged: its prompt file changed"):
        load_prompt(path, saved.prompt_sha256, "narrator")
    path.unlink()
    with pytest.raises(VoiceNotFound, match=r"its prompt file .* is gone"):
        load_prompt(path, saved.prompt_sha256, "narrator")


def test_a_prompt_file_that_is_not_safetensors_is_damaged(library: VoiceLibrary, recording: Path) -> None:
    save(library, recording)
    path = library.prompt_path("narrator")
    path.write_bytes(b"garbage")
    with pytest.raises(DamagedVoice, match="not a readable safetensors file"):
        load_prompt(path, sha256_of(b"garbage"), "narrator")


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"ref_spk_embedding": np.zeros((2, 2), np.float32)}, "ref_spk_embedding must be"),
        ({"ref_code": np.zeros(3, np.int64)}, "ref_code must be"),
        ({"icl_mode": "yes"}, "must be booleans"),
        ({"ref_text": None}, "needs ref_code and ref_text"),
    ],
)
def test_a_malformed_prompt_is_not_saved(
    library: VoiceLibrary, recording: Path, change: dict[str, Any], problem: str
) -> None:
    with pytest.raises(VoiceRejected, match=problem):
        save(library, recording, prompt={**icl_prompt(), **change})
    assert library.names() == []


def test_names_are_unique_regardless_of_case(library: VoiceLibrary, recording: Path) -> None:
    save(library, recording, "Narrator")
    with pytest.raises(VoiceRejected, match="differs only in case from the saved voice 'Narrator'"):
        save(library, recording, "narrator", force=True)
    with pytest.raises(VoiceRejected, match="already saved"):
        save(library, recording, "Narrator")
    with pytest.raises(VoiceRejected, match="cannot start with"):
        save(library, recording, ".x")


def test_force_replaces_a_voice(library: VoiceLibrary, recording: Path) -> None:
    save(library, recording)
    replaced = save(library, recording, prompt=icl_prompt("New words."), force=True)
    assert library.get("narrator") == replaced and replaced.ref_text == "New words."
    assert library.names() == ["narrator"]
    assert not list(library.root.glob(".ttsd-*"))


def test_a_failed_save_leaves_nothing_and_keeps_the_old_voice(
    library: VoiceLibrary, recording: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = save(library, recording)
    written: list[Path] = []

    def fail_on_second(target: Path, data: bytes) -> None:
        written.append(target)
        if len(written) == 2:
            raise OSError(28, "No space left on device")
        target.write_bytes(data)

    monkeypatch.setattr(library_module, "atomic_write", fail_on_second)
    with pytest.raises(OSError, match="No space"):
        save(library, recording, prompt=icl_prompt("Other."), force=True)
    assert library.get("narrator") == old
    assert library.names() == ["narrator"] and not list(library.root.glob(".ttsd-*"))


def test_remove_deletes_even_a_damaged_voice(library: VoiceLibrary, recording: Path) -> None:
    saved = save(library, recording)
    save(library, recording, "broken")
    (library.root / "broken" / VOICE_FILE).write_text("[]")
    assert library.remove("narrator") == saved
    assert library.remove("broken") is None
    assert library.names() == [] and not list(library.root.iterdir())
    with pytest.raises(VoiceNotFound):
        library.remove("narrator")


def test_a_crashed_saves_leftovers_are_swept_later(library: VoiceLibrary, recording: Path) -> None:
    library.root.mkdir(parents=True)
    stale, fresh = library.root / temp_name(), library.root / temp_name()
    for folder in (stale, fresh):
        folder.mkdir()
    hour_ago = time.time() - 2 * library_module.STALE_TEMP_S
    os.utime(stale, (hour_ago, hour_ago))
    save(library, recording)
    assert not stale.exists() and fresh.exists()
    assert library.names() == ["narrator"]


def test_an_unreadable_recording_is_refused(library: VoiceLibrary, tmp_path: Path) -> None:
    with pytest.raises(VoiceRejected, match="cannot be read"):
        save(library, tmp_path / "absent.wav")


def test_a_changed_prompt_is_found_when_the_voice_is_named(library: VoiceLibrary, recording: Path) -> None:
    save(library, recording, "kept")
    save(library, recording, "tampered")
    path = library.prompt_path("tampered")
    data = bytearray(path.read_bytes())
    data[-10:] = b"x" * 10
    path.write_bytes(bytes(data))
    with pytest.raises(DamagedVoice, match=r"tampered.*changed since it was saved"):
        library.get("tampered")
    assert [voice.name for voice in library.list()] == ["kept"]
    assert voice_name_problem("-rf") == "a voice name cannot start with '.' or '-'"


def test_a_voice_named_in_another_case_is_pointed_to(library: VoiceLibrary, recording: Path) -> None:
    save(library, recording, "good")
    with pytest.raises(VoiceNotFound, match=r"no saved voice 'GOOD' \(did you mean 'good'\?"):
        library.get("GOOD")
