"""A coloured point PLY: ``x y z`` (float32) and ``red green blue`` (uchar), the properties
every point-cloud program (plyfile, Open3D, MeshLab, CloudCompare) reads as a coloured cloud.
World and units as the splats' (the first view's OpenCV camera frame, the scene's depth
units)."""

from __future__ import annotations

import numpy as np

POINT_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                        ("red", "u1"), ("green", "u1"), ("blue", "u1")])
FRAME_COMMENTS = [
    "dreamjourney point cloud",
    "world = the scene's first view's camera frame, OpenCV axes (x right, y down, z forward)",
]


def point_rows(xyz: np.ndarray, rgb: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """One :data:`POINT_DTYPE` row per point (into ``out``'s first rows when given)."""
    rows = np.empty(len(xyz), POINT_DTYPE) if out is None else out[: len(xyz)]
    rows["x"], rows["y"], rows["z"] = np.asarray(xyz, np.float32).T
    rows["red"], rows["green"], rows["blue"] = np.asarray(rgb, np.uint8).T
    return rows
