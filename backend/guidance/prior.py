"""The prior video x^p and its visibility masks m^p, built as the authors' release builds them.

View padding (copies of I_0 and I_N at the ends), holes filled with OpenCV's Telea method
before the VAE sees a frame (three passes of radius 5, as the release does), and a binary
latent mask: a latent cell is visible only where more than 80% of the pixels it encodes (its
spatial block and its temporal group) are visible.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

TELEA_RADIUS = 5
TELEA_PASSES = 3
MASK_LATENT_CUT = 0.8
"""A latent cell is visible when more than this fraction of its pixels is."""


@dataclass(frozen=True)
class PriorVideo:
    """What the engine rendered along the path, before padding.

    ``frames[0]`` is the input view I_0, ``frames[-1]`` the inpainted end view I_N, the frames
    between are partial renders of the merged point cloud.
    """

    frames: np.ndarray
    """T x H x W x 3 uint8 RGB."""
    masks: np.ndarray
    """T x H x W, 1 (or True) where the render saw the scene, 0 in holes."""

    def __post_init__(self) -> None:
        f, m = self.frames, self.masks
        if f.dtype != np.uint8 or f.ndim != 4 or f.shape[3] != 3:
            raise ValueError(f"prior frames must be T x H x W x 3 uint8, got {f.dtype} {f.shape}")
        if m.shape != f.shape[:3]:
            raise ValueError(f"prior masks must be {f.shape[:3]}, got {m.shape}")

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    def padded(self, pad: int) -> PriorVideo:
        """[I_0] * pad + frames + [I_N] * pad, masks likewise."""
        if pad == 0:
            return self
        frames = np.concatenate([self.frames[:1].repeat(pad, 0), self.frames,
                                 self.frames[-1:].repeat(pad, 0)])
        masks = np.concatenate([self.masks[:1].repeat(pad, 0), self.masks,
                                self.masks[-1:].repeat(pad, 0)])
        return PriorVideo(frames, masks)

    def filled(self, radius: int = TELEA_RADIUS, passes: int = TELEA_PASSES) -> np.ndarray:
        """The frames with their holes filled by OpenCV Telea (what the VAE encodes)."""
        return np.stack([fill_holes(f, m <= 0.5, radius, passes)
                         for f, m in zip(self.frames, self.masks, strict=True)])


def fill_holes(image: np.ndarray, hole: np.ndarray, radius: int = TELEA_RADIUS,
               passes: int = TELEA_PASSES) -> np.ndarray:
    """Telea inpainting of ``hole`` (H x W bool) in an H x W x 3 uint8 image, ``passes`` times."""
    if not hole.any() or hole.all():
        return image
    mask = hole.astype(np.uint8) * 255
    out = np.ascontiguousarray(image)
    for _ in range(passes):
        out = cv2.inpaint(out, mask, radius, cv2.INPAINT_TELEA)
    return out


def latent_masks(masks: np.ndarray, groups: list[range], spatial: int,
                 device: torch.device, cut: float = MASK_LATENT_CUT) -> torch.Tensor:
    """Pixel masks (T, H, W) -> binary visibility on the latent grid (1, F', 1, h, w).

    A latent cell is 1 when more than ``cut`` of the pixels it encodes are visible: the
    fraction over its ``spatial`` x ``spatial`` block and all pixel frames of its temporal
    group (``groups[j]``, e.g. [0], [1..4], [5..8] for 4x causal compression).
    """
    m = torch.as_tensor(np.asarray(masks, dtype=np.float32), device=device)
    if m.shape[0] != groups[-1].stop:
        raise ValueError(f"masks have {m.shape[0]} frames, latent groups cover {groups[-1].stop}")
    pooled = F.avg_pool2d(m[:, None], kernel_size=spatial)[:, 0]  # T h w
    per_latent = torch.stack([pooled[g.start:g.stop].mean(0) for g in groups])  # F' h w
    return (per_latent > cut).float()[None, :, None]
