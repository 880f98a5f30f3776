"""Encoding mono float32 audio into the delivered formats, whole or as a stream.

Whole files of wav, flac, ogg (Vorbis) and mp3 come from libsndfile (soundfile), as they always
have. Opus, AAC and M4B come from ffmpeg through PyAV, and so does every streamed flac and mp3,
because libsndfile patches their headers by seeking back at the end, which a stream cannot do. A
streamed ogg stays with libsndfile: PyAV's bundled ffmpeg has no libvorbis, and its own Vorbis
encoder is experimental and stereo-only. M4B (an audiobook: AAC in an MP4 container, with chapters)
is never streamed: its index and chapters exist only once the audio has ended, and a player needs
them first.

PyAV is imported only where a format needs it: the supervisor imports this module through the
outbox, and loading ffmpeg there would cost memory for nothing.
"""

from __future__ import annotations

import io
import math
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, cast, get_args

import numpy as np
import soundfile as sf

if TYPE_CHECKING:
    from av.audio.stream import AudioStream
    from av.container import OutputContainer
    from av.container.core import Chapter

AudioFormat = Literal["wav", "flac", "ogg", "mp3", "opus", "aac", "pcm", "m4b"]
FORMATS: tuple[AudioFormat, ...] = get_args(AudioFormat)
STREAM_FORMATS: tuple[AudioFormat, ...] = tuple(fmt for fmt in FORMATS if fmt != "m4b")
"""The formats a StreamEncoder writes, and so the ones the speech APIs offer."""
SUFFIXES: dict[AudioFormat, str] = {fmt: f".{fmt}" for fmt in FORMATS}
# What OpenAI's speech endpoint labels its responses with (its Ogg Opus is "audio/opus", its ADTS
# "audio/aac"). For headerless pcm "audio/pcm" is what OpenAI-compatible servers send; "audio/L16"
# (RFC 2586) would be wrong, as it means big-endian samples and ours are little-endian.
MEDIA_TYPES: dict[AudioFormat, str] = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "pcm": "audio/pcm",
    "m4b": "audio/mp4",
}


_MP3_RATES = (8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000)


def rate_problem(fmt: AudioFormat, sample_rate: int) -> str | None:
    """Why a whole `fmt` file cannot be written at `sample_rate`, or None when it can. opus, aac and
    m4b are resampled by their encoders; MPEG audio has a fixed list of rates, and FLAC's frame headers
    state a rate above 65535 Hz only in tens of hertz."""
    if fmt == "mp3" and sample_rate not in _MP3_RATES:
        return f"mp3 takes {', '.join(map(str, _MP3_RATES))} Hz, not {sample_rate}"
    if fmt == "flac" and sample_rate > 65_535 and sample_rate % 10:
        return f"flac takes rates above 65535 Hz only in steps of 10 Hz, not {sample_rate}"
    return None


def media_type(fmt: str) -> str:
    """The Content-Type of audio in format `fmt` (a format name as the queue stores it)."""
    return MEDIA_TYPES.get(cast("AudioFormat", fmt), "application/octet-stream")


# libsndfile's (container, subtype) for the formats it writes. pcm is its headerless RAW, so raw
# samples convert exactly as a wav file's do.
_SOUNDFILE = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "pcm": ("RAW", "PCM_16"),
}
# ffmpeg's (muxer, encoder) for the formats PyAV writes: Ogg Opus, ADTS AAC, M4B, and the streamed flac/mp3.
_PYAV = {
    "opus": ("ogg", "libopus"),
    "aac": ("adts", "aac"),
    "m4b": ("ipod", "aac"),
    "flac": ("flac", "flac"),
    "mp3": ("mp3", "libmp3lame"),
}
_FALLBACK_RATE = 48000  # for an encoder with a fixed list of rates that lacks the audio's
_UNKNOWN_SIZE = 0xFFFFFFFF
_AAC_PRIMING = 1024  # samples ffmpeg's AAC encoder puts in front of the audio
# ogg: ffmpeg's 1 s default page would hold back the first second of a stream. ipod (m4b): the M4B
# brand is what makes Apple's players file it as an audiobook, and "faststart" moves the index (moov)
# in front of the audio, so a player has it before the rest of the file arrives.
_MUXER_OPTIONS = {"ogg": {"page_duration": "100000"}, "ipod": {"brand": "M4B ", "movflags": "+faststart"}}
_MILLISECOND = Fraction(1, 1000)  # chapter times are written in it: MP4 keeps them no finer
CHAPTER_END_SLACK_S = 0.01
"""How far past the audio's end a last chapter may end (times rounded, or scaled by a speed change
that rounds the audio to whole samples): it is cut to the audio's end. Further is refused."""


