"""Encoding into every delivered format, whole and streamed, and the speed change: each result is
decoded back with PyAV and measured."""

from __future__ import annotations

import io
import struct

import av
import numpy as np
import pytest

from ttsd.audio import SPEED_RANGE, change_speed
from ttsd.encoding import FORMATS, MEDIA_TYPES, STREAM_FORMATS, SUFFIXES, AudioFormat, StreamEncoder, encode

RATE = 24_000
OPUS_DECODE_RATE = 48_000  # an Opus decoder always plays at 48 kHz, whatever rate went in
# Samples a decoder plays beyond the input that nothing in the file tells it to drop: ADTS has no
# field for AAC's 1024 priming samples, and a streamed MP3 has no LAME tag to carry LAME's delay
# (576 + 529). Each also pads its last frame: up to 1024 samples for AAC, 576 for MP3 at 24 kHz. An
# m4b's edit list drops the priming, but not the padding.
WHOLE_EXTRA = {"aac": 1024 + 1024, "m4b": 1024}
STREAM_EXTRA = {"aac": 1024 + 1024, "mp3": 576 + 529 + 576}


def tone(seconds: float, rate: int = RATE, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def noise(seconds: float, rate: int = RATE) -> np.ndarray:
    return np.random.default_rng(7).uniform(-0.5, 0.5, int(seconds * rate)).astype(np.float32)


def decode(data: bytes, fmt: AudioFormat, rate: int = RATE) -> tuple[int, int]:
    """(sample rate, sample count) of the mono audio in `data`, as PyAV decodes it."""
    raw = fmt == "pcm"
    options = {"sample_rate": str(rate), "ch_layout": "mono"} if raw else {}
    with av.open(io.BytesIO(data), "r", format="s16le" if raw else None, options=options) as container:
        frames = list(container.decode(audio=0))
    assert {frame.layout.nb_channels for frame in frames} == {1}
    return frames[0].sample_rate, sum(frame.samples for frame in frames)


def expected_rate(fmt: AudioFormat, rate: int) -> int:
    return OPUS_DECODE_RATE if fmt == "opus" else rate


def assert_duration(samples: int, rate: int, seconds: float, tolerance_s: float, extra_samples: int = 0) -> None:
    late = samples / rate - seconds
    assert -tolerance_s <= late <= tolerance_s + extra_samples / RATE, f"{late * 1000:+.1f} ms"


def opus_input_rate(data: bytes) -> int:
    """The input sample rate an Ogg Opus file's OpusHead records: the rate the encoder took."""
    head = data.index(b"OpusHead")
    return int(struct.unpack_from("<I", data, head + 12)[0])


def stream(fmt: AudioFormat, audio: np.ndarray, pieces: int, rate: int = RATE) -> list[bytes]:
    encoder = StreamEncoder(fmt, rate)
    return [encoder.feed(piece) for piece in np.array_split(audio, pieces)] + [encoder.finish()]


def dominant_hz(audio: np.ndarray, rate: int = RATE) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.argmax(spectrum) * rate / len(audio))


# -- the formats ----------------------------------------------------------------------------------


def test_every_format_has_a_suffix_and_a_media_type() -> None:
    assert set(SUFFIXES) == set(MEDIA_TYPES) == set(FORMATS)
    assert SUFFIXES["opus"] == ".opus"
    assert SUFFIXES["m4b"] == ".m4b"
    assert MEDIA_TYPES["mp3"] == "audio/mpeg"
    assert MEDIA_TYPES["m4b"] == "audio/mp4"


