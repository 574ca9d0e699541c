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
        self._extent = np.zeros(0, dtype=np.float32)

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

    def clear(self) -> None:
        """Forget every point (a new scene); keeps the allocation."""
        self.count = 0

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
