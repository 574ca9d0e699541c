"""``SplatRenderer``: validates the inputs, keeps the cloud uploaded, picks a renderer module.

Which module renders (each has the same ``render`` signature, ``base.Render``):

- ``backend = "pytorch3d"``: ``pytorch3d_raster`` (pytorch3d's rasterizer);
- ``antialias = False``, or an empty cloud: ``zbuffer`` (nearest point, opaque discs);
- on a CPU with numba (``cpu_loops``): ``numba_loops`` (compiled loops, all poses at once);
- else: ``filtered`` (torch tensors, the CUDA path), ``batch_size`` poses at a time.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import numpy as np
import torch

from backend.geometry.cloud import PointCloud
from backend.geometry.splat import filtered, numba_loops, pytorch3d_raster, zbuffer
from backend.geometry.splat.base import DeviceCloud, Render, RenderOutput, SplatConfig

if TYPE_CHECKING:
    from backend.geometry.store import PointStore

log = logging.getLogger(__name__)


class SplatRenderer:
    """Renders point clouds at a batch of poses (``render``) on one device.

    One renderer may serve several job threads: the upload cache is locked and holds its
    source (so an id is never reused while cached); working buffers are per thread.
    """

    def __init__(self, device: str | torch.device = "cpu", config: SplatConfig | None = None):
        self.device = torch.device(device)
        self.config = config or SplatConfig()
        if self.config.backend not in ("native", "pytorch3d"):
            raise ValueError(f"unknown backend {self.config.backend!r}: native or pytorch3d")
        if self.config.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.config.batch_size}")
        if self.config.max_radius_px < self.config.min_disc_px:
            raise ValueError("max_radius_px must be >= min_disc_px")
        self._cache: tuple[object, int, int | None, DeviceCloud] | None = None
        self._cache_lock = threading.Lock()
        self._scratch = threading.local()
        cpu = self.device.type == "cpu"
        self._cpu_loops = self.config.cpu_loops and cpu and numba_loops.available()

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
        cloud = source if isinstance(source, PointCloud) else source.cloud()
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
        # 1. check the inputs
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        poses = _check_poses(poses)
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3):
            raise ValueError(f"K must be 3 x 3, got {K.shape}")
        # 2. upload (or reuse) the cloud and pick the renderer
        cloud = self.to_device(source)
        render, step = self._pick(len(cloud))
        # 3. render the poses in groups of `step`
        args = (K, width, height, self.config, self._scratch, return_index)
        b = len(poses)
        if b <= step:  # one group: its tensors are the output
            return render(cloud, poses, *args)
        out = RenderOutput.empty(b, height, width, self.device, return_index)
        for start in range(0, b, step):
            part = slice(start, start + step)
            group = render(cloud, poses[part], *args)
            out.image[part], out.mask[part], out.depth[part] = group.image, group.mask, group.depth
            if out.index is not None and group.index is not None:
                out.index[part] = group.index
        return out

    def _pick(self, n: int) -> tuple[Render, int]:
        """The renderer module for a cloud of ``n`` points and how many poses it takes at once."""
        everything = 2**62
        if self.config.backend == "pytorch3d":
            return pytorch3d_raster.render, everything
        if not (self.config.antialias and n):
            return zbuffer.render, self.config.batch_size
        if self._cpu_loops:
            return numba_loops.render, everything
        return filtered.render, self.config.batch_size


def _check_poses(poses: np.ndarray | torch.Tensor) -> np.ndarray:
    p = np.asarray(poses.cpu() if isinstance(poses, torch.Tensor) else poses, dtype=np.float64)
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3 or p.shape[1:] != (4, 4):
        raise ValueError(f"poses must be B x 4 x 4 camera-to-world, got shape {p.shape}")
    return p
