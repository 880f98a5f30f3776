"""HTTP figures of a running ttsd daemon: cache hits over HTTP, and the first audio byte of a stream.

The daemon must serve HTTP (`TTS_HTTP`); `scripts/benchmark.py` measures this on the daemon it starts
for its ttsd and cache sections (`--no-http` skips it), after the inbox cache figure, and puts the
two side by side. Every request is an ordinary client's: `httpx`, one `httpx.Client` (keep-alive) per
client thread; a latency is from just before the request is sent until its whole body is read.

  warm-up             one `POST /v1/audio/speech` speaks a text T (new: the worker speaks it), read to
                      its end
  repeat request      the identical `POST /v1/audio/speech` (`{"model", "input": T, "voice",
                      "response_format": "wav"}`) again and again: each finds the same done job and
                      answers its delivered file
  cache hit, new job  `POST /v1/tts` with T, the same voice, and a new `request_id` each time: a new
                      job (its own output name, status file and audio file), its audio from the
                      audio cache; each answer carries the audio inline (`TTS_OUTPUT_MODE=base64`)
                      or as a URL, as the daemon is set
  stream              `POST /v1/audio/speech` of a fresh ~2,000-character text (several chunks of
                      TTS_MAX_TEXT_LENGTH, 600 by default; every sentence names its stream, so no
                      chunk is in the cache), read with `client.stream()`: from sending until the
                      first non-empty body bytes (TTFB) and until the last byte (total), in `pcm`
                      some times, then once in `mp3`

The two cache cases run with C concurrent clients for N requests in all (requests/s over the wall
time from the start of the first to the end of the last; p50/p99 per request, nearest rank). Any
answer other than 200 aborts the section with the request and the answer's body.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

STREAM_CHARS: Final = 2000
"""The streamed texts' length: several chunks at ttsd's default TTS_MAX_TEXT_LENGTH (600)."""
REPEAT_REQUESTS: Final = 200
"""Default requests of the "repeat request" case."""
NEW_JOB_REQUESTS: Final = 100
"""Default requests of the "cache hit, new job" case (each one leaves a job, a status file and a file)."""
SPEECH_PATH: Final = "/v1/audio/speech"
TTS_PATH: Final = "/v1/tts"


# --- results -----------------------------------------------------------------------------------------


def percentile_ms(samples: Sequence[float], percent: float) -> float | None:
    """Nearest-rank percentile of `samples` (seconds) in milliseconds; None without samples."""
    if not samples:
        return None
    ordered = sorted(samples)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1] * 1000


def _over(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base else value / base


@dataclass(frozen=True)
class Load:
    """One case: `requests` requests from `clients` concurrent clients, each request's seconds."""

    label: str
    endpoint: str
    clients: int
    seconds: float
    """Wall time from the start of the first request to the end of the last."""
    latencies: tuple[float, ...]
    body_bytes: int
    """The bytes of one answer's body (the last one read)."""

    @property
    def requests(self) -> int:
        """Requests sent."""
        return len(self.latencies)

    @property
    def requests_per_s(self) -> float:
        """Throughput."""
        return self.requests / self.seconds

    def percentile_ms(self, percent: float) -> float | None:
        """A nearest-rank percentile of the latencies, in milliseconds."""
        return percentile_ms(self.latencies, percent)

    def as_json(self) -> dict[str, Any]:
        """JSON-ready, latencies in milliseconds."""
        return {
            "label": self.label,
            "endpoint": self.endpoint,
            "clients": self.clients,
            "requests": self.requests,
            "seconds": self.seconds,
            "requests_per_s": self.requests_per_s,
            "body_bytes": self.body_bytes,
            "p50_ms": self.percentile_ms(50),
            "p99_ms": self.percentile_ms(99),
            "samples_ms": [round(sample * 1000, 3) for sample in self.latencies],
        }


@dataclass(frozen=True)
class StreamSample:
    """One streamed answer: when its first audio bytes came and when its last did."""

    response_format: str
    chars: int
    chunks: int | None
    """The job's chunks (its status document's `progress.chunks_total`)."""
    ttfb_s: float
    """From sending the request to the first non-empty body bytes."""
    total_s: float
    """From sending the request to the last byte."""
    body_bytes: int
    pieces: int
    """Non-empty reads of the body: at least one per chunk when the chunks come one by one."""
    audio_s: float | None
    """The delivered file's duration (status document)."""
    cache_hit: bool | None
    job_id: str

    @property
    def ratio(self) -> float:
        """TTFB over total (small: the first audio came long before the last)."""
        return self.ttfb_s / self.total_s

    def as_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "response_format": self.response_format,
            "chars": self.chars,
            "chunks": self.chunks,
            "ttfb_ms": self.ttfb_s * 1000,
            "total_ms": self.total_s * 1000,
            "ttfb_over_total": self.ratio,
            "body_bytes": self.body_bytes,
            "pieces": self.pieces,
            "audio_s": self.audio_s,
            "cache_hit": self.cache_hit,
            "job_id": self.job_id,
        }


