"""The classic engine's dynamic transitions: the world at each frame's time.

A dynamic transition (``TransitionRequest.dynamics``) renders the scene's 4D points at each
frame's time along the path: frame j shows the world at ``start_s + j / fps`` on the
world-motion clock, so a clip continues the motion the explorer showed when it sent it.

The point motion itself (each animated point's seamless loop of 3D displacements, kept with
the point store) belongs to the motion module; this module only asks the scene for it through
:func:`scene_motion`, which returns an object with ``cloud_at(store, t)`` (the scene's points
where they are at time t, a PointCloud) or None. Without motion the world stands still: a
dynamic transition renders exactly the plain transition, and one Progress line says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from backend.engines.base import Scene, TransitionRequest
from backend.geometry.cloud import PointCloud

STILL_NOTE = ("dynamic transition: nothing in this scene moves yet (animate a region first), "
              "so the world is rendered still")


class PointMotion(Protocol):
    """A scene's 4D points: where every point of the store is at a time on the motion clock."""

    def cloud_at(self, store, t: float) -> PointCloud:
        """All of ``store``'s points, the animated ones displaced to time ``t`` (seconds)."""


def scene_motion(scene: Scene) -> PointMotion | None:
    """The scene's point motion, or None while it has none. The one place that reads it."""
    return getattr(scene, "motion", None)


@dataclass(frozen=True)
class WorldClock:
    """Where on the world-motion clock each frame of one transition lies."""

    motion: PointMotion | None
    """None: the world stands still (a plain transition, or a scene without motion)."""
    start_s: float = 0.0
    """Seconds on the clock at frame 0."""
    fps: float = 24.0
    note: str = ""
    """One line for the HUD about the motion in this clip (empty for a plain transition)."""

    @classmethod
    def of(cls, scene: Scene, request: TransitionRequest) -> WorldClock:
        if request.dynamics is None:
            return cls(None)
        motion = scene_motion(scene)
        note = STILL_NOTE if motion is None else "dynamic transition: the world moves on"
        return cls(motion, request.dynamics.start_s, request.fps, note)

    def time(self, frame: int) -> float:
        """Seconds on the clock at ``frame``."""
        return self.start_s + frame / self.fps

    def world(self, scene: Scene, frame: int):
        """What ``frame`` renders: the store itself, or its points at the frame's time."""
        if self.motion is None:
            return scene.cloud
        return self.motion.cloud_at(scene.cloud, self.time(frame))

    def batch(self, frames_per_batch: int) -> int:
        """Frames rendered together: one at a time while the world moves (each its own time)."""
        return frames_per_batch if self.motion is None else 1
