"""Reference recordings of voice-clone jobs: where they may be (inside the inbox's voices/ folder,
nowhere else), and their content hashes (part of a take's cache key), read once per file version."""

from __future__ import annotations

from pathlib import Path

from ttsd.errors import PermanentEngineError
from ttsd.synth.audio_cache import file_sha256


def reference_path(voices_dir: Path, ref_audio: str) -> Path:
    """The reference file inside the voices folder; refused if it would resolve anywhere else."""
    root = voices_dir.resolve()
    path = (voices_dir / ref_audio).resolve()
    if path.parent != root:
        raise PermanentEngineError(
            f"ref_audio {ref_audio!r} does not name a file inside {voices_dir}", code="bad_reference"
        )
    if not path.is_file():
        raise PermanentEngineError(
            f"ref_audio {ref_audio!r} is not in {voices_dir}: put the reference recording there",
            code="missing_reference",
        )
    return path


class ReferenceDigests:
    """Content hashes of reference recordings, remembered per file version: a long clone job asks
    for its reference's hash once per chunk."""

    def __init__(self, voices_dir: Path) -> None:
        self.voices_dir = voices_dir
        self._digests: dict[tuple[str, int, int], str] = {}

    def digest(self, ref_audio: str) -> str:
        """The sha256 of the reference named `ref_audio` (refused if it is not in the voices folder)."""
        path = reference_path(self.voices_dir, ref_audio)
        info = path.stat()
        version = (str(path), info.st_mtime_ns, info.st_size)
        digest = self._digests.get(version)
        if digest is None:
            digest = self._digests[version] = file_sha256(path)
        return digest