@dataclass(frozen=True)
class ChapterMark:
    """A chapter of an m4b: its title, from `start_s` to `end_s` seconds into the audio.

    MP4 keeps where each chapter starts and how long the last one lasts: players (and
    `read_chapters`) take a chapter to run until the next one starts, and the first to start at 0."""

    title: str
    start_s: float
    end_s: float


def encode(audio: np.ndarray, sample_rate: int, fmt: AudioFormat, chapters: Sequence[ChapterMark] = ()) -> bytes:
    """The bytes of a whole audio file of format `fmt` holding mono `audio`, clipped to [-1, 1].

    m4b is AAC in an MP4 container branded as an audiobook, with `chapters` (in order, not
    overlapping, within the audio; ValueError otherwise, for empty audio, and for chapters in any
    other format). Its edit list tells decoders to drop the AAC priming.
    opus is Ogg Opus. libopus takes only 8, 12, 16, 24 and 48 kHz, so audio at any other rate is
    resampled to 48 kHz on the way in, by the AudioResampler PyAV runs in front of the encoder (so
    is audio at a rate the aac or mp3 encoder lacks). aac is an ADTS stream, which a decoder plays
    with the encoder's 1024 priming samples in front: ADTS has no field to say to drop them. pcm is
    raw signed 16-bit little-endian mono samples at `sample_rate`, no header (OpenAI's pcm).
    """
    if fmt == "m4b":
        return _m4b(np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False), sample_rate, chapters)
    if chapters:
        raise ValueError(f"chapters can only be written in m4b, not {fmt}")
    if fmt not in _SOUNDFILE:
        encoder = StreamEncoder(fmt, sample_rate)
        return encoder.feed(audio) + encoder.finish()
    container, subtype = _SOUNDFILE[fmt]
    buffer = io.BytesIO()
    clipped = np.clip(audio, -1.0, 1.0)
    sf.write(buffer, clipped, sample_rate, format=container, subtype=subtype, endian=_endian(container))
    return buffer.getvalue()


def decode_file(path: Path, fmt: AudioFormat, sample_rate: int) -> np.ndarray:
    """A delivered file of format `fmt` back as mono float32 at `sample_rate` (a stream's tail is
    taken from it when the chunk files it would have come from are gone)."""
    if fmt in _SOUNDFILE:
        container, subtype = _SOUNDFILE[fmt]
        raw = {"samplerate": sample_rate, "channels": 1, "subtype": subtype, "endian": "LITTLE"} if fmt == "pcm" else {}
        audio, _rate = sf.read(path, dtype="float32", always_2d=True, format=container if raw else None, **raw)
        return np.asarray(audio.mean(axis=1), dtype=np.float32)
    import av

    pieces: list[np.ndarray] = []
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    with av.open(str(path)) as source:
        stream = source.streams.audio[0]
        # ADTS has no field to say "drop the encoder's priming": its decoder plays it, so it is cut here.
        # (An m4b's edit list says it, and the decoder drops it.)
        priming = round(_AAC_PRIMING * sample_rate / stream.rate) if fmt == "aac" and stream.rate else 0
        for frame in source.decode(stream):
            pieces.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
    pieces.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    audio = np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, dtype=np.float32)
    return audio[priming:]


