"""Saved voices on the tiny checkpoints: made from a recording or a design, kept in the library,
managed from the CLI, and spoken by both engines exactly as the recording itself would be."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner, Result

import ttsd.synth.engine.clone_prompts as clone_prompts_module
from tests.support.requests import reference_wav
from ttsd.cli import main
from ttsd.config import Settings
from ttsd.errors import PermanentEngineError
from ttsd.synth.engine.base import DevicePlan, SynthesisRequest
from ttsd.synth.engine.qwen import QwenEngine
from ttsd.synth.engine.stepping.engine import LoopEngine
from ttsd.synth.voice_making import make_from_design, make_from_recording
from ttsd.voicelib import SavedVoice, VoiceLibrary, VoiceRejected, load_prompt

FULL = DevicePlan("cpu", "float32", "sdpa")
GREEDY = {"do_sample": False, "subtalker_dosample": False}
TRANSCRIPT = "Hello, this is me."
TEXT = "Be here by noon."


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("TTS_TORCH_THREADS") or torch.get_num_threads()))


@pytest.fixture(scope="module")
def engines(tiny_models: Path) -> Iterator[dict[str, QwenEngine]]:
    """tiny-base on the official path and on ttsd's loop."""
    loaded = {
        "qwen-tts": QwenEngine.load("tiny-base", "base", tiny_models / "tiny-base", FULL, "paced"),
        "ttsd": LoopEngine.load("tiny-base", "base", tiny_models / "tiny-base", FULL, "paced"),
    }
    yield loaded
    for engine in loaded.values():
        engine.close()


