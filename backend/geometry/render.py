"""Anti-aliased point splatting: a batch of poses -> images, visibility masks and depth.

``SplatRenderer(device).render(cloud_or_store, poses, K, width, height) -> RenderOutput``

The native renderer is plain torch, the same code on CPU and CUDA (the device is explicit).
With ``antialias=True`` (the default) every point is a screen-space filter, not an opaque
disc (EWA splatting, Zwicker et al., reduced to isotropic footprints):

1. project every point once per pose; its screen radius is ``r_px = radius * f / z``;
2. footprint: a point no larger than a pixel (``r_px < tent_radius_px``) is a tent of
   half-width one pixel over the 2 x 2 pixel centres around it (bilinear splatting: the
   minimum low-pass, so no splat is smaller than a pixel and a point at a pixel centre
   gives that pixel alone); a larger one is a Gaussian of sigma ``max(sigma_scale * r_px,
   min_sigma_px)`` over the pixels within ``ceil(2 sigma)`` (at most ``max_reach_px``);
3. depth pre-pass: the nearest point's packed ``(z bits << 32) | index`` key is kept per
   pixel (``scatter_reduce_(amin)``) over the pixels each footprint really covers (its own
   pixel, or within its radius);
4. weighted accumulation: every footprint tap within ``depth_tolerance`` (relative) of that
   pixel's front depth adds ``(w, w r, w g, w b)`` (``index_add_``); farther taps are hidden;
5. normalisation: colour = sum(w c) / sum(w); mask = the pre-pass covered the pixel; depth
   and index = the front point's.

So the front surface is blended, never the surfaces behind it, and a magnified or minified
surface has no screen-door grid. ``antialias=False`` keeps the nearest-point z-buffer (every
point an opaque disc), the steps below:

1. projects every point once per pose with one batched matmul ``(K [R|t]) @ X``;
2. culls points behind ``near`` or off-screen by sending them to a dump slot;
3. packs ``(float bits of z << 32) | point index`` into one int64 key per point, so the
   nearest point of a pixel is the minimum key (positive float32 bits order like the floats);
4. scatters the keys of every point into its own pixel with ``scatter_reduce_(amin)``;
5. expands only the points whose screen radius ``radius * f / z`` is at least
   ``min_disc_px`` into discs (pixel centres within the radius, clamped to ``max_radius_px``)
   and scatters those keys too;
6. reads colour by the winning index and depth back from the key's high bits.

A point always covers the pixel it projects into, so a cloud lifted from an image renders back
to that image exactly at the same pose. ``config.backend = "pytorch3d"`` selects an adapter
through pytorch3d's ``PointsRasterizer`` (see ``render_pytorch3d``) where pytorch3d is installed.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from backend.geometry.cloud import PointCloud

if TYPE_CHECKING:
    from backend.geometry.store import PointStore

_EMPTY_HI = 0x7F800000  # float32 +inf bits: the depth word of an empty pixel's key


@dataclass
class RenderOutput:
    """Rendered views of a batch of poses (torch tensors on the renderer's device)."""

    image: torch.Tensor
    """B x H x W x 3 uint8 RGB; black where ``mask`` is False."""
    mask: torch.Tensor
    """B x H x W bool, True where a point covers the pixel."""
    depth: torch.Tensor
    """B x H x W float32 z-depth of the nearest point; 0 where ``mask`` is False."""
    index: torch.Tensor | None = None
    """B x H x W int64 index of the winning point, -1 where empty (``return_index=True``)."""

    def numpy(self) -> RenderOutput:
        """The same output as numpy arrays on the CPU."""
        idx = None if self.index is None else self.index.cpu().numpy()
        return RenderOutput(
            self.image.cpu().numpy(), self.mask.cpu().numpy(), self.depth.cpu().numpy(), idx
        )


@dataclass(frozen=True)
class SplatConfig:
    """Settings of :class:`SplatRenderer`."""

    backend: str = "native"
    """"native" (torch scatter) or "pytorch3d" (needs pytorch3d importable)."""
    near: float = 1e-4
    """Points with z-depth at or below this (world units) are culled."""
    min_disc_px: float = 1.0
    """Points whose screen radius is below this cover only the pixel they fall in."""
    max_radius_px: float = 4.0
    """Screen radii are clamped to this many pixels."""
    batch_size: int = 1
    """Poses projected and scattered together (more helps on a GPU, not on a CPU)."""
    antialias: bool = True
    """Filtered footprints blended within ``depth_tolerance`` (see the module docstring);
    False: the nearest point's colour only."""
    tent_radius_px: float = 0.75
    """Points with a smaller screen radius are bilinear tents over 2 x 2 pixels."""
    sigma_scale: float = 0.55
    """Gaussian sigma of a larger point, in units of its screen radius."""
    min_sigma_px: float = 0.42
    """Smallest Gaussian sigma in pixels (the low-pass of a large point)."""
    max_reach_px: int = 4
    """Gaussian footprints reach at most this many pixels from their centre pixel."""
    depth_tolerance: float = 0.04
    """Taps at most this much (relative) behind a pixel's front depth are blended."""
    compile: bool = False
    """Fuse the per-point and per-pixel passes with ``torch.compile`` (needs a C++ compiler
    on CPU or triton on CUDA; the first render then takes ~20-30 s to compile)."""


@dataclass(frozen=True)
class DeviceCloud:
    """A cloud laid out for rendering on one device."""

    xyz_t: torch.Tensor
    """3 x N float32 positions (transposed for the projection matmul)."""
    rgba: torch.Tensor
    """N + 1 int32 packed RGBA; the extra last entry is the black of empty pixels."""
    radius: torch.Tensor
    """N float32 world radii."""
    rgb1: torch.Tensor | None = None
    """N x 4 float32 ``(1, r, g, b)``, colours in [0, 255] (for the anti-aliased blend)."""

    def __len__(self) -> int:
        return int(self.radius.shape[0])


@dataclass(frozen=True)
class Projected:
    """The points of a group of poses that may reach the screen, one entry per (pose, point)."""

    index: torch.Tensor
    """Point index in the cloud (int64)."""
    offset: torch.Tensor
    """Start of the pose's bordered buffer (int64)."""
    u: torch.Tensor
    v: torch.Tensor
    """Pixel coordinates (pixel centres at +0.5)."""
    z: torch.Tensor
    """Z-depth."""
    r_px: torch.Tensor
    """Screen radius in pixels."""


def _as_cloud(source: PointCloud | PointStore) -> PointCloud:
    return source if isinstance(source, PointCloud) else source.cloud()


def _check_poses(poses: np.ndarray | torch.Tensor) -> np.ndarray:
    p = np.asarray(poses.cpu() if isinstance(poses, torch.Tensor) else poses, dtype=np.float64)
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3 or p.shape[1:] != (4, 4):
        raise ValueError(f"poses must be B x 4 x 4 camera-to-world, got shape {p.shape}")
    return p


def projection_matrices(poses: np.ndarray, K: np.ndarray) -> np.ndarray:
    """B x 3 x 4 matrices ``K [R|t]`` mapping world points to ``(u z, v z, z)``."""
    w2c = np.linalg.inv(poses)
    return np.asarray(K, dtype=np.float64) @ w2c[:, :3, :]


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


class SplatRenderer:
    """Renders point clouds at a batch of poses with a z-buffer and screen-space discs."""

    def __init__(self, device: str | torch.device = "cpu", config: SplatConfig | None = None):
        self.device = torch.device(device)
        self.config = config or SplatConfig()
        if self.config.backend not in ("native", "pytorch3d"):
            raise ValueError(f"unknown backend {self.config.backend!r}: native or pytorch3d")
        if self.config.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.config.batch_size}")
        if self.config.max_radius_px < self.config.min_disc_px:
            raise ValueError("max_radius_px must be >= min_disc_px")
        # One renderer may serve several job threads: the upload cache is locked and holds
        # its source (so an id is never reused while cached), the z-buffer is per thread.
        self._cache: tuple[object, int, int, DeviceCloud] | None = None
        self._cache_lock = threading.Lock()
        self._local = threading.local()
        self._project = project_keys
        self._read_back = read_back
        if self.config.compile:
            self._project = torch.compile(project_keys, dynamic=False)
            self._read_back = torch.compile(read_back, dynamic=False)

    def to_device(self, source: PointCloud | PointStore) -> DeviceCloud:
        """Upload a cloud (or the store's current cloud); reused while the source is unchanged."""
        version = getattr(source, "version", None)
        with self._cache_lock:
            cached = self._cache
        if cached is not None and cached[0] is source and cached[1:3] == (len(source), version):
            return cached[3]
        cloud = _as_cloud(source)
        rgba = np.zeros((len(cloud) + 1, 4), np.uint8)
        rgba[:-1, :3] = cloud.rgb
        rgba[:-1, 3] = 255
        dc = DeviceCloud(
            torch.from_numpy(np.ascontiguousarray(cloud.xyz.T)).to(self.device),
            torch.from_numpy(rgba.view(np.int32).reshape(-1)).to(self.device),
            torch.from_numpy(cloud.radius).to(self.device),
            torch.from_numpy(np.concatenate([np.ones((len(cloud), 1), np.float32),
                                             cloud.rgb.astype(np.float32)], 1)).to(self.device),
        )
        with self._cache_lock:  # a PointCloud is immutable; a store bumps its version
            self._cache = (source, len(source), version, dc)
        return dc

    @torch.no_grad()
    def render(
        self,
        source: PointCloud | PointStore,
        poses: np.ndarray | torch.Tensor,
        K: np.ndarray,
        width: int,
        height: int,
        return_index: bool = False,
    ) -> RenderOutput:
        """Render ``source`` at each of ``poses`` (B x 4 x 4 camera-to-world, OpenCV).

        Args:
            source: a PointCloud or a PointStore.
            poses: B x 4 x 4 (or one 4 x 4) camera-to-world poses.
            K: 3 x 3 intrinsics in pixels for a ``width`` x ``height`` image.
            return_index: also return the winning point index per pixel.
        """
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        poses = _check_poses(poses)
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3):
            raise ValueError(f"K must be 3 x 3, got {K.shape}")
        if self.config.backend == "pytorch3d":
            from backend.geometry.render_pytorch3d import render_pytorch3d

            return render_pytorch3d(self, source, poses, K, width, height, return_index)
        cloud = self.to_device(source)
        b, dev = len(poses), self.device
        out = RenderOutput(
            torch.empty((b, height, width, 3), dtype=torch.uint8, device=dev),
            torch.empty((b, height, width), dtype=torch.bool, device=dev),
            torch.empty((b, height, width), dtype=torch.float32, device=dev),
            torch.empty((b, height, width), dtype=torch.int64, device=dev) if return_index else None,
        )
        step = self.config.batch_size
        for start in range(0, b, step):
            part = slice(start, start + step)
            image, mask, depth, index = self._render_group(cloud, poses[part], K, width, height)
            out.image[part], out.mask[part], out.depth[part] = image, mask, depth
            if out.index is not None:
                out.index[part] = index
        return out

    def _render_group(
        self, cloud: DeviceCloud, poses: np.ndarray, K: np.ndarray, width: int, height: int
    ) -> tuple[torch.Tensor, ...]:
        cfg = self.config
        b, n = len(poses), len(cloud)
        size = (height + 2) * (width + 2)
        buf = getattr(self._local, "keys", None)
        if buf is None or buf.numel() != b * size:
            buf = self._local.keys = torch.empty(b * size, dtype=torch.int64, device=self.device)
        keys = buf.fill_(_EMPTY_HI << 32 | n)  # reused: no fresh pages per frame
        if n and cfg.antialias:
            return self._render_filtered(keys, cloud, poses, K, width, height)
        if n:
            # 1. project once per pose; 2. cull to the border / NaN keys; 3. pack keys
            P = torch.from_numpy(projection_matrices(poses, K)).to(self.device, torch.float32)
            f = 0.5 * (K[0, 0] + K[1, 1])
            slot, key, r_px, r_max = self._project(
                P, cloud.xyz_t, cloud.radius * f, cfg.near, width, height
            )
            # 4. every point covers the pixel it falls in
            keys.scatter_reduce_(0, slot.view(-1), key.view(-1), "amin")
            # 5. points with a screen radius >= min_disc_px cover a disc
            if float(r_max) >= cfg.min_disc_px:
                big = r_px >= cfg.min_disc_px
                self._splat_discs(keys, big, P, cloud, r_px, key, width, height)
        # 6. colour by the winning index, depth from the key's high word
        return self._read_back(keys.view(b, size), cloud.rgba, width, height)

    def _splat_discs(
        self,
        keys: torch.Tensor,
        big: torch.Tensor,
        P: torch.Tensor,
        cloud: DeviceCloud,
        r_px: torch.Tensor,
        key: torch.Tensor,
        width: int,
        height: int,
    ) -> None:
        """Scatter the keys of ``big`` points over every pixel centre within their radius."""
        cfg = self.config
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
            steps = torch.arange(-k, k + 1, device=self.device)
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


    def _render_filtered(
        self, keys: torch.Tensor, cloud: DeviceCloud, poses: np.ndarray, K: np.ndarray,
        width: int, height: int,
    ) -> tuple[torch.Tensor, ...]:
        """Steps 1-5 of the module docstring; ``keys`` is the filled bordered key buffer."""
        cfg, dev = self.config, self.device
        b, n = len(poses), len(cloud)
        size = (width + 2) * (height + 2)
        # 1. project (B x N each); points behind the camera or far off-screen get no taps
        P = torch.from_numpy(projection_matrices(poses, K)).to(dev, torch.float32)
        x, y, z = cloud.xyz_t[:, None, :].unbind(0)
        uz, vz, z = (x * P[:, r, 0:1] + y * P[:, r, 1:2] + z * P[:, r, 2:3] + P[:, r, 3:4] for r in range(3))
        inv_z = 1.0 / z.clamp(min=cfg.near)
        u, v = uz * inv_z, vz * inv_z
        r_px = cloud.radius * (0.5 * (K[0, 0] + K[1, 1])) * inv_z
        reach = cfg.max_reach_px + 1
        ok = (z > cfg.near) & (u > -reach) & (u < width + reach) & (v > -reach) & (v < height + reach)
        key = (z.view(torch.int32).long() << 32) | torch.arange(n, device=dev)
        offset = torch.arange(b, device=dev)[:, None] * size
        # 2. footprints (slots into the bordered buffers, weights); 3. depth pre-pass
        small = ok & (r_px < cfg.tent_radius_px)
        taps = [self._tent_taps(small, u, v, z, offset, key, keys, width, height)]
        big = ok & ~small
        if bool(big.any()):
            taps += self._gauss_taps(big, u, v, z, r_px, offset, key, keys, width, height)
        limit = (keys >> 32).to(torch.int32).view(torch.float32) * (1.0 + cfg.depth_tolerance)
        # 4. weighted accumulation (one plane per channel) of the taps near the front surface
        acc = torch.zeros((4, b * size), dtype=torch.float32, device=dev)
        for point, zs, slot, weight in taps:
            weight = weight * (zs[:, None] <= limit.take(slot))
            flat_slot = slot.view(-1)
            acc[0].index_add_(0, flat_slot, weight.view(-1))
            for c in range(3):
                values = weight * cloud.rgb1[:, c + 1].take(point)[:, None]
                acc[c + 1].index_add_(0, flat_slot, values.view(-1))
        # 5. normalise; depth and index are the front point's
        acc = acc.view(4, b, height + 2, width + 2)[:, :, 1:-1, 1:-1]
        inner = keys.view(b, height + 2, width + 2)[:, 1:-1, 1:-1]
        depth = (inner >> 32).to(torch.int32).view(torch.float32)
        mask = depth < math.inf
        image = (acc[1:] / acc[:1].clamp(min=1e-12) + 0.5).permute(1, 2, 3, 0)
        image = torch.where(mask[..., None], image.clamp(0, 255), 0.0).to(torch.uint8)
        winner = (inner & 0xFFFFFFFF).to(torch.int32)
        return image, mask, torch.where(mask, depth, 0.0), torch.where(mask, winner, -1)

    def _tent_taps(self, sel: torch.Tensor, u: torch.Tensor, v: torch.Tensor, z: torch.Tensor,
                   offset: torch.Tensor, key: torch.Tensor, keys: torch.Tensor, width: int,
                   height: int) -> tuple[torch.Tensor, ...]:
        """Bilinear (tent) taps on the 2 x 2 pixel centres around every point (B x N).

        Points not in ``sel`` get zero weights and no pre-pass; the one-pixel border takes
        the taps just off-screen. The pre-pass covers the pixel each point falls in.
        """
        b, n = u.shape
        cu, cv = u - 0.5, v - 0.5
        x0, y0 = cu.floor(), cv.floor()
        fx, fy = cu - x0, cv - y0
        w2 = width + 2
        base = (y0.long().clamp(-1, height - 1) + 1) * w2 + x0.long().clamp(-1, width - 1) + 1 + offset
        onscreen = sel & (u >= 0) & (u < width) & (v >= 0) & (v < height)
        own = base + (fx >= 0.5).long() + (fy >= 0.5).long() * w2
        keys.scatter_reduce_(0, torch.where(onscreen, own, 0).view(-1), key.view(-1), "amin")
        slot = base.view(-1, 1) + torch.tensor([0, 1, w2, w2 + 1], device=self.device)
        gx, gy = (1.0 - fx) * sel, (1.0 - fy) * sel
        fx, fy = fx * sel, fy * sel
        weight = torch.stack([gx * gy, fx * gy, gx * fy, fx * fy], -1).view(-1, 4)
        point = torch.arange(n, device=self.device).repeat(b)
        return point, z.view(-1), slot, weight

    def _gauss_taps(self, sel: torch.Tensor, u: torch.Tensor, v: torch.Tensor, z: torch.Tensor,
                    r_px: torch.Tensor, offset: torch.Tensor, key: torch.Tensor, keys: torch.Tensor,
                    width: int, height: int) -> list[tuple[torch.Tensor, ...]]:
        """Gaussian taps of the selected points, grouped by how far their footprint reaches;
        the pre-pass covers the pixels within each point's radius."""
        cfg = self.config
        n = u.shape[1]
        flat = sel.view(-1).nonzero().squeeze(1)
        radius = r_px.view(-1)[flat]
        sigma = (cfg.sigma_scale * radius).clamp(min=cfg.min_sigma_px, max=cfg.max_reach_px / 2)
        reach = torch.ceil(2.0 * sigma).long().clamp(1, cfg.max_reach_px)
        cover_r2 = radius.clamp(min=0.71).square()
        groups = []
        for k in range(1, cfg.max_reach_px + 1):
            pick = (reach == k).nonzero().squeeze(1)
            if pick.numel() == 0:
                continue
            idx = flat[pick]
            steps = torch.arange(-k, k + 1, device=self.device)
            dy, dx = (t.reshape(1, -1) for t in torch.meshgrid(steps, steps, indexing="ij"))
            cu, cv = u.view(-1)[idx, None], v.view(-1)[idx, None]
            px, py = cu.floor().long() + dx, cv.floor().long() + dy
            d2 = (px + 0.5 - cu).square() + (py + 0.5 - cv).square()
            inside = (px >= 0) & (px < width) & (py >= 0) & (py < height)
            base = offset.view(-1)[idx // n, None]
            slot = torch.where(inside, (py + 1) * (width + 2) + px + 1 + base, 0)
            cover = torch.where((d2 <= cover_r2[pick, None]) & inside, slot, 0)
            keys.scatter_reduce_(0, cover.view(-1), key.view(-1)[idx, None].expand_as(cover).reshape(-1),
                                 "amin")
            weight = torch.exp(-0.5 * d2 / sigma[pick, None].square()) * inside
            groups.append((idx % n, z.view(-1)[idx], slot, weight))
        return groups


def with_backend(renderer: SplatRenderer, backend: str) -> SplatRenderer:
    """A renderer on the same device with another backend (for side-by-side checks)."""
    return SplatRenderer(renderer.device, replace(renderer.config, backend=backend))
