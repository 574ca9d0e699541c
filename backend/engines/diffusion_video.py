"""Frames and poses between the request's clip and the video model's clip (diffusion engine).

The video model generates a fixed number of frames at its own size; a request brings any
number of poses at the scene's size. These functions carry poses, frames and masks across:

- ``resample_poses(poses, n)``: ``n`` poses evenly spaced in *time* along the request's poses
  (lerp position, slerp rotation), both ends kept, so model frame j sits at request time
  ``j / (n - 1)``.
- ``time_indices(n_out, n_in)``: for each of ``n_out`` evenly spaced output times, the nearest
  of ``n_in`` evenly spaced input frames (both ends map to both ends).
- ``resize_frames`` / ``resize_masks``: images and visibility masks to another size (masks
  become area fractions in [0, 1], what the guided sampler's latent masks average anyway).
"""

from __future__ import annotations

import cv2
import numpy as np

from protocol.camera import interpolate_pose


def time_indices(n_out: int, n_in: int) -> np.ndarray:
    """Index of the nearest input frame for each output frame, both evenly spaced in time."""
    if n_out < 1 or n_in < 1:
        raise ValueError(f"frame counts must be >= 1, got {n_out} and {n_in}")
    if n_out == 1:
        return np.zeros(1, np.int64)
    t = np.arange(n_out) * (n_in - 1) / (n_out - 1)
    return np.clip(np.floor(t + 0.5), 0, n_in - 1).astype(np.int64)


def resample_poses(poses: np.ndarray, n: int) -> np.ndarray:
    """``n`` camera-to-world poses evenly spaced in time along ``poses`` (N x 4 x 4, N >= 1)."""
    poses = np.asarray(poses, dtype=np.float64)
    if poses.ndim != 3 or poses.shape[1:] != (4, 4) or len(poses) < 1:
        raise ValueError(f"poses must be N x 4 x 4 with N >= 1, got {poses.shape}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if len(poses) == 1 or n == 1:
        return np.repeat(poses[:1], n, axis=0)
    out = np.empty((n, 4, 4))
    for j, s in enumerate(np.linspace(0.0, len(poses) - 1, n)):
        i = min(int(s), len(poses) - 2)
        out[j] = interpolate_pose(poses[i], poses[i + 1], s - i)
    out[0], out[-1] = poses[0], poses[-1]
    return out


def resize_frames(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """T x H x W x 3 uint8 -> T x height x width x 3 (area when shrinking, cubic when growing)."""
    frames = np.asarray(frames)
    if frames.shape[1:3] == (height, width):
        return frames
    shrink = width * height < frames.shape[1] * frames.shape[2]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    return np.stack([cv2.resize(f, (width, height), interpolation=interp) for f in frames])


def resize_masks(masks: np.ndarray, width: int, height: int) -> np.ndarray:
    """T x H x W visibility -> T x height x width float32 fractions of visible area."""
    m = np.asarray(masks, dtype=np.float32)
    if m.shape[1:3] == (height, width):
        return m
    return np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in m])
