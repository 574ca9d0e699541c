"""Per-family adapters: what the guided sampler needs to drive an image-to-video pipeline."""

from .base import Conditioning, PromptEmbeds, VideoFamilyAdapter
from .cogvideox import CogVideoXAdapter
from .svd import SVDAdapter
from .wan import WanAdapter

ADAPTERS: dict[str, type[VideoFamilyAdapter]] = {
    CogVideoXAdapter.family: CogVideoXAdapter,
    WanAdapter.family: WanAdapter,
    SVDAdapter.family: SVDAdapter,
}

__all__ = ["ADAPTERS", "CogVideoXAdapter", "Conditioning", "PromptEmbeds", "SVDAdapter",
           "VideoFamilyAdapter", "WanAdapter"]
