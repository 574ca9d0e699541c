"""Memory profiles: how a video pipeline sits on a GPU of a given size, with diffusers' own tools.

- ``80gb``: every part resident on the GPU.
- ``48gb``: model CPU offload (one part on the GPU at a time: text encoder, VAE, denoiser),
  VAE tiling. The prompt's embeddings are cached per scene, so the text encoder runs once.
- ``24gb``: as ``48gb``, with the denoiser's weights stored in float8 (e4m3) and cast to its
  compute dtype layer by layer (``enable_layerwise_casting``), VAE tiling and slicing.
- ``16gb``: group offloading with a CUDA stream (leaf level: each layer is copied in while the
  one before it runs) for every part, float8 storage of the denoiser, VAE tiling and slicing.

``auto`` picks the largest profile whose ``min_free_gb`` the free VRAM (less ``reserve_gb``)
reaches: what a card of that class has free after its CUDA context, a 24 GB card reporting
about 24 GiB = 25.8 GB total (benchmarks/memory.py shows each preset's estimated peak under
each profile, below these). The choice is
set in ``[engines.diffusion.memory]`` of the backend TOML (:class:`MemoryConfig`; unknown keys
are errors).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import msgspec
import torch

logger = logging.getLogger(__name__)

ProfileName = Literal["80gb", "48gb", "24gb", "16gb"]
PROFILE_NAMES: tuple[str, ...] = ("80gb", "48gb", "24gb", "16gb")


@dataclass(frozen=True)
class MemoryProfile:
    name: str
    budget_gb: float
    """The VRAM class the profile is made for (GB, as cards are sold)."""
    min_free_gb: float
    """``auto`` takes this profile from this much free VRAM (GB) up."""
    placement: Literal["resident", "model_offload", "group_offload"]
    fp8_storage: bool
    """Denoiser weights stored as float8_e4m3fn, computed in the pipeline's dtype."""
    vae_tiling: bool
    vae_slicing: bool


PROFILES: dict[str, MemoryProfile] = {
    "80gb": MemoryProfile("80gb", 80.0, 70.0, "resident", False, False, False),
    "48gb": MemoryProfile("48gb", 48.0, 40.0, "model_offload", False, True, False),
    "24gb": MemoryProfile("24gb", 24.0, 20.0, "model_offload", True, True, True),
    "16gb": MemoryProfile("16gb", 16.0, 0.0, "group_offload", True, True, True),
}


class MemoryConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``[engines.diffusion.memory]``: which profile the video models load under."""

    profile: Literal["auto", "80gb", "48gb", "24gb", "16gb"] = "auto"
    """``auto``: from the free VRAM when the models load; or one profile by name."""
    reserve_gb: float = 0.0
    """``auto`` leaves this much of the free VRAM (GB) to other programs."""

    @classmethod
    def from_mapping(cls, values: dict | None) -> MemoryConfig:
        try:
            config = msgspec.convert(values or {}, cls)
        except msgspec.ValidationError as exc:
            raise ValueError(f"memory: {exc}") from None
        if config.reserve_gb < 0:
            raise ValueError("memory: reserve_gb must be >= 0")
        return config


def choose_profile(config: MemoryConfig, free_bytes: int | None) -> MemoryProfile:
    """The profile to load under: the named one, or for ``auto`` the largest whose
    ``min_free_gb`` ``free_bytes`` less the reserve reaches."""
    if config.profile != "auto":
        return PROFILES[config.profile]
    if free_bytes is None:
        raise ValueError("memory: profile 'auto' needs a CUDA device to measure free VRAM")
    free_gb = free_bytes / 1e9 - config.reserve_gb
    chosen = next(PROFILES[n] for n in PROFILE_NAMES if PROFILES[n].min_free_gb <= free_gb)
    if free_gb < 12.0:
        logger.warning("%.1f GB of VRAM free: tight even for the 16gb profile", free_gb)
    return chosen


def free_vram(device: torch.device) -> int | None:
    """Free bytes on a CUDA device (None elsewhere)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(free)


def apply_profile(pipe, profile: MemoryProfile, device: torch.device) -> None:
    """Place a loaded pipeline on ``device`` as the profile says (diffusers' own calls)."""
    denoiser = getattr(pipe, "transformer", None) or getattr(pipe, "unet", None)
    if profile.fp8_storage and denoiser is not None:
        denoiser.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn,
                                          compute_dtype=denoiser.dtype)
    if profile.placement == "resident":
        pipe.to(device)
    elif profile.placement == "model_offload":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"),
                                  offload_type="leaf_level", use_stream=True)
    vae = getattr(pipe, "vae", None)
    if profile.vae_tiling:
        enable_vae_option(vae, "enable_tiling")
    if profile.vae_slicing:
        enable_vae_option(vae, "enable_slicing")
    logger.info("video pipeline placed under memory profile %s", profile.name)


def enable_vae_option(vae, method: str) -> bool:
    """Call ``vae.enable_tiling`` / ``enable_slicing`` where the VAE implements it (SVD's
    temporal decoder does not tile: it decodes in frame chunks instead)."""
    try:
        getattr(vae, method)()
    except (AttributeError, NotImplementedError):
        logger.info("%s: %s is not supported, skipped", type(vae).__name__, method)
        return False
    return True
