"""Decoding audio bytes in tests with PyAV (ffmpeg), independently of ttsd's own encoders."""

from __future__ import annotations

import io

import av
import numpy as np

_CONTAINERS = {"mp3": "mp3", "opus": "ogg", "aac": "aac", "flac": "flac", "wav": "wav", "ogg": "ogg"}


def decode_audio(data: bytes, fmt: str, pcm_rate: int = 24_000) -> tuple[np.ndarray, int]:
    """Mono float32 samples and the sample rate of an audio file's bytes (raw `pcm`: s16le at `pcm_rate`)."""
    if fmt == "pcm":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0, pcm_rate
    pieces: list[np.ndarray] = []
    with av.open(io.BytesIO(data), mode="r", format=_CONTAINERS[fmt]) as container:
        stream = container.streams.audio[0]
        rate = int(stream.codec_context.sample_rate or stream.rate)
        to_float = av.AudioResampler(format="flt", layout="mono", rate=rate)
        for frame in container.decode(stream):
            pieces.extend(out.to_ndarray().reshape(-1) for out in to_float.resample(frame))
        pieces.extend(out.to_ndarray().reshape(-1) for out in to_float.resample(None))
    return (np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, np.float32)), rate
