"""Adapter: render through pytorch3d's PointsRasterizer (``SplatConfig.backend = "pytorch3d"``).

The same ``render`` signature and RenderOutput as the other renderers. Per pose, each point's screen radius
``radius * f / z`` (clamped to ``[sqrt(0.5), max_radius_px]`` px, so it covers at least the
pixel it falls in) is converted to pytorch3d's NDC units (2 / min(H, W) per pixel); the
rasterizer keeps the nearest point per pixel (points_per_pixel=1), i.e. an opaque
compositor, and colour is gathered by that index. Needs pytorch3d importable.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import torch

from backend.geometry.splat.base import DeviceCloud, RenderOutput, SplatConfig, mean_focal


def render(cloud: DeviceCloud, poses: np.ndarray, K: np.ndarray, width: int, height: int,
           config: SplatConfig, scratch: threading.local, want_index: bool) -> RenderOutput:
    """Render with pytorch3d's rasterizer, one pose at a time (``scratch`` is unused)."""
    try:
        from pytorch3d.renderer import PointsRasterizationSettings, PointsRasterizer
        from pytorch3d.structures import Pointclouds
        from pytorch3d.utils import cameras_from_opencv_projection
    except ImportError as e:
        raise ImportError("backend='pytorch3d' needs pytorch3d installed") from e
    cfg = config
    device = cloud.radius.device
    xyz, rgb, radius = cloud.xyz_t.T, cloud.rgb(), cloud.radius
    f = mean_focal(K)
    px_to_ndc = 2.0 / min(width, height)
    settings = PointsRasterizationSettings(
        image_size=(height, width), radius=0.0, points_per_pixel=1
    )
    images, masks, depths, indices = [], [], [], []
    for pose in poses:
        w2c = np.linalg.inv(pose)
        cameras = cameras_from_opencv_projection(
            torch.tensor(w2c[None, :3, :3], dtype=torch.float32, device=device),
            torch.tensor(w2c[None, :3, 3], dtype=torch.float32, device=device),
            torch.tensor(K[None], dtype=torch.float32, device=device),
            torch.tensor([[height, width]], device=device),
        )
        z = xyz @ torch.tensor(w2c[2, :3], dtype=torch.float32, device=device) + float(w2c[2, 3])
        r_px = (radius * f / z.clamp(min=cfg.near)).clamp(math.sqrt(0.5), cfg.max_radius_px)
        keep = z > cfg.near
        points = Pointclouds(points=[xyz[keep]])
        raster = PointsRasterizer(
            cameras=cameras,
            raster_settings=PointsRasterizationSettings(
                image_size=settings.image_size,
                radius=(r_px[keep] * px_to_ndc)[None],
                points_per_pixel=1,
            ),
        )
        frag = raster(points)
        kept = keep.nonzero().squeeze(1)
        idx = frag.idx[0, ..., 0]
        mask = idx >= 0
        winner = torch.where(mask, kept[idx.clamp(min=0)], -1)
        images.append(torch.where(mask[..., None], rgb[winner.clamp(min=0)], 0))
        masks.append(mask)
        depths.append(torch.where(mask, frag.zbuf[0, ..., 0], 0.0))
        indices.append(winner)
    return RenderOutput(
        torch.stack(images).to(torch.uint8),
        torch.stack(masks),
        torch.stack(depths).float(),
        torch.stack(indices) if want_index else None,
    )
