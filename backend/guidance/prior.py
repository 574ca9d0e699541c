"""The prior video x^p and its visibility masks m^p (paper sec. IV-A, view padding)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


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


def latent_masks(masks: np.ndarray, groups: list[range], spatial: int,
                 device: torch.device) -> torch.Tensor:
    """Pixel masks (T, H, W) -> visibility weights on the latent grid (1, F', 1, h, w).

    A latent cell's weight is the fraction of the pixels it encodes that are visible: area
    average over its ``spatial`` x ``spatial`` block, then the mean over the pixel frames of
    its temporal group (``groups[j]``, e.g. [0], [1..4], [5..8] for 4x causal compression).
    """
    m = torch.as_tensor(np.asarray(masks, dtype=np.float32), device=device)
    if m.shape[0] != groups[-1].stop:
        raise ValueError(f"masks have {m.shape[0]} frames, latent groups cover {groups[-1].stop}")
    pooled = F.avg_pool2d(m[:, None], kernel_size=spatial)[:, 0]  # T h w
    per_latent = torch.stack([pooled[g.start:g.stop].mean(0) for g in groups])  # F' h w
    return per_latent[None, :, None]
