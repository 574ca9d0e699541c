"""One job (a transition or a dynamics clip), run in slices on the scheduler's slots.

:class:`JobRun` is the body of a job's ticket. It validates the request, then pulls events
from the engine's generator and streams them: Progress as is, frames under the client's
credit (encoded as the client asked), each frame also streamed into the clip's MP4, added
points as PointsDelta chunks. It ends with JobDone or JobFailed, always.

It holds its slot only while it makes progress. When the client has not granted credit for
the next frame and another client's job waits for a slot, it hands the slot back and parks
(``Resume``) until credit comes; and after ``scheduler.slice_s`` on a slot that another
client's job waits for, it hands it over at its next event and queues again. The engine's
generator keeps its place in between. So a slow reader or a long job delays others by at
most one event. A job ends with ``credit_timeout`` after ``scheduler.credit_timeout_s``
without credit, ``time_limit`` after ``scheduler.max_job_s`` of running (waits included),
``quota`` when its clip would pass a disk quota (nothing of it is kept), and ``cancelled``
or ``peer_gone`` at its next event after a Cancel or the client leaving.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from backend.config import BackendConfig
from backend.engines.base import (
    DynamicsRequest,
    Engine,
    EngineError,
    FrameOut,
    MotionOut,
    PointsOut,
    Progress,
    Scene,
    TransitionRequest,
    WorkerLost,
)
from backend.quotas import QuotaExceeded, Quotas, cloud_bytes
from backend.region_motion import motion_messages
from backend.region_reply import check_view_marks
from backend.scenes import OpenEntry, ResidentLimit, SceneTable
from backend.scheduler import FairScheduler, JobKind, Resume
from backend.session import SessionError, SessionStore
from protocol import codec
from protocol.camera import check_pose
from protocol.errors import BadArray, BadValue, JobFailCode, ProtocolError
from protocol.messages import Dynamics, Frame, JobDone, JobFailed, Transition
from protocol.messages import Progress as ProgressMsg
from protocol.transport import ServerEndpoint

log = logging.getLogger(__name__)


@dataclass
class Job:
    job_id: str
    peer: bytes
    client: str
    """The client identity (owner)."""
    kind: JobKind
    entry: OpenEntry
    """The open scene it runs on (loaded again first if it was unloaded)."""
    msg: Transition | Dynamics
    blobs: list
    engine: str
    """Name of the engine to run it (created on the job's slot if not resident yet)."""
    num_frames: int
    cancel: threading.Event = field(default_factory=threading.Event)
    accepted_at: float = field(default_factory=time.perf_counter)


class JobHost(Protocol):
    """What a job needs of the backend."""

    config: BackendConfig
    endpoint: ServerEndpoint
    sessions: SessionStore
    quotas: Quotas
    scenes: SceneTable

    def engine(self, name: str | None) -> Engine: ...

    def load_scene(self, entry: OpenEntry) -> Scene:
        """The entry's scene in memory (loaded from its session if it was unloaded)."""

    def send_points(self, peer: bytes, scene_id: str, cloud, total: int, job_id: str | None) -> None: ...

    def job_ended(self, job: Job) -> None:
        """Forget the job (its outcome is about to be sent)."""


class _Stop(Exception):
    """A job stops early; ``code`` and the message go into its JobFailed."""

    def __init__(self, code: JobFailCode, message: str):
        super().__init__(message)
        self.code = code


_END = object()


class JobRun:
    """The resumable body of one job; call it on a slot until it returns None."""

    def __init__(self, host: JobHost, job: Job, scheduler: FairScheduler, preemptible: bool):
        self.host, self.job, self.scheduler = host, job, scheduler
        self.preemptible = preemptible
        """Whether it may hand its slot back (not with remote workers, which it would keep)."""
        self.started: float | None = None
        self.waiting_since: float | None = None
        """When it began waiting for frame credit (None while it has room)."""
        self.events = None
        self.writer = None
        self.held = None
        """An event pulled from the engine that waits for credit."""
        self.poses: list[np.ndarray] = []
        self.count = 0
        self.first_frame_s: float | None = None
        self.kept: MotionOut | None = None
        """The motion a dynamics run left in the world (4D points)."""

    def __call__(self) -> Resume | None:
        job = self.job
        try:
            if self.started is None:
                self._start()
            resume = self._stream()
            if resume is not None:
                return resume
            outcome = self._finish()
        except _Stop as stop:
            self.host.endpoint.discard_frames(job.peer, job.job_id)
            outcome = JobFailed(job_id=job.job_id, code=stop.code, message=str(stop))
        except QuotaExceeded as exc:
            outcome = JobFailed(job_id=job.job_id, code="quota", message=str(exc))
        except WorkerLost as exc:
            outcome = JobFailed(job_id=job.job_id, code="worker_lost", message=str(exc))
        except EngineError as exc:
            outcome = JobFailed(job_id=job.job_id, code="engine_error", message=str(exc))
        except Exception as exc:
            log.exception("job %s of %s failed", job.job_id, job.peer.hex())
            outcome = JobFailed(job_id=job.job_id, code="internal",
                                message=f"{type(exc).__name__} (the backend's log has the details)")
        self._close()
        if self.host.endpoint.is_connected(job.peer):
            self.host.endpoint.send(job.peer, outcome)
        else:
            log.info("job %s ended after its explorer left", job.job_id)
        return None

    # -- steps --

    def _start(self) -> None:
        job, host = self.job, self.host
        self.started = time.monotonic()
        host.scenes.use(job.entry)
        self._check_stop()
        try:
            self.scene = host.load_scene(job.entry)
        except ResidentLimit as exc:
            raise _Stop("busy", str(exc)) from None
        except (SessionError, OSError, ValueError) as exc:
            log.warning("scene %s could not be loaded again: %s", job.entry.scene_id, exc)
            raise _Stop("bad_request", "the scene's saved session cannot be loaded") from None
        try:
            self.request = validate(job, self.scene)
        except (ProtocolError, ValueError) as exc:  # check_pose raises ValueError
            raise _Stop("bad_request", str(exc)) from None
        scene = self.scene
        self.before = (job.job_id, len(scene.cloud), scene.pose.copy(), scene.cloud.merges)
        if host.config.save_clips:
            host.quotas.check_bytes(job.client)
        engine = host.engine(job.engine)
        run = engine.transition if job.kind is JobKind.TRANSITION else engine.dynamics
        self.events = run(scene, self.request)
        if host.config.save_clips:
            owned = host.sessions.owned_by(job.client)
            self.writer = owned.begin_clip(scene.scene_id, self.request.fps)
        self.K = codec.k_list(scene.K)

    def _stream(self) -> Resume | None:
        """Send events until the engine is done (None) or the slot is handed back: parked
        until credit comes, or queued again after a time slice."""
        slice_end = time.monotonic() + self.host.config.scheduler.slice_s
        while True:
            self._check_stop()
            if self.held is None:
                self.held = next(self.events, _END)
            if self.held is _END:
                return None
            if isinstance(self.held, FrameOut) and not self._await_room():
                return Resume(ready=self._can_go_on)
            event, self.held = self.held, None
            self._emit(event)
            if (self.preemptible and time.monotonic() > slice_end
                    and self.scheduler.others_waiting(self.job.client)):
                return Resume()

    def _emit(self, ev) -> None:
        job, endpoint, scene = self.job, self.host.endpoint, self.scene
        if isinstance(ev, FrameOut):
            ref, data = codec.encode_image(ev.image, job.msg.frame_codec,
                                           quality=self.host.config.jpeg_quality)
            endpoint.send(job.peer, Frame(
                job_id=job.job_id, index=ev.index, num_frames=job.num_frames,
                pose=codec.pose_list(ev.pose), K=self.K, image=ref, fps=self.request.fps,
                loop=job.kind is JobKind.DYNAMICS), [data])
            self.first_frame_s = self.first_frame_s or time.monotonic() - self.started
            if self.writer is not None:
                self.writer.add(ev.image)
                self.host.quotas.check_bytes(job.client, self.writer.bytes_written())
            self.poses.append(ev.pose)
            self.count += 1
        elif isinstance(ev, Progress):
            endpoint.send(job.peer, ProgressMsg(job_id=job.job_id, stage=ev.stage, step=ev.step,
                                                total=ev.total, message=ev.message))
        elif isinstance(ev, PointsOut):
            self.host.send_points(job.peer, scene.scene_id, ev.cloud, total=len(scene.cloud),
                                  job_id=job.job_id)
        elif isinstance(ev, MotionOut):
            self.kept = ev
            for msg, blobs in motion_messages(scene, ev.index, ev.motion, job.job_id,
                                              self.host.config.chunk_points):
                endpoint.send(job.peer, msg, blobs)

    def _finish(self) -> JobDone:
        job, scene = self.job, self.scene
        is_transition = job.kind is JobKind.TRANSITION
        changed = is_transition or self.kept is not None  # points grown, or set moving
        timings = {"first_frame": self.first_frame_s or 0.0,
                   "generate": time.monotonic() - self.started}
        clip = None
        if self.writer is not None and self.count:
            t1 = time.monotonic()
            grown = cloud_bytes(len(scene.cloud)) if changed else 0
            self.host.quotas.check_bytes(job.client, self.writer.bytes_written() + grown)
            clip = self.host.sessions.owned_by(job.client).commit_clip(
                scene.scene_id, job.kind.value, self.writer, np.stack(self.poses), scene.K,
                self.request.fps, scene.pose, store=scene.cloud if changed else None,
                timings=timings, region=None if self.kept is None else self.kept.region)
            timings["save"] = time.monotonic() - t1
        elif changed:
            job.entry.dirty = True  # changed in memory only
        if changed:
            job.entry.undo.append((*self.before, self.kept))
        timings["total"] = time.monotonic() - self.started
        return JobDone(job_id=job.job_id, num_frames=self.count, timings=timings, clip=clip)

    def _close(self) -> None:
        """Release what the job held, however it ended."""
        if self.events is not None:
            self.events.close()
        if self.writer is not None:
            self.writer.abort()  # no-op once committed
        if self.started is not None:
            self.host.scenes.done_with(self.job.entry)
        self.host.job_ended(self.job)

    # -- waiting --

    def _await_room(self) -> bool:
        """Wait on the slot for room for one more frame while nobody else needs the slot;
        False when it should be handed back."""
        endpoint, job = self.host.endpoint, self.job
        if self.waiting_since is None:
            self.waiting_since = time.monotonic()
        while True:
            if endpoint.wait_writable(job.peer, self.host.config.frames_ahead, timeout=0.05):
                self.waiting_since = None
                return True
            self._check_stop()
            if self.preemptible and self.scheduler.others_waiting(job.client):
                return False

    def _can_go_on(self) -> bool:
        """Whether a parked job should run again: room for a frame, or a reason to end."""
        job, endpoint, now = self.job, self.host.endpoint, time.monotonic()
        sched = self.host.config.scheduler
        waited = now - (self.waiting_since or now)
        return (job.cancel.is_set() or not endpoint.is_connected(job.peer)
                or endpoint.wait_writable(job.peer, self.host.config.frames_ahead, timeout=0)
                or waited > sched.credit_timeout_s or now - self.started > sched.max_job_s)

    def _check_stop(self) -> None:
        job, sched, now = self.job, self.host.config.scheduler, time.monotonic()
        if job.cancel.is_set():
            if not self.host.endpoint.is_connected(job.peer):
                raise _Stop("peer_gone", "job stopped: the explorer disconnected")
            raise _Stop("cancelled", "job stopped: cancelled")
        if not self.host.endpoint.is_connected(job.peer):
            raise _Stop("peer_gone", "job stopped: the explorer disconnected")
        if now - self.started > sched.max_job_s:
            raise _Stop("time_limit", f"the job ran {sched.max_job_s:g} s, the limit per job "
                        "(scheduler.max_job_s)")
        if self.waiting_since is not None and now - self.waiting_since > sched.credit_timeout_s:
            raise _Stop("credit_timeout", f"no frame credit for {sched.credit_timeout_s:g} s "
                        "(scheduler.credit_timeout_s): the job was cancelled")


def validate(job: Job, scene: Scene) -> TransitionRequest | DynamicsRequest:
    """The engine request, every number checked (this runs on the job's slot, not the
    dispatcher). Arrows are bounded by the view: a start inside it, a displacement per
    frame no longer than its larger side."""
    msg = job.msg
    if job.kind is JobKind.TRANSITION:
        poses = np.asarray(codec.read_array(msg.poses, job.blobs), dtype=np.float64)
        if poses.ndim != 3 or poses.shape[1:] != (4, 4):
            raise BadArray(f"poses must be N x 4 x 4, got {poses.shape}")
        reach = 1e4 * max(scene.median_depth, 1e-3)
        for i, p in enumerate(poses):
            check_pose(p, f"pose {i}")
            if np.abs(p[:3, 3]).max() > reach:
                raise BadValue(f"pose {i} is more than {reach:g} (10^4 median depths) from the "
                               "first view")
        return TransitionRequest(poses, msg.fps, msg.prompt, msg.seed, msg.preset, msg.dynamics)
    pose = check_pose(codec.pose_array(msg.pose))
    frozen = check_view_marks(scene, msg.arrows, msg.frozen, job.blobs)
    return DynamicsRequest(pose, msg.num_frames, msg.fps, tuple(msg.arrows), frozen,
                           msg.prompt, msg.seed)
