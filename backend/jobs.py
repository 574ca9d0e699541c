"""One job (a transition or a dynamics clip), run in slices on the scheduler's slots.

:class:`JobRun` is the body of a job's ticket. A :class:`Job` carries its engine request,
checked before it was queued (``backend.wire``), and the :class:`~backend.outbox.Outbox` of
its explorer. It pulls events from the engine's generator and streams them: Progress as is,
frames under the client's credit (encoded as the client asked), each frame also streamed
into the clip's MP4, added points as PointsDelta chunks. It ends with JobDone or JobFailed,
always.

It holds its slot only while it makes progress. When the client has not granted credit for
the next frame and another client's job waits for a slot, it hands the slot back and parks
(``Resume``) until credit comes; and after ``scheduler.slice_s`` on a slot that another
client's job waits for, it hands it over at its next event and queues again. Past its
first slice it also gives way, at its next event, to another client's fresh job running
beside it or due to start (``FairScheduler.gives_way``), and waits, its generator not
advanced, until that job is done or a slice has passed: a short job gets the CPU, not only
a slot. The engine's generator keeps its place in between. So a slow reader or a long job
delays others by at most one event. A job ends with ``credit_timeout`` after ``scheduler.credit_timeout_s``
without credit, ``time_limit`` after ``scheduler.max_job_s`` of running (waits included),
``quota`` when its clip would pass a disk quota (nothing of it is kept), and ``cancelled``
or ``peer_gone`` at its next event after a Cancel or the client leaving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from backend import wire
from backend.config import BackendConfig
from backend.engines.base import (
    DynamicsRequest,
    Engine,
    EngineError,
    Event,
    FrameOut,
    MotionOut,
    PointsOut,
    ProgressOut,
    Scene,
    TransitionRequest,
    WorkerLost,
)
from backend.outbox import Outbox
from backend.quotas import QuotaExceeded, Quotas, cloud_bytes
from backend.region_motion import motion_messages
from backend.scenes import OpenEntry, ResidentLimit, SceneRegistry, UndoPoint
from backend.scheduler import FairScheduler, JobKind, Resume
from backend.session import ClipWriter, SessionError, SessionStore
from protocol import codec
from protocol.errors import JobFailCode
from protocol.files.manifest import ClipKind
from protocol.messages import JobDone, JobFailed

log = logging.getLogger(__name__)


def run_transition(engine: Engine, scene: Scene, request: TransitionRequest) -> Iterator[Event]:
    return engine.transition(scene, request)


def run_dynamics(engine: Engine, scene: Scene, request: DynamicsRequest) -> Iterator[Event]:
    return engine.dynamics(scene, request)


RUNS: dict[type, tuple[JobKind, Callable[..., Iterator[Event]]]] = {
    TransitionRequest: (JobKind.TRANSITION, run_transition),
    DynamicsRequest: (JobKind.DYNAMICS, run_dynamics),
}
"""Engine request type -> its kind and how an engine runs it (a new job kind adds its
entry here, in :data:`WIRE_KINDS` and its message's in ``backend.wire.REQUESTS``)."""

WIRE_KINDS: dict[JobKind, ClipKind] = {JobKind.TRANSITION: "transition",
                                       JobKind.DYNAMICS: "dynamics"}
"""A job's kind as JobAccepted and the session's clip entries name it."""


def ticket_key(peer: bytes, job_id: str) -> str:
    """The scheduler's key of a connection's job (job ids are per connection)."""
    return f"{peer.hex()}:{job_id}"


@dataclass
class Job:
    job_id: str
    peer: bytes
    client: str
    """The client identity (owner)."""
    entry: OpenEntry
    """The open scene it runs on (loaded again first if it was unloaded)."""
    request: wire.JobRequest
    """The engine request, checked (``backend.wire``)."""
    outbox: Outbox
    """Where its messages go (its explorer's connection)."""
    engine: str
    """Name of the engine to run it (created on the job's slot if not resident yet)."""
    frame_codec: str = "jpeg"
    """How its Frames are encoded (the explorer's ``frame_codec``)."""
    cancel: threading.Event = field(default_factory=threading.Event)
    accepted_at: float = field(default_factory=time.perf_counter)

    @property
    def kind(self) -> JobKind:
        return RUNS[type(self.request)][0]

    @property
    def num_frames(self) -> int:
        request = self.request
        return len(request.poses) if isinstance(request, TransitionRequest) else request.num_frames


@dataclass(frozen=True)
class JobContext:
    """What a job needs of the backend."""

    config: BackendConfig
    sessions: SessionStore
    quotas: Quotas
    scenes: SceneRegistry
    engine: Callable[[str], Engine]
    ended: Callable[[Job], None]
    """Forget the job (its outcome is about to be sent)."""


class _Stop(Exception):
    """A job stops early; ``code`` and the message go into its JobFailed."""

    def __init__(self, code: JobFailCode, message: str) -> None:
        super().__init__(message)
        self.code = code


_END = object()


class JobRun:
    """The resumable body of one job; call it on a slot until it returns None."""

    def __init__(self, ctx: JobContext, job: Job, scheduler: FairScheduler, preemptible: bool):
        self.ctx, self.job, self.scheduler = ctx, job, scheduler
        self.preemptible = preemptible
        """Whether it may hand its slot back (not with remote workers, which it would keep)."""
        self.started = 0.0
        self.key = ticket_key(job.peer, job.job_id)
        """Its ticket's key on the scheduler."""
        self.waiting_since: float | None = None
        """When it began waiting for frame credit (None while it has room)."""
        self.gave_way_at: float | None = None
        """When it last handed its slot back for another client's fresh job (None: running)."""
        self.keeps_cpu_until = 0.0
        """It gives way to no fresh job before then (after being held back a whole slice)."""
        self.scene: Scene | None = None
        self.events: Iterator[Event] | None = None
        self.writer: ClipWriter | None = None
        self.held: Event | object | None = None
        """An event pulled from the engine that waits for credit."""
        self.before: UndoPoint | None = None
        self.poses: list[np.ndarray] = []
        self.count = 0
        self.first_frame_s: float | None = None
        self.K: tuple[float, ...] = ()
        self.kept: MotionOut | None = None
        """The motion a dynamics run left in the world (4D points)."""

    def __call__(self) -> Resume | None:
        job = self.job
        outcome: JobDone | JobFailed
        try:
            if self.scene is None:
                self._start()
            resume = self._stream()
            if resume is not None:
                return resume
            outcome = self._finish()
        except _Stop as stop:
            job.outbox.discard_frames(job.job_id)
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
        if job.outbox.connected():
            job.outbox.send(outcome)
        else:
            log.info("job %s ended after its explorer left", job.job_id)
        return None

    # -- steps --

    def _start(self) -> None:
        job, ctx = self.job, self.ctx
        self.started = time.monotonic()
        ctx.scenes.use(job.entry)
        self._check_stop()
        try:
            scene = self.scene = ctx.scenes.load(job.entry)
        except ResidentLimit as exc:
            raise _Stop("busy", str(exc)) from None
        except (SessionError, OSError, ValueError) as exc:
            log.warning("scene %s could not be loaded again: %s", job.entry.scene_id, exc)
            raise _Stop("bad_request", "the scene's saved session cannot be loaded") from None
        self.before = UndoPoint(job.job_id, len(scene.cloud), scene.pose.copy(), scene.cloud.merges)
        if ctx.config.save_clips:
            ctx.quotas.check_bytes(job.client)
        run = RUNS[type(job.request)][1]
        self.events = run(ctx.engine(job.engine), scene, job.request)
        if ctx.config.save_clips:
            owned = ctx.sessions.owned_by(job.client)
            self.writer = owned.begin_clip(scene.scene_id, job.request.fps)
        self.K = tuple(codec.k_list(scene.K))

    def _stream(self) -> Resume | None:
        """Send events until the engine is done (None) or the slot is handed back: parked
        until credit comes, queued again after a time slice, or waiting while another
        client's fresh job has the CPU."""
        assert self.events is not None
        job, sched = self.job, self.scheduler
        now = time.monotonic()
        slice_end = now + self.ctx.config.scheduler.slice_s
        if self.gave_way_at is not None:
            if now - self.gave_way_at >= sched.slice_s:  # held back a whole slice: now it
                self.keeps_cpu_until = now + sched.slice_s  # runs one before giving way again
            self.gave_way_at = None
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
            if not self.preemptible:
                continue
            now = time.monotonic()
            if now >= self.keeps_cpu_until and sched.gives_way(self.key, job.client):
                self.gave_way_at = now
                return Resume(ready=self._way_clear)
            if now > slice_end and sched.others_waiting(job.client):
                return Resume()

    def _emit(self, ev: object) -> None:
        job, ctx, scene = self.job, self.ctx, self.scene
        assert scene is not None
        if isinstance(ev, FrameOut):
            job.outbox.send(*wire.frame_message(
                job.job_id, ev, job.num_frames, self.K, job.request.fps,
                loop=job.kind is JobKind.DYNAMICS, frame_codec=job.frame_codec,
                quality=ctx.config.jpeg_quality))
            self.first_frame_s = self.first_frame_s or time.monotonic() - self.started
            if self.writer is not None:
                self.writer.add(ev.image)
                ctx.quotas.check_bytes(job.client, self.writer.bytes_written())
            self.poses.append(ev.pose)
            self.count += 1
        elif isinstance(ev, ProgressOut):
            job.outbox.send(wire.progress_message(job.job_id, ev))
        elif isinstance(ev, PointsOut):
            for msg, blobs in wire.points_messages(scene.scene_id, ev.cloud, len(scene.cloud),
                                                   job.job_id, ctx.config.chunk_points):
                job.outbox.send(msg, blobs)
        elif isinstance(ev, MotionOut):
            self.kept = ev
            for moving, blobs in motion_messages(scene, ev.index, ev.motion, job.job_id,
                                                 ctx.config.chunk_points):
                job.outbox.send(moving, blobs)

    def _finish(self) -> JobDone:
        job, scene = self.job, self.scene
        assert scene is not None and self.before is not None
        is_transition = job.kind is JobKind.TRANSITION
        changed = is_transition or self.kept is not None  # points grown, or set moving
        timings = {"first_frame": self.first_frame_s or 0.0,
                   "generate": time.monotonic() - self.started}
        clip = None
        if self.writer is not None and self.count:
            t1 = time.monotonic()
            grown = cloud_bytes(len(scene.cloud)) if changed else 0
            self.ctx.quotas.check_bytes(job.client, self.writer.bytes_written() + grown)
            clip = self.ctx.sessions.owned_by(job.client).commit_clip(
                scene.scene_id, WIRE_KINDS[job.kind], self.writer, np.stack(self.poses), scene.K,
                job.request.fps, scene.pose, store=scene.cloud if changed else None,
                timings=timings, region=None if self.kept is None else self.kept.region)
            timings["save"] = time.monotonic() - t1
        elif changed:
            job.entry.dirty = True  # changed in memory only
        if changed:
            self.ctx.scenes.remember(job.entry, replace(self.before, kept=self.kept))
        timings["total"] = time.monotonic() - self.started
        return JobDone(job_id=job.job_id, num_frames=self.count, timings=timings, clip=clip)

    def _close(self) -> None:
        """Release what the job held, however it ended."""
        if self.events is not None:
            close = getattr(self.events, "close", None)
            if close is not None:
                close()
        if self.writer is not None:
            self.writer.abort()  # no-op once committed
        if self.started:
            self.ctx.scenes.done_with(self.job.entry)
        self.ctx.ended(self.job)

    # -- waiting --

    def _await_room(self) -> bool:
        """Wait on the slot for room for one more frame while nobody else needs the slot;
        False when it should be handed back."""
        job = self.job
        if self.waiting_since is None:
            self.waiting_since = time.monotonic()
        while True:
            if job.outbox.wait_room(self.ctx.config.frames_ahead, timeout=0.05):
                self.waiting_since = None
                return True
            self._check_stop()
            if self.preemptible and self.scheduler.others_waiting(job.client):
                return False

    def _can_go_on(self) -> bool:
        """Whether a parked job should run again: room for a frame, or a reason to end."""
        job, now = self.job, time.monotonic()
        sched = self.ctx.config.scheduler
        waited = now - (self.waiting_since or now)
        return (job.cancel.is_set() or not job.outbox.connected()
                or job.outbox.has_room(self.ctx.config.frames_ahead)
                or waited > sched.credit_timeout_s or now - self.started > sched.max_job_s)

    def _way_clear(self) -> bool:
        """Whether a job that gave way goes on: no other client's fresh job runs or is due,
        it was held back a whole slice, or it has a reason to end."""
        job, now = self.job, time.monotonic()
        held = now - (self.gave_way_at or now)
        return (job.cancel.is_set() or not job.outbox.connected()
                or now - self.started > self.ctx.config.scheduler.max_job_s
                or held >= self.scheduler.slice_s or not self.scheduler.fresh_rival(job.client))

    def _check_stop(self) -> None:
        job, sched, now = self.job, self.ctx.config.scheduler, time.monotonic()
        if job.cancel.is_set():
            if not job.outbox.connected():
                raise _Stop("peer_gone", "job stopped: the explorer disconnected")
            raise _Stop("cancelled", "job stopped: cancelled")
        if not job.outbox.connected():
            raise _Stop("peer_gone", "job stopped: the explorer disconnected")
        if now - self.started > sched.max_job_s:
            raise _Stop("time_limit", f"the job ran {sched.max_job_s:g} s, the limit per job "
                        "(scheduler.max_job_s)")
        if self.waiting_since is not None and now - self.waiting_since > sched.credit_timeout_s:
            raise _Stop("credit_timeout", f"no frame credit for {sched.credit_timeout_s:g} s "
                        "(scheduler.credit_timeout_s): the job was cancelled")
