"""The keyframe path on screen: the spline as a line in the world with a dot at every frame
(their spacing shows the speed), each keyframe as a marker with a tick along its view
direction, the selected one larger."""

from __future__ import annotations

import moderngl
import numpy as np

from explorer.renderer import OverlayRenderer, PathRenderer, ViewParams
from protocol.camera import project

SPLINE_COLOUR = (0.2, 0.9, 1.0, 1.0)
KEY_COLOUR = (1.0, 0.35, 0.2, 1.0)
SELECTED_COLOUR = (1.0, 1.0, 1.0, 1.0)


class PathView:
    """Draws a :class:`~explorer.path_editor.PathEditor`'s path (see the module docstring)."""

    def __init__(self, ctx: moderngl.Context, overlay: OverlayRenderer, marker_px: float = 9.0,
                 dot_px: float = 3.0):
        self.line = PathRenderer(ctx)
        self.overlay = overlay
        self.marker_px = marker_px
        self.dot_px = dot_px

    def draw_line(self, params: ViewParams, poses: np.ndarray | None) -> None:
        """The spline's positions as a line (3D pass, depth tested against the cloud)."""
        if poses is None or len(poses) < 2:
            return
        self.line.set_points(poses[:, :3, 3])
        self.line.draw(params, SPLINE_COLOUR)

    def draw_frames(self, poses: np.ndarray | None, pose: np.ndarray, K: np.ndarray) -> None:
        """A dot at every frame's position in front of the camera (2D pass)."""
        if poses is None or len(poses) < 2:
            return
        uv, z = project(poses[:, :3, 3], pose, K)
        d = self.dot_px
        self.overlay.rects([(u - d / 2, v - d / 2, d, d) for u, v in uv[z > 1e-6]], SPLINE_COLOUR)

    def draw_keyframes(self, keyframes: list[np.ndarray], selected: int | None, pose: np.ndarray,
                       K: np.ndarray, tick: float) -> None:
        """Markers over the view (2D pass); ``tick`` is the world length of the direction ticks."""
        if not keyframes:
            return
        keys = np.stack(keyframes)
        ends = keys[:, :3, 3] + tick * keys[:, :3, 2]
        uv, z = project(np.concatenate([keys[:, :3, 3], ends]), pose, K)
        n = len(keys)
        ticks = [(uv[i], uv[n + i]) for i in range(n) if z[i] > 0 and z[n + i] > 0]
        if ticks:
            self.overlay.lines(np.array(ticks), KEY_COLOUR)
        for i in range(n):
            if z[i] <= 0:
                continue
            size = self.marker_px * (1.6 if i == selected else 1.0)
            colour = SELECTED_COLOUR if i == selected else KEY_COLOUR
            self.overlay.rect(uv[i, 0] - size / 2, uv[i, 1] - size / 2, size, size, colour)
