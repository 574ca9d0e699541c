"""Z-buffered point splatting: a batch of poses -> images, visibility masks and depth.

``SplatRenderer(device).render(cloud_or_store, poses, K, width, height) -> RenderOutput``

The native renderer is plain torch, the same code on CPU and CUDA (the device is explicit).
For a group of poses it:

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

    def __len__(self) -> int:
        return int(self.radius.shape[0])


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


def with_backend(renderer: SplatRenderer, backend: str) -> SplatRenderer:
    """A renderer on the same device with another backend (for side-by-side checks)."""
    return SplatRenderer(renderer.device, replace(renderer.config, backend=backend))
