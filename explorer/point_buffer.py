"""The live cloud on the GPU: one preallocated vertex buffer that grows by doubling.

Appending a PointsDelta writes only the new points at the end (``buffer.write`` at an
offset). When the capacity runs out the buffer doubles and the old contents are copied on
the GPU (``ctx.copy_buffer``), so nothing already uploaded crosses the bus again.

4D points (``PointsMotion``): a parallel buffer holds every point's looping motion (vec4:
displacement over one loop in world units, period in seconds; zeros for static points) and an
index buffer lists the moving points (drawn a second time, as their backward copies). Both
change only when a PointsMotion arrives; the vertex shader animates them on the clock.
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
MOTION_FORMAT = "4f4"
MOTION_ATTRIBUTE = "in_motion"
_MOTION_BYTES = 16


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
        self.motion_vbo = ctx.buffer(reserve=self.capacity * _MOTION_BYTES, dynamic=True)
        self.moving_ibo = ctx.buffer(reserve=4, dynamic=True)
        self.moving = 0
        """How many points move (the length of ``moving_ibo``, int32 point indices)."""
        self.motion = np.zeros((0, 4), np.float32)
        """CPU copy of the moving part of the motion buffer: rows 0..len-1."""
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
        self.motion_vbo.write(bytes(n * _MOTION_BYTES), offset=self.count * _MOTION_BYTES)
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
        if len(self.motion) > self.count:
            self.motion = self.motion[: self.count]
            self._upload_moving()

    def set_motion(self, index: np.ndarray, motion: np.ndarray) -> None:
        """Give the points at ``index`` (M ints below ``count``) the looping ``motion``
        (M x 4 float32: world displacement over one loop, period in seconds; 0 = static)."""
        index = np.asarray(index, np.int64)
        motion = np.asarray(motion, np.float32)
        if motion.shape != (len(index), 4):
            raise ValueError(f"need motion ({len(index)}, 4), got {motion.shape}")
        if len(index) == 0:
            return
        if index.min() < 0 or index.max() >= self.count:
            raise ValueError(f"motion indices must be in [0, {self.count})")
        top = int(index.max()) + 1
        if len(self.motion) < top:
            self.motion = np.concatenate([self.motion, np.zeros((top - len(self.motion), 4),
                                                                np.float32)])
        self.motion[index] = motion
        lo = int(index.min())
        self.motion_vbo.write(self.motion[lo:top].tobytes(), offset=lo * _MOTION_BYTES)
        self._upload_moving()

    def _upload_moving(self) -> None:
        moving = np.flatnonzero(self.motion[:, 3] > 0).astype(np.int32)
        self.moving = len(moving)
        size = self.moving_ibo.size
        if moving.nbytes > size:
            self.moving_ibo.release()
            self.moving_ibo = self.ctx.buffer(reserve=max(moving.nbytes, 2 * size), dynamic=True)
            self.generation += 1
        if len(moving):
            self.moving_ibo.write(moving.tobytes())

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
        motion = self.ctx.buffer(reserve=capacity * _MOTION_BYTES, dynamic=True)
        if self.count:
            self.ctx.copy_buffer(new, self.vbo, size=self.count * POINT_DTYPE.itemsize)
            self.ctx.copy_buffer(motion, self.motion_vbo, size=self.count * _MOTION_BYTES)
        self.vbo.release()
        self.motion_vbo.release()
        self.motion_vbo = motion
        logger.debug("point buffer grew from %d to %d points", self.capacity, capacity)
        self.vbo = new
        self.capacity = capacity
        self.generation += 1

    def release(self) -> None:
        self.vbo.release()
        self.motion_vbo.release()
        self.moving_ibo.release()
