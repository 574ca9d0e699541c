"""Lift an image with a depth map into world-space points.

``unproject(image, depth, K, pose, mask=None) -> PointCloud``: one point per selected pixel,
placed at the pixel centre ``(u + 0.5, v + 0.5)`` at z-depth ``depth[v, u]`` in the camera
``pose`` (camera-to-world, OpenCV). Its radius is the pixel's footprint at that depth,
``pixel_radius * z / f`` with ``f`` the mean focal length, so the renderer draws it as a disc
of ``pixel_radius`` pixels when seen again from the same distance (the default, 1/sqrt(2),
is the circle through the pixel's corners).
"""

from __future__ import annotations

import numpy as np

from backend.geometry.cloud import PointCloud

DEFAULT_PIXEL_RADIUS = float(np.sqrt(0.5))


def pixel_rays(K: np.ndarray, width: int, height: int) -> np.ndarray:
    """H x W x 3 float64 camera-frame rays through pixel centres, with z = 1."""
    K = np.asarray(K, dtype=np.float64)
    u = (np.arange(width) + 0.5 - K[0, 2]) / K[0, 0]
    v = (np.arange(height) + 0.5 - K[1, 2]) / K[1, 1]
    rays = np.empty((height, width, 3))
    rays[..., 0] = u[None, :]
    rays[..., 1] = v[:, None]
    rays[..., 2] = 1.0
    return rays


def unproject(
    image: np.ndarray,
    depth: np.ndarray,
    K: np.ndarray,
    pose: np.ndarray,
    mask: np.ndarray | None = None,
    pixel_radius: float = DEFAULT_PIXEL_RADIUS,
) -> PointCloud:
    """Points of the pixels in ``mask`` (all pixels with finite depth > 0 when None).

    Args:
        image: H x W x 3 uint8 RGB.
        depth: H x W float z-depth in world units; pixels with depth <= 0 or non-finite are
            skipped.
        K: 3 x 3 intrinsics in pixels.
        pose: 4 x 4 camera-to-world pose (OpenCV).
        mask: optional H x W bool, True for the pixels to lift.
        pixel_radius: splat radius in pixels at the pixel's own depth.
    """
    image = np.asarray(image)
    depth = np.asarray(depth)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be H x W x 3 uint8, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    if depth.shape != (h, w):
        raise ValueError(f"depth must be {h} x {w}, got {depth.shape}")
    keep = np.isfinite(depth) & (depth > 0)
    if mask is not None:
        if mask.shape != (h, w):
            raise ValueError(f"mask must be {h} x {w}, got {mask.shape}")
        keep &= mask.astype(bool)
    K = np.asarray(K, dtype=np.float64)
    pose = np.asarray(pose, dtype=np.float64)
    z = depth[keep].astype(np.float64)
    cam = pixel_rays(K, w, h)[keep] * z[:, None]
    xyz = cam @ pose[:3, :3].T + pose[:3, 3]
    f = 0.5 * (K[0, 0] + K[1, 1])
    return PointCloud(
        xyz.astype(np.float32),
        np.ascontiguousarray(image[keep]),
        (pixel_radius * z / f).astype(np.float32),
    )
