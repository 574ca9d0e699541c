"""The anti-aliased splatting as torch tensors (``SplatConfig.antialias = True``; the CUDA
path, and the CPU path without numba): every point a screen-space filter, not an opaque disc
(EWA splatting, Zwicker et al., reduced to isotropic footprints).

1. project every point once per pose (one matmul); its screen radius is ``r_px = radius * f
   / z``; points behind ``near`` or too far off-screen for any tap are dropped;
2. footprint: a point no larger than a pixel (``r_px < tent_radius_px``) is a tent of
   half-width one pixel over the 2 x 2 pixel centres around it (bilinear splatting: the
   minimum low-pass, so no splat is smaller than a pixel and a point at a pixel centre
   gives that pixel alone); a larger one is a Gaussian of sigma ``max(sigma_scale * r_px,
   min_sigma_px)`` over the (2k+1)^2 pixels around its nearest pixel, ``k = ceil(2 sigma -
   0.5)`` (at most ``max_reach_px``), which holds every pixel within 2 sigma;
3. depth pre-pass: the nearest depth is kept per pixel (float ``scatter_reduce_(amin)``)
   over the pixels each footprint really covers (its own pixel, or within its radius);
4. weighted accumulation: every footprint tap within ``depth_tolerance`` (relative) of that
   pixel's front depth adds ``(w, w r, w g, w b)`` (one ``scatter_add_`` per plane); farther
   taps are hidden. Points hidden over their whole footprint (depth above the largest limit
   of their 2 x 2 block or window) are dropped before their taps are formed when that saves
   work: they would add zero weight, so the image is the same either way;
5. normalisation: colour = sum(w c) / sum(w); mask = the pre-pass covered the pixel; depth
   = the front's; index (``want_index`` only) = the nearest point, smallest index on ties.

So the front surface is blended, never the surfaces behind it, and a magnified or minified
surface has no screen-door grid. ``numba_loops`` runs the same steps as compiled loops.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
import torch

from backend.geometry.splat.base import (
    DeviceCloud,
    RenderOutput,
    SplatConfig,
    centred_projections,
    mean_focal,
)

GaussGroup = tuple[torch.Tensor | None, torch.Tensor, torch.Tensor,
                   tuple[torch.Tensor, torch.Tensor], torch.Tensor]
"""(point, z, slot, (x weights, y weights), cover z) of one group of Gaussians."""


def render(cloud: DeviceCloud, poses: np.ndarray, K: np.ndarray, width: int, height: int,
           config: SplatConfig, scratch: threading.local, want_index: bool) -> RenderOutput:
    """Steps 1-5 of the module docstring for one group of poses (a non-empty cloud)."""
    cfg = config
    assert cloud.colour is not None, "the tensor path needs the cloud's colour planes"
    b = len(poses)
    w2, size = width + 2, (width + 2) * (height + 2)
    zbuf, acc = _filter_buffers(scratch, b * size, cloud.radius.device)
    f = mean_focal(K)
    # 1. project; keep the points whose footprint may reach the screen
    pts = _project_filtered(cloud, poses, K, cfg, width, height)
    # 2. footprints by size; 3. depth pre-pass over the pixels each footprint covers
    small = pts.rz < cfg.tent_radius_px / f
    n_small = int(small.sum())
    tents = pts if n_small == len(pts) else pts.subset(small)
    tent = _tent_prepass(tents, zbuf, size, w2, width, height) if len(tents) else None
    gauss: list[GaussGroup] = []
    if n_small < len(pts):
        large = pts if n_small == 0 else pts.subset(~small)
        gauss = _gauss_prepass(large, f, zbuf, size, width, height, cfg)
    # 4. weighted accumulation of the taps within depth_tolerance of the front surface
    limit = zbuf * (1.0 + cfg.depth_tolerance)
    if tent is not None:
        _accumulate_tents(tent, limit, cloud.colour, acc, w2)
    for point, z, slot, weight, _ in gauss:
        _accumulate_gauss(point, z, slot, weight, limit, cloud.colour, acc, b, width, height)
    # 5. normalise; depth is the front surface's, the index its nearest point's
    depth = zbuf.view(b, height + 2, width + 2)[:, 1:-1, 1:-1]
    mask = depth < math.inf
    planes = acc.view(4, b, height + 2, width + 2)[:, :, 1:-1, 1:-1]
    scale = mask / planes[0].clamp(min=1e-12)
    image = (planes[1:] * scale).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 3, 0)
    index = _front_index(tent, gauss, zbuf, len(cloud), b, width, height) if want_index else None
    return RenderOutput(image.contiguous(), mask, torch.where(mask, depth, 0.0), index)


def _filter_buffers(scratch: threading.local, numel: int,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The thread's depth buffer (filled with +inf) and 4 accumulation planes (zeroed)."""
    zbuf = getattr(scratch, "zbuf", None)
    if zbuf is None or zbuf.numel() != numel:
        zbuf = scratch.zbuf = torch.empty(numel, dtype=torch.float32, device=device)
        scratch.acc = torch.empty((4, numel), dtype=torch.float32, device=device)
    return zbuf.fill_(math.inf), scratch.acc.zero_()


