"""ttsd's own generation loop over qwen-tts' modules and weights (`TTS_ENGINE=ttsd`)."""
