"""Monocular depth (Depth Anything V2, DPT) through transformers' AutoModelForDepthEstimation."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .spec import ModelSpec

logger = logging.getLogger(__name__)


@dataclass
class DepthPrediction:
    values: np.ndarray
    """H x W float32 at the input image's size."""
    kind: str
    """``disparity`` (relative inverse depth, up to scale and shift) or ``depth`` (z-depth)."""


class DepthEstimator:
    """One depth model, resident on its device. ``__call__`` takes H x W x 3 uint8 RGB."""

    def __init__(self, model, processor, device: torch.device, kind: str = "disparity") -> None:
        self.model = model.eval().requires_grad_(False)
        self.processor = processor
        self.device = device
        self.kind = kind

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> DepthEstimator:
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        device = spec.resolve_device()
        logger.info("loading depth model %s on %s", spec.source, device)
        processor = AutoImageProcessor.from_pretrained(spec.source)
        model = AutoModelForDepthEstimation.from_pretrained(spec.source, dtype=spec.torch_dtype)
        return cls(model.to(device), processor, device, spec.output)

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> DepthPrediction:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an H x W x 3 uint8 image, got {image.dtype} {image.shape}")
        inputs = self.processor(images=image, return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.device, self.model.dtype)
        predicted = self.model(pixel_values=pixels).predicted_depth  # B h w
        resized = F.interpolate(predicted[:, None].float(), size=image.shape[:2], mode="bicubic",
                                align_corners=False)[0, 0]
        return DepthPrediction(resized.cpu().numpy().astype(np.float32), self.kind)
