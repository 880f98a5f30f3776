"""The device and dtype plan: one decision from the settings and the hardware, logged once per model."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

from ttsd.errors import ConfigError
from ttsd.synth.engine.base import DevicePlan

_AUTO_DTYPES = {"mps": "float16", "cuda": "bfloat16", "cpu": "float32"}


@dataclass(frozen=True)
class Hardware:
    """What the machine offers, as probed (or as a test pretends)."""

    mps: bool
    cuda: bool
    flash_attn: bool


def probe_hardware() -> Hardware:
    """Ask torch what this machine has."""
    import torch

    mps_backend = getattr(torch.backends, "mps", None)
    return Hardware(
        mps=bool(mps_backend is not None and mps_backend.is_available()),
        cuda=bool(torch.cuda.is_available()),
        flash_attn=importlib.util.find_spec("flash_attn") is not None,
    )


def plan_device(device: str, dtype: str, probe: Callable[[], Hardware] = probe_hardware) -> DevicePlan:
    """Resolve `auto` to mps, then cuda, then cpu; pick the dtype native to that device.

    float16 on mps (bfloat16 is emulated on M1/M2), bfloat16 on cuda, float32 on cpu; flash
    attention only on cuda with flash-attn installed, sdpa everywhere else.
    """
    hardware = probe()
    if device == "auto":
        device = "mps" if hardware.mps else "cuda" if hardware.cuda else "cpu"
    elif device == "mps" and not hardware.mps:
        raise ConfigError("TTS_DEVICE=mps but this machine has no usable MPS backend")
    elif device == "cuda" and not hardware.cuda:
        raise ConfigError("TTS_DEVICE=cuda but torch sees no CUDA device")
    chosen_dtype = _AUTO_DTYPES[device] if dtype == "auto" else dtype
    if device == "cpu" and chosen_dtype == "float16":
        raise ConfigError("TTS_DTYPE=float16 is not supported on the CPU; use float32 or bfloat16")
    attention = "flash_attention_2" if device == "cuda" and hardware.flash_attn else "sdpa"
    return DevicePlan(device=device, dtype=chosen_dtype, attention=attention)