class StreamEncoder:
    """One file of format `fmt`, encoded piece by piece as the audio arrives.

    Everything `feed` and `finish` return, concatenated, is one valid file. wav and pcm come back
    at once; the compressed formats buffer a little (a codec frame, an Ogg page) and may return
    b"" until they have some. A streamed wav says 0xFFFFFFFF for its sizes, as streaming servers
    do, since the length is unknown until the end; a streamed flac has no total in its STREAMINFO
    and a streamed mp3 no LAME tag, so its decoder keeps the encoder's delay (about 1100 samples)
    in front. Rates are as in `encode`. m4b is refused (ValueError).
    """

    def __init__(self, fmt: AudioFormat, sample_rate: int) -> None:
        if fmt not in STREAM_FORMATS:
            raise ValueError(f"{fmt} cannot be streamed (its index and chapters exist only at the end): use encode")
        self._sink = _Sink()
        self._writer: _Writer
        if fmt in _PYAV:
            self._writer = _PyAVWriter(self._sink, fmt, sample_rate)
        else:
            if fmt == "wav":
                self._sink.write(_wav_stream_header(sample_rate))
            self._writer = _SoundfileWriter(self._sink, "pcm" if fmt == "wav" else fmt, sample_rate)

    def feed(self, audio: np.ndarray) -> bytes:
        """Encode the next piece of audio; the bytes ready now, maybe none."""
        if audio.size:
            self._writer.write(np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False))
        return self._sink.drain()

    def finish(self) -> bytes:
        """Flush the encoder and close the file: the last bytes."""
        self._writer.close()
        return self._sink.drain()


class _Sink:
    """A forward-only in-memory file that the encoders write into and the stream drains. It says it
    cannot seek, so no muxer goes back to patch what was already sent."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._position = 0

    def write(self, data: bytes) -> int:
        self._parts.append(data)
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        # libsndfile seeks in place to learn the position and length; the end is always here.
        target = offset if whence == io.SEEK_SET else self._position + offset
        if target != self._position:
            raise io.UnsupportedOperation("a stream cannot seek")
        return self._position

    def seekable(self) -> bool:
        return False

    def drain(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


class _Writer(Protocol):
    def write(self, audio: np.ndarray) -> None: ...
    def close(self) -> None: ...


class _SoundfileWriter:
    """libsndfile writing into the sink as the samples arrive."""

    def __init__(self, sink: _Sink, fmt: str, sample_rate: int) -> None:
        container, subtype = _SOUNDFILE[fmt]
        self._file = sf.SoundFile(
            sink, "w", samplerate=sample_rate, channels=1, format=container, subtype=subtype, endian=_endian(container)
        )

    def write(self, audio: np.ndarray) -> None:
        self._file.write(audio)

    def close(self) -> None:
        self._file.close()


class _PyAVWriter:
    """An ffmpeg encoder and muxer writing into `sink` (the stream's sink, or a file's path). Frames
    carry their position, so Ogg's granule positions (and with them Opus's end trimming) come out
    exact."""

    def __init__(self, sink: _Sink | str, fmt: str, sample_rate: int, chapters: Sequence[Chapter] = ()) -> None:
        import av
        from av.audio.stream import AudioStream

        muxer, codec = _PYAV[fmt]
        rates = av.Codec(codec, "w").audio_rates
        # bitexact: the same audio always gives the same bytes (no random Ogg serial, no version tag).
        options = {"fflags": "+bitexact"} | _MUXER_OPTIONS.get(muxer, {})
        self._container: OutputContainer = av.open(sink, "w", format=muxer, container_options=options)
        if chapters:
            self._container.set_chapters(list(chapters))
        stream = self._container.add_stream(
            codec,
            rate=sample_rate if not rates or sample_rate in rates else _FALLBACK_RATE,
            layout="mono",
            options={"flags": "+bitexact"},
        )
        assert isinstance(stream, AudioStream)
        self._stream: AudioStream = stream
        self._rate = sample_rate
        self._fed = 0

    def write(self, audio: np.ndarray) -> None:
        from av import AudioFrame

        frame = AudioFrame.from_ndarray(audio.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = self._rate
        frame.time_base = Fraction(1, self._rate)
        frame.pts = self._fed
        self._fed += len(audio)
        self._container.mux(self._stream.encode(frame))

    def close(self) -> None:
        self._container.mux(self._stream.encode(None))
        self._container.close()


def _m4b(audio: np.ndarray, sample_rate: int, chapters: Sequence[ChapterMark]) -> bytes:
    if not audio.size:
        raise ValueError("an m4b needs some audio: ffmpeg writes an MP4 without samples with no audio track")
    entries = _chapter_entries(chapters, len(audio) / sample_rate)
    # faststart rewrites the finished file through its path, which an in-memory file does not have.
    with tempfile.TemporaryDirectory(prefix="ttsd-m4b-") as folder:
        path = Path(folder) / "audio.m4b"
        writer = _PyAVWriter(str(path), "m4b", sample_rate, entries)
        writer.write(audio)
        writer.close()
        return path.read_bytes()


def _chapter_entries(chapters: Sequence[ChapterMark], duration_s: float) -> list[Chapter]:
    """PyAV's chapter entries for `chapters`, in milliseconds, checked against each other and the
    audio's length."""
    entries: list[Chapter] = []
    previous_end = 0
    for position, chapter in enumerate(chapters):
        where = f"chapter {position} ({chapter.title!r})"
        start, end = _chapter_span(chapter, duration_s, last=position == len(chapters) - 1, where=where)
        if start < previous_end:
            raise ValueError(
                f"{where} starts at {chapter.start_s:.3f}s, before the chapter before it ends "
                f"({previous_end / 1000:.3f}s): chapters must be in order and must not overlap"
            )
        metadata = {"title": chapter.title}
        entries.append({"id": position, "start": start, "end": end, "time_base": _MILLISECOND, "metadata": metadata})
        previous_end = end
    return entries


