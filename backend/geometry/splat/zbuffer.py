"""The nearest-point z-buffer (``SplatConfig.antialias = False``): every point an opaque disc.

1. project every point once per pose with one batched matmul ``(K [R|t]) @ X``;
2. cull points behind ``near`` or off-screen by sending them to a dump slot;
3. pack ``(float bits of z << 32) | point index`` into one int64 key per point, so the
   nearest point of a pixel is the minimum key (positive float32 bits order like the floats);
4. scatter the keys of every point into its own pixel with ``scatter_reduce_(amin)``;
5. expand only the points whose screen radius ``radius * f / z`` is at least
   ``min_disc_px`` into discs (pixel centres within the radius, clamped to ``max_radius_px``)
   and scatter those keys too;
6. read colour by the winning index and depth back from the key's high bits.

A point always covers the pixel it falls in, so a cloud lifted from an image renders back to
that image exactly at the same pose. Plain torch: the same code on CPU and CUDA.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable

import numpy as np
import torch

from backend.geometry.splat.base import (
    DeviceCloud,
    RenderOutput,
    SplatConfig,
    mean_focal,
    projection_matrices,
)

EMPTY_HI = 0x7F800000  # float32 +inf bits: the depth word of an empty pixel's key


def project_keys(
    P: torch.Tensor, xyz_t: torch.Tensor, radius_f: torch.Tensor, near: float, width: int, height: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixel slot, z-buffer key and screen radius of every point for every pose.

    ``P`` is B x 3 x 4 (``K [R|t]``), ``xyz_t`` 3 x N, ``radius_f`` N world radii times the
    focal length. Slots index a B x (H+2) x (W+2) buffer whose one-pixel border catches the
    off-screen points; points at or behind ``near`` get a NaN depth, whose key loses to the
    empty key. Returns (slot int64 B x N, key int64 B x N, radius_px float32 B x N, the
    largest radius_px as a 0-d tensor).
    """
    b, n = P.shape[0], xyz_t.shape[1]
    x, y, z = xyz_t[:, None, :].unbind(0)  # each 1 x N
    uz, vz, z = (x * P[:, r, 0:1] + y * P[:, r, 1:2] + z * P[:, r, 2:3] + P[:, r, 3:4] for r in range(3))
    inv_z = 1.0 / z.clamp(min=near)
    u = (uz * inv_z + 1.0).clamp(0, width + 1)
    v = (vz * inv_z + 1.0).clamp(0, height + 1)
    offset = torch.arange(b, device=P.device)[:, None] * ((width + 2) * (height + 2))
    slot = v.long() * (width + 2) + u.long() + offset
    z_bits = torch.where(z > near, z, torch.nan).view(torch.int32).long()
    key = (z_bits << 32) | torch.arange(n, device=P.device)
    r_px = radius_f * inv_z
    return slot, key, r_px, r_px.max()


