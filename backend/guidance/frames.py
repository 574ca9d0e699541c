"""Conversions between uint8 frames at the edges and float tensors inside the sampler."""

from __future__ import annotations

import numpy as np
import torch


def image_to_tensor(image: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """H x W x 3 uint8 -> (1, 3, H, W) in [-1, 1]."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 uint8 image, got {image.dtype} {image.shape}")
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
    return (t.to(device=device, dtype=torch.float32) / 127.5 - 1.0).to(dtype)


def video_to_tensor(frames: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """T x H x W x 3 uint8 -> (T, 3, H, W) in [-1, 1]."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise ValueError(f"expected T x H x W x 3 uint8 frames, got {frames.dtype} {frames.shape}")
    t = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    return (t.to(device=device, dtype=torch.float32) / 127.5 - 1.0).to(dtype)


def tensor_to_frames(video: torch.Tensor) -> np.ndarray:
    """(T, 3, H, W) in [-1, 1] -> T x H x W x 3 uint8."""
    v = ((video.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return v.permute(0, 2, 3, 1).cpu().numpy()
