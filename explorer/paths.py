"""Camera paths: the flight recorded since the last commit, its resampling, and presets.

Preset paths and arc-length resampling come from ``protocol.trajectory`` when that module
is installed; until then the local versions below (built on
``protocol.camera.interpolate_pose``) are used. Poses are OpenCV camera-to-world 4x4.
"""

from __future__ import annotations

import logging

import numpy as np

from protocol.camera import interpolate_pose, matrix_from_quat, quat_from_matrix, rotation_about

logger = logging.getLogger(__name__)

try:  # the shared implementation, when it exists
    from protocol import trajectory as _trajectory
except ImportError:  # pragma: no cover - depends on what is installed
    _trajectory = None

PRESET_NAMES = ("backward", "left", "right", "forward")


class FlightPath:
    """Poses flown since the last committed pose, kept dense enough to redraw and resample."""

    def __init__(self, start_pose: np.ndarray, min_step: float = 1e-3):
        self.min_step = min_step
        self.poses: list[np.ndarray] = [np.array(start_pose, dtype=np.float64)]

    @property
    def start(self) -> np.ndarray:
        return self.poses[0]

    def record(self, pose: np.ndarray, scene_scale: float = 1.0) -> None:
        """Append ``pose`` if it moved or turned noticeably since the last sample."""
        last = self.poses[-1]
        moved = np.linalg.norm(pose[:3, 3] - last[:3, 3]) / max(scene_scale, 1e-9)
        turned = _angle_between(pose[:3, :3], last[:3, :3])
        if moved > self.min_step or turned > self.min_step:
            self.poses.append(np.array(pose, dtype=np.float64))

    def reset(self, start_pose: np.ndarray) -> None:
        self.poses = [np.array(start_pose, dtype=np.float64)]

    def positions(self) -> np.ndarray:
        return np.array([p[:3, 3] for p in self.poses])

    def is_empty(self) -> bool:
        return len(self.poses) < 2

    def resampled(self, num: int, scene_scale: float = 1.0, smooth: int = 2) -> np.ndarray:
        """``num`` poses evenly spaced by arc length along the flight, smoothed, ends kept."""
        if self.is_empty():
            raise ValueError("the path is empty: fly somewhere before committing it")
        return resample_path(np.stack(self.poses), num, scene_scale, smooth)


def resample_path(poses: np.ndarray, num: int, scene_scale: float = 1.0,
                  smooth: int = 2) -> np.ndarray:
    """(num, 4, 4) poses at equal arc length along ``poses``; turning counts as distance."""
    if num < 2:
        raise ValueError(f"num must be >= 2, got {num}")
    if _trajectory is not None and hasattr(_trajectory, "resample_path"):
        return np.asarray(_trajectory.resample_path(poses, num))
    seg = np.array([
        np.linalg.norm(b[:3, 3] - a[:3, 3]) / scene_scale + _angle_between(a[:3, :3], b[:3, :3])
        for a, b in zip(poses[:-1], poses[1:], strict=True)
    ])
    s = np.concatenate([[0.0], np.cumsum(seg)])
    targets = np.linspace(0.0, s[-1], num)
    out = np.empty((num, 4, 4))
    for i, t in enumerate(targets):
        j = int(np.clip(np.searchsorted(s, t, side="right") - 1, 0, len(seg) - 1))
        frac = 0.0 if seg[j] == 0 else (t - s[j]) / seg[j]
        out[i] = interpolate_pose(poses[j], poses[j + 1], float(np.clip(frac, 0.0, 1.0)))
    return _smooth(out, smooth) if smooth > 0 else out


def _smooth(poses: np.ndarray, radius: int) -> np.ndarray:
    """Moving average of positions and of (sign-aligned) quaternions; both ends stay put."""
    n = len(poses)
    quats = np.array([quat_from_matrix(p[:3, :3]) for p in poses])
    for i in range(1, n):
        if quats[i] @ quats[i - 1] < 0:
            quats[i] = -quats[i]
    out = poses.copy()
    for i in range(1, n - 1):
        r = min(radius, i, n - 1 - i)
        window = slice(i - r, i + r + 1)
        out[i, :3, 3] = poses[window, :3, 3].mean(0)
        out[i, :3, :3] = matrix_from_quat(quats[window].mean(0))
    return out


def preset_path(name: str, start: np.ndarray, num: int, scene_scale: float) -> np.ndarray:
    """The paper's preset camera paths from ``start``: backward, left, right or forward."""
    if name not in PRESET_NAMES:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")
    if _trajectory is not None and hasattr(_trajectory, "preset"):
        return np.asarray(_trajectory.preset(name, start, num, scene_scale))
    distance = 0.35 * scene_scale
    end = np.array(start, dtype=np.float64, copy=True)
    R = start[:3, :3]
    if name in ("backward", "forward"):
        sign = -1.0 if name == "backward" else 1.0
        end[:3, 3] += R @ np.array([0.0, 0.0, sign * distance])
    else:
        sign = -1.0 if name == "left" else 1.0
        yaw = rotation_about(R @ np.array([0.0, -1.0, 0.0]), -sign * np.radians(30.0))
        end[:3, :3] = yaw @ R
        end[:3, 3] += R @ np.array([sign * 0.5 * distance, 0.0, 0.3 * distance])
    ts = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, num))  # ease in and out
    return np.stack([interpolate_pose(start, end, float(t)) for t in ts])


def _angle_between(Ra: np.ndarray, Rb: np.ndarray) -> float:
    c = (np.trace(Ra.T @ Rb) - 1.0) / 2.0
    return float(np.arccos(np.clip(c, -1.0, 1.0)))
