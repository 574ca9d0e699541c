"""The point cloud container shared by unprojection, the point store and the renderer.

A :class:`PointCloud` is three parallel numpy arrays in world coordinates (OpenCV camera
convention, world = the first view's camera frame):

- ``xyz``: ``(N, 3)`` float32 positions,
- ``rgb``: ``(N, 3)`` uint8 colours,
- ``radius``: ``(N,)`` float32 world-space splat radii (a pixel's footprint at the depth the
  point was seen from, see :func:`backend.geometry.unproject`),
- ``motion``: ``(N, 4)`` float32 looping motion, or None when no point moves (the 4D points
  of :mod:`backend.geometry.motion`: displacement over one loop and its period).

These are exactly the arrays of the protocol's ``PointsDelta`` message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from backend.geometry.motion import check_motion, static_motion


@dataclass(frozen=True)
class PointCloud:
    """World-space points with colours and splat radii (numpy, CPU)."""

    xyz: np.ndarray
    """N x 3 float32 world positions."""
    rgb: np.ndarray
    """N x 3 uint8 colours."""
    radius: np.ndarray
    """N float32 world-space splat radii."""
    motion: np.ndarray | None = None
    """N x 4 float32 looping motion (``geometry.motion``); None: every point is static."""

    def __post_init__(self) -> None:
        n = self.xyz.shape[0] if self.xyz.ndim == 2 else -1
        if self.xyz.shape != (n, 3) or self.xyz.dtype != np.float32:
            raise ValueError(f"xyz must be N x 3 float32, got {self.xyz.shape} {self.xyz.dtype}")
        if self.rgb.shape != (n, 3) or self.rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be {n} x 3 uint8, got {self.rgb.shape} {self.rgb.dtype}")
        if self.radius.shape != (n,) or self.radius.dtype != np.float32:
            raise ValueError(
                f"radius must be ({n},) float32, got {self.radius.shape} {self.radius.dtype}"
            )
        if self.motion is not None:
            check_motion(self.motion, n)

    def motion_or_static(self) -> np.ndarray:
        """N x 4 motion, zeros when the cloud has none."""
        return self.motion if self.motion is not None else static_motion(len(self))

    def __len__(self) -> int:
        return int(self.xyz.shape[0])

    @classmethod
    def empty(cls) -> PointCloud:
        """A cloud with no points."""
        return cls(
            np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0, np.float32)
        )

    @classmethod
    def concat(cls, clouds: Sequence[PointCloud]) -> PointCloud:
        """All points of ``clouds`` in order."""
        if not clouds:
            return cls.empty()
        moving = any(c.motion is not None for c in clouds)
        return cls(
            np.concatenate([c.xyz for c in clouds]),
            np.concatenate([c.rgb for c in clouds]),
            np.concatenate([c.radius for c in clouds]),
            np.concatenate([c.motion_or_static() for c in clouds]) if moving else None,
        )

    def take(self, index: np.ndarray | slice) -> PointCloud:
        """The points selected by an index array, boolean mask or slice."""
        return PointCloud(
            np.ascontiguousarray(self.xyz[index]),
            np.ascontiguousarray(self.rgb[index]),
            np.ascontiguousarray(self.radius[index]),
            None if self.motion is None else np.ascontiguousarray(self.motion[index]),
        )

    def with_motion(self, motion: np.ndarray | None) -> PointCloud:
        """The same points carrying ``motion`` (N x 4, or None: static)."""
        return PointCloud(self.xyz, self.rgb, self.radius, motion)
