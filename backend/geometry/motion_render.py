"""4D points rendered at a time, as Make-It-4D renders its animated point cloud: the cloud with
every moving point at its forward copy and the cloud with every one at its backward copy are
rendered apart and blended per pixel with weights ``1 - tau`` and ``tau``
(``geometry.motion``). Pixels no moving point reaches are the same in both renders, so the
static part of the world is exactly what a static render shows.

``render_at(renderer, store_or_cloud, poses, K, width, height, t) -> RenderOutput``
(``renderer`` a ``SplatRenderer``); a world without motion costs one render, a moving one two.
"""

from __future__ import annotations

import numpy as np
import torch

from backend.geometry.cloud import PointCloud
from backend.geometry.motion import any_moving, copies_at, phase_at
from backend.geometry.splat import RenderOutput


def render_at(renderer, source, poses: np.ndarray, K: np.ndarray, width: int, height: int,
              t: float) -> RenderOutput:
    """The world ``source`` (PointStore or PointCloud) at ``t`` seconds from each pose."""
    cloud = source.cloud() if hasattr(source, "cloud") else source
    if not any_moving(cloud.motion):
        return renderer.render(source, poses, K, width, height)
    c = copies_at(cloud.xyz, cloud.motion, t)
    forward, backward = cloud.xyz.copy(), cloud.xyz.copy()
    forward[c.index], backward[c.index] = c.forward, c.backward
    periods = np.unique(cloud.motion[c.index, 3])
    single = len(periods) == 1
    a = renderer.render(PointCloud(forward, cloud.rgb, cloud.radius), poses, K, width, height,
                        return_index=not single).numpy()
    b = renderer.render(PointCloud(backward, cloud.rgb, cloud.radius), poses, K, width,
                        height).numpy()
    if single:
        alpha = np.full(a.mask.shape, phase_at(periods, t)[0], np.float32)
    else:  # each pixel at the phase of the point in front of it in the forward render
        tau = phase_at(cloud.motion[:, 3], t)
        alpha = np.where(a.index >= 0, tau[np.maximum(a.index, 0)], 0).astype(np.float32)
    wa = (1 - alpha) * a.mask
    wb = alpha * b.mask
    total = np.maximum(wa + wb, 1e-12)[..., None]
    image = (wa[..., None] * a.image + wb[..., None] * b.image) / total
    mask = a.mask | b.mask
    depth = np.where(a.mask, a.depth, b.depth)
    return RenderOutput(torch.from_numpy(np.clip(image + 0.5, 0, 255).astype(np.uint8)),
                        torch.from_numpy(mask), torch.from_numpy(depth.astype(np.float32)))
