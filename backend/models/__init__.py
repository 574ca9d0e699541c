"""Model registry, loaders and per-family video adapters for the diffusion engine.

Typical use (the engine)::

    registry = ModelRegistry.from_toml(named_config("cogvideox"))
    depth = registry.depth()(image)                 # DepthPrediction
    filled = registry.inpainter()(image, hole, prompt)
    adapter = registry.video()                      # VideoFamilyAdapter, loaded once
"""

from .adapters import (
    ADAPTERS,
    CogVideoXAdapter,
    EasyAnimateAdapter,
    LTXAdapter,
    SVDAdapter,
    VideoFamilyAdapter,
    WanAdapter,
    WanVACEAdapter,
)
from .depth import DepthEstimator, DepthPrediction
from .inpaint import Inpainter
from .registry import ModelCache, ModelRegistry
from .spec import ModelSpec, load_specs, named_config
from .video import load_video_adapter

__all__ = ["ADAPTERS", "CogVideoXAdapter", "DepthEstimator", "DepthPrediction", "Inpainter",
           "ModelCache", "ModelRegistry", "ModelSpec", "SVDAdapter", "VideoFamilyAdapter",
           "WanAdapter", "load_specs", "load_video_adapter", "named_config", "LTXAdapter",
           "WanVACEAdapter", "EasyAnimateAdapter"]
