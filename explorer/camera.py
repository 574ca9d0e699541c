"""The fly camera: WASD + mouse look, moved only in ``update(dt)`` from the app clock.

The pose is kept in the OpenCV convention (camera-to-world, x right, y down, z forward) like
every pose on the wire; the GL view and projection come from ``protocol.camera`` and nowhere
else. Speeds are in units of the scene's median depth per second, so a room and a valley feel
the same to fly through.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from explorer.settings import CameraSettings
from protocol.camera import gl_projection, intrinsics, opencv_to_gl_view, rotation_about

WORLD_UP = np.array([0.0, -1.0, 0.0])
"""Up in the world frame: the first view's -y (OpenCV y points down)."""


@dataclass
class MoveInput:
    """What the person is asking for this frame; each axis is -1, 0 or +1."""

    forward: float = 0.0
    right: float = 0.0
    up: float = 0.0
    fast: bool = False


@dataclass
class FlyCamera:
    """An OpenCV pose plus the state needed to fly it.

    ``pose`` is camera-to-world 4x4 (float64). ``K`` is derived per viewport from the
    horizontal field of view, so resizing the window never distorts the scene.
    """

    settings: CameraSettings = field(default_factory=CameraSettings)
    pose: np.ndarray = field(default_factory=lambda: np.eye(4))
    fov_x_deg: float = 60.0
    """Horizontal field of view of the photo (of the window when no photo is fitted)."""
    fit: tuple[int, int] | None = None
    """The photo's (width, height): the view is letterboxed so the whole photo shows."""
    extent: float = 0.0
    """Farthest point's distance from the world origin; the far plane reaches past it."""
    scene_scale: float = 1.0
    """The scene's median depth; speeds and clip planes scale with it."""
    speed_multiplier: float = 1.0
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))
    locked: bool = False
    """True while a clip drives the pose; input is ignored."""

    # --- input -------------------------------------------------------------------------

    def look(self, dx_px: float, dy_px: float) -> None:
        """Turn by a mouse motion in pixels (x right, y down on screen)."""
        if self.locked:
            return
        s = self.settings.look_sensitivity
        R = self.pose[:3, :3]
        yaw = rotation_about(WORLD_UP, -dx_px * s)
        R = yaw @ R
        pitched = R @ rotation_about([1.0, 0.0, 0.0], -dy_px * s)
        elevation = np.degrees(np.arcsin(np.clip(pitched[:3, 2] @ WORLD_UP, -1.0, 1.0)))
        if abs(elevation) <= self.settings.max_pitch_deg:
            R = pitched
        self.pose = self.pose.copy()
        self.pose[:3, :3] = _orthonormal(R)

    def scroll(self, notches: float) -> None:
        """Scale the speed by ``scroll_step`` per notch (clamped to [1/64, 64])."""
        self.speed_multiplier = float(
            np.clip(self.speed_multiplier * self.settings.scroll_step**notches, 1 / 64, 64)
        )

    # --- time ----------------------------------------------------------------------------

    def update(self, dt: float, move: MoveInput) -> bool:
        """Advance by ``dt`` seconds of app clock; returns True if the pose changed."""
        if self.locked or dt <= 0:
            self.velocity[:] = 0.0
            return False
        speed = self.settings.speed * self.scene_scale * self.speed_multiplier
        if move.fast:
            speed *= self.settings.fast_factor
        wish = np.array([move.right, -move.up, move.forward], dtype=np.float64)
        n = np.linalg.norm(wish)
        target = wish / n * speed if n > 0 else np.zeros(3)
        blend = 1.0 - np.exp(-self.settings.smoothing * dt)
        self.velocity += (target - self.velocity) * blend
        if n == 0 and np.linalg.norm(self.velocity) < 1e-4 * self.scene_scale:
            self.velocity[:] = 0.0
            return False
        self.pose = self.pose.copy()
        self.pose[:3, 3] += self.pose[:3, :3] @ (self.velocity * dt)
        return True

    def set_pose(self, pose: np.ndarray) -> None:
        """Jump to ``pose`` (e.g. a clip's frame) and stop moving."""
        self.pose = np.array(pose, dtype=np.float64, copy=True)
        self.velocity[:] = 0.0

    # --- matrices ------------------------------------------------------------------------

    def K(self, width: int, height: int) -> np.ndarray:
        """Intrinsics for a ``width`` x ``height`` view: with ``fit`` set, the photo's field
        of view scaled to fit entirely inside the view (letterboxed), centred."""
        if self.fit is None:
            return intrinsics(width, height, self.fov_x_deg)
        pw, ph = self.fit
        f = 0.5 * pw / np.tan(np.radians(self.fov_x_deg) / 2) * min(width / pw, height / ph)
        return np.array([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])

    def clip_planes(self) -> tuple[float, float]:
        """Near and far in world units: far covers the whole cloud from where we are."""
        s, c = self.scene_scale, self.settings
        reach = self.extent + float(np.linalg.norm(self.pose[:3, 3]))
        return c.near_fraction * s, max(c.far_fraction * s, c.far_margin * reach)

    def view_matrix(self) -> np.ndarray:
        return opencv_to_gl_view(self.pose)

    def projection(self, width: int, height: int) -> np.ndarray:
        near, far = self.clip_planes()
        return gl_projection(self.K(width, height), width, height, near, far)


def fov_from_K(K: np.ndarray, width: int) -> float:
    """Horizontal field of view in degrees of a pinhole ``K`` for an image ``width`` wide."""
    return float(np.degrees(2.0 * np.arctan(0.5 * width / K[0, 0])))


def _orthonormal(R: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(R)
    return u @ vt