def _gauss_prepass(pts: _Points, f: float, zbuf: torch.Tensor, size: int, width: int,
                   height: int, cfg: SplatConfig) -> list[GaussGroup]:
    """Gaussian taps of points larger than a pixel, grouped by how far they reach; the
    pre-pass covers the pixels within each point's radius. Returns (point, z, slot,
    (x weights, y weights), cover z) per group (the separable weights multiply out only
    for the points that are not hidden). Taps off-screen are clamped to the buffers' border with
    zero weight; ``cover z`` is the point's depth where the tap is within its radius,
    else +inf."""
    radius = pts.rz * f
    sigma = (cfg.sigma_scale * radius).clamp_(min=cfg.min_sigma_px, max=cfg.max_reach_px / 2)
    # the (2k+1)^2 window around the nearest pixel holds every pixel within k + 0.5 px
    reach = torch.ceil(2.0 * sigma - 0.5).clamp_(1, cfg.max_reach_px).long()
    cover_r2 = radius.clamp_(min=0.71).square_()
    counts = torch.bincount(reach, minlength=cfg.max_reach_px + 1).tolist()
    groups: list[GaussGroup] = []
    for k, count in enumerate(counts):
        if count == 0:
            continue
        if count == len(pts):
            part, s, r2 = pts, sigma, cover_r2
        else:
            pick = (reach == k).nonzero().squeeze(1)
            part, s, r2 = pts.subset(pick), sigma[pick], cover_r2[pick]
        steps = torch.arange(-k, k + 1, device=zbuf.device, dtype=torch.float32)
        cu, cv, z = part.cu[:, None], part.cv[:, None], part.z
        px, py = cu.round() + steps, cv.round() + steps  # K x (2k+1) pixel columns, rows
        dx2, dy2 = (px - cu).square_(), (py - cv).square_()
        inv = -0.5 / s.square()[:, None]
        wx = (dx2 * inv).exp_().mul_((px >= 0) & (px < width))
        wy = (dy2 * inv).exp_().mul_((py >= 0) & (py < height))
        sx = px.clamp_(-1, width).long() + 1
        sy = (py.clamp_(-1, height).long() + 1) * (width + 2)
        if part.b > 1:
            sy += part.offset(size)[:, None]
        slot = (sy[:, :, None] + sx[:, None, :]).view(count, -1)
        d2 = (dy2[:, :, None] + dx2[:, None, :]).view(count, -1)
        cover = torch.where(d2 <= r2[:, None], z[:, None], math.inf)
        zbuf.scatter_reduce_(0, slot.view(-1), cover.view(-1), "amin")
        groups.append((part.point(), z, slot, (wx, wy), cover))
    return groups


def _front_index(tent: _Tents | None, gauss: list[GaussGroup], zbuf: torch.Tensor, n: int, b: int, width: int,
                 height: int) -> torch.Tensor:
    """Index of the nearest point per pixel (the smallest index among equal depths)."""
    best = torch.full_like(zbuf, n, dtype=torch.int64)
    if tent is not None:
        point = tent.point if tent.point is not None else torch.arange(len(tent.own))
        hit = tent.z == zbuf.take(tent.own)
        best.scatter_reduce_(0, tent.own[hit], point.to(zbuf.device)[hit], "amin")
    for group_point, _, slot, _, cover in gauss:
        point = group_point if group_point is not None else torch.arange(len(slot), device=zbuf.device)
        hit = cover == zbuf.take(slot)
        best.scatter_reduce_(0, slot[hit], point[:, None].expand_as(slot)[hit], "amin")
    inner = best.view(b, height + 2, width + 2)[:, 1:-1, 1:-1]
    return torch.where(inner < n, inner, -1)


