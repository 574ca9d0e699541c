"""The classic engine's transitions on a moving world: the world at each frame's time.

Every transition renders the scene's 4D points (``geometry.motion``, kept in the point store)
where they are at its frames' times, so clips show the world going on moving. Frame j is the
world at ``start_s + j / fps`` seconds on the world-motion clock: ``start_s`` is the
explorer's clock when it sent a dynamic transition (``TransitionRequest.dynamics``), so the
clip continues the motion it showed, and 0 for a plain one. A world without motion renders
exactly as before, in batches; a moving one a frame at a time (each its own time).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.engines.base import Scene, TransitionRequest
from backend.geometry.motion import any_moving
from backend.geometry.motion_render import render_at
from backend.geometry.splat import NumpyRenderOutput

STILL_NOTE = ("dynamic transition: nothing in this scene moves yet (animate a region first), "
              "so the world is rendered still")


def world_moves(scene: Scene) -> bool:
    """Whether any of the scene's points carries a looping motion."""
    return any_moving(scene.cloud.cloud().motion)


@dataclass(frozen=True)
class WorldClock:
    """Where on the world-motion clock each frame of one transition lies."""

    moving: bool
    """Whether the scene's world moves (else every frame renders the same still world)."""
    start_s: float = 0.0
    """Seconds on the clock at frame 0."""
    fps: float = 24.0
    note: str = ""
    """One line for the HUD about the motion in a dynamic transition (empty otherwise)."""

    @classmethod
    def of(cls, scene: Scene, request: TransitionRequest) -> WorldClock:
        moving = world_moves(scene)
        if request.dynamics is None:
            return cls(moving, 0.0, request.fps)
        note = "dynamic transition: the world moves on" if moving else STILL_NOTE
        return cls(moving, request.dynamics.start_s, request.fps, note)

    def time(self, frame: int) -> float:
        """Seconds on the clock at ``frame``."""
        return self.start_s + frame / self.fps

    def batch(self, frames_per_batch: int) -> int:
        """Frames rendered together: one at a time while the world moves (each its own time)."""
        return 1 if self.moving else frames_per_batch

    def render(self, renderer, scene: Scene, poses: np.ndarray, frame: int, width: int,
               height: int) -> NumpyRenderOutput:
        """``poses`` (frames ``frame``, ``frame + 1``, ...) rendered; a moving world at the
        time of ``frame``."""
        return render_at(renderer, scene.cloud, poses, scene.K, width, height,
                         self.time(frame)).numpy()
