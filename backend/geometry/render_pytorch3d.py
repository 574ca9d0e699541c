"""Adapter: render through pytorch3d's PointsRasterizer (selected by SplatConfig.backend).

Same inputs and RenderOutput as the native renderer. Per pose, each point's screen radius
``radius * f / z`` (clamped to ``[sqrt(0.5), max_radius_px]`` px, so it covers at least the
pixel it falls in) is converted to pytorch3d's NDC units (2 / min(H, W) per pixel); the
rasterizer keeps the nearest point per pixel (points_per_pixel=1), i.e. an opaque
compositor, and colour is gathered by that index. Needs pytorch3d importable.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from backend.geometry.render import RenderOutput, _as_cloud

if TYPE_CHECKING:
    from backend.geometry.render import SplatRenderer


def render_pytorch3d(
    renderer: SplatRenderer,
    source,
    poses: np.ndarray,
    K: np.ndarray,
    width: int,
    height: int,
    return_index: bool = False,
) -> RenderOutput:
    """Render like ``SplatRenderer.render`` with pytorch3d's rasterizer."""
    try:
        from pytorch3d.renderer import PointsRasterizationSettings, PointsRasterizer
        from pytorch3d.structures import Pointclouds
        from pytorch3d.utils import cameras_from_opencv_projection
    except ImportError as e:
        raise ImportError("backend='pytorch3d' needs pytorch3d installed") from e
    device, cfg = renderer.device, renderer.config
    cloud = _as_cloud(source)
    xyz = torch.from_numpy(cloud.xyz).to(device)
    rgb = torch.from_numpy(cloud.rgb).to(device)
    radius = torch.from_numpy(cloud.radius).to(device)
    f = 0.5 * (K[0, 0] + K[1, 1])
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
        torch.stack(indices) if return_index else None,
    )