@dataclass
class _Points:
    """Projected (pose, point) pairs of a group of poses that may reach the screen."""

    data: torch.Tensor
    """4 x K float32 rows: u - 0.5 and v - 0.5 (pixel centres at integers), z-depth, and
    world radius over z-depth (times the focal length: the screen radius in pixels)."""
    pair: torch.Tensor | None
    """K int64 indices into the B x N pairs (pose-major); None: every pair, in order."""
    n: int
    """Points in the cloud."""
    b: int
    """Poses in the group."""

    @property
    def cu(self) -> torch.Tensor:
        return self.data[0]

    @property
    def cv(self) -> torch.Tensor:
        return self.data[1]

    @property
    def z(self) -> torch.Tensor:
        return self.data[2]

    @property
    def rz(self) -> torch.Tensor:
        return self.data[3]

    def __len__(self) -> int:
        return int(self.data.shape[1])

    def subset(self, sel: torch.Tensor) -> _Points:
        """The pairs where the bool mask ``sel`` is True, or at the int64 indices ``sel``."""
        idx = sel.nonzero().squeeze(1) if sel.dtype == torch.bool else sel
        pair = idx if self.pair is None else self.pair[idx]
        return _Points(self.data.index_select(1, idx), pair, self.n, self.b)

    def _pairs(self) -> torch.Tensor:
        return self.pair if self.pair is not None else torch.arange(len(self), device=self.data.device)

    def point(self) -> torch.Tensor | None:
        """Index into the cloud (None: the identity, one pose and every point here)."""
        if self.b == 1:
            return self.pair
        return self._pairs() % self.n

    def offset(self, size: int) -> torch.Tensor:
        """Start of each pair's pose in the bordered buffers (several poses only)."""
        return self._pairs() // self.n * size


@dataclass
class _Tents:
    """Sub-pixel points as bilinear tents: the 2 x 2 pixel centres around each point."""

    base: torch.Tensor
    """Slot of the top-left tap (int64)."""
    own: torch.Tensor
    """Slot of the pixel the point falls in (the nearest of the four)."""
    frac: torch.Tensor
    """3 x K float32: position within the 2 x 2 block (x, y in [0, 1]) and z-depth."""
    point: torch.Tensor | None
    """Cloud index (None: the identity)."""

    @property
    def z(self) -> torch.Tensor:
        return self.frac[2]

    def subset(self, idx: torch.Tensor) -> _Tents:
        point = idx if self.point is None else self.point[idx]
        return _Tents(self.base[idx], self.own[idx], self.frac.index_select(1, idx), point)


def _project_filtered(cloud: DeviceCloud, poses: np.ndarray, K: np.ndarray, cfg: SplatConfig,
                      width: int, height: int) -> _Points:
    """Step 1: one matmul per group; points behind ``near`` or too far off-screen for any
    tap to land on it are dropped (only when there are any)."""
    b, n = len(poses), len(cloud)
    P = torch.from_numpy(centred_projections(poses, K)).to(cloud.xyz_t.device, torch.float32)
    data = torch.empty((4, b, n), dtype=torch.float32, device=cloud.xyz_t.device)
    if b == 1:  # a batch of one is a plain matmul (no expanded copy of the cloud)
        torch.addmm(P[0, :, 3:], P[0, :, :3], cloud.xyz_t, out=data[:3, 0])
    else:
        data[:3] = torch.baddbmm(P[:, :, 3:], P[:, :, :3], cloud.xyz_t.expand(b, 3, n)).transpose(0, 1)
    data = data.view(4, b * n)
    cu, cv, z, rz = data.unbind(0)
    torch.reciprocal(z, out=rz)
    cu *= rz
    cv *= rz
    rz.view(b, n).mul_(cloud.radius)
    m = cfg.max_reach_px + 1
    keep = (z > cfg.near) & (cu > -m) & (cu < width - 1 + m)
    keep &= (cv > -m) & (cv < height - 1 + m)
    pts = _Points(data, None, n, b)
    return pts if bool(keep.all()) else pts.subset(keep)


def _tent_prepass(pts: _Points, zbuf: torch.Tensor, size: int, w2: int, width: int,
                  height: int) -> _Tents:
    """Tent footprints of sub-pixel points; the pre-pass covers the pixel each falls in.
    Points off-screen are clamped to the buffers' border (their taps land there)."""
    x0 = pts.cu.floor().clamp_(-1, width - 1)
    y0 = pts.cv.floor().clamp_(-1, height - 1)
    frac = torch.empty((3, len(pts)), dtype=torch.float32, device=zbuf.device)
    fx, fy, _ = frac.unbind(0)
    torch.sub(pts.cu, x0, out=fx).clamp_(0, 1)
    torch.sub(pts.cv, y0, out=fy).clamp_(0, 1)
    frac[2] = pts.z
    base_f = torch.add(x0, y0, alpha=w2).add_(w2 + 1)
    own_f = (fy >= 0.5).float().mul_(w2).add_(fx >= 0.5).add_(base_f)
    base, own = base_f.long(), own_f.long()
    if pts.b > 1:
        offset = pts.offset(size)
        base += offset
        own += offset
    zbuf.scatter_reduce_(0, own, pts.z, "amin")
    return _Tents(base, own, frac, pts.point())