@dataclass
class HttpBench:
    """The section's figures, with the conditions they were measured under."""

    base_url: str
    model: str
    voice: str
    text: str
    """T, the text of the cache cases."""
    clients: int
    warm_up_s: float | None = None
    repeat: Load | None = None
    new_job: Load | None = None
    new_job_cache_hits: int = 0
    """Of the "cache hit, new job" requests, how many jobs' status documents say `cache_hit`."""
    streams: list[StreamSample] = field(default_factory=list)
    file_cache_s: tuple[float, ...] = ()
    """The same daemon's inbox cache hits (file drop -> status done, one at a time), set by the caller
    for the side-by-side ratio."""
    seconds: float = 0.0

    def file_cache_ms(self, percent: float) -> float | None:
        """A percentile of the inbox cache hits, in milliseconds."""
        return percentile_ms(self.file_cache_s, percent)

    def versus_file(self, load: Load | None, percent: float = 50) -> float | None:
        """A percentile of `load` over the same percentile of the inbox cache hits."""
        return None if load is None else _over(load.percentile_ms(percent), self.file_cache_ms(percent))

    def streamed(self, response_format: str) -> list[StreamSample]:
        """The stream samples in `response_format`, in the order they ran."""
        return [sample for sample in self.streams if sample.response_format == response_format]

    def as_json(self) -> dict[str, Any]:
        """JSON-ready: both cache cases with their ratios to the inbox figure, and every stream."""
        pcm = self.streamed("pcm")
        return {
            "base_url": self.base_url,
            "model": self.model,
            "voice": self.voice,
            "text_chars": len(self.text),
            "clients": self.clients,
            "warm_up_s": self.warm_up_s,
            "repeat_request": None if self.repeat is None else self.repeat.as_json(),
            "cache_hit_new_job": None
            if self.new_job is None
            else {**self.new_job.as_json(), "cache_hits": self.new_job_cache_hits},
            "file_cache_ms": {
                "p50": self.file_cache_ms(50),
                "p99": self.file_cache_ms(99),
                "samples": len(self.file_cache_s),
            },
            "repeat_vs_file_p50": self.versus_file(self.repeat),
            "repeat_vs_file_p99": self.versus_file(self.repeat, 99),
            "new_job_vs_file_p50": self.versus_file(self.new_job),
            "new_job_vs_file_p99": self.versus_file(self.new_job, 99),
            "streams": [sample.as_json() for sample in self.streams],
            "stream_pcm": stream_summary(pcm),
            "seconds": self.seconds,
        }


def stream_summary(samples: Sequence[StreamSample]) -> dict[str, Any] | None:
    """Best (smallest) and median TTFB, total and TTFB/total over `samples`, in milliseconds."""
    if not samples:
        return None
    ttfb = [sample.ttfb_s * 1000 for sample in samples]
    total = [sample.total_s * 1000 for sample in samples]
    ratio = [sample.ratio for sample in samples]
    return {
        "repeats": len(samples),
        "ttfb_ms": {"best": min(ttfb), "median": statistics.median(ttfb)},
        "total_ms": {"best": min(total), "median": statistics.median(total)},
        "ttfb_over_total": {"best": min(ratio), "median": statistics.median(ratio)},
    }


# --- requests ----------------------------------------------------------------------------------------


