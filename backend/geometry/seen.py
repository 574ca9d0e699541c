"""What earlier views saw, so that later fills never paint over it.

A transition fills only the pixels its own views have never seen (the holes of the render),
but a point lifted from one view can still land in front of, or on, a surface that an
earlier view saw: flying back to that view would then show the fill instead of the world as
it was. ``SeenViews`` keeps the depth of every view that was filled (the first view, each
grown keyframe and end view) and drops the new points that would change one of them:

- ``record(pose, depth)``: a view and its z-depth (0 where it saw nothing), kept at
  ``1 / scale`` resolution as the block maximum (the farthest surface of the block, so a point
  in front of any of the block's surfaces counts as in front);
- ``keep(cloud) -> bool mask``: False for the points that project inside a kept view at a
  depth less than ``(1 + tolerance)`` times what that view saw there, i.e. points the view
  would show (in front, or close enough that the renderers blend them with its surface).
  Points behind a seen surface by more than the tolerance, or outside every kept view, stay.

At most ``capacity`` views are kept (the first always, then the latest), in float16.
"""

from __future__ import annotations

import numpy as np

from backend.geometry.cloud import PointCloud


class SeenViews:
    """The views a scene's fills must leave as they are (see the module docstring)."""

    def __init__(self, K: np.ndarray, width: int, height: int, scale: int = 2,
                 tolerance: float = 0.04, capacity: int = 64):
        self.K = np.asarray(K, np.float64)
        self.size = (int(width), int(height))
        self.scale = int(scale)
        self.tolerance = float(tolerance)
        self.capacity = int(capacity)
        self.views: list[tuple[np.ndarray, np.ndarray]] = []
        """(world-to-camera 4 x 4, block-max depth float16) per kept view."""

    def record(self, pose: np.ndarray, depth: np.ndarray) -> None:
        """Keep the view at camera-to-world ``pose`` whose z-depth is ``depth`` (H x W)."""
        w, h = self.size
        s = self.scale
        d = np.asarray(depth, np.float32)
        if d.shape != (h, w):
            raise ValueError(f"depth must be {h} x {w}, got {d.shape}")
        hb, wb = -(-h // s), -(-w // s)
        padded = np.zeros((hb * s, wb * s), np.float32)
        padded[:h, :w] = np.where(np.isfinite(d), d, 0.0)
        blocks = padded.reshape(hb, s, wb, s).max(axis=(1, 3)).astype(np.float16)
        self.views.append((np.linalg.inv(np.asarray(pose, np.float64)), blocks))
        if len(self.views) > self.capacity:
            del self.views[1]  # the first view (the photo's) stays

    def keep(self, cloud: PointCloud) -> np.ndarray:
        """N bool: True for the points no kept view would show (module docstring)."""
        keep = np.ones(len(cloud), bool)
        if not len(cloud) or not self.views:
            return keep
        w, h = self.size
        xyz = cloud.xyz.astype(np.float64)
        for w2c, blocks in self.views:
            cam = xyz @ w2c[:3, :3].T + w2c[:3, 3]
            z = cam[:, 2]
            ahead = z > 1e-9
            u = np.full(len(z), -1.0)
            v = np.full(len(z), -1.0)
            u[ahead] = self.K[0, 0] * cam[ahead, 0] / z[ahead] + self.K[0, 2]
            v[ahead] = self.K[1, 1] * cam[ahead, 1] / z[ahead] + self.K[1, 2]
            inside = ahead & (u >= 0) & (u < w) & (v >= 0) & (v < h)
            idx = np.flatnonzero(inside)
            seen = blocks[(v[idx] // self.scale).astype(int), (u[idx] // self.scale).astype(int)]
            shown = (seen > 0) & (z[idx] < seen.astype(np.float64) * (1.0 + self.tolerance))
            keep[idx[shown]] = False
        return keep
