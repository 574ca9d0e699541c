"""Camera paths as files: nerfstudio's camera-path JSON, read and written (numpy only).

One format for every path that leaves or enters the program: ``dreamjourney export --as
path`` writes a session's cameras in it, the explorer's keyframe editor saves and loads it,
``dreamjourney explore --path FILE`` sends one at start and the demo flies one.

The file is what nerfstudio's viewer writes and ``ns-render camera-path`` reads
(``nerfstudio/viewer/render_panel.py`` and ``nerfstudio/cameras/camera_paths.py``):

- ``camera_path``: one entry per frame, ``camera_to_world`` (16 numbers, a row-major 4 x 4),
  ``fov`` (vertical field of view in degrees) and ``aspect`` (width / height);
- ``keyframes``: the editable keyframes, ``matrix`` (16 numbers as above), ``fov``, ``aspect``
  and nerfstudio's transition overrides (off);
- ``render_width``, ``render_height`` (pixels), ``fps``, ``seconds``, ``camera_type``
  (``"perspective"``), ``default_fov``, ``default_transition_sec``, ``is_cycle``,
  ``smoothness_value``.

Matrices are camera-to-world with nerfstudio's OpenGL camera axes (x right, y up, z
backward); inside the program poses are OpenCV (``protocol.camera``), converted here by
``opencv_to_gl_pose`` and nowhere else. The world is the scene's own: the first view's
camera frame, in the scene's depth units. nerfstudio places the principal point at the image
centre with square pixels (fx = fy = H / 2 / tan(fov / 2)); :meth:`CameraPath.K` gives that K.

An extra ``dreamjourney`` block (nerfstudio ignores unknown keys) records the scene's median
depth: a path made in one scene and loaded into another is scaled by the ratio of their
median depths (:meth:`CameraPath.scaled_to`), so a path's shape carries over between photos.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from protocol.camera import opencv_to_gl_pose

FORMAT_NOTE = "world: the scene's first view's camera frame (OpenCV axes), in its depth units"


class CameraPathError(ValueError):
    """A camera-path file cannot be used; the message names the field."""


def _no_poses() -> np.ndarray:
    return np.zeros((0, 4, 4))


@dataclass(frozen=True)
class CameraPath:
    """Frames and keyframes of a camera path, OpenCV camera-to-world (world = first view)."""

    poses: np.ndarray
    """N x 4 x 4 camera-to-world poses, one per frame (OpenCV axes)."""
    width: int
    """Render width in pixels."""
    height: int
    """Render height in pixels."""
    fov_y_deg: float
    """Vertical field of view in degrees."""
    fps: float
    """Frames per second of ``poses``."""
    keyframes: np.ndarray = field(default_factory=_no_poses)
    """K x 4 x 4 keyframes the frames pass through (OpenCV); may be empty."""
    median_depth: float | None = None
    """The median depth of the scene the path was made in (None: unknown)."""

    @classmethod
    def from_K(cls, poses: np.ndarray, K: np.ndarray, width: int, height: int, fps: float,
               keyframes: np.ndarray | None = None, median_depth: float | None = None) -> CameraPath:
        """A path for a camera with intrinsics ``K`` (its vertical focal length sets the fov)."""
        fov = math.degrees(2.0 * math.atan(0.5 * height / float(np.asarray(K)[1, 1])))
        kf = _no_poses() if keyframes is None else np.asarray(keyframes, np.float64)
        return cls(np.asarray(poses, np.float64), int(width), int(height), fov, float(fps), kf,
                   median_depth)

    def K(self) -> np.ndarray:
        """3 x 3 intrinsics as nerfstudio renders the path: centred, square pixels."""
        f = 0.5 * self.height / math.tan(math.radians(self.fov_y_deg) / 2.0)
        return np.array([[f, 0.0, self.width / 2.0], [0.0, f, self.height / 2.0], [0.0, 0.0, 1.0]])

    @property
    def seconds(self) -> float:
        return len(self.poses) / self.fps

    def scaled_to(self, median_depth: float) -> CameraPath:
        """The path in a scene of ``median_depth``: positions scaled about the first view by
        the ratio of the median depths (unchanged when the path's own is unknown)."""
        if self.median_depth is None or not median_depth > 0:
            return self
        s = median_depth / self.median_depth

        def scale(p: np.ndarray) -> np.ndarray:
            out = p.copy()
            out[:, :3, 3] *= s
            return out

        return replace(self, poses=scale(self.poses), keyframes=scale(self.keyframes),
                       median_depth=float(median_depth))

    # --- JSON ----------------------------------------------------------------------------

    def to_json(self) -> dict:
        aspect = self.width / self.height
        fov = float(self.fov_y_deg)

        def flat(p: np.ndarray) -> list[float]:
            return [float(v) for v in opencv_to_gl_pose(p).reshape(16)]

        n_key = len(self.keyframes)
        ours: dict[str, object] = {"version": 1, "world": FORMAT_NOTE}
        data = {
            "camera_type": "perspective",
            "render_width": int(self.width),
            "render_height": int(self.height),
            "fps": float(self.fps),
            "seconds": self.seconds,
            "default_fov": fov,
            "default_transition_sec": self.seconds / max(n_key - 1, 1),
            "is_cycle": False,
            "smoothness_value": 0.0,
            "keyframes": [{"matrix": flat(k), "fov": fov, "aspect": aspect,
                           "override_transition_enabled": False,
                           "override_transition_sec": None} for k in self.keyframes],
            "camera_path": [{"camera_to_world": flat(p), "fov": fov, "aspect": aspect}
                            for p in self.poses],
            "dreamjourney": ours,
        }
        if self.median_depth is not None:
            ours["median_depth"] = float(self.median_depth)
        return data

    @classmethod
    def from_json(cls, data: object) -> CameraPath:
        """Read a nerfstudio camera path; :class:`CameraPathError` names what is wrong."""
        if not isinstance(data, dict):
            raise CameraPathError("a camera path is a JSON object")
        width = _positive(data, "render_width", int)
        height = _positive(data, "render_height", int)
        fps = _positive(data, "fps", float)
        camera_type = data.get("camera_type", "perspective")
        if camera_type != "perspective":
            raise CameraPathError(f"camera_type {camera_type!r}: only 'perspective' paths are supported")
        frames = data.get("camera_path")
        if not isinstance(frames, list) or not frames:
            raise CameraPathError("camera_path must be a non-empty list of frames")
        poses = np.stack([_matrix(f, "camera_to_world", f"camera_path[{i}]") for i, f in enumerate(frames)])
        fovs = [_fov(f, f"camera_path[{i}]") for i, f in enumerate(frames)]
        if max(fovs) - min(fovs) > 1e-3:
            raise CameraPathError("camera_path: a field of view that changes along the path is not supported")
        keys = data.get("keyframes", [])
        if not isinstance(keys, list):
            raise CameraPathError("keyframes must be a list")
        kf = np.stack([_matrix(k, "matrix", f"keyframes[{i}]") for i, k in enumerate(keys)]) if keys \
            else _no_poses()
        extra = data.get("dreamjourney", {})
        median = extra.get("median_depth") if isinstance(extra, dict) else None
        if median is not None and not (isinstance(median, (int, float)) and median > 0):
            raise CameraPathError("dreamjourney.median_depth must be a positive number")
        return cls(opencv_to_gl_pose(poses), width, height, fovs[0], fps, opencv_to_gl_pose(kf),
                   None if median is None else float(median))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json()))  # as nerfstudio's viewer writes it
        return path

    @classmethod
    def load(cls, path: str | Path) -> CameraPath:
        """Read a camera-path file; :class:`CameraPathError` (a ValueError) says what is wrong."""
        try:
            data = json.loads(Path(path).read_text())
        except OSError as exc:
            raise CameraPathError(f"cannot read {path}: {exc.strerror or exc}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CameraPathError(f"{path} is not JSON: {exc}") from None
        try:
            return cls.from_json(data)
        except CameraPathError as exc:
            raise CameraPathError(f"{path}: {exc}") from None


def _positive(data: dict, key: str, kind: type):
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
            or not math.isfinite(value) or (kind is int and value != int(value)):
        raise CameraPathError(f"{key} must be a positive {'integer' if kind is int else 'number'}")
    return kind(value)


def _fov(entry: object, where: str) -> float:
    fov = entry.get("fov") if isinstance(entry, dict) else None
    if isinstance(fov, bool) or not isinstance(fov, (int, float)) or not 0 < fov < 180:
        raise CameraPathError(f"{where}.fov must be a vertical field of view in degrees (0-180)")
    return float(fov)


def _matrix(entry: object, key: str, where: str) -> np.ndarray:
    values = entry.get(key) if isinstance(entry, dict) else None
    try:
        m = np.asarray(values, dtype=np.float64).reshape(4, 4)
    except (TypeError, ValueError):
        raise CameraPathError(f"{where}.{key} must be 16 numbers (a row-major 4 x 4)") from None
    R = m[:3, :3]
    if not np.all(np.isfinite(m)) or not np.allclose(m[3], [0, 0, 0, 1], atol=1e-6) \
            or not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) <= 0:
        raise CameraPathError(f"{where}.{key} is not a camera-to-world pose (rotation and translation)")
    return m
