"""Per-family adapters: what the guided sampler needs to drive an image-to-video pipeline."""

from .base import Conditioning, PromptEmbeds, VideoFamilyAdapter
from .cogvideox import CogVideoXAdapter
from .easyanimate import EasyAnimateAdapter
from .ltx import LTXAdapter
from .svd import SVDAdapter
from .wan import WanAdapter
from .wan_vace import WanVACEAdapter

ADAPTERS: dict[str, type[VideoFamilyAdapter]] = {
    CogVideoXAdapter.family: CogVideoXAdapter,
    WanAdapter.family: WanAdapter,
    SVDAdapter.family: SVDAdapter,
    LTXAdapter.family: LTXAdapter,
    WanVACEAdapter.family: WanVACEAdapter,
    EasyAnimateAdapter.family: EasyAnimateAdapter,
}

__all__ = ["ADAPTERS", "CogVideoXAdapter", "Conditioning", "EasyAnimateAdapter", "LTXAdapter",
           "PromptEmbeds",
           "SVDAdapter", "VideoFamilyAdapter", "WanAdapter", "WanVACEAdapter"]