def _chapter_span(chapter: ChapterMark, duration_s: float, last: bool, where: str) -> tuple[int, int]:
    """A chapter's (start, end) in whole milliseconds; a last chapter's end is cut to the audio's end
    when it is past it by at most CHAPTER_END_SLACK_S."""
    if not (math.isfinite(chapter.start_s) and math.isfinite(chapter.end_s)) or chapter.start_s < 0:
        raise ValueError(
            f"{where}: start_s and end_s must be finite seconds >= 0, not {chapter.start_s}, {chapter.end_s}"
        )
    end_s = chapter.end_s
    if end_s > duration_s:
        if not last or end_s > duration_s + CHAPTER_END_SLACK_S:
            raise ValueError(f"{where} ends at {end_s:.3f}s, after the end of the audio ({duration_s:.3f}s)")
        end_s = duration_s
    start, end = round(chapter.start_s * 1000), round(end_s * 1000)
    if end <= start:
        raise ValueError(f"{where} ends at {end_s:.3f}s, not at least 1 ms after its start ({chapter.start_s:.3f}s)")
    return start, end


def read_chapters(path: Path) -> list[ChapterMark]:
    """The chapters of an audio file (an m4b's; [] for a file without any), as PyAV reads them."""
    import av

    with av.open(str(path)) as source:
        return [_chapter_mark(entry, path) for entry in source.chapters()]


def _chapter_mark(entry: Chapter, path: Path) -> ChapterMark:
    time_base = entry["time_base"]
    if time_base is None:
        raise ValueError(f"{path}: chapter {entry['id']} has no time base, so no times")
    title = entry["metadata"].get("title", "")
    return ChapterMark(title, float(entry["start"] * time_base), float(entry["end"] * time_base))


def _endian(container: str) -> str:
    """RAW would take the machine's byte order; every other container fixes its own."""
    return "LITTLE" if container == "RAW" else "FILE"


def _wav_stream_header(sample_rate: int) -> bytes:
    """A RIFF/WAVE header for 16-bit mono PCM of unknown length."""
    fmt_chunk = struct.pack("<HHIIHH", 1, 1, sample_rate, sample_rate * 2, 2, 16)
    return b"".join(
        [
            b"RIFF",
            struct.pack("<I", _UNKNOWN_SIZE),
            b"WAVE",
            b"fmt ",
            struct.pack("<I", len(fmt_chunk)),
            fmt_chunk,
            b"data",
            struct.pack("<I", _UNKNOWN_SIZE),
        ]
    )
