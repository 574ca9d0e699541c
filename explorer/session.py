"""The explorer's side of the protocol: scenes, jobs, frames and points. No GL, no window.

:class:`ExplorerSession` talks to anything with the transport client's ``send``, ``poll``
and ``credit`` methods (the real :class:`protocol.transport.Client`, or an in-process fake in
tests). ``pump`` drains what has arrived without blocking: points go to ``on_points``, frames
are decoded into the :class:`~explorer.player.ClipPlayer`, progress into job bars.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from explorer.player import ClipFrame, ClipPlayer
from protocol import requests
from protocol.codec import decode_image, k_array, pose_array, read_array
from protocol.messages import (
    Arrow,
    Cancel,
    Error,
    Frame,
    JobAccepted,
    JobDone,
    JobFailed,
    PointsDelta,
    Progress,
    SceneOpened,
    SceneText,
    Undone,
)

logger = logging.getLogger(__name__)


class ClientLike(Protocol):
    def send(self, msg: Any, blobs: Any = ()) -> None: ...
    def poll(self, timeout: float | None = 0.0) -> Any: ...
    def credit(self, frames: int) -> None: ...


PointsSink = Callable[[np.ndarray, np.ndarray, np.ndarray], None]
TruncateSink = Callable[[int], None]


@dataclass
class SceneInfo:
    scene_id: str
    width: int
    height: int
    K: np.ndarray
    pose: np.ndarray
    median_depth: float
    engine: str
    num_points: int = 0
    loaded_points: int = 0
    depth_source: str = "prior"
    depth_note: str = ""
    points_budget: int = 0
    resumed: bool = False
    session: str = ""
    """The backend's session folder of the scene (a plain name under its sessions root)."""


@dataclass
class JobInfo:
    job_id: str
    kind: str
    """``transition`` or ``dynamics``."""
    num_frames: int
    fps: float = 24.0
    stage: str = "queued"
    step: int = 0
    total: int = 1
    frames_received: int = 0
    sent_at: float = field(default_factory=time.monotonic)
    done: bool = False

    @property
    def fraction(self) -> float:
        """Progress in [0, 1]: stage progress until frames stream, then frames received."""
        if self.frames_received and self.num_frames:
            return self.frames_received / self.num_frames
        return self.step / max(1, self.total) * 0.99