def _accumulate_tents(tent: _Tents, limit: torch.Tensor, colour: torch.Tensor, acc: torch.Tensor,
                      w2: int) -> None:
    """Step 4 for the tents: every tap is tested against its own pixel's front depth. Points
    none of whose taps pass (``z`` above the largest limit of their 2 x 2 block) are dropped
    first when that saves work; they would add zero weights, so the result is the same."""
    visible = tent.z <= _block_max(limit, w2).take(tent.base)
    n_visible = int(visible.sum())
    if n_visible == 0:
        return
    if n_visible < 0.75 * len(visible):
        tent = tent.subset(visible.nonzero().squeeze(1))
    steps = torch.tensor([0, 1, w2, w2 + 1], device=tent.base.device)
    slot = tent.base[None, :] + steps[:, None]  # 4 x K
    fx, fy, z = tent.frac.unbind(0)
    wx = torch.stack([1.0 - fx, fx])
    wy = torch.stack([1.0 - fy, fy])
    weight = (wy[:, None, :] * wx[None, :, :]).view(4, -1)
    weight *= z[None, :] <= limit.take(slot)
    _accumulate(acc, slot, weight, colour, tent.point, dim=1)


def _accumulate_gauss(point: torch.Tensor | None, z: torch.Tensor, slot: torch.Tensor,
                      wxy: tuple[torch.Tensor, torch.Tensor], limit: torch.Tensor, colour: torch.Tensor,
                      acc: torch.Tensor, b: int, width: int, height: int) -> None:
    """Step 4 for one group of gaussians (K x (2k+1)^2 taps): as for the tents, points above
    the largest limit of their window are dropped first when that saves work."""
    taps = slot.shape[1]
    k = (math.isqrt(taps) - 1) // 2
    window = _window_max(limit.view(b, height + 2, width + 2), k)
    visible = z <= window.view(-1).take(slot[:, taps // 2])
    n_visible = int(visible.sum())
    if n_visible == 0:
        return
    if n_visible < 0.75 * len(z):
        idx = visible.nonzero().squeeze(1)
        slot, z = slot[idx], z[idx]
        wxy = (wxy[0][idx], wxy[1][idx])
        point = idx if point is None else point[idx]
    wx, wy = wxy
    weight = (wy[:, :, None] * wx[:, None, :]).view(len(z), -1)
    weight *= z[:, None] <= limit.take(slot)
    _accumulate(acc, slot, weight, colour, point, dim=0)


def _window_max(grid: torch.Tensor, k: int) -> torch.Tensor:
    """The largest value within ``k`` pixels (a (2k+1)^2 window) of every pixel of B x H x W
    (separable shifted maxima; much cheaper than max_pool2d on a CPU)."""
    for dim in (2, 1):
        out = grid.clone()
        n = grid.shape[dim]
        for d in range(1, min(k, n - 1) + 1):
            head, tail = out.narrow(dim, 0, n - d), out.narrow(dim, d, n - d)
            torch.maximum(head, grid.narrow(dim, d, n - d), out=head)
            torch.maximum(tail, grid.narrow(dim, 0, n - d), out=tail)
        grid = out
    return grid


def _block_max(limit: torch.Tensor, w2: int) -> torch.Tensor:
    """The largest of each pixel's and its right, lower and lower-right neighbours' values
    (flat bordered buffers ``w2`` wide; the last row and column are left at +inf)."""
    grid = limit.view(-1, w2)
    out = torch.full_like(grid, math.inf)
    torch.maximum(grid[:-1, :-1], grid[:-1, 1:], out=out[:-1, :-1])
    out[:-1, :-1] = torch.maximum(out[:-1, :-1], torch.maximum(grid[1:, :-1], grid[1:, 1:]))
    return out.view(-1)


def _accumulate(acc: torch.Tensor, slot: torch.Tensor, weight: torch.Tensor, colour: torch.Tensor,
                point: torch.Tensor | None, dim: int) -> None:
    """Add ``weight`` and ``weight`` x colour at ``slot`` (same shapes, one point per entry
    along ``dim``) into the 4 accumulation planes."""
    flat = slot.reshape(-1)
    acc[0].scatter_add_(0, flat, weight.reshape(-1))
    col = colour if point is None else colour.index_select(1, point)
    for c in range(3):
        values = weight * (col[c][None, :] if dim == 1 else col[c][:, None])
        acc[c + 1].scatter_add_(0, flat, values.reshape(-1))