def read_back(
    keys: torch.Tensor, rgba: torch.Tensor, width: int, height: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Image, mask, depth and winner index of a B x (H+2)(W+2) key buffer's inner pixels."""
    b = keys.shape[0]
    inner = keys.view(b, height + 2, width + 2)[:, 1:-1, 1:-1]
    depth = (inner >> 32).to(torch.int32).view(torch.float32)
    mask = depth < math.inf
    winner = (inner & 0xFFFFFFFF).to(torch.int32)
    colour = rgba.index_select(0, winner.reshape(-1))
    image = colour.view(torch.uint8).view(b, height, width, 4)[..., :3].contiguous()
    return image, mask, torch.where(mask, depth, 0.0), torch.where(mask, winner, -1)


@functools.cache
def _kernels(compiled: bool) -> tuple[Callable, Callable]:
    """``project_keys`` and ``read_back``, fused by ``torch.compile`` when asked (once)."""
    if not compiled:
        return project_keys, read_back
    return torch.compile(project_keys, dynamic=False), torch.compile(read_back, dynamic=False)


def render(cloud: DeviceCloud, poses: np.ndarray, K: np.ndarray, width: int, height: int,
           config: SplatConfig, scratch: threading.local, want_index: bool) -> RenderOutput:
    """Steps 1-6 of the module docstring for one group of poses."""
    b, n = len(poses), len(cloud)
    device = cloud.radius.device
    project, read = _kernels(config.compile)
    size = (height + 2) * (width + 2)
    buf = getattr(scratch, "keys", None)
    if buf is None or buf.numel() != b * size:
        buf = scratch.keys = torch.empty(b * size, dtype=torch.int64, device=device)
    keys = buf.fill_(EMPTY_HI << 32 | n)  # reused: no fresh pages per frame
    if n:
        # 1. project once per pose; 2. cull to the border / NaN keys; 3. pack keys
        P = torch.from_numpy(projection_matrices(poses, K)).to(device, torch.float32)
        slot, key, r_px, r_max = project(P, cloud.xyz_t, cloud.radius * mean_focal(K), config.near,
                                         width, height)
        # 4. every point covers the pixel it falls in
        keys.scatter_reduce_(0, slot.view(-1), key.view(-1), "amin")
        # 5. points with a screen radius >= min_disc_px cover a disc
        if float(r_max) >= config.min_disc_px:
            big = r_px >= config.min_disc_px
            _splat_discs(keys, big, P, cloud, r_px, key, width, height, config)
    # 6. colour by the winning index, depth from the key's high word
    image, mask, depth, index = read(keys.view(b, size), cloud.rgba, width, height)
    return RenderOutput(image, mask, depth, index if want_index else None)


def _splat_discs(keys: torch.Tensor, big: torch.Tensor, P: torch.Tensor, cloud: DeviceCloud,
                 r_px: torch.Tensor, key: torch.Tensor, width: int, height: int,
                 cfg: SplatConfig) -> None:
    """Scatter the keys of ``big`` points over every pixel centre within their radius."""
    n = r_px.shape[1]
    flat = big.view(-1).nonzero().squeeze(1)
    view, point = flat // n, flat % n
    proj = torch.bmm(P[view, :, :3], cloud.xyz_t[:, point].T[:, :, None])[..., 0] + P[view, :, 3]
    z = proj[:, 2]
    u, v = proj[:, 0] / z, proj[:, 1] / z
    radius = r_px.view(-1)[flat].clamp(max=cfg.max_radius_px)
    reach = torch.ceil(radius - 0.5).long().clamp(min=1)
    near = (z > cfg.near) & (u > -reach) & (u < width + reach) & (v > -reach)
    near &= v < height + reach
    w2, size = width + 2, (width + 2) * (height + 2)
    for k in range(1, int(math.ceil(cfg.max_radius_px - 0.5)) + 1):
        sel = (near & (reach == k)).nonzero().squeeze(1)
        if sel.numel() == 0:
            continue
        steps = torch.arange(-k, k + 1, device=keys.device)
        dy, dx = (t.reshape(1, -1) for t in torch.meshgrid(steps, steps, indexing="ij"))
        cu, cv = u[sel, None], v[sel, None]
        px = cu.floor().long() + dx
        py = cv.floor().long() + dy
        inside = (px + 0.5 - cu).square() + (py + 0.5 - cv).square() <= radius[sel, None] ** 2
        inside &= (px >= 0) & (px < width) & (py >= 0) & (py < height)
        # inner pixel (px, py) sits at (px + 1, py + 1) of the bordered buffer; slot 0
        # (a border corner) takes the pixels outside the disc
        slot = view[sel, None] * size + (py + 1) * w2 + px + 1
        slot = torch.where(inside, slot, 0)
        bkey = key.view(-1)[flat[sel], None].expand_as(slot)
        keys.scatter_reduce_(0, slot.reshape(-1), bkey.reshape(-1), "amin")
