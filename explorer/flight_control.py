"""Input and flight: keys held, mouse look, the fly camera and the path flown since the last
commit. No GL: the explorer asks it for poses and paths."""

from __future__ import annotations

import numpy as np

from explorer.camera import FlyCamera, MoveInput, fov_from_K
from explorer.paths import FlightPath
from explorer.settings import CameraSettings

MOVE_ACTIONS = {
    "forward": ("forward", 1.0), "backward": ("forward", -1.0),
    "right": ("right", 1.0), "left": ("right", -1.0),
    "up": ("up", 1.0), "down": ("up", -1.0),
}
MAX_STEP_S = 0.1
"""The camera integrates at most this much time per frame (a stalled frame is no leap)."""
PHOTO_POSE = np.eye(4)
"""The photo's viewpoint: the world is the first view's camera frame (DESIGN conventions)."""


class FlightControl:
    """The person's camera: flown with held keys, turned with the mouse, recorded as a path."""

    def __init__(self, settings: CameraSettings):
        self.camera = FlyCamera(settings)
        self.flight = FlightPath(np.eye(4))
        self.held: set[str] = set()
        self.mouse_look = False
        self.home = PHOTO_POSE.copy()
        """The photo's viewpoint (``home`` key)."""
        self.starts: dict[str, np.ndarray] = {}
        """Job id -> the pose its transition started from (where undo returns)."""

    def adopt_scene(self, K: np.ndarray, width: int, height: int, pose: np.ndarray,
                    median_depth: float) -> None:
        """A new scene: scale speeds by its depth, fit its photo, stand at ``pose`` (the
        photo's view, or for a resumed scene where the last clip ended); Home is always the
        photo's view."""
        cam = self.camera
        cam.scene_scale = max(median_depth, 1e-6)
        cam.fov_x_deg = fov_from_K(K, width)
        cam.fit = (width, height)
        self.home = PHOTO_POSE.copy()
        self.jump(pose)

    def press(self, action: str) -> None:
        self.held.add(action)

    def release(self, action: str) -> None:
        self.held.discard(action)

    def move_input(self) -> MoveInput:
        move = MoveInput(fast="fast" in self.held)
        for action, (axis, sign) in MOVE_ACTIONS.items():
            if action in self.held:
                setattr(move, axis, getattr(move, axis) + sign)
        return move

    def update(self, dt: float, record: bool) -> bool:
        """Fly for ``dt`` seconds; with ``record`` the new pose extends the path. Moved?"""
        cam = self.camera
        if cam.locked or not cam.update(min(dt, MAX_STEP_S), self.move_input()):
            return False
        if record:
            self.flight.record(cam.pose, cam.scene_scale)
        return True

    def jump(self, pose: np.ndarray) -> None:
        """Stand at ``pose`` and start a new path there."""
        self.camera.set_pose(pose)
        self.flight.reset(self.camera.pose)

    def committed(self, job_id: str) -> None:
        """The path went out as ``job_id``: remember its start; a new path starts here."""
        self.starts[job_id] = self.flight.start.copy()
        self.flight.reset(self.camera.pose)

    def path(self) -> np.ndarray | None:
        """Positions of the path to draw (None while empty or while a clip drives us)."""
        if self.camera.locked or self.flight.is_empty():
            return None
        return self.flight.positions()
