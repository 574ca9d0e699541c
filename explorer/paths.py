"""Camera paths: the flight recorded since the last commit, and the stock paths.

Resampling by arc length (with slerp smoothing) and the paper's stock paths come from
``protocol.trajectory``, shared with the backend. Poses are OpenCV camera-to-world 4x4.
"""

from __future__ import annotations

import numpy as np

from protocol import trajectory

STOCK_PATH_KEYS = {
    "backward": "backward",
    "left": "rotate_left",
    "right": "rotate_right",
    "forward": "forward",
}
"""Explorer stock-path keys (configs/keys.toml ``stock_*``) -> ``protocol.trajectory`` stock paths."""


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
    """(num, 4, 4) poses at equal arc length along ``poses``; a radian of turning counts as
    one median depth of travel, so turning on the spot still spreads the frames out."""
    if len(poses) < 2:
        raise ValueError("the path is empty: fly somewhere before committing it")
    return trajectory.resample_path(np.asarray(poses), num, rotation_weight=scene_scale,
                                    smooth_iterations=smooth)


def stock_path(name: str, start: np.ndarray, num: int, scene_scale: float) -> np.ndarray:
    """The paper's stock path from ``start``: ``backward``, ``left``, ``right`` or ``forward``."""
    if name not in STOCK_PATH_KEYS:
        raise ValueError(f"unknown stock path {name!r}; choose one of {', '.join(STOCK_PATH_KEYS)}")
    return trajectory.stock_path(STOCK_PATH_KEYS[name], n_frames=num, median_depth=scene_scale,
                                 start=np.asarray(start, np.float64))


def _angle_between(Ra: np.ndarray, Rb: np.ndarray) -> float:
    c = (np.trace(Ra.T @ Rb) - 1.0) / 2.0
    return float(np.arccos(np.clip(c, -1.0, 1.0)))
