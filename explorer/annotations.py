"""Marks drawn on the paused view for dynamics: motion arrows and frozen regions.

Marks are kept in the scene image's pixels (the view the backend renders), converted from
window pixels through the two pinhole cameras that share the pose. They belong to one view:
the app clears them when the camera moves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from protocol.messages import Arrow


@dataclass
class PixelMap:
    """Maps window pixels to image pixels for two centred pinhole cameras at the same pose."""

    K_window: np.ndarray
    K_image: np.ndarray

    def to_image(self, uv: ArrayLike) -> np.ndarray:
        uv = np.asarray(uv, dtype=np.float64)
        s = np.array([self.K_image[0, 0] / self.K_window[0, 0],
                      self.K_image[1, 1] / self.K_window[1, 1]])
        return (uv - self.K_window[:2, 2]) * s + self.K_image[:2, 2]

    def to_window(self, uv: ArrayLike) -> np.ndarray:
        uv = np.asarray(uv, dtype=np.float64)
        s = np.array([self.K_window[0, 0] / self.K_image[0, 0],
                      self.K_window[1, 1] / self.K_image[1, 1]])
        return (uv - self.K_image[:2, 2]) * s + self.K_window[:2, 2]


@dataclass
class ViewAnnotations:
    """Arrows and a frozen mask for an image of ``width`` x ``height`` pixels."""

    width: int
    height: int
    arrows: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    """(start, end) in image pixels."""
    frozen: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.frozen = np.zeros((self.height, self.width), dtype=np.uint8)
        self.version = 0

    def is_empty(self) -> bool:
        return not self.arrows and not self.frozen.any()

    def add_arrow(self, start: np.ndarray, end: np.ndarray, min_length: float = 3.0) -> bool:
        start, end = np.asarray(start, float), np.asarray(end, float)
        if np.linalg.norm(end - start) < min_length:
            return False
        self.arrows.append((start, end))
        return True

    def paint_frozen(self, center: np.ndarray, radius: float, previous: np.ndarray | None = None) -> None:
        """Paint a disc of ``radius`` at ``center`` or, from ``previous``, the capsule swept
        between them (a fast drag paints a continuous stroke, not beads)."""
        b = np.asarray(center, float)
        a = b if previous is None else np.asarray(previous, float)
        x0 = max(int(np.floor(min(a[0], b[0]) - radius)), 0)
        x1 = min(int(np.ceil(max(a[0], b[0]) + radius)) + 1, self.width)
        y0 = max(int(np.floor(min(a[1], b[1]) - radius)), 0)
        y1 = min(int(np.ceil(max(a[1], b[1]) + radius)) + 1, self.height)
        if x0 >= x1 or y0 >= y1:
            return
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64) + 0.5
        d = b - a
        t = np.clip(((xs - a[0]) * d[0] + (ys - a[1]) * d[1]) / max(float(d @ d), 1e-12), 0, 1)
        near = (xs - a[0] - t * d[0]) ** 2 + (ys - a[1] - t * d[1]) ** 2 <= radius**2
        self.frozen[y0:y1, x0:x1][near] = 255
        self.version += 1

    def clear(self) -> None:
        self.arrows.clear()
        self.frozen[:] = 0
        self.version += 1

    def to_messages(self, arrow_frames: int) -> list[Arrow]:
        """Arrows for the Dynamics message: a drag spans ``arrow_frames`` frames of motion."""
        return [
            Arrow(start=(float(s[0]), float(s[1])),
                  vector=(float((e - s)[0] / arrow_frames), float((e - s)[1] / arrow_frames)))
            for s, e in self.arrows
        ]


def arrow_triangles(start: np.ndarray, end: np.ndarray, width: float = 5.0, head: float = 18.0
                    ) -> np.ndarray:
    """(M, 2) triangle vertices of a bold arrow: a ``width``-pixel shaft with round ends and
    a filled head ``head`` pixels long, in the same pixels as ``start`` and ``end``."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    d = end - start
    n = float(np.linalg.norm(d))
    if n < 1e-6:
        return np.zeros((0, 2))
    d /= n
    side = np.array([-d[1], d[0]])
    h = min(head, 0.5 * n)
    base = end - h * d
    half = max(0.45 * h, width)
    tip = np.array([end, base + side * half, base - side * half])
    return np.concatenate([polyline_triangles(np.array([start, base]), width), tip])


def polyline_triangles(points: np.ndarray, width: float, closed: bool = False, fan: int = 8
                       ) -> np.ndarray:
    """(M, 2) triangle vertices of a continuous ``width``-pixel stroke along ``points`` (K x 2):
    a quad per segment and a round joint (a ``fan``-sided disc) at every vertex, so the
    stroke has no gaps at its corners."""
    p = np.asarray(points, float)
    if closed and len(p) > 2:
        p = np.vstack([p, p[:1]])
    if len(p) < 2:
        return np.zeros((0, 2))
    r = 0.5 * width
    a, b = p[:-1], p[1:]
    d = b - a
    n = np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
    side = np.column_stack([-d[:, 1], d[:, 0]]) / n * r
    quads = np.stack([a + side, b + side, b - side, a + side, b - side, a - side], 1).reshape(-1, 2)
    angles = np.linspace(0, 2 * np.pi, fan + 1)
    ring = np.column_stack([np.cos(angles), np.sin(angles)]) * r
    centre = p[:, None, :]
    joints = np.stack([np.broadcast_to(centre, (len(p), fan, 2)), centre + ring[None, :-1],
                       centre + ring[None, 1:]], 2).reshape(-1, 2)
    return np.concatenate([quads, joints])
