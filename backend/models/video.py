"""Image-to-video pipelines loaded (``from_pretrained``, or ``from_single_file`` for one
checkpoint file) into their family adapter."""

from __future__ import annotations

import importlib
import logging
from typing import Any

from .adapters import ADAPTERS, VideoFamilyAdapter
from .inpaint import place_pipeline
from .memory import MemoryConfig, apply_profile, choose_profile, free_vram
from .spec import ModelSpec

logger = logging.getLogger(__name__)


def load_video_adapter(spec: ModelSpec, memory: MemoryConfig | None = None) -> VideoFamilyAdapter:
    """``from_pretrained`` the family's pipeline class (hub id or folder) and wrap it. On a
    CUDA device with a ``memory`` config the pipeline is placed by its profile (``auto``:
    chosen from the free VRAM now), else by the spec's ``offload``."""
    adapter_cls = ADAPTERS[spec.family]
    pipeline_cls = getattr(importlib.import_module("diffusers"), adapter_cls.pipeline_class_name)
    device = spec.resolve_device()
    logger.info("loading %s pipeline %s on %s", spec.family, spec.source, device)
    kwargs: dict[str, Any] = {"dtype": spec.torch_dtype}
    if spec.variant:
        kwargs["variant"] = spec.variant
    if spec.single_file:
        pipe = pipeline_cls.from_single_file(spec.source, config=spec.config, **kwargs)
    else:
        pipe = pipeline_cls.from_pretrained(spec.source, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    if memory is not None and device.type == "cuda":
        apply_profile(pipe, choose_profile(memory, free_vram(device)), device)
    else:
        place_pipeline(pipe, spec.offload, device)
    if spec.vae_tiling and hasattr(pipe.vae, "enable_tiling"):
        pipe.vae.enable_tiling()
    return adapter_cls(pipe, **dict(spec.options))
