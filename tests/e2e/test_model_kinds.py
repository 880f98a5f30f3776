"""Every Qwen3-TTS model kind through a real daemon: CustomVoice, VoiceDesign and Base (voice clone)
on tiny checkpoints, plus what happens when a model's weights are not on the machine."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf

from tests.support.assertions import assert_real_wav
from tests.support.daemon_harness import DaemonEnv, wait_for


def test_design_clone_rejections_missing_weights_and_idle_unload(daemon_env: DaemonEnv) -> None:
    voices = daemon_env.inbox / "voices"
    voices.mkdir()
    noise = np.random.default_rng(0).standard_normal(48_000).astype(np.float32) * 0.1
    sf.write(voices / "narrator.wav", noise, 24_000)
    (daemon_env.root / "secret.wav").write_bytes((voices / "narrator.wav").read_bytes())

    daemon = daemon_env.start(TTS_MODEL_IDLE_S="1.5", TTS_MAX_LOADED_MODELS="3")
    daemon.wait_ready()
    jobs = {
        "design": {"text": "Designed voice.", "model": "tiny-design", "instruct": "A calm, low narrator."},
        "clone": {
            "text": "Cloned voice.",
            "model": "tiny-base",
            "ref_audio": "narrator.wav",
            "ref_text": "This is the reference transcript.",
        },
        "clone-xvec": {
            "text": "Cloned from the timbre alone.",
            "model": "tiny-base",
            "ref_audio": "narrator.wav",
        },
        "custom": {"text": "Custom voice.", "model": "tiny", "speaker": "Vivian", "instruct": "Cheerful."},
        "speaker-on-base": {
            "text": "x",
            "model": "tiny-base",
            "speaker": "Ryan",
            "ref_audio": "narrator.wav",
        },
        "design-without-instruct": {"text": "x", "model": "tiny-design"},
        "escape": {"text": "x", "model": "tiny-base", "ref_audio": "../secret.wav"},
        "absent-reference": {"text": "x", "model": "tiny-base", "ref_audio": "nobody.wav"},
        "not-downloaded": {"text": "Real weights, please.", "model": "qwen3-tts-0.6b", "speaker": "Ryan"},
    }
    for name, job in jobs.items():
        daemon_env.drop_json(f"{name}.json", job)

    for name in ("design", "clone", "clone-xvec", "custom"):
        document = daemon_env.wait_state(name, ("done", "failed"))
        assert document["state"] == "done", document
        assert_real_wav(daemon_env.outbox / f"{name}.wav")

    base_only = daemon_env.wait_state("speaker-on-base", ("rejected",))["error"]
    assert base_only["field"] == "speaker" and "takes ref_audio, ref_text, language" in base_only["message"]
    design = daemon_env.wait_state("design-without-instruct", ("rejected",))["error"]
    assert design["field"] == "instruct" and design["code"] == "missing_field"
    escape = daemon_env.wait_state("escape", ("rejected",))["error"]
    assert escape["field"] == "ref_audio"

    absent = daemon_env.wait_state("absent-reference", ("failed",))["error"]
    assert absent["code"] == "missing_reference" and "nobody.wav" in absent["message"]
    missing = daemon_env.wait_state("not-downloaded", ("failed",))
    assert missing["error"]["code"] == "model_unavailable"
    assert "huggingface-cli download Qwen/Qwen3-TTS-12Hz-0.6B-CustomVoice" in missing["error"]["message"]
    assert missing["attempts"] == 1

    def loaded_models() -> list[str]:
        status = json.loads(daemon_env.cli("status", "--json").stdout)
        return [row["model"] for row in status["daemon"]["loaded_models"]]

    # Unloading is the worker process's exit, after TTS_MODEL_IDLE_S without work.
    wait_for(lambda: "exits: idle" in daemon.log(), 30, "an idle model's worker to exit")
    wait_for(lambda: loaded_models() == [], 30, "every model's worker to exit after the idle time")
    assert daemon.terminate() == 0
