"""The live cloud on the GPU: one preallocated vertex buffer that grows by doubling.

Appending a PointsDelta writes only the new points at the end (``buffer.write`` at an
offset). When the capacity runs out the buffer doubles and the old contents are copied on
the GPU (``ctx.copy_buffer``), so nothing already uploaded crosses the bus again.
"""

from __future__ import annotations

import logging

import moderngl
import numpy as np

logger = logging.getLogger(__name__)

POINT_DTYPE = np.dtype(
    [("position", "<f4", 3), ("color", "u1", 4), ("radius", "<f4")]
)
"""One vertex: xyz float32, rgb uint8 (+1 pad byte), world radius float32 (20 bytes)."""

VERTEX_FORMAT = "3f4 4f1 1f4"
VERTEX_ATTRIBUTES = ("in_position", "in_color", "in_radius")


class PointCloudBuffer:
    """Append-only point storage on the GPU.

    ``generation`` increases whenever the underlying buffer object is replaced, so users
    that cache vertex arrays know to rebuild them.
    """

    def __init__(self, ctx: moderngl.Context, initial_capacity: int = 1 << 16):
        if initial_capacity <= 0:
            raise ValueError(f"initial_capacity must be positive, got {initial_capacity}")
        self.ctx = ctx
        self.capacity = int(initial_capacity)
        self.count = 0
        self.generation = 0
        self.bytes_uploaded = 0
        self.vbo = ctx.buffer(reserve=self.capacity * POINT_DTYPE.itemsize, dynamic=True)
        self.extent = 0.0
        """Largest distance of any point from the world origin (sizes the far plane)."""
        self._extents: list[tuple[int, float]] = []  # (count after an append, extent then)

    def append(self, xyz: np.ndarray, rgb: np.ndarray, radius: np.ndarray) -> None:
        """Add N points: xyz N x 3 float, rgb N x 3 uint8, radius N float (world units)."""
        xyz = np.asarray(xyz)
        n = xyz.shape[0]
        if xyz.shape != (n, 3) or np.shape(rgb) != (n, 3) or np.shape(radius) != (n,):
            raise ValueError(
                f"need xyz (N,3), rgb (N,3), radius (N,); got {xyz.shape}, "
                f"{np.shape(rgb)}, {np.shape(radius)}"
            )
        if n == 0:
            return
        self._reserve(self.count + n)
        packed = np.empty(n, dtype=POINT_DTYPE)
        packed["position"] = xyz
        packed["color"][:, :3] = rgb
        packed["color"][:, 3] = 255
        packed["radius"] = radius
        self.vbo.write(packed.tobytes(), offset=self.count * POINT_DTYPE.itemsize)
        self.bytes_uploaded += packed.nbytes
        self.count += n
        finite = xyz[np.isfinite(xyz).all(axis=1)]
        if len(finite):
            self.extent = max(self.extent, float(np.sqrt((finite.astype(np.float64) ** 2)
                                                         .sum(axis=1).max())))
        self._extents.append((self.count, self.extent))

    def truncate(self, count: int) -> None:
        """Keep only the first ``count`` points (an undone transition's points go)."""
        self.count = max(0, min(int(count), self.count))
        self._extents = [(c, e) for c, e in self._extents if c <= self.count]
        self.extent = self._extents[-1][1] if self._extents else 0.0

    def clear(self) -> None:
        """Forget every point (a new scene); keeps the allocation."""
        self.truncate(0)

    def _reserve(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        capacity = self.capacity
        while capacity < needed:
            capacity *= 2
        new = self.ctx.buffer(reserve=capacity * POINT_DTYPE.itemsize, dynamic=True)
        if self.count:
            self.ctx.copy_buffer(new, self.vbo, size=self.count * POINT_DTYPE.itemsize)
        self.vbo.release()
        logger.debug("point buffer grew from %d to %d points", self.capacity, capacity)
        self.vbo = new
        self.capacity = capacity
        self.generation += 1

    def release(self) -> None:
        self.vbo.release()
