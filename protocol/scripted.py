"""A blocking, scriptable client for batch jobs, benchmarks and tests (no window).

``ScriptedClient`` wraps :class:`protocol.transport.Client`: each call sends one request and
waits for its whole answer, granting credit as frames arrive, and returns what came back
with arrival times.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from protocol import codec, requests
from protocol.messages import (
    Arrow,
    Cancel,
    Dynamics,
    Error,
    Frame,
    JobAccepted,
    JobDone,
    JobFailed,
    PointsDelta,
    Progress,
    RegionOutline,
    SceneOpened,
    SceneText,
    Transition,
    Undone,
)
from protocol.transport import Client, Incoming, PeerGone


class ScriptError(RuntimeError):
    """The backend answered with an Error, or went away."""


@dataclass
class Points:
    xyz: list[np.ndarray] = field(default_factory=list)
    rgb: list[np.ndarray] = field(default_factory=list)
    radius: list[np.ndarray] = field(default_factory=list)
    total: int = 0

    def add(self, msg: PointsDelta, blobs) -> None:
        self.xyz.append(np.array(codec.read_array(msg.xyz, blobs)))
        self.rgb.append(np.array(codec.read_array(msg.rgb, blobs)))
        self.radius.append(np.array(codec.read_array(msg.radius, blobs)))
        self.total = msg.total_points

    def count(self) -> int:
        return sum(len(x) for x in self.xyz)


@dataclass
class OpenResult:
    scene: SceneOpened
    points: Points


@dataclass
class JobResult:
    job_id: str
    frames: list[np.ndarray]
    poses: list[np.ndarray]
    frame_times: list[float]
    """Seconds from the request to each frame's arrival."""
    points: Points
    progress: list[Progress]
    outcome: JobDone | JobFailed | None
    """None until the job ends (``run`` returns once it is set)."""
    accepted: JobAccepted | None = None


class ScriptedClient:
    """Synchronous requests over one connection; not thread-safe (use one per thread)."""

    def __init__(self, address: str, timeout_s: float = 60.0, **client_options):
        self.client = Client(address, **client_options)
        self.welcome = self.client.connect(timeout=timeout_s)
        self.timeout_s = timeout_s

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> ScriptedClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _next(self, deadline: float) -> Incoming:
        ev = self.client.poll(timeout=max(0.0, deadline - time.monotonic()))
        if ev is None:
            raise TimeoutError(f"no answer from the backend within {self.timeout_s} s")
        if isinstance(ev, PeerGone):
            raise ScriptError(f"backend gone: {ev.reason}")
        if isinstance(ev.msg, Error):
            raise ScriptError(f"backend error [{ev.msg.code}]: {ev.msg.message}")
        return ev

    def open_scene(self, image: np.ndarray | None, scene_id: str | None = None,
                   K: np.ndarray | None = None, depth: np.ndarray | None = None,
                   text: SceneText | None = None, engine: str | None = None,
                   resume: bool = False) -> OpenResult:
        """Open (or resume) a scene and collect its whole initial cloud."""
        scene_id = scene_id or f"scene-{uuid.uuid4().hex[:8]}"
        self.client.send(*requests.open_scene(scene_id, image, K, depth, text, engine, resume))
        deadline = time.monotonic() + self.timeout_s
        opened, points = None, Points()
        while True:
            ev = self._next(deadline)
            if isinstance(ev.msg, SceneOpened):
                opened = ev.msg
            elif isinstance(ev.msg, PointsDelta) and ev.msg.scene_id == scene_id:
                points.add(ev.msg, ev.blobs)
                if ev.msg.last and opened is not None:
                    return OpenResult(opened, points)

    def transition(self, scene_id: str, poses: np.ndarray, fps: float = 24.0,
                   cancel_after: int | None = None, **extra) -> JobResult:
        msg, blobs = requests.transition(f"t-{uuid.uuid4().hex[:8]}", scene_id, poses, fps, **extra)
        return self.run(msg, blobs, cancel_after)

    def dynamics(self, scene_id: str, pose: np.ndarray, num_frames: int = 24,
                 arrows: Sequence[Arrow] = (), frozen: np.ndarray | None = None,
                 cancel_after: int | None = None, **extra) -> JobResult:
        msg, blobs = requests.dynamics(f"d-{uuid.uuid4().hex[:8]}", scene_id, pose, num_frames,
                                       arrows=arrows, frozen=frozen, **extra)
        return self.run(msg, blobs, cancel_after)

    def select_region(self, scene_id: str, pose: np.ndarray, arrows: list[Arrow],
                      frozen: np.ndarray | None = None) -> tuple[RegionOutline, list[np.ndarray]]:
        """The region these arrows would animate: the backend's answer and its closed
        polylines (each K x 2 float32, image pixels)."""
        msg, blobs = requests.select_region(f"r-{uuid.uuid4().hex[:8]}", scene_id, pose, arrows, frozen)
        self.client.send(msg, blobs)
        deadline = time.monotonic() + self.timeout_s
        while True:
            ev = self._next(deadline)
            if isinstance(ev.msg, RegionOutline) and ev.msg.request_id == msg.request_id:
                points = np.asarray(codec.read_array(ev.msg.points, ev.blobs), np.float32).reshape(-1, 2)
                ends = np.cumsum(ev.msg.lengths)
                lines = [points[e - n : e].copy() for n, e in zip(ev.msg.lengths, ends, strict=True)]
                return ev.msg, lines

    def undo(self, scene_id: str) -> Undone:
        """Take back the scene's last transition; the backend's answer."""
        msg, blobs = requests.undo(f"u-{uuid.uuid4().hex[:8]}", scene_id)
        self.client.send(msg, blobs)
        deadline = time.monotonic() + self.timeout_s
        while True:
            ev = self._next(deadline)
            if isinstance(ev.msg, Undone) and ev.msg.request_id == msg.request_id:
                return ev.msg

    def run(self, msg: Transition | Dynamics, blobs: list, cancel_after: int | None = None) -> JobResult:
        """Send a job and collect everything up to its JobDone or JobFailed.

        With ``cancel_after=k`` a Cancel is sent once k frames arrived.
        """
        t0 = time.perf_counter()
        self.client.send(msg, blobs)
        result = JobResult(msg.job_id, [], [], [], Points(), [], outcome=None)
        deadline = time.monotonic() + self.timeout_s
        while True:
            ev = self._next(deadline)
            m = ev.msg
            if getattr(m, "job_id", None) != msg.job_id:
                continue
            if isinstance(m, JobAccepted):
                result.accepted = m
            elif isinstance(m, Progress):
                result.progress.append(m)
            elif isinstance(m, Frame):
                result.frames.append(codec.decode_image(m.image, ev.blobs))
                result.poses.append(codec.pose_array(m.pose))
                result.frame_times.append(time.perf_counter() - t0)
                if cancel_after is not None and len(result.frames) == cancel_after:
                    self.client.send(Cancel(job_id=msg.job_id))
                self.client.credit(1)  # the frame is consumed, cancelled or not
            elif isinstance(m, PointsDelta):
                result.points.add(m, ev.blobs)
            elif isinstance(m, (JobDone, JobFailed)):
                result.outcome = m
                return result
