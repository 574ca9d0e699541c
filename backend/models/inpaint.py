"""End-view inpainting through diffusers' AutoPipelineForInpainting (Stage I, paper sec. IV-A)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import PIL.Image
import torch

from .spec import ModelSpec

logger = logging.getLogger(__name__)


class Inpainter:
    """One inpainting pipeline, resident. Fills ``mask`` (True = hole) of an RGB uint8 image."""

    def __init__(self, pipe, device: torch.device) -> None:
        self.pipe = pipe
        self.device = device
        self.pipe.set_progress_bar_config(disable=True)

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> Inpainter:
        from diffusers import AutoPipelineForInpainting

        device = spec.resolve_device()
        logger.info("loading inpainting pipeline %s on %s", spec.source, device)
        kwargs: dict[str, Any] = {"torch_dtype": spec.torch_dtype}
        if spec.variant:
            kwargs["variant"] = spec.variant
        pipe = AutoPipelineForInpainting.from_pretrained(spec.source, **kwargs)
        place_pipeline(pipe, spec.offload, device)
        return cls(pipe, device)

    @torch.no_grad()
    def __call__(self, image: np.ndarray, mask: np.ndarray, prompt: str, *,
                 negative_prompt: str = "", num_inference_steps: int = 30,
                 guidance_scale: float = 7.5, generator: torch.Generator | None = None,
                 strength: float = 1.0) -> np.ndarray:
        """Returns H x W x 3 uint8 at the input size; pixels outside the mask are kept."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an H x W x 3 uint8 image, got {image.dtype} {image.shape}")
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask must be {image.shape[:2]}, got {mask.shape}")
        hole = np.asarray(mask, dtype=bool)
        height, width = image.shape[:2]
        result = self.pipe(
            prompt=prompt, negative_prompt=negative_prompt or None,
            image=PIL.Image.fromarray(image), mask_image=PIL.Image.fromarray(hole.astype(np.uint8) * 255),
            height=height, width=width, num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale, generator=generator, strength=strength, output_type="np",
        ).images[0]
        filled = (np.clip(result, 0.0, 1.0) * 255.0).round().astype(np.uint8)
        return np.where(hole[..., None], filled, image)


def place_pipeline(pipe, offload: str, device: torch.device) -> None:
    """Move a pipeline to ``device`` or install accelerate's CPU offload hooks."""
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
