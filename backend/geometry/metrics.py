"""Consistency metric of Make-It-4D (table 1): photometric error after warping.

``consistency(frame_t, frame_t1, depth_t, pose_t, pose_t1, K) -> ConsistencyResult``:
every pixel of frame t is lifted with its depth, projected into frame t+1 and frame t+1 is
sampled there (bilinear), i.e. frame t+1 is warped back to frame t. The score is the mean
absolute difference over co-visible pixels and channels, with images in [0, 1], times 100.
Co-visible: valid depth in t, in front of camera t+1, inside frame t+1, and, when
``depth_t1`` is given, not occluded there (the warped depth within ``occlusion_tol`` of
frame t+1's depth, relative).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from backend.geometry.unproject import pixel_rays


@dataclass(frozen=True)
class ConsistencyResult:
    error: float
    """Mean L1 over co-visible pixels x 100 (lower is more consistent); NaN if none."""
    covisible: float
    """Share of frame t's pixels that are co-visible."""


def _float_image(img: np.ndarray) -> torch.Tensor:
    a = np.asarray(img)
    t = torch.from_numpy(a.astype(np.float32))
    return t / 255.0 if a.dtype == np.uint8 else t


def consistency(
    frame_t: np.ndarray,
    frame_t1: np.ndarray,
    depth_t: np.ndarray,
    pose_t: np.ndarray,
    pose_t1: np.ndarray,
    K: np.ndarray,
    depth_t1: np.ndarray | None = None,
    occlusion_tol: float = 0.05,
) -> ConsistencyResult:
    """Warp ``frame_t1`` back to ``frame_t`` and score their L1 difference x 100.

    Images are H x W x 3, uint8 (scaled to [0, 1]) or float in [0, 1]; depths H x W z-depth;
    poses 4 x 4 camera-to-world; K 3 x 3 (both frames share it).
    """
    a, b = _float_image(frame_t), _float_image(frame_t1)
    h, w = a.shape[:2]
    if b.shape != a.shape or np.shape(depth_t) != (h, w):
        raise ValueError("frames and depth must share one H x W")
    d = np.asarray(depth_t, np.float64)
    valid = np.isfinite(d) & (d > 0)
    cam = pixel_rays(K, w, h) * np.where(valid, d, 0.0)[..., None]
    rel = np.linalg.inv(np.asarray(pose_t1, np.float64)) @ np.asarray(pose_t, np.float64)
    pc = cam @ rel[:3, :3].T + rel[:3, 3]
    z = pc[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = K[0][0] * pc[..., 0] / z + K[0][2]
        v = K[1][1] * pc[..., 1] / z + K[1][2]
    ok = valid & (z > 0) & (u >= 0.5) & (u <= w - 0.5) & (v >= 0.5) & (v <= h - 0.5)
    uv = np.stack([(u / w) * 2 - 1, (v / h) * 2 - 1], axis=-1)
    grid = torch.from_numpy(np.where(ok[..., None], uv, 0.0).astype(np.float32))[None]
    warped = F.grid_sample(b.permute(2, 0, 1)[None], grid, align_corners=False)[0].permute(1, 2, 0)
    if depth_t1 is not None:
        dt1 = torch.from_numpy(np.asarray(depth_t1, np.float32))[None, None]
        seen = F.grid_sample(dt1, grid, mode="nearest", align_corners=False)[0, 0].numpy()
        ok &= np.abs(seen - z) <= occlusion_tol * np.maximum(seen, 1e-12)
    okt = torch.from_numpy(ok)
    if not okt.any():
        return ConsistencyResult(float("nan"), 0.0)
    err = (warped - a).abs()[okt].mean().item() * 100.0
    return ConsistencyResult(err, float(ok.mean()))
