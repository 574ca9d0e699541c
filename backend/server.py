"""The backend server: many explorers, their scenes, and fair job scheduling.

One :class:`Backend` owns the protocol's ServerEndpoint. Its main loop only dispatches:
cheap checks (ownership, caps, engine on offer), then the work goes to a
:class:`~backend.scheduler.FairScheduler` — scene opening (image decoding, depth, lifting) on
``scheduler.open_slots`` slots, jobs (transitions, dynamics) on ``scheduler.job_slots`` — taken
round-robin across clients. So no request of one client holds the threads that serve others.

A job validates its request, then pulls events from the engine's generator and streams them:
Progress as is, frames as JPEG under the client's credit (a job waiting longer than
``credit_timeout_s`` for credit fails with ``credit_timeout`` and frees its slot), each frame
also streamed into the clip's MP4, added points as PointsDelta chunks. Every job ends with
JobDone or JobFailed. Cancel, or the client disappearing, stops a job at its next event.

Scenes belong to the client identity that created them (its CURVE key, or its loopback
token): another client cannot resume, overwrite or cancel them.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from backend.config import BackendConfig, check_config
from backend.engines import create_engine
from backend.engines.base import (
    DynamicsRequest,
    Engine,
    EngineError,
    FrameOut,
    OpenRequest,
    PointsOut,
    Progress,
    Scene,
    TransitionRequest,
    WorkerLost,
)
from backend.geometry.cloud import PointCloud
from backend.geometry.store import PointStore
from backend.region_reply import check_view_marks, region_reply
from backend.scheduler import FairScheduler, JobKind, Ticket
from backend.session import SessionError, SessionExists, SessionStore, check_scene_id
from protocol import codec
from protocol.camera import check_pose
from protocol.errors import BadArray, BadValue, Busy, ErrorCode, JobFailCode, ProtocolError
from protocol.messages import (
    Cancel,
    Dynamics,
    Frame,
    JobAccepted,
    JobDone,
    JobFailed,
    OpenScene,
    PointsDelta,
    SceneOpened,
    SelectRegion,
    Status,
    Transition,
    Undo,
    Undone,
)
from protocol.messages import Progress as ProgressMsg
from protocol.transport import Incoming, PeerGone, ServerEndpoint, ServerKeys

log = logging.getLogger(__name__)

__all__ = ["Backend", "BackendConfig"]


@dataclass
class Job:
    job_id: str
    peer: bytes
    client: str
    """The client identity (owner)."""
    kind: JobKind
    scene: Scene
    msg: Transition | Dynamics
    blobs: list
    engine: str
    """Name of the engine to run it (created on the job's slot if not resident yet)."""
    num_frames: int
    cancel: threading.Event = field(default_factory=threading.Event)
    accepted_at: float = field(default_factory=time.perf_counter)


class _Stop(Exception):
    """A job stops early; ``code`` and the message go into its JobFailed."""

    def __init__(self, code: JobFailCode, message: str):
        super().__init__(message)
        self.code = code


class Backend:
    """Serves explorers over one ServerEndpoint until :meth:`stop`."""

    def __init__(self, config: BackendConfig | None = None):
        self.config = config = config or BackendConfig()
        check_config(config)
        self.limits = config.protocol_limits()
        self.sessions = SessionStore(config.sessions)
        for removed in self.sessions.recover():
            log.warning("session recovery removed %s", removed)
        self._engines: dict[str, Engine] = {}
        self._engine_lock = threading.Lock()
        keys = ServerKeys.from_folder(config.keys) if config.keys else None
        self.endpoint = ServerEndpoint(
            config.bind,
            engines=config.offered(),
            default_engine=config.engine,
            heartbeat_s=config.heartbeat_s,
            peer_timeout_s=config.peer_timeout_s,
            keys=keys,
            limits=self.limits,
            caps=config.endpoint_caps(),
        )
        self.address = self.endpoint.address
        self._scenes: dict[tuple[bytes, str], Scene] = {}
        self._open_ids: dict[str, tuple[bytes, str]] = {}
        """Scene id -> (peer, identity) for scenes open or opening anywhere."""
        self._jobs: dict[tuple[bytes, str], Job] = {}
        self._undo_stacks: dict[tuple[str, str], list[tuple[str, int, np.ndarray, int]]] = {}
        """(client, scene id) -> (job id, points before it, pose before it) per finished transition."""
        self._lock = threading.Lock()
        sched = config.scheduler
        slots = config.job_slots()
        self._cluster = None
        if config.cluster:  # engines run on Ray workers: one job slot per worker
            from backend.cluster import start_pool

            try:
                self._cluster = start_pool(config.cluster, config.cluster_options, config.device,
                                           config.engine, config.engine_options, slots,
                                           backend=self)
            except BaseException:
                self.endpoint.close()
                raise
            slots = self._cluster.size
        self._job_slots = FairScheduler(slots, sched.max_jobs_per_client, "dj-job", "jobs")
        self._open_slots = FairScheduler(sched.open_slots, sched.max_scenes_per_client,
                                         "dj-open", "scene openings")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle --

    def start(self) -> Backend:
        """Serve on a background thread; returns at once."""
        self._thread = threading.Thread(target=self.serve_forever, name="dj-backend", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        log.info("serving on %s (engines: %s)", self.address, ", ".join(self.config.offered()))
        while not self._stop.is_set():
            ev = self.endpoint.poll(timeout=0.1)
            if ev is None:
                continue
            try:
                if isinstance(ev, PeerGone):
                    self._on_peer_gone(ev.peer, ev.reason)
                else:
                    self._dispatch(ev)
            except Exception:  # one bad request must not stop the server
                peer = ev.peer.hex() if ev.peer else "?"
                log.exception("failed to handle %s from %s", type(getattr(ev, "msg", ev)).__name__, peer)

    def threads_alive(self) -> dict[str, bool]:
        """Whether each of the server's threads still runs (for health checks and tests)."""
        return {
            "dispatch": self._thread is not None and self._thread.is_alive(),
            "io": self.endpoint.alive(),
            "jobs": self._job_slots.alive(),
            "opens": self._open_slots.alive(),
        }

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            for job in self._jobs.values():
                job.cancel.set()
        if self._thread is not None:
            self._thread.join()
        self._job_slots.shutdown()
        self._open_slots.shutdown()
        if self._cluster is not None:
            self._cluster.close()
        self.endpoint.close()

    def __enter__(self) -> Backend:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- dispatch --

    def engine(self, name: str | None) -> Engine:
        """The resident engine called ``name`` (the default when None), created once."""
        name = name or self.config.engine
        if name not in self.config.offered():
            raise EngineError(f"engine {name!r} is not offered here")
        with self._engine_lock:
            if name not in self._engines:
                options = self.config.engine_options.get(name, {})
                self._engines[name] = (self._cluster.engine(name) if self._cluster else
                                       create_engine(name, device=self.config.device, **options))
            return self._engines[name]

    def _dispatch(self, ev: Incoming) -> None:
        msg, peer = ev.msg, ev.peer
        client = self.endpoint.identity(peer)
        if client is None:
            return  # left while its message waited
        if isinstance(msg, OpenScene):
            self._submit_open(peer, client, msg, ev.blobs)
        elif isinstance(msg, (Transition, Dynamics)):
            self._submit_job(peer, client, msg, ev.blobs)
        elif isinstance(msg, Cancel):
            self._cancel(peer, client, msg.job_id)
        elif isinstance(msg, Undo):
            self._undo(peer, client, msg)
        elif isinstance(msg, SelectRegion):
            self._submit_region(peer, client, msg, ev.blobs)
        elif isinstance(msg, Status):
            from backend.cluster.status import status_reply  # Ray only with --cluster

            self.endpoint.send(peer, status_reply(
                self, msg, asker=None if self.config.status_shows == "all" else client))
        else:
            self._error(peer, "bad_value", f"a backend does not accept {type(msg).__name__}")

    def _error(self, peer: bytes, code: ErrorCode, message: str, request_id: str | None = None) -> None:
        self.endpoint.error(peer, code, message, request_id)

    def _offered(self, name: str | None) -> str | None:
        """``name`` if on offer (None = the default); None when not."""
        name = name or self.config.engine
        return name if name in self.config.offered() else None

    def _on_peer_gone(self, peer: bytes, reason: str) -> None:
        log.info("explorer %s gone (%s): cancelling its jobs", peer.hex(), reason)
        with self._lock:
            jobs = [j for j in self._jobs.values() if j.peer == peer]
            for key in [k for k in self._scenes if k[0] == peer]:
                del self._scenes[key]
            for scene_id in [s for s, (p, _) in self._open_ids.items() if p == peer]:
                del self._open_ids[scene_id]
        for job in jobs:
            job.cancel.set()
            self._job_slots.remove(job.client, _key(peer, job.job_id))

    def _cancel(self, peer: bytes, client: str, job_id: str) -> None:
        with self._lock:
            job = self._jobs.get((peer, job_id))
        if job is None:
            self._error(peer, "unknown_job", f"you have no job {job_id!r}", job_id)
            return
        job.cancel.set()
        self._job_slots.remove(client, _key(peer, job_id))  # queued: JobFailed at once

    # -- scenes --

    def _submit_open(self, peer: bytes, client: str, msg: OpenScene, blobs) -> None:
        engine = self._offered(msg.engine)
        if engine is None:
            self._error(peer, "unknown_engine", f"engine {msg.engine!r} is not offered; this "
                        f"backend offers {self.config.offered()}", msg.request_id)
            return
        try:
            check_scene_id(msg.scene_id)
        except SessionError as exc:
            self._error(peer, exc.code, str(exc), msg.request_id)
            return
        cap = self.config.scheduler.max_scenes_per_client
        with self._lock:
            holder = self._open_ids.get(msg.scene_id)
            mine = sum(1 for _, c in self._open_ids.values() if c == client)
            if holder is not None and self._may_take_over(holder, client, msg):
                self._scenes.pop((holder[0], msg.scene_id), None)
                holder = None
                mine -= 1
            if holder is None and mine < cap:
                self._open_ids[msg.scene_id] = (peer, client)
        if holder is not None:
            if holder[1] != client:
                self._error(peer, "forbidden", f"scene {msg.scene_id!r} belongs to another client",
                            msg.request_id)
            elif not msg.resume and self.sessions.exists(msg.scene_id):
                self._error(peer, "scene_exists", f"a saved session {msg.scene_id!r} exists: "
                            "resume it or pick another id", msg.request_id)
            else:
                self._error(peer, "busy", f"scene {msg.scene_id!r} is already open", msg.request_id)
            return
        if mine >= cap:
            self._error(peer, "busy", f"you have {mine} scenes open; the limit per client is "
                        f"{cap} (scheduler.max_scenes_per_client)", msg.request_id)
            return
        ticket = Ticket(client, _key(peer, msg.request_id),
                        partial(self._open_scene, peer, client, msg, blobs, engine),
                        on_dropped=partial(self._release_scene, msg.scene_id, peer))
        try:
            self._open_slots.submit(ticket)
        except Busy as exc:
            self._release_scene(msg.scene_id, peer)
            self._error(peer, "busy", str(exc), msg.request_id)

    def _may_take_over(self, holder: tuple[bytes, str], client: str, msg: OpenScene) -> bool:
        """Whether ``client`` may resume its own scene that is open already (again, or from a
        new connection before the old one timed out): only when it is open and idle.
        Call with the lock held."""
        peer, owner = holder
        return (msg.resume and owner == client and (peer, msg.scene_id) in self._scenes
                and not any(j.scene.scene_id == msg.scene_id and j.client == client
                            for j in self._jobs.values()))

    def _release_scene(self, scene_id: str, peer: bytes) -> None:
        with self._lock:
            if self._open_ids.get(scene_id, (None,))[0] == peer:
                del self._open_ids[scene_id]

    def _open_scene(self, peer: bytes, client: str, msg: OpenScene, blobs, engine_name: str) -> None:
        """Open-slot body: decode, lift (or resume), save, then answer."""
        ok = False
        try:
            scene, cloud, resumed = self._load_or_create(client, msg, blobs, engine_name, peer)
            ok = True
        except (ProtocolError, SessionError) as exc:
            self._error(peer, exc.code, str(exc), msg.request_id)
            return
        except EngineError as exc:
            self._error(peer, "bad_value", str(exc), msg.request_id)
            return
        except Exception as exc:
            log.exception("opening scene %s for %s failed", msg.scene_id, peer.hex())
            self._error(peer, "internal", f"opening the scene failed: {type(exc).__name__}: {exc}",
                        msg.request_id)
            return
        finally:
            if not ok:
                self._release_scene(msg.scene_id, peer)
        with self._lock:
            if not self.endpoint.is_connected(peer):
                self._open_ids.pop(msg.scene_id, None)
                return
            self._scenes[(peer, scene.scene_id)] = scene
        w, h = scene.size
        self.endpoint.send(peer, SceneOpened(
            request_id=msg.request_id, scene_id=scene.scene_id, engine=scene.engine, width=w,
            height=h, K=codec.k_list(scene.K), pose=codec.pose_list(scene.pose),
            median_depth=scene.median_depth, num_points=len(cloud), resumed=resumed,
            depth_source=scene.depth_source, depth_note=scene.depth_note,
            points_budget=scene.points_budget))
        self._send_points(peer, scene.scene_id, cloud, total=len(scene.cloud), job_id=None)

    def _load_or_create(self, client: str, msg: OpenScene, blobs, engine_name: str,
                        peer: bytes = b"") -> tuple[Scene, PointCloud, bool]:
        if msg.resume:
            self.sessions.check_owner(msg.scene_id, client)
            engine = self.engine(engine_name)
            return (*engine.resume_scene(msg.scene_id, self.sessions), True)
        if msg.image is None:
            raise BadValue("OpenScene needs an image unless resume is set")
        if self.sessions.exists(msg.scene_id):
            raise SessionExists(f"a saved session {msg.scene_id!r} exists: resume it or pick "
                                "another id")
        image = codec.decode_image(msg.image, blobs, self.limits)
        depth = None
        if msg.depth is not None:
            depth = np.asarray(codec.read_array(msg.depth, blobs), dtype=np.float32)
            if depth.shape != image.shape[:2]:
                raise BadArray(f"depth is {depth.shape}, the image is {image.shape[:2]}")
        K = check_intrinsics(codec.k_array(msg.K), image.shape) if msg.K is not None else None
        engine = self.engine(engine_name)
        def progress(p) -> None:  # e.g. the depth model's first download, under the request id
            self.endpoint.send(peer, ProgressMsg(job_id=msg.request_id, stage=p.stage, step=p.step,
                                                 total=p.total, message=p.message))

        request = OpenRequest(msg.scene_id, image, K, depth, msg.text, progress=progress)
        scene, cloud = engine.open_scene(request)
        self.sessions.create(scene.scene_id, scene.image, scene.K, scene.text, engine.name,
                             scene.median_depth, store=scene.cloud, owner=client,
                             depth=(scene.depth_source, scene.depth_note))
        return scene, cloud, False

    def _send_points(self, peer: bytes, scene_id: str, cloud: PointCloud, total: int,
                     job_id: str | None) -> None:
        parts = list(PointStore.chunks(cloud, self.config.chunk_points))
        sent = total - len(cloud)  # points the explorer already has before this delta
        for chunk, part in enumerate(parts):
            sent += len(part)
            refs = [codec.array_blob(a, i) for i, a in enumerate((part.xyz, part.rgb, part.radius))]
            self.endpoint.send(peer, PointsDelta(
                scene_id=scene_id, chunk=chunk, last=chunk == len(parts) - 1, xyz=refs[0][0],
                rgb=refs[1][0], radius=refs[2][0], total_points=sent, job_id=job_id),
                [r[1] for r in refs])

    # -- jobs --

    def _submit_job(self, peer: bytes, client: str, msg: Transition | Dynamics, blobs) -> None:
        kind = JobKind.TRANSITION if isinstance(msg, Transition) else JobKind.DYNAMICS
        with self._lock:
            scene = self._scenes.get((peer, msg.scene_id))
            duplicate = (peer, msg.job_id) in self._jobs
        if scene is None:
            self._error(peer, "unknown_scene", f"no open scene {msg.scene_id!r}: send OpenScene first",
                        msg.job_id)
            return
        if duplicate:
            self._error(peer, "bad_value", f"job id {msg.job_id!r} is already in use", msg.job_id)
            return
        engine_name = self._offered(msg.engine or scene.engine)
        if engine_name is None:
            self._error(peer, "unknown_engine", f"engine {msg.engine!r} is not offered; this "
                        f"backend offers {self.config.offered()}", msg.job_id)
            return
        n = msg.poses.shape[0] if kind is JobKind.TRANSITION else msg.num_frames
        cap = self.config.limits.max_frames
        if n > cap:
            self._fail(peer, msg.job_id, "bad_request", f"{n} frames asked, at most {cap} per clip "
                       "(limits.max_frames)")
            return
        job = Job(msg.job_id, peer, client, kind, scene, msg, blobs, engine_name, n)
        with self._lock:
            self._jobs[(peer, job.job_id)] = job
        ticket = Ticket(client, _key(peer, job.job_id), partial(self._run_job, job),
                        on_dropped=partial(self._dropped, job))
        try:
            ahead = self._job_slots.submit(ticket)
        except Busy as exc:
            with self._lock:
                self._jobs.pop((peer, job.job_id), None)
            self._fail(peer, job.job_id, "busy", str(exc) + " (scheduler.max_jobs_per_client)")
            return
        self.endpoint.send(peer, JobAccepted(job_id=job.job_id, kind=kind.value, num_frames=n,
                                             queue_position=ahead))

    def _fail(self, peer: bytes, job_id: str, code: JobFailCode, message: str) -> None:
        self.endpoint.send(peer, JobFailed(job_id=job_id, code=code, message=message))

    def _dropped(self, job: Job) -> None:
        """A queued job removed before it started (Cancel, disconnect, shutdown)."""
        with self._lock:
            self._jobs.pop((job.peer, job.job_id), None)
        if self.endpoint.is_connected(job.peer):
            self._fail(job.peer, job.job_id, "cancelled", "job stopped before it started: cancelled")

    def _request(self, job: Job) -> TransitionRequest | DynamicsRequest:
        """The engine request, validated (this runs on the job's slot, not the dispatcher)."""
        msg, scene = job.msg, job.scene
        if job.kind is JobKind.TRANSITION:
            poses = np.asarray(codec.read_array(msg.poses, job.blobs), dtype=np.float64)
            for i, p in enumerate(poses):
                check_pose(p, f"pose {i}")
            return TransitionRequest(poses, msg.fps, msg.prompt, msg.seed, msg.preset)
        pose = check_pose(codec.pose_array(msg.pose))
        frozen = check_view_marks(scene, msg.arrows, msg.frozen, job.blobs)
        return DynamicsRequest(pose, msg.num_frames, msg.fps, tuple(msg.arrows), frozen,
                               msg.prompt, msg.seed)

    def _run_job(self, job: Job) -> None:
        """Job-slot body: validate, stream, save; always ends with JobDone or JobFailed."""
        before = (job.job_id, len(job.scene.cloud), job.scene.pose.copy(), job.scene.cloud.merges)
        try:
            if job.cancel.is_set():
                raise _Stop(*self._why_stopped(job))
            try:
                request = self._request(job)
            except (ProtocolError, ValueError) as exc:  # check_pose raises ValueError on bad poses
                raise _Stop("bad_request", str(exc)) from None
            outcome = self._stream(job, request)
            if job.kind is JobKind.TRANSITION:
                self._undo_stack(job.client, job.scene.scene_id).append(before)
        except _Stop as stop:
            self.endpoint.discard_frames(job.peer, job.job_id)
            outcome = JobFailed(job_id=job.job_id, code=stop.code, message=str(stop))
        except WorkerLost as exc:
            outcome = JobFailed(job_id=job.job_id, code="worker_lost", message=str(exc))
        except EngineError as exc:
            outcome = JobFailed(job_id=job.job_id, code="engine_error", message=str(exc))
        except Exception as exc:
            log.exception("job %s of %s failed", job.job_id, job.peer.hex())
            outcome = JobFailed(job_id=job.job_id, code="internal", message=f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._jobs.pop((job.peer, job.job_id), None)
        if self.endpoint.is_connected(job.peer):
            self.endpoint.send(job.peer, outcome)
        else:
            log.info("job %s ended after its explorer left", job.job_id)

    def _why_stopped(self, job: Job) -> tuple[JobFailCode, str]:
        if not self.endpoint.is_connected(job.peer):
            return "peer_gone", "job stopped: the explorer disconnected"
        return "cancelled", "job stopped: cancelled"

    def _stream(self, job: Job, request) -> JobDone:
        """Run the engine and stream its events; raises _Stop when the job ends early."""
        t0 = time.perf_counter()
        is_transition = job.kind is JobKind.TRANSITION
        engine = self.engine(job.engine)
        events = (engine.transition if is_transition else engine.dynamics)(job.scene, request)
        writer = self.sessions.begin_clip(job.scene.scene_id, request.fps) if self.config.save_clips else None
        poses, first_frame_s, count = [], None, 0
        K = codec.k_list(job.scene.K)
        try:
            for ev in events:
                self._wait_credit(job)
                if isinstance(ev, FrameOut):
                    ref, data = codec.encode_image(ev.image, job.msg.frame_codec,
                                                   quality=self.config.jpeg_quality)
                    self.endpoint.send(job.peer, Frame(
                        job_id=job.job_id, index=ev.index, num_frames=job.num_frames,
                        pose=codec.pose_list(ev.pose), K=K, image=ref, fps=request.fps,
                        loop=not is_transition), [data])
                    first_frame_s = first_frame_s or time.perf_counter() - t0
                    if writer is not None:
                        writer.add(ev.image)
                    poses.append(ev.pose)
                    count += 1
                elif isinstance(ev, Progress):
                    self.endpoint.send(job.peer, ProgressMsg(
                        job_id=job.job_id, stage=ev.stage, step=ev.step, total=ev.total, message=ev.message))
                elif isinstance(ev, PointsOut):
                    self._send_points(job.peer, job.scene.scene_id, ev.cloud,
                                      total=len(job.scene.cloud), job_id=job.job_id)
            timings = {"first_frame": first_frame_s or 0.0, "generate": time.perf_counter() - t0}
            clip = None
            if writer is not None and count:
                t1 = time.perf_counter()
                clip = self.sessions.commit_clip(
                    job.scene.scene_id, job.kind.value, writer, np.stack(poses), job.scene.K,
                    request.fps, job.scene.pose, store=job.scene.cloud if is_transition else None,
                    timings=timings)
                timings["save"] = time.perf_counter() - t1
        finally:
            events.close()
            if writer is not None:
                writer.abort()  # no-op once committed
        timings["total"] = time.perf_counter() - t0
        return JobDone(job_id=job.job_id, num_frames=count, timings=timings,
                       clip=str(clip) if clip else None)

    def _wait_credit(self, job: Job) -> None:
        """Wait until the client can take another frame; raises _Stop if cancelled, gone, or
        no credit came for ``credit_timeout_s``."""
        timeout = self.config.scheduler.credit_timeout_s
        start = time.monotonic()
        while True:
            if job.cancel.is_set():
                raise _Stop(*self._why_stopped(job))
            if self.endpoint.wait_writable(job.peer, self.config.frames_ahead, timeout=0.05):
                return
            if not self.endpoint.is_connected(job.peer):
                raise _Stop("peer_gone", "job stopped: the explorer disconnected")
            if time.monotonic() - start > timeout:
                raise _Stop("credit_timeout", f"no frame credit for {timeout:g} s "
                            "(scheduler.credit_timeout_s): the job was cancelled")

    # -- region outlines --

    def _submit_region(self, peer: bytes, client: str, msg: SelectRegion, blobs) -> None:
        """Outline the region the arrows would animate, on an open slot (it renders the view)."""
        with self._lock:
            scene = self._scenes.get((peer, msg.scene_id))
        if scene is None:
            self._error(peer, "unknown_scene", f"no open scene {msg.scene_id!r}", msg.request_id)
            return
        ticket = Ticket(client, _key(peer, msg.request_id),
                        partial(self._select_region, peer, scene, msg, blobs))
        try:
            self._open_slots.submit(ticket)
        except Busy as exc:
            self._error(peer, "busy", str(exc), msg.request_id)

    def _select_region(self, peer: bytes, scene: Scene, msg: SelectRegion, blobs) -> None:
        try:
            reply, reply_blobs = region_reply(self.engine(scene.engine), scene, msg, blobs)
        except (ProtocolError, ValueError) as exc:  # check_pose raises ValueError on bad poses
            self._error(peer, getattr(exc, "code", "bad_value"), str(exc), msg.request_id)
            return
        except EngineError as exc:
            self._error(peer, "bad_value", str(exc), msg.request_id)
            return
        except Exception as exc:
            log.exception("outlining a region of %s failed", msg.scene_id)
            self._error(peer, "internal", f"outlining the region failed: {type(exc).__name__}: {exc}",
                        msg.request_id)
            return
        self.endpoint.send(peer, reply, reply_blobs)

    # -- undo --

    def _undo_stack(self, client: str, scene_id: str) -> list[tuple[str, int, np.ndarray, int]]:
        with self._lock:
            return self._undo_stacks.setdefault((client, scene_id), [])

    def _undo(self, peer: bytes, client: str, msg: Undo) -> None:
        """Take back the scene's last transition: its points, its pose, its clip entry."""
        with self._lock:
            scene = self._scenes.get((peer, msg.scene_id))
            running = any(j.scene is scene for j in self._jobs.values())
        if scene is None:
            self._error(peer, "unknown_scene", f"no open scene {msg.scene_id!r}", msg.request_id)
            return
        if running:  # its points are still being appended
            self._error(peer, "busy", "undo waits until the scene's jobs are done: cancel or "
                        "wait for them", msg.request_id)
            return
        stack = self._undo_stack(client, msg.scene_id)
        if stack and stack[-1][3] != scene.cloud.merges:
            stack.clear()  # truncating a cloud the budget has rewritten would cut the wrong points
            self._error(peer, "bad_value", "the point budget merged far points since that "
                        "transition, so it can no longer be undone", msg.request_id)
            return
        job_id = None
        if stack:
            job_id, count, pose, _ = stack.pop()
            scene.cloud.truncate(count)
            scene.pose = pose
            try:
                self.sessions.record_undo(scene.scene_id, job_id, scene.cloud, pose)
            except SessionError as exc:
                log.warning("undo of %s not saved: %s", job_id, exc)
        self.endpoint.send(peer, Undone(request_id=msg.request_id, scene_id=msg.scene_id,
                                        job_id=job_id, total_points=len(scene.cloud)))

    def status(self) -> dict:
        """Jobs per client now: ``{"slots": n, "jobs": [...]}``, each job a dict with
        ``client``, ``job_id``, ``kind``, ``scene_id``, ``engine``, ``running`` and
        ``age_s`` (seconds since it was accepted), oldest first."""
        now = time.perf_counter()
        with self._lock:
            jobs = sorted(self._jobs.values(), key=lambda j: j.accepted_at)
        running = self._job_slots.running_keys()
        return {"slots": self._job_slots.slots, "engines": sorted(self._engines),
                "jobs": [{"client": j.client, "job_id": j.job_id, "kind": j.kind.value,
                          "scene_id": j.scene.scene_id, "engine": j.engine,
                          "running": _key(j.peer, j.job_id) in running,
                          "age_s": now - j.accepted_at} for j in jobs]}


def _key(peer: bytes, job_id: str) -> str:
    return f"{peer.hex()}:{job_id}"


def check_intrinsics(K: np.ndarray, shape: tuple) -> np.ndarray:
    """K as a pinhole matrix for an image of ``shape``; BadValue saying what is wrong."""
    h, w = shape[:2]
    if not (K[0, 0] > 0 and K[1, 1] > 0):
        raise BadValue(f"K focal lengths must be positive, got fx={K[0, 0]}, fy={K[1, 1]}")
    if not np.allclose(K[2], [0, 0, 1]) or K[1, 0] != 0:
        raise BadValue(f"K must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]], got {K.tolist()}")
    if not (-w <= K[0, 2] <= 2 * w and -h <= K[1, 2] <= 2 * h):
        raise BadValue(f"K principal point ({K[0, 2]}, {K[1, 2]}) is far outside the {w}x{h} image")
    return K

