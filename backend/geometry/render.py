"""Anti-aliased point splatting: a batch of poses -> images, visibility masks and depth.

``SplatRenderer(device).render(cloud_or_store, poses, K, width, height) -> RenderOutput``

The native renderer is plain torch, the same code on CPU and CUDA (the device is explicit).
With ``antialias=True`` (the default) every point is a screen-space filter, not an opaque
disc (EWA splatting, Zwicker et al., reduced to isotropic footprints):

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
   = the front's; index (``return_index=True`` only) = the nearest point, smallest index on
   ties.

So the front surface is blended, never the surfaces behind it, and a magnified or minified
surface has no screen-door grid. On a CPU with numba installed, these steps run as compiled
loops (``splat_cpu``: two passes over the points on all cores, 1.5-3x faster than these
tensor ops); ``SplatConfig(cpu_loops=False)`` keeps the tensors, which are also the CUDA
path. ``antialias=False`` keeps the nearest-point z-buffer (every point an opaque disc), the
steps below:

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

import logging
import math
import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from backend.geometry import splat_cpu
from backend.geometry.cloud import PointCloud

if TYPE_CHECKING:
    from backend.geometry.store import PointStore

log = logging.getLogger(__name__)

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
    cpu_loops: bool = True
    """On a CPU with numba installed, the filtered path runs as compiled loops
    (``splat_cpu``: the same arithmetic, several times faster); False: torch tensors."""
    threads: int = 0
    """Threads of the compiled loops (0: torch's intra-op thread count)."""
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
    colour: torch.Tensor | None = None
    """3 x N float32 colour planes in [0, 255] (the tensor path's anti-aliased blend; None
    where the compiled CPU loops render)."""

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


def centred_projections(poses: np.ndarray, K: np.ndarray) -> np.ndarray:
    """``projection_matrices`` with pixel centres at integer coordinates (the filtered path)."""
    P = projection_matrices(poses, K)
    P[:, :2] -= 0.5 * P[:, 2:3]
    return P


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
        cpu = self.device.type == "cpu"
        self._cpu_loops = self.config.cpu_loops and cpu and splat_cpu.available()
        self._project = project_keys
        self._read_back = read_back
        if self.config.compile:
            self._project = torch.compile(project_keys, dynamic=False)
            self._read_back = torch.compile(read_back, dynamic=False)

    def warm_up(self) -> None:
        """Compile the CPU loops now (on first use they take 3-4 s, or ~0.3 s to load from
        numba's cache) by rendering one point; nothing to do on other paths."""
        if not self._cpu_loops:
            return
        try:
            self._render_one_point()
        except Exception as exc:  # a numba that cannot compile here: the torch path renders
            log.warning("compiled CPU splatting unavailable (%s); rendering with torch", exc)
            self._cpu_loops = False
            with self._cache_lock:  # uploaded without the colour planes the torch path needs
                self._cache = None

    def _render_one_point(self) -> None:
        one = PointCloud(np.array([[0.0, 0.0, 2.0]], np.float32), np.full((1, 3), 255, np.uint8),
                         np.array([0.01], np.float32))
        K = np.array([[8.0, 0.0, 4.0], [0.0, 8.0, 4.0], [0.0, 0.0, 1.0]])
        SplatRenderer(self.device, self.config).render(one, np.eye(4), K, 8, 8, return_index=True)

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
        planes = None if self._cpu_loops else np.ascontiguousarray(cloud.rgb.T, np.float32)
        dc = DeviceCloud(  # the compiled loops read rgba; only the tensor path needs planes
            torch.from_numpy(np.ascontiguousarray(cloud.xyz.T)).to(self.device),
            torch.from_numpy(rgba.view(np.int32).reshape(-1)).to(self.device),
            torch.from_numpy(cloud.radius).to(self.device),
            None if planes is None else torch.from_numpy(planes).to(self.device),
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
        if self._cpu_loops and self.config.antialias and len(cloud):
            self._render_filtered_cpu(cloud, poses, K, width, height, out)
            return out
        step = self.config.batch_size
        if b <= step:  # one group: its tensors are the output
            return RenderOutput(*self._render_group(cloud, poses, K, width, height, return_index))
        for start in range(0, b, step):
            part = slice(start, start + step)
            image, mask, depth, index = self._render_group(cloud, poses[part], K, width, height,
                                                           return_index)
            out.image[part], out.mask[part], out.depth[part] = image, mask, depth
            if out.index is not None:
                out.index[part] = index
        return out

    def _render_group(
        self, cloud: DeviceCloud, poses: np.ndarray, K: np.ndarray, width: int, height: int,
        want_index: bool,
    ) -> tuple[torch.Tensor, ...]:
        cfg = self.config
        b, n = len(poses), len(cloud)
        if n and cfg.antialias:
            return self._render_filtered(cloud, poses, K, width, height, want_index)
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
        image, mask, depth, index = self._read_back(keys.view(b, size), cloud.rgba, width, height)
        return image, mask, depth, index if want_index else None

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
        self, cloud: DeviceCloud, poses: np.ndarray, K: np.ndarray, width: int, height: int,
        want_index: bool,
    ) -> tuple[torch.Tensor, ...]:
        """Steps 1-5 of the module docstring for one group of poses."""
        cfg = self.config
        b = len(poses)
        w2, size = width + 2, (width + 2) * (height + 2)
        zbuf, acc = self._filter_buffers(b * size)
        f = 0.5 * (K[0, 0] + K[1, 1])
        # 1. project; keep the points whose footprint may reach the screen
        pts = _project_filtered(cloud, poses, K, cfg, width, height)
        # 2. footprints by size; 3. depth pre-pass over the pixels each footprint covers
        small = pts.rz < cfg.tent_radius_px / f
        n_small = int(small.sum())
        tents = pts if n_small == len(pts) else pts.subset(small)
        tent = _tent_prepass(tents, zbuf, size, w2, width, height) if len(tents) else None
        gauss = []
        if n_small < len(pts):
            large = pts if n_small == 0 else pts.subset(~small)
            gauss = self._gauss_prepass(large, f, zbuf, size, width, height)
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
        return image.contiguous(), mask, torch.where(mask, depth, 0.0), index

    def _render_filtered_cpu(
        self, cloud: DeviceCloud, poses: np.ndarray, K: np.ndarray, width: int, height: int,
        out: RenderOutput,
    ) -> None:
        """Steps 1-5 as compiled loops (``splat_cpu``), one pose at a time, into ``out``."""
        P = centred_projections(poses, K)
        f = 0.5 * (K[0, 0] + K[1, 1])
        xyz_t = np.ascontiguousarray(cloud.xyz_t.numpy(), np.float32)
        radius = np.ascontiguousarray(cloud.radius.numpy(), np.float32)
        rgb = cloud.rgba.numpy().view(np.uint8).reshape(-1, 4)
        threads = self.config.threads or torch.get_num_threads()
        for i, p in enumerate(P):
            views = (out.image[i].numpy(), out.mask[i].numpy(), out.depth[i].numpy(),
                     None if out.index is None else out.index[i].numpy())
            splat_cpu.render_filtered(xyz_t, radius, rgb, p, f, width, height, self.config, threads,
                                      views)

    def _filter_buffers(self, numel: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The thread's depth buffer (filled with +inf) and 4 accumulation planes (zeroed)."""
        zbuf = getattr(self._local, "zbuf", None)
        if zbuf is None or zbuf.numel() != numel:
            zbuf = self._local.zbuf = torch.empty(numel, dtype=torch.float32, device=self.device)
            self._local.acc = torch.empty((4, numel), dtype=torch.float32, device=self.device)
        return zbuf.fill_(math.inf), self._local.acc.zero_()

    def _gauss_prepass(self, pts: _Points, f: float, zbuf: torch.Tensor, size: int, width: int,
                       height: int) -> list[tuple[torch.Tensor | None, ...]]:
        """Gaussian taps of points larger than a pixel, grouped by how far they reach; the
        pre-pass covers the pixels within each point's radius. Returns (point, z, slot,
        (x weights, y weights), cover z) per group (the separable weights multiply out only
        for the points that are not hidden). Taps off-screen are clamped to the buffers' border with
        zero weight; ``cover z`` is the point's depth where the tap is within its radius,
        else +inf."""
        cfg = self.config
        radius = pts.rz * f
        sigma = (cfg.sigma_scale * radius).clamp_(min=cfg.min_sigma_px, max=cfg.max_reach_px / 2)
        # the (2k+1)^2 window around the nearest pixel holds every pixel within k + 0.5 px
        reach = torch.ceil(2.0 * sigma - 0.5).clamp_(1, cfg.max_reach_px).long()
        cover_r2 = radius.clamp_(min=0.71).square_()
        counts = torch.bincount(reach, minlength=cfg.max_reach_px + 1).tolist()
        groups = []
        for k, count in enumerate(counts):
            if count == 0:
                continue
            if count == len(pts):
                part, s, r2 = pts, sigma, cover_r2
            else:
                pick = (reach == k).nonzero().squeeze(1)
                part, s, r2 = pts.subset(pick), sigma[pick], cover_r2[pick]
            steps = torch.arange(-k, k + 1, device=self.device, dtype=torch.float32)
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


def _front_index(tent: _Tents | None, gauss: list, zbuf: torch.Tensor, n: int, b: int, width: int,
                 height: int) -> torch.Tensor:
    """Index of the nearest point per pixel (the smallest index among equal depths)."""
    best = torch.full_like(zbuf, n, dtype=torch.int64)
    if tent is not None:
        point = tent.point if tent.point is not None else torch.arange(len(tent.own))
        hit = tent.z == zbuf.take(tent.own)
        best.scatter_reduce_(0, tent.own[hit], point.to(zbuf.device)[hit], "amin")
    for point, _, slot, _, cover in gauss:
        if point is None:
            point = torch.arange(len(slot), device=zbuf.device)
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


def with_backend(renderer: SplatRenderer, backend: str) -> SplatRenderer:
    """A renderer on the same device with another backend (for side-by-side checks)."""
    return SplatRenderer(renderer.device, replace(renderer.config, backend=backend))