@pytest.fixture(scope="module")
def recording(engines: dict[str, QwenEngine], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model's own output, as FLAC (a recording need not be WAV)."""
    folder = tmp_path_factory.mktemp("recording")
    engine = engines["qwen-tts"]
    request = SynthesisRequest(TRANSCRIPT, "English", ref_audio=reference_wav(folder), ref_text="A reference.")
    audio = engine.synthesize([request], GREEDY, seed=3)[0]
    path = folder / "take.flac"
    sf.write(path, audio, engine.sample_rate)
    return path


@pytest.fixture
def settings(tmp_path: Path, tiny_models: Path) -> Settings:
    models = tmp_path / "state" / "models"
    models.mkdir(parents=True)
    for built in tiny_models.iterdir():
        (models / built.name).symlink_to(built, target_is_directory=True)
    return Settings(
        state_dir=tmp_path / "state",
        inbox=tmp_path / "inbox",
        outbox=tmp_path / "outbox",
        device="cpu",
        dtype="float32",
        torch_threads=1,
    )


def saved_request(settings: Settings, voice: SavedVoice, text: str = TEXT) -> SynthesisRequest:
    path = VoiceLibrary(settings.saved_voices_dir).prompt_path(voice.name)
    return SynthesisRequest(text, "English", voice=voice.name, voice_prompt=path, voice_sha256=voice.prompt_sha256)


def spoken(engine: QwenEngine, request: SynthesisRequest) -> tuple[list[Any], np.ndarray]:
    takes = engine.generate([request], GREEDY, seed=7)
    return [row.tolist() for row in takes.rows], engine.decode(takes)[0]


@pytest.mark.parametrize("transcript", [TRANSCRIPT, None], ids=["in-context", "x-vector"])
def test_a_saved_voice_speaks_as_its_recording_does_on_both_engines(
    settings: Settings,
    recording: Path,
    engines: dict[str, QwenEngine],
    transcript: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    voice = make_from_recording(settings, "narrator", "tiny-base", recording, transcript)
    assert (voice.source, voice.model, voice.ref_text, voice.x_vector_only) == (
        "recording",
        "tiny-base",
        transcript,
        transcript is None,
    )
    reads: list[Path] = []
    real_load = load_prompt

    def counted(path: Path, sha256: str, name: str) -> dict[str, Any]:
        reads.append(path)
        return real_load(path, sha256, name)

    monkeypatch.setattr(clone_prompts_module, "load_prompt", counted)
    from_recording = SynthesisRequest(TEXT, "English", ref_audio=recording, ref_text=transcript)
    for engine in engines.values():
        expected = spoken(engine, from_recording)
        # The saved voice's prompt comes from its file: the recording's path is never taken again.
        monkeypatch.setattr(engine._model, "create_voice_clone_prompt", None)
        codes, audio = spoken(engine, saved_request(settings, voice))
        assert codes == expected[0]
        assert np.array_equal(audio, expected[1])
        spoken(engine, saved_request(settings, voice, "Once more."))
        monkeypatch.undo()
        monkeypatch.setattr(clone_prompts_module, "load_prompt", counted)
    assert len(reads) == len(engines), "each engine reads a saved prompt once"


def test_a_designed_voice_is_a_base_models_clone_of_the_designers_sample(
    settings: Settings, engines: dict[str, QwenEngine]
) -> None:
    voice = make_from_design(
        settings, "warm", "tiny-base", "tiny-design", "A warm, low narrator.", TRANSCRIPT, "English", seed=1
    )
    assert (voice.source, voice.description, voice.ref_text, voice.x_vector_only) == (
        "design",
        "A warm, low narrator.",
        TRANSCRIPT,
        False,
    )
    reference, rate = sf.read(VoiceLibrary(settings.saved_voices_dir).reference_path("warm"))
    assert rate == engines["qwen-tts"].sample_rate and len(reference) / rate == pytest.approx(voice.duration_s, 0.01)
    assert engines["ttsd"].synthesize([saved_request(settings, voice)], GREEDY, seed=1)[0].size


def test_a_voice_needs_the_right_kinds_of_model(settings: Settings, recording: Path) -> None:
    with pytest.raises(VoiceRejected, match="--model 'tiny' is a CustomVoice model; it must be a Base"):
        make_from_recording(settings, "x", "tiny", recording, None)
    with pytest.raises(VoiceRejected, match=r"--design-model 'tiny-base' is a Base .* must be a VoiceDesign"):
        make_from_design(settings, "x", "tiny-base", "tiny-base", "Calm.")
    assert VoiceLibrary(settings.saved_voices_dir).names() == []


@pytest.mark.parametrize(
    ("seconds", "problem"), [(0.0, "holds no audio"), (61.0, "61.0 s long; a voice's reference is at most 60 s")]
)
def test_an_empty_or_long_recording_is_refused(
    settings: Settings, tmp_path: Path, seconds: float, problem: str
) -> None:
    path = tmp_path / "take.wav"
    sf.write(path, np.zeros(int(seconds * 8_000), dtype=np.float32), 8_000)
    with pytest.raises(VoiceRejected, match=problem):
        make_from_recording(settings, "x", "tiny-base", path, None)


def test_a_recording_that_is_not_audio_is_refused(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("not audio")
    with pytest.raises(VoiceRejected, match="cannot be read as audio"):
        make_from_recording(settings, "x", "tiny-base", path, None)


@pytest.mark.parametrize("damage", ["changed", "gone"])
def test_a_damaged_or_missing_prompt_fails_the_job_naming_the_voice(
    settings: Settings, recording: Path, engines: dict[str, QwenEngine], damage: str
) -> None:
    # A transcript of its own: a prompt these module-wide engines have never read (one they hold in
    # memory is spoken as it is, the very prompt its job was accepted with).
    voice = make_from_recording(settings, "narrator", "tiny-base", recording, f"{TRANSCRIPT} {damage}")
    path = VoiceLibrary(settings.saved_voices_dir).prompt_path("narrator")
    if damage == "changed":
        path.write_bytes(path.read_bytes()[:-1] + b" ")
    else:
        path.unlink()
    for engine in engines.values():
        with pytest.raises(PermanentEngineError, match="'narrator'") as caught:
            engine.generate([saved_request(settings, voice)], GREEDY, seed=1)
        assert caught.value.code == {"changed": "damaged_voice", "gone": "missing_voice"}[damage]


def test_a_prompt_of_other_widths_is_refused(
    settings: Settings, recording: Path, engines: dict[str, QwenEngine]
) -> None:
    library = VoiceLibrary(settings.saved_voices_dir)
    prompt = {
        "ref_code": None,
        "ref_spk_embedding": np.zeros(3, dtype=np.float32),
        "x_vector_only_mode": True,
        "icl_mode": False,
        "ref_text": None,
    }
    voice = library.save("elsewhere", model="tiny-base", source="recording", prompt=prompt, recording=recording)
    with pytest.raises(PermanentEngineError, match="'elsewhere' was made for a model of other widths") as caught:
        engines["qwen-tts"].generate([saved_request(settings, voice)], GREEDY, seed=1)
    assert caught.value.code == "voice_model_mismatch"


def cli(settings: Settings, *args: str) -> Result:
    env = {"TTS_DEVICE": "cpu", "TTS_DTYPE": "float32", "TTS_TORCH_THREADS": "1"}
    return CliRunner().invoke(main, ["--state-dir", str(settings.state_dir), *args], env=env)


def test_the_cli_adds_lists_shows_and_removes_voices(settings: Settings, recording: Path) -> None:
    added = cli(
        settings,
        "voices",
        "add",
        "narrator",
        "--from",
        str(recording),
        "--text",
        TRANSCRIPT,
        "--model",
        "tiny-base",
        "--json",
    )
    assert added.exit_code == 0, added.output
    assert json.loads(added.output)["ref_text"] == TRANSCRIPT
    listed = cli(settings, "voices", "list", "--json")
    assert [v["name"] for v in json.loads(listed.output)] == ["narrator"]
    assert "narrator  tiny-base  recording" in cli(settings, "voices", "list").output
    shown = json.loads(cli(settings, "voices", "show", "narrator", "--json").output)
    assert shown["folder"] == str(settings.saved_voices_dir / "narrator") and shown["source"] == "recording"
    again = cli(settings, "voices", "add", "narrator", "--from", str(recording), "--model", "tiny-base")
    assert again.exit_code == 1 and "already saved (replace it with --force" in again.output
    removed = cli(settings, "voices", "remove", "narrator", "--json")
    assert json.loads(removed.output)["removed"] == "narrator"
    missing = cli(settings, "voices", "show", "narrator")
    assert missing.exit_code == 3 and "no saved voice 'narrator'; saved voices: none yet" in missing.output
    assert "Traceback" not in missing.output


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["voices", "add", "x"], "exactly one of --from RECORDING and --design"),
        (["voices", "add", ".x", "--design", "Calm."], "cannot start with '.'"),
        (["voices", "add", "x", "--from", "/nonexistent.wav"], "does not exist"),
        (["voices", "list", "--model", "tiny"], "No such option"),
        (["voices", "--refresh", "list"], "--model and --refresh belong to the bare"),
    ],
)
def test_the_cli_refuses_bad_usage(settings: Settings, args: list[str], problem: str) -> None:
    result = cli(settings, *args)
    assert result.exit_code == 2 and problem in result.output


def test_the_bare_command_still_lists_the_models_speakers(settings: Settings) -> None:
    result = cli(settings, "voices", "--model", "tiny-base", "--json")
    assert result.exit_code == 0, result.output
    assert [entry["model"] for entry in json.loads(result.output)] == ["tiny-base"]
