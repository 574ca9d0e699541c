"""The keyframe path editor's model (no GL): keyframes, the spline through them, its preview.

- ``add(pose)`` puts a keyframe after the selected one (the new one is selected);
  ``remove_selected()``, ``select(step)`` and ``clear()`` edit the list.
- ``orbit_keyframes(pose, pivot, angle, count)``: keyframes turning the camera around
  ``pivot`` (a world point, picked from the depth buffer under the cursor) about the
  camera's own up axis, each looking at the pivot as the camera did.
- ``path(start, n_frames, scene_scale)``: the poses a transition flies: a Catmull-Rom spline
  with slerped rotations through ``start`` (where the last clip left the camera, if the first
  keyframe is elsewhere) and every keyframe (``protocol.trajectory.keyframe_spline_at``).
  Frames are shared out between the segments by their length (a radian of turning counts as
  ``scene_scale`` of travel), so the camera moves at an even speed, and every keyframe falls
  exactly on a frame.
- A preview plays those same poses at the clip's frame rate, so it lasts as long as the
  clip will (``start_preview``, ``preview_pose(dt)``).
- ``to_file`` / ``from_file``: nerfstudio camera-path JSON (``protocol.camera_path``) with the
  keyframes and every frame.
"""

from __future__ import annotations

import numpy as np

from protocol.camera import rotation_about
from protocol.camera_path import CameraPath
from protocol.trajectory import keyframe_spline_at, pose_steps


def frame_params(keyframes: np.ndarray, n_frames: int, scene_scale: float = 1.0) -> np.ndarray:
    """Spline parameters of ``n_frames`` frames through K keyframes: each segment gets frames
    in proportion to its length (at least one), every keyframe a whole-number parameter."""
    k = len(keyframes)
    if k < 2:
        raise ValueError("a path needs at least two keyframes")
    if n_frames < k:
        raise ValueError(f"{k} keyframes need at least {k} frames, got {n_frames}")
    dt, da = pose_steps(keyframes)
    length = dt + scene_scale * da
    share = length / length.sum() if length.sum() > 0 else np.full(k - 1, 1.0 / (k - 1))
    counts = np.maximum(1, np.floor(share * (n_frames - 1)).astype(int))
    while counts.sum() < n_frames - 1:  # largest remainders first
        counts[np.argmax(share * (n_frames - 1) - counts)] += 1
    while counts.sum() > n_frames - 1:
        counts[np.argmax(np.where(counts > 1, counts - share * (n_frames - 1), -np.inf))] -= 1
    params = [i + np.arange(c) / c for i, c in enumerate(counts)]
    return np.concatenate([*params, [k - 1.0]])


class PathEditor:
    """Keyframes of the path being designed (see the module docstring)."""

    def __init__(self) -> None:
        self.keyframes: list[np.ndarray] = []
        self.selected: int | None = None
        self._preview: np.ndarray | None = None
        self._preview_t: float | None = None
        self._preview_fps = 24.0

    def __len__(self) -> int:
        return len(self.keyframes)

    # --- editing -------------------------------------------------------------------------

    def add(self, pose: np.ndarray) -> int:
        """Insert ``pose`` after the selected keyframe (at the end if none); select it."""
        at = len(self.keyframes) if self.selected is None else self.selected + 1
        self.keyframes.insert(at, np.array(pose, dtype=np.float64))
        self.selected = at
        return at

    def remove_selected(self) -> bool:
        if self.selected is None:
            return False
        del self.keyframes[self.selected]
        self.selected = min(self.selected, len(self.keyframes) - 1) if self.keyframes else None
        return True

    def select(self, step: int) -> None:
        """Select the keyframe ``step`` places after (negative: before) the selected one."""
        if self.keyframes:
            current = self.selected if self.selected is not None else len(self.keyframes) - 1
            self.selected = int(np.clip(current + step, 0, len(self.keyframes) - 1))

    def clear(self) -> None:
        self.keyframes, self.selected = [], None
        self.stop_preview()

    def replace(self, keyframes: np.ndarray) -> None:
        self.keyframes = [np.array(k, dtype=np.float64) for k in keyframes]
        self.selected = len(self.keyframes) - 1 if self.keyframes else None

    # --- paths ---------------------------------------------------------------------------

    def anchored(self, start: np.ndarray | None) -> np.ndarray:
        """The keyframes, with ``start`` first unless the first keyframe is already there."""
        keys = np.stack(self.keyframes) if self.keyframes else np.zeros((0, 4, 4))
        if start is not None and (not len(keys) or not np.allclose(keys[0], start, atol=1e-9)):
            keys = np.concatenate([np.asarray(start, np.float64)[None], keys])
        return keys

    def path(self, start: np.ndarray | None, n_frames: int, scene_scale: float = 1.0) -> np.ndarray:
        """N x 4 x 4 poses through ``start`` and the keyframes (see the module docstring)."""
        keys = self.anchored(start)
        n = max(n_frames, len(keys))
        return keyframe_spline_at(keys, frame_params(keys, n, scene_scale))

    @staticmethod
    def orbit_keyframes(pose: np.ndarray, pivot: np.ndarray, angle: float, count: int) -> list[np.ndarray]:
        """``count`` poses turning ``pose`` about ``pivot`` by ``angle`` radians in all (the
        last at ``angle``), around the camera's up axis through the pivot."""
        pose = np.asarray(pose, np.float64)
        pivot = np.asarray(pivot, np.float64)[:3]
        up = -pose[:3, 1]  # OpenCV: y points down
        out = []
        for a in np.linspace(angle / count, angle, count):
            R = rotation_about(up, a)
            turned = np.eye(4)
            turned[:3, :3] = R @ pose[:3, :3]
            turned[:3, 3] = pivot + R @ (pose[:3, 3] - pivot)
            out.append(turned)
        return out

    # --- preview -------------------------------------------------------------------------

    @property
    def previewing(self) -> bool:
        return self._preview is not None

    def start_preview(self, poses: np.ndarray, fps: float) -> None:
        """Play ``poses`` at ``fps`` from the next :meth:`preview_pose` on."""
        self._preview, self._preview_t, self._preview_fps = np.asarray(poses), None, fps

    def stop_preview(self) -> None:
        self._preview = None

    def preview_pose(self, dt: float) -> np.ndarray | None:
        """The preview's pose after ``dt`` more seconds, or None once it has played out."""
        if self._preview is None:
            return None
        # the first frame after the start shows frame 0: time from before the start is not played
        self._preview_t = 0.0 if self._preview_t is None else self._preview_t + dt
        i = int(self._preview_t * self._preview_fps)
        if i >= len(self._preview):
            self._preview = None
            return None
        return self._preview[i]

    # --- files ---------------------------------------------------------------------------

    def to_file(self, path, start: np.ndarray | None, n_frames: int, scene_scale: float, K: np.ndarray,
                width: int, height: int, fps: float, median_depth: float) -> CameraPath:
        """Save the path (keyframes and every frame) as nerfstudio camera-path JSON."""
        keys = self.anchored(start)
        poses = self.path(start, n_frames, scene_scale)
        camera_path = CameraPath.from_K(poses, K, width, height, fps, keys, median_depth)
        camera_path.save(path)
        return camera_path

    def from_file(self, camera_path: CameraPath, median_depth: float) -> None:
        """Take a file's keyframes (its frames when it has fewer than two), scaled to this
        scene's median depth."""
        scaled = camera_path.scaled_to(median_depth)
        self.replace(scaled.keyframes if len(scaled.keyframes) >= 2 else scaled.poses)
