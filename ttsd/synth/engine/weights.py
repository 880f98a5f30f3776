"""Where a registry model's weights are on disk: built locally, a local directory, or the Hugging Face
cache (downloaded on first use when online)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from ttsd.catalog import ModelEntry
from ttsd.errors import ModelUnavailable


def hf_offline() -> bool:
    """Whether the Hugging Face hub must not be contacted."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def local_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot of `repo_id`, without touching the network, or None."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure here just means "not cached"
        return None


def locate_checkpoint(entry: ModelEntry, models_dir: Path) -> Path | None:
    """Where `entry`'s weights already are on this machine, without building or downloading anything."""
    if entry.tiny:
        from ttsd.synth.engine.tiny import MARKER_NAME

        built = models_dir / entry.name
        return built if (built / MARKER_NAME).is_file() else None
    if entry.local_dir is not None:
        return entry.local_dir if (entry.local_dir / "config.json").is_file() else None
    assert entry.repo_id is not None
    return local_snapshot(entry.repo_id)


def checkpoint_revision(checkpoint: Path) -> str:
    """An identity of the weights in `checkpoint`: the commit of a Hugging Face snapshot, else a
    digest of its config and of its weight files' names, sizes and modification times."""
    if checkpoint.parent.name == "snapshots":
        return checkpoint.name
    digest = hashlib.sha256((checkpoint / "config.json").read_bytes())
    for weights in sorted(checkpoint.rglob("*.safetensors")):
        info = weights.stat()
        digest.update(f"{weights.relative_to(checkpoint)}:{info.st_size}:{info.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def revision_resolver(registry: Mapping[str, ModelEntry], models_dir: Path) -> Callable[[str], str | None]:
    """Model name -> weights revision, remembered once known (None while the weights are not here)."""
    known: dict[str, str] = {}

    def revision(model: str) -> str | None:
        if model not in known:
            entry = registry.get(model)
            checkpoint = locate_checkpoint(entry, models_dir) if entry is not None else None
            if checkpoint is None:
                return None
            known[model] = checkpoint_revision(checkpoint)
        return known[model]

    return revision


def _download(repo_id: str, mirror: str | None) -> Path:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, endpoint=mirror, token=os.environ.get("HF_TOKEN") or None))


def resolve_checkpoint(entry: ModelEntry, models_dir: Path, mirror: str | None = None) -> Path:
    """The local directory holding `entry`'s weights, fetching them if needed and allowed.

    Loading from a directory rather than a repo id matters: transformers 4.57 can still call the hub
    for a repo id under HF_HUB_OFFLINE=1.
    """
    if entry.tiny:
        from ttsd.synth.engine.tiny import ensure_tiny_checkpoint

        return ensure_tiny_checkpoint(models_dir / entry.name, entry.kind)
    if entry.local_dir is not None:
        if not (entry.local_dir / "config.json").is_file():
            raise ModelUnavailable(
                f"model {entry.name!r}: {entry.local_dir} holds no checkpoint (no config.json); "
                "fix its path in TTS_MODELS or ttsd.toml"
            )
        return entry.local_dir
    assert entry.repo_id is not None
    cached = local_snapshot(entry.repo_id)
    if cached is not None:
        return cached
    hf_home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    if hf_offline():
        raise ModelUnavailable(
            f"model {entry.name!r} ({entry.repo_id}) is not in the Hugging Face cache ({hf_home}) and "
            "HF_HUB_OFFLINE is set. Fetch it once while online: "
            f"`huggingface-cli download {entry.repo_id}`, or point TTS_MODELS at a local copy."
        )
    try:
        return _download(entry.repo_id, mirror)
    except Exception as exc:
        raise ModelUnavailable(
            f"model {entry.name!r} ({entry.repo_id}) is not in the Hugging Face cache ({hf_home}) and "
            f"could not be downloaded ({type(exc).__name__}: {str(exc)[:200]}). Check the network, "
            "HF_TOKEN, or TTS_HF_MIRROR; or fetch it with `huggingface-cli download "
            f"{entry.repo_id}`; or point TTS_MODELS at a local copy."
        ) from exc
