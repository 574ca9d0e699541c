"""Marks drawn on the paused view for dynamics: motion arrows and frozen regions.

Marks are kept in the scene image's pixels (the view the backend renders), converted from
window pixels through the two pinhole cameras that share the pose. They belong to one view:
the app clears them when the camera moves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from protocol.messages import Arrow


@dataclass
class PixelMap:
    """Maps window pixels to image pixels for two centred pinhole cameras at the same pose."""

    K_window: np.ndarray
    K_image: np.ndarray

    def to_image(self, uv: np.ndarray) -> np.ndarray:
        uv = np.asarray(uv, dtype=np.float64)
        s = np.array([self.K_image[0, 0] / self.K_window[0, 0],
                      self.K_image[1, 1] / self.K_window[1, 1]])
        return (uv - self.K_window[:2, 2]) * s + self.K_image[:2, 2]

    def to_window(self, uv: np.ndarray) -> np.ndarray:
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

    def paint_frozen(self, center: np.ndarray, radius: float) -> None:
        cx, cy = center
        ys, xs = np.ogrid[: self.height, : self.width]
        self.frozen[(xs + 0.5 - cx) ** 2 + (ys + 0.5 - cy) ** 2 <= radius**2] = 255
        self.version += 1

    def clear(self) -> None:
        self.arrows.clear()
        self.frozen[:] = 0
        self.version += 1

    def to_messages(self, arrow_frames: int) -> list[Arrow]:
        """Arrows for the Dynamics message: a drag spans ``arrow_frames`` frames of motion."""
        return [
            Arrow(start=[float(s[0]), float(s[1])],
                  vector=[float((e - s)[0] / arrow_frames), float((e - s)[1] / arrow_frames)])
            for s, e in self.arrows
        ]


def arrow_segments(start: np.ndarray, end: np.ndarray, head: float = 10.0) -> np.ndarray:
    """Line segments (3, 2, 2) of an arrow with a two-stroke head, in the same pixels."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    d = end - start
    n = np.linalg.norm(d)
    if n < 1e-6:
        return np.zeros((0, 2, 2))
    d /= n
    h = min(head, 0.4 * n)
    left = end - h * (d * np.cos(0.5) - np.array([-d[1], d[0]]) * np.sin(0.5))
    right = end - h * (d * np.cos(0.5) + np.array([-d[1], d[0]]) * np.sin(0.5))
    return np.array([[start, end], [end, left], [end, right]])
