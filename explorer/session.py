"""The explorer's side of the protocol: scenes, jobs, frames and points. No GL, no window.

:class:`ExplorerSession` talks to anything with the transport client's ``send``, ``poll``
and ``credit`` methods (the real :class:`protocol.transport.Client`, or an in-process fake in
tests). ``pump`` drains what has arrived without blocking: points go to ``on_points``, frames
are decoded into the :class:`~explorer.player.ClipPlayer`, progress into job bars.

Jobs outlive a lost backend: when the connection is lost, every unfinished job is marked
``lost`` (its clip taken off the screen, its bar saying so) and, once the scene is resumed on
a new connection, sent again under a new id (:attr:`ExplorerSession.replaced` maps old ids to
new ones). Cancelling (X) drops lost jobs too.

(A little over 400 lines: one handler per message the backend sends, each a few lines.)
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
from protocol.limits import ProtocolError
from protocol.messages import (
    Arrow,
    Cancel,
    Error,
    Frame,
    JobAccepted,
    JobDone,
    JobFailed,
    PointsDelta,
    PointsMotion,
    Progress,
    RegionOutline,
    SceneOpened,
    SceneText,
    TransitionDynamics,
    Undone,
)

logger = logging.getLogger(__name__)

RETRY_RESUME_S = 2.0
"""Seconds between attempts to resume a scene the backend still holds for a lost connection."""


class ClientLike(Protocol):
    def send(self, msg: Any, blobs: Any = ()) -> None: ...
    def poll(self, timeout: float | None = 0.0) -> Any: ...
    def credit(self, frames: int) -> None: ...


PointsSink = Callable[[np.ndarray, np.ndarray, np.ndarray], None]
RequestBuilder = Callable[[str], tuple[Any, list]]
"""A job's request for a given job id: (message, blobs), to send it again under a new id."""
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
    build: RequestBuilder | None = None
    """Makes the job's request again (re-sent after a lost connection)."""
    lost: bool = False
    """The connection was lost before the job ended: it is re-sent once the scene is back."""
    resent_from: str | None = None
    """The id of the lost job this one replaces."""

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
        self.on_motion: Callable[[np.ndarray, np.ndarray], None] | None = None
        """Called with (indices, M x 4 motion) when points of the scene get a looping motion."""
        self.moving_regions: list[str] = []
        """The scene's regions that move (4D points), oldest first, as the backend said."""
        self.region_request: str | None = None
        """The latest SelectRegion sent; older outlines are ignored."""
        self.region_outline: list[np.ndarray] | None = None
        """Its answer once it arrives: closed polylines in image pixels (taken by the app)."""
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
        self._reattached = False
        self._retry_resume_at: float | None = None
        self.credits_granted = 0
        self.lost_now: list[JobInfo] = []
        """Jobs lost with the connection since the app last looked (it clears the list)."""
        self.replaced: dict[str, str] = {}
        """Lost job id -> the id it was re-sent under."""
        self.open_error: Error | None = None
        """The backend's answer when it refused to open (or resume) the scene."""

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

    def send_transition(self, poses: np.ndarray, fps: float, preset: str | None = None,
                        dynamics: TransitionDynamics | None = None) -> str:
        """A Transition along ``poses``; ``dynamics`` set: a dynamic one (the scene moves)."""
        scene_id, codec = self.require_scene().scene_id, self.frame_codec
        poses = np.array(poses, dtype=np.float32)
        job_id = self._submit("transition", len(poses), fps, lambda job_id: requests.transition(
            job_id, scene_id, poses, fps, preset, frame_codec=codec, dynamics=dynamics))
        kind = "transition" if dynamics is None else "dynamic transition"
        self.status = f"{kind} of {len(poses)} frames requested"
        return job_id

    def send_dynamics(self, pose: np.ndarray, arrows: list[Arrow], frozen: np.ndarray | None,
                      num_frames: int, fps: float) -> str:
        scene_id, codec = self.require_scene().scene_id, self.frame_codec
        pose = np.array(pose, dtype=np.float64)
        frozen = None if frozen is None else np.array(frozen)
        job_id = self._submit("dynamics", num_frames, fps, lambda job_id: requests.dynamics(
            job_id, scene_id, pose, num_frames, fps, arrows, frozen, frame_codec=codec))
        self.status = f"animating this view ({len(arrows)} arrows)"
        return job_id

    def _submit(self, kind: str, num_frames: int, fps: float, build: RequestBuilder) -> str:
        job_id = self.new_id(kind)
        self.client.send(*build(job_id))
        self.jobs[job_id] = JobInfo(job_id, kind, num_frames, fps, build=build)
        return job_id

    def _resend_lost(self) -> None:
        """The scene is back on a new connection: send every lost job again, under a new id."""
        lost = [job for job in self.jobs.values() if job.lost]
        for job in lost:
            build = job.build
            if build is None:  # known only from a JobAccepted: no request of ours to repeat
                continue
            del self.jobs[job.job_id]
            new_id = self._submit(job.kind, job.num_frames, job.fps, build)
            self.jobs[new_id].resent_from = job.job_id
            self.replaced[job.job_id] = new_id
            logger.info("re-sent %s lost with the backend as %s", job.job_id, new_id)
        if lost:
            self.status = f"re-sent {len(lost)} job(s) lost with the backend"

    def select_region(self, pose: np.ndarray, arrows: list[Arrow], frozen: np.ndarray | None) -> str:
        """Ask which region these arrows would animate (answered by ``region_outline``)."""
        scene = self.require_scene()
        self.region_request = self.new_id("region")
        self.client.send(*requests.select_region(self.region_request, scene.scene_id, pose,
                                                 arrows, frozen))
        return self.region_request

    def undo(self) -> str:
        """Ask the backend to take back the scene's last transition."""
        scene = self.require_scene()
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
            self._reattached = True
            self.open_scene(None, scene_id=self.require_scene().scene_id, resume=True)

    def cancel(self, job_id: str) -> None:
        job = self.jobs.get(job_id)
        if job is not None and not job.done:
            self.client.send(Cancel(job_id=job_id))

    def discard(self, job_id: str) -> None:
        """Stop wanting ``job_id``: cancel it; frames of it still in flight are credited as
        they arrive (the player credits those it already had)."""
        job = self.jobs.pop(job_id, None)
        if job is not None and not job.lost:
            self.client.send(Cancel(job_id=job_id))
        self._discarded.add(job_id)

    def require_scene(self) -> SceneInfo:
        """The open scene; RuntimeError while none is open."""
        if self.scene is None:
            raise RuntimeError("no scene is open yet")
        return self.scene

    # --- incoming ------------------------------------------------------------------------

    def pump(self, max_messages: int = 256, budget_s: float = 0.004) -> int:
        """Handle what has arrived, up to ``max_messages`` or ``budget_s`` seconds of work."""
        if self._retry_resume_at is not None and time.monotonic() >= self._retry_resume_at:
            self._retry_resume_at = None
            self.open_scene(None, scene_id=self.require_scene().scene_id, resume=True)
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
            PointsMotion: self._on_motion,
            JobAccepted: self._on_job_accepted,
            Progress: self._on_progress,
            Frame: self._on_frame,
            JobDone: self._on_job_done,
            JobFailed: self._on_job_failed,
            Error: self._on_error,
            Undone: self._on_undone,
            RegionOutline: self._on_region_outline,
        }

    def _on_region_outline(self, msg: RegionOutline, blobs) -> None:
        if msg.request_id != self.region_request:
            return  # an older request's answer: the marks have changed since
        points = np.asarray(read_array(msg.points, blobs), np.float32).reshape(-1, 2)
        ends = np.cumsum(msg.lengths)
        self.region_outline = [points[e - n : e] for n, e in zip(msg.lengths, ends, strict=True)]
        self.status = f"the arrows will animate {msg.coverage:.0%} of the view: Space to start"

    def _on_scene_opened(self, msg: SceneOpened, blobs) -> None:
        if self.scene is not None and self.scene.scene_id == msg.scene_id:
            self.on_truncate(0)  # resumed: the backend sends the whole cloud again
        self.moving_regions = []
        self.scene = SceneInfo(msg.scene_id, msg.width, msg.height, k_array(msg.K),
                               pose_array(msg.pose), msg.median_depth, msg.engine, msg.num_points,
                               depth_source=msg.depth_source, depth_note=msg.depth_note,
                               points_budget=msg.points_budget, resumed=msg.resumed,
                               session=msg.session)
        verb = "resumed" if msg.resumed else "open"
        logger.info("scene %s %s (%s engine, %d points, depth: %s)", msg.scene_id, verb,
                    msg.engine, msg.num_points, msg.depth_source)
        if msg.depth_note:  # the HUD shortens it after a few seconds; here it stays whole
            logger.info("scene %s: %s", msg.scene_id, msg.depth_note)
        self.status = f"scene {verb} ({msg.engine} engine), loading {msg.num_points} points"
        self.open_error = None
        if self.on_opened is not None:
            self.on_opened(self.scene)
        if self._reattached and msg.resumed:
            self._reattached = False
            self._resend_lost()

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

    def _on_motion(self, msg: PointsMotion, blobs) -> None:
        if self.scene is None or msg.scene_id != self.scene.scene_id:
            return
        index, motion = read_array(msg.index, blobs), read_array(msg.motion, blobs)
        known = (index >= 0) & (index < self.scene.loaded_points)
        if not known.all():  # never before its points; a backend that does so is logged
            logger.warning("motion for %d points not loaded yet: ignored", int((~known).sum()))
            index, motion = index[known], motion[known]
        if self.on_motion is not None:
            self.on_motion(index, motion)
        self.moving_regions = list(msg.regions)

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
        try:
            image = decode_image(msg.image, blobs)
        except ProtocolError as exc:  # a frame that cannot be shown: skipped, its credit back
            logger.warning("frame %d of %s skipped: %s", msg.index, msg.job_id, exc)
            self.consumed(1)
            return
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
        logger.info("job %s done: %d frames%s", msg.job_id, msg.num_frames,
                    f" in {total:.1f} s" if total else "")
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
        if msg.request_id is None or msg.request_id != self._pending_scene:
            return
        if self.scene is not None and msg.code == "busy":
            # Resuming on a new connection while the backend still holds the scene for the
            # lost one (until it notices that one is gone): ask again shortly.
            self._retry_resume_at = time.monotonic() + RETRY_RESUME_S
            self.status = "the backend still holds the scene for the lost connection: retrying"
            return
        self.open_error = msg
        self._opening_since = None

    def _on_peer_gone(self, reason: str) -> None:
        self.peer_gone = True
        logger.warning("backend gone: %s", reason)
        lost = [job for job in self.jobs.values() if not job.lost]
        for job in lost:
            job.lost, job.stage = True, "lost"
            self.player.discard(job.job_id)
            self.lost_now.append(job)
            logger.warning("%s lost with the backend: it is re-sent once the scene is back",
                           job.job_id)
        self.status = f"backend gone: {reason}"
        if lost:
            self.status += f"; {len(lost)} job(s) lost: re-sent when it is back (X cancels)"