def test_every_format_but_m4b_streams() -> None:
    assert set(FORMATS) - set(STREAM_FORMATS) == {"m4b"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_decodes_whole_to_the_rate_and_duration(fmt: AudioFormat) -> None:
    audio = tone(0.8)
    rate, samples = decode(encode(audio, RATE, fmt), fmt)
    assert rate == expected_rate(fmt, RATE)
    assert_duration(samples, rate, 0.8, tolerance_s=0.03, extra_samples=WHOLE_EXTRA.get(fmt, 0))


def test_opus_keeps_a_rate_libopus_takes() -> None:
    assert opus_input_rate(encode(tone(0.5), RATE, "opus")) == RATE


def test_opus_resamples_a_rate_libopus_lacks_to_48k() -> None:
    data = encode(tone(0.8, rate=22_050), 22_050, "opus")
    assert opus_input_rate(data) == 48_000
    rate, samples = decode(data, "opus")
    assert_duration(samples, rate, 0.8, tolerance_s=0.03)


def test_pcm_is_the_wav_samples_without_a_header() -> None:
    audio = noise(0.5)
    pcm = encode(audio, RATE, "pcm")
    assert len(pcm) == 2 * len(audio)
    assert encode(audio, RATE, "wav").endswith(pcm)


def test_samples_beyond_full_scale_are_clipped() -> None:
    pcm = encode(np.array([2.0, -3.0, 0.0], dtype=np.float32), RATE, "pcm")
    assert struct.unpack("<3h", pcm) == (32767, -32768, 0)


def test_opus_aac_and_m4b_are_the_same_bytes_every_time() -> None:
    audio = noise(0.5)
    for fmt in ("opus", "aac", "m4b"):
        assert encode(audio, RATE, fmt) == encode(audio, RATE, fmt)


# -- streams --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", STREAM_FORMATS)
def test_a_stream_fed_in_pieces_is_one_file_of_the_whole_duration(fmt: AudioFormat) -> None:
    audio = noise(1.0)
    rate, samples = decode(b"".join(stream(fmt, audio, pieces=5)), fmt)
    assert rate == expected_rate(fmt, RATE)
    assert_duration(samples, rate, 1.0, tolerance_s=0.05, extra_samples=STREAM_EXTRA.get(fmt, 0))


@pytest.mark.parametrize("fmt", ["opus", "aac", "mp3", "flac", "ogg"])
def test_a_stream_takes_many_small_pieces(fmt: AudioFormat) -> None:
    audio = tone(0.5, rate=22_050)
    rate, samples = decode(b"".join(stream(fmt, audio, pieces=200, rate=22_050)), fmt)
    assert rate == expected_rate(fmt, 22_050)
    extra = STREAM_EXTRA.get(fmt, 0) * 22_050 // RATE
    assert_duration(samples, rate, 0.5, tolerance_s=0.05, extra_samples=extra)


@pytest.mark.parametrize("fmt", ["opus", "mp3", "aac", "flac"])
def test_a_compressed_stream_sends_audio_before_the_end(fmt: AudioFormat) -> None:
    parts = stream(fmt, noise(1.0), pieces=5)
    assert sum(map(len, parts[:-1])) > sum(map(len, parts)) // 2


@pytest.mark.parametrize("fmt", ["wav", "pcm"])
def test_wav_and_pcm_streams_send_the_first_piece_at_once(fmt: AudioFormat) -> None:
    encoder = StreamEncoder(fmt, RATE)
    header = 44 if fmt == "wav" else 0
    assert len(encoder.feed(tone(0.1))) == header + 2 * int(0.1 * RATE)


def test_a_wav_stream_header_says_its_length_is_unknown() -> None:
    data = b"".join(stream("wav", noise(0.5), pieces=5))
    assert data[:4] == b"RIFF"
    assert data[8:16] == b"WAVEfmt "
    assert struct.unpack_from("<I", data, 4)[0] == 0xFFFFFFFF
    assert data[36:40] == b"data"
    assert struct.unpack_from("<I", data, 40)[0] == 0xFFFFFFFF
    channels, rate = struct.unpack_from("<HI", data, 22)
    assert (channels, rate) == (1, RATE)


def test_a_pcm_stream_is_the_whole_pcm() -> None:
    audio = noise(0.5)
    assert b"".join(stream("pcm", audio, pieces=7)) == encode(audio, RATE, "pcm")


# -- speed ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("speed", [0.25, 0.5, 2.0, 4.0])
def test_a_speed_change_scales_the_duration(speed: float) -> None:
    faster = change_speed(tone(1.0), RATE, speed)
    assert abs(len(faster) / RATE - 1.0 / speed) <= 0.03 / speed


@pytest.mark.parametrize("speed", [0.25, 0.5, 2.0, 4.0])
def test_a_speed_change_keeps_the_pitch(speed: float) -> None:
    faster = change_speed(tone(1.0), RATE, speed)
    assert dominant_hz(faster) == pytest.approx(440.0, rel=0.02)


def test_speed_one_returns_the_input_untouched() -> None:
    audio = tone(0.5)
    assert change_speed(audio, RATE, 1.0) is audio


@pytest.mark.parametrize("speed", [0.2, 4.5, float("nan")])
def test_a_speed_outside_the_range_is_refused(speed: float) -> None:
    low, high = SPEED_RANGE
    with pytest.raises(ValueError, match=rf"\[{low}, {high}\]"):
        change_speed(tone(0.5), RATE, speed)