class ExplorerSession:
    """Scene and job bookkeeping for one connection."""

    def __init__(self, client: ClientLike, player: ClipPlayer, on_points: PointsSink,
                 clock: Callable[[], float] = time.monotonic,
                 on_truncate: TruncateSink | None = None, frame_codec: str = "jpeg"):
        self.client = client
        self.frame_codec = frame_codec
        """How clips' frames are asked for (``NetworkSettings.codec_for``)."""
        self.player = player
        self.on_points = on_points
        self.on_truncate = on_truncate or (lambda n: None)
        """Called with a point count when the cloud must shrink to it (undo, resume)."""
        self.on_opened: Callable[[SceneInfo], None] | None = None
        """Called with the scene once SceneOpened arrives (new or resumed)."""
        self.undone: list[Undone] = []
        self.clock = clock
        self.scene: SceneInfo | None = None
        self.jobs: dict[str, JobInfo] = {}
        self.status = "connecting"
        self.errors: list[str] = []
        self.peer_gone = False
        self.frames_received = 0
        self._ids = itertools.count(1)
        self._pending_scene: str | None = None
        self._opening_since: float | None = None
        self._discarded: set[str] = set()
        self.credits_granted = 0

    # --- requests ------------------------------------------------------------------------

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}-{uuid.uuid4().hex[:6]}"

    def open_scene(self, image: np.ndarray | None, K: np.ndarray | None = None,
                   depth: np.ndarray | None = None, text: SceneText | None = None,
                   engine: str | None = None, scene_id: str | None = None,
                   resume: bool = False) -> str:
        """Send OpenScene for an H x W x 3 uint8 photo (optionally with its z-depth), or
        resume the saved scene ``scene_id``."""
        scene_id = scene_id or self.new_id("scene")
        self.client.send(*requests.open_scene(scene_id, image, K, depth, text, engine, resume))
        self._pending_scene = scene_id
        self._opening_since = time.monotonic()
        self.status = "resuming the scene..." if resume else "opening the scene..."
        return scene_id

    def opening_progress(self) -> tuple[str, float] | None:
        """(label, fraction) while a scene opens or its cloud loads; None once it is ready."""
        if self._opening_since is None:
            return None
        waited = time.monotonic() - self._opening_since
        scene = self.scene
        if scene is None or scene.scene_id != self._pending_scene:
            return f"opening the scene ({waited:.0f} s)", 0.0
        if scene.num_points:
            return (f"loading points {scene.loaded_points:,}/{scene.num_points:,}",
                    scene.loaded_points / scene.num_points)
        return f"loading points ({waited:.0f} s)", 0.0

    def send_transition(self, poses: np.ndarray, fps: float, preset: str | None = None) -> str:
        scene = self._require_scene()
        job_id = self.new_id("transition")
        self.client.send(*requests.transition(job_id, scene.scene_id, poses, fps, preset,
                                              frame_codec=self.frame_codec))
        self.jobs[job_id] = JobInfo(job_id, "transition", len(poses), fps)
        self.status = f"transition of {len(poses)} frames requested"
        return job_id

    def send_dynamics(self, pose: np.ndarray, arrows: list[Arrow], frozen: np.ndarray | None,
                      num_frames: int, fps: float) -> str:
        scene = self._require_scene()
        job_id = self.new_id("dynamics")
        self.client.send(*requests.dynamics(job_id, scene.scene_id, pose, num_frames, fps,
                                            arrows, frozen, frame_codec=self.frame_codec))
        self.jobs[job_id] = JobInfo(job_id, "dynamics", num_frames, fps)
        self.status = f"animating this view ({len(arrows)} arrows)"
        return job_id

    def undo(self) -> str:
        """Ask the backend to take back the scene's last transition."""
        scene = self._require_scene()
        request_id = self.new_id("undo")
        self.client.send(*requests.undo(request_id, scene.scene_id))
        self.status = "undoing the last transition..."
        return request_id

    def reattach(self, client: ClientLike) -> None:
        """A new connection after the backend was lost: resume the scene on it."""
        self.client = client
        self.peer_gone = False
        self._discarded.clear()
        if self.scene is not None:
            self.open_scene(None, scene_id=self.scene.scene_id, resume=True)

    def cancel(self, job_id: str) -> None:
        job = self.jobs.get(job_id)
        if job is not None and not job.done:
            self.client.send(Cancel(job_id=job_id))

    def discard(self, job_id: str) -> None:
        """Stop wanting ``job_id``: cancel it; frames of it still in flight are credited as
        they arrive (the player credits those it already had)."""
        self.cancel(job_id)
        self._discarded.add(job_id)
        self.jobs.pop(job_id, None)

    def _require_scene(self) -> SceneInfo:
        if self.scene is None:
            raise RuntimeError("no scene is open yet")
        return self.scene

    # --- incoming ------------------------------------------------------------------------

    def pump(self, max_messages: int = 256, budget_s: float = 0.004) -> int:
        """Handle what has arrived, up to ``max_messages`` or ``budget_s`` seconds of work."""
        start = time.perf_counter()
        handled = 0
        while handled < max_messages and time.perf_counter() - start < budget_s:
            event = self.client.poll(0.0)
            if event is None:
                break
            handled += 1
            msg = getattr(event, "msg", None)
            if msg is None:  # PeerGone
                self._on_peer_gone(getattr(event, "reason", "no answer"))
                continue
            self.handle(msg, event.blobs)
        return handled

    def handle(self, msg: Any, blobs: list[memoryview]) -> None:
        handler = self._handlers().get(type(msg))
        if handler is None:
            logger.debug("ignoring %s", type(msg).__name__)
            return
        handler(msg, blobs)

    def _handlers(self) -> dict[type, Callable]:
        return {
            SceneOpened: self._on_scene_opened,
            PointsDelta: self._on_points,
            JobAccepted: self._on_job_accepted,
            Progress: self._on_progress,
            Frame: self._on_frame,
            JobDone: self._on_job_done,
            JobFailed: self._on_job_failed,
            Error: self._on_error,
            Undone: self._on_undone,
        }

    def _on_scene_opened(self, msg: SceneOpened, blobs) -> None:
        if self.scene is not None and self.scene.scene_id == msg.scene_id:
            self.on_truncate(0)  # resumed: the backend sends the whole cloud again
        self.scene = SceneInfo(msg.scene_id, msg.width, msg.height, k_array(msg.K),
                               pose_array(msg.pose), msg.median_depth, msg.engine, msg.num_points,
                               depth_source=msg.depth_source, depth_note=msg.depth_note,
                               points_budget=msg.points_budget, resumed=msg.resumed,
                               session=msg.session)
        verb = "resumed" if msg.resumed else "open"
        logger.info("scene %s %s (%s engine, %d points, depth: %s)", msg.scene_id, verb,
                    msg.engine, msg.num_points, msg.depth_source)
        self.status = f"scene {verb} ({msg.engine} engine), loading {msg.num_points} points"
        if self.on_opened is not None:
            self.on_opened(self.scene)

    def _on_points(self, msg: PointsDelta, blobs) -> None:
        xyz = read_array(msg.xyz, blobs)
        rgb = read_array(msg.rgb, blobs)
        radius = read_array(msg.radius, blobs)
        self.on_points(xyz, rgb, radius)
        if self.scene is not None and msg.scene_id == self.scene.scene_id:
            self.scene.loaded_points += len(xyz)
            self.scene.num_points = msg.total_points
            if msg.last and msg.job_id is None:
                self._opening_since = None
                self.status = "scene ready: fly with W A S D, F1 for help"
                logger.info("scene %s ready: %d points", msg.scene_id, msg.total_points)

    def _on_job_accepted(self, msg: JobAccepted, blobs) -> None:
        if msg.job_id in self._discarded:
            return
        job = self.jobs.setdefault(msg.job_id, JobInfo(msg.job_id, msg.kind, msg.num_frames))
        job.num_frames = msg.num_frames
        job.stage = "queued" if msg.queue_position else "running"
        self.player.begin(msg.job_id, msg.num_frames, job.fps, msg.kind == "dynamics")

    def consumed(self, frames: int = 1) -> None:
        """Frames received and finished with: the backend may send that many more."""
        if frames > 0:
            self.credits_granted += frames
            if not self.peer_gone:
                self.client.credit(frames)

    def _on_undone(self, msg: Undone, blobs) -> None:
        if self.scene is None or msg.scene_id != self.scene.scene_id:
            return
        if msg.job_id is None:
            self.status = "nothing to undo"
            return
        self.on_truncate(msg.total_points)
        self.scene.num_points = self.scene.loaded_points = msg.total_points
        self.undone.append(msg)
        logger.info("undid %s: %d points left", msg.job_id, msg.total_points)
        self.status = f"undid {msg.job_id.split('-')[0]}: back to {msg.total_points:,} points"

    def _on_progress(self, msg: Progress, blobs) -> None:
        job = self.jobs.get(msg.job_id)
        if job is None:
            return
        job.stage, job.step, job.total = msg.stage, msg.step, msg.total
        if msg.message and not job.frames_received:  # once it streams, playback is the news
            self.status = msg.message

    def _on_frame(self, msg: Frame, blobs) -> None:
        received_ns = time.perf_counter_ns()
        if msg.job_id in self._discarded:
            self.consumed(1)  # in flight when we stopped it: give the credit straight back
            return
        image = decode_image(msg.image, blobs)
        frame = ClipFrame(msg.index, pose_array(msg.pose), k_array(msg.K), image,
                          arrived_at=self.clock(), received_ns=received_ns)
        self.player.add(msg.job_id, frame, msg.num_frames, msg.fps, msg.loop)
        self.frames_received += 1
        job = self.jobs.get(msg.job_id)
        if job is not None and not job.frames_received:
            self.status = f"{job.kind} streaming"
        if job is not None:
            job.frames_received = max(job.frames_received, msg.index + 1)
            job.num_frames = msg.num_frames
            job.stage = "streaming"

    def _on_job_done(self, msg: JobDone, blobs) -> None:
        self._end_job(msg.job_id)
        total = msg.timings.get("total")
        self.status = f"{msg.job_id.split('-')[0]} done" + (f" in {total:.1f} s" if total else "")

    def _on_job_failed(self, msg: JobFailed, blobs) -> None:
        self._end_job(msg.job_id)
        if msg.code != "cancelled":
            self.status = f"job failed: {msg.message}"
            self.errors.append(msg.message)

    def _end_job(self, job_id: str) -> None:
        self.player.finish(job_id)
        job = self.jobs.pop(job_id, None)
        if job is not None:
            job.done = True

    def _on_error(self, msg: Error, blobs) -> None:
        logger.warning("backend error [%s]: %s", msg.code, msg.message)
        self.status = f"backend: {msg.message}"
        self.errors.append(f"{msg.code}: {msg.message}")
        if msg.request_id in self.jobs:
            self._end_job(msg.request_id)

    def _on_peer_gone(self, reason: str) -> None:
        self.peer_gone = True
        self.status = f"backend gone: {reason}"
        logger.warning("backend gone: %s", reason)
        for job_id in list(self.jobs):
            self._end_job(job_id)