class HttpError(RuntimeError):
    """An answer other than 200: the request and what the daemon said."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (the daemon binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def speech_body(model: str, text: str, voice: str, response_format: str) -> dict[str, Any]:
    """An OpenAI speech request."""
    return {"model": model, "input": text, "voice": voice, "response_format": response_format}


def tts_body(model: str, text: str, voice: str, request_id: str) -> dict[str, Any]:
    """An original-API request under its own `request_id` (also the job's output name)."""
    return {"model": model, "text": text, "voice": voice, "format": "wav", "request_id": request_id}


def checked(response: httpx.Response, body: dict[str, Any]) -> httpx.Response:
    """`response`, read, if it is a 200; else HttpError with the request and the answer."""
    response.read()
    if response.status_code != 200:
        texts = ("input", "text")
        shown = {key: f"<{len(value)} chars>" if key in texts else value for key, value in body.items()}
        raise HttpError(
            f"{response.request.method} {response.request.url.path} {shown} -> {response.status_code} "
            f"{response.headers.get('content-type', '')}: {response.text[:1000]}"
        )
    return response


def post(client: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
    """POST `body` as JSON; the answer, whole, if it is a 200 (else HttpError)."""
    return checked(client.post(path, json=body), body)


@contextlib.contextmanager
def http_client(base_url: str, timeout_s: float) -> Iterator[httpx.Client]:
    """One client with keep-alive, as a program calling the daemon would hold it."""
    with httpx.Client(base_url=base_url, timeout=timeout_s) as client:
        yield client


def run_load(
    base_url: str,
    label: str,
    endpoint: str,
    clients: int,
    requests: int,
    request: Callable[[httpx.Client, int], httpx.Response],
    timeout_s: float,
) -> Load:
    """`requests` calls of `request(client, index)` (index 0..requests-1, each once) from `clients`
    threads, each with its own client, all starting together; every call's seconds and the wall time.
    The first error stops every thread and is raised here."""
    counter = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[Exception] = []
    sizes: list[int] = []
    start = threading.Barrier(clients + 1)
    stop = threading.Event()

    def client_thread() -> None:
        with http_client(base_url, timeout_s) as client:
            start.wait()
            while not stop.is_set():
                with lock:
                    index = next(counter)
                if index >= requests:
                    return
                began = time.perf_counter()
                try:
                    response = request(client, index)
                except Exception as exc:  # noqa: BLE001 - handed to the main thread, raised there
                    errors.append(exc)
                    stop.set()
                    return
                seconds = time.perf_counter() - began
                with lock:
                    latencies.append(seconds)
                    sizes.append(len(response.content))

    threads = [threading.Thread(target=client_thread, name=f"http-client-{i}") for i in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    if errors:
        raise errors[0]
    return Load(label, endpoint, clients, seconds, tuple(latencies), sizes[-1] if sizes else 0)


def job_status(client: httpx.Client, ref: str) -> dict[str, Any]:
    """A job's status document (`GET /v1/jobs/{ref}`: a job id or an output name)."""
    response = client.get(f"/v1/jobs/{ref}")
    if response.status_code != 200:
        raise HttpError(f"GET /v1/jobs/{ref} -> {response.status_code}: {response.text[:1000]}")
    document: dict[str, Any] = response.json()
    return document


def stream_once(client: httpx.Client, body: dict[str, Any]) -> StreamSample:
    """One speech request read as a stream: the seconds to its first non-empty body bytes and to its
    end; then the job's status document for its chunks, duration and whether it hit the cache."""
    began = time.perf_counter()
    first: float | None = None
    size = pieces = 0
    with client.stream("POST", SPEECH_PATH, json=body) as response:
        if response.status_code != 200:
            checked(response, body)
        for data in response.iter_raw():
            if data:
                if first is None:
                    first = time.perf_counter()
                size += len(data)
                pieces += 1
        ended = time.perf_counter()
        job_id = response.headers.get("x-job-id", "")
    if first is None:
        raise HttpError(f"POST {SPEECH_PATH} ({body['response_format']}) answered 200 with an empty body")
    status = job_status(client, job_id) if job_id else {}
    progress = status.get("progress") or {}
    audio = status.get("audio") or {}
    return StreamSample(
        response_format=str(body["response_format"]),
        chars=len(str(body["input"])),
        chunks=progress.get("chunks_total"),
        ttfb_s=first - began,
        total_s=ended - began,
        body_bytes=size,
        pieces=pieces,
        audio_s=audio.get("duration_s"),
        cache_hit=status.get("cache_hit"),
        job_id=job_id,
    )


# --- the section -------------------------------------------------------------------------------------


def bench_http(
    base_url: str,
    model: str,
    voice: str,
    text: str,
    stream_texts: Callable[[int], str],
    *,
    clients: int = 4,
    repeat_requests: int = REPEAT_REQUESTS,
    new_job_requests: int = NEW_JOB_REQUESTS,
    stream_repeats: int = 2,
    timeout_s: float = 900.0,
    log: Callable[[str], None] = lambda _message: None,
) -> HttpBench:
    """The warm-up, both cache cases and the streams against the daemon at `base_url`.

    `text` (T) must be new to the daemon: the warm-up speaks it. `stream_texts(i)` gives the i-th
    streamed text (0 .. `stream_repeats`, the last one for the mp3 stream), each new. `voice` is sent
    as both APIs take it (a Qwen speaker or an OpenAI voice name)."""
    section_started = time.perf_counter()
    bench = HttpBench(base_url, model, voice, text, clients)
    repeat = speech_body(model, text, voice, "wav")
    with http_client(base_url, timeout_s) as client:
        log(f"http: warm-up, POST {SPEECH_PATH} speaks a {len(text)}-character text")
        began = time.perf_counter()
        post(client, SPEECH_PATH, repeat)
        bench.warm_up_s = time.perf_counter() - began

        log(f"http: repeat request, {repeat_requests} identical POST {SPEECH_PATH} from {clients} clients")
        bench.repeat = run_load(
            base_url,
            "repeat request",
            f"POST {SPEECH_PATH} (wav)",
            clients,
            repeat_requests,
            lambda c, _i: post(c, SPEECH_PATH, repeat),
            timeout_s,
        )
        log(f"http: {bench.repeat.requests_per_s:.1f} requests/s")

        run_tag = f"{time.time_ns():x}"[-8:]
        names = [f"http-hit-{run_tag}-{i:04d}" for i in range(new_job_requests)]
        log(f"http: cache hit, new job, {new_job_requests} POST {TTS_PATH} with new request_ids from {clients} clients")
        bench.new_job = run_load(
            base_url,
            "cache hit, new job",
            f"POST {TTS_PATH} (wav, new request_id)",
            clients,
            new_job_requests,
            lambda c, i: post(c, TTS_PATH, tts_body(model, text, voice, names[i])),
            timeout_s,
        )
        log(f"http: {bench.new_job.requests_per_s:.1f} requests/s")
        bench.new_job_cache_hits = sum(bool(job_status(client, name).get("cache_hit")) for name in names)

        formats = ["pcm"] * stream_repeats + ["mp3"]
        for index, response_format in enumerate(formats):
            body = speech_body(model, stream_texts(index), voice, response_format)
            log(f"http: streaming a {len(body['input'])}-character text as {response_format}")
            sample = stream_once(client, body)
            bench.streams.append(sample)
            log(
                f"http: first bytes after {sample.ttfb_s * 1000:.0f} ms, last after {sample.total_s * 1000:.0f} ms "
                f"({sample.chunks} chunks, {sample.pieces} pieces, cache hit {sample.cache_hit})"
            )
    bench.seconds = time.perf_counter() - section_started
    return bench


# --- output ------------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def render(bench: HttpBench) -> list[str]:
    """The section as table lines: the cache cases beside the inbox cache hit, then the streams."""
    warm = "-" if bench.warm_up_s is None else f"{bench.warm_up_s:.2f}s"
    lines = [
        f"http ({bench.base_url}, model {bench.model}, voice {bench.voice}; a {len(bench.text)}-char text spoken "
        f"by one warm-up request in {warm}; {bench.clients} concurrent clients, one httpx.Client each)",
        f"{'case':<44}{'requests':>9}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'p50/file':>10}{'p99/file':>10}",
    ]
    for load in (bench.repeat, bench.new_job):
        if load is None:
            continue
        label = f"{load.label}: {load.endpoint.split(' (')[0]}"
        lines.append(
            f"{label:<44}{load.requests:>9}{load.requests_per_s:>9.1f}{_ms(load.percentile_ms(50)):>9}"
            f"{_ms(load.percentile_ms(99)):>9}{_x(bench.versus_file(load)):>10}{_x(bench.versus_file(load, 99)):>10}"
        )
    lines.append(
        f"{'file drop -> done, cache hit (one at a time)':<44}{len(bench.file_cache_s):>9}{'-':>9}"
        f"{_ms(bench.file_cache_ms(50)):>9}{_ms(bench.file_cache_ms(99)):>9}"
    )
    if bench.new_job is not None:
        lines.append(f"cache hit, new job: {bench.new_job_cache_hits} of {bench.new_job.requests} jobs say cache_hit")
    if bench.streams:
        first = bench.streams[0]
        lines += [
            f"streamed {SPEECH_PATH}, a fresh ~{first.chars}-char text each ({first.chunks} chunks), "
            "sending -> first non-empty body bytes (TTFB) and -> last byte",
            f"{'stream':<20}{'TTFB ms':>10}{'total ms':>10}{'TTFB/total':>12}{'pieces':>8}{'audio s':>9}  cache hit",
        ]
        for number, sample in enumerate(bench.streams, 1):
            audio = "-" if sample.audio_s is None else f"{sample.audio_s:.1f}"
            name = f"{sample.response_format} #{number}"
            lines.append(
                f"{name:<20}{sample.ttfb_s * 1000:>10.0f}{sample.total_s * 1000:>10.0f}"
                f"{sample.ratio:>12.2f}{sample.pieces:>8}{audio:>9}  {sample.cache_hit}"
            )
        summary = stream_summary(bench.streamed("pcm"))
        if summary is not None:
            for statistic in ("best", "median"):
                lines.append(
                    f"{f'pcm {statistic}':<20}{summary['ttfb_ms'][statistic]:>10.0f}"
                    f"{summary['total_ms'][statistic]:>10.0f}{summary['ttfb_over_total'][statistic]:>12.2f}"
                )
    return lines
