"""The backend server: many explorers, their scenes, and a job queue per device.

One :class:`Backend` owns the protocol's ServerEndpoint. Its main loop dispatches requests;
scenes are opened on a small pool, jobs (transitions, dynamics) on the device queue: one at a
time on a GPU, ``cpu_jobs`` at a time on the CPU. A job thread pulls events from the engine's
generator and streams them: Progress as is, frames as JPEG under the client's credit (the job
waits for credit rather than piling frames up), added points as PointsDelta chunks. Every job
ends with JobDone (with timings and the clip's path) or JobFailed (code and sentence). Cancel,
or the client disappearing, stops a job at its next event.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backend.engines import create_engine, engine_names
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
)
from backend.geometry.cloud import PointCloud
from backend.geometry.store import PointStore
from backend.session import SessionError, SessionStore
from protocol import codec
from protocol.camera import check_pose
from protocol.limits import ProtocolError
from protocol.messages import (
    Cancel,
    Dynamics,
    Error,
    Frame,
    JobAccepted,
    JobDone,
    JobFailed,
    OpenScene,
    PointsDelta,
    SceneOpened,
    Status,
    Transition,
    Undo,
    Undone,
)
from protocol.messages import Progress as ProgressMsg
from protocol.transport import Incoming, PeerGone, ServerEndpoint, ServerKeys

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendConfig:
    """Settings of ``dreamjourney serve`` (defaults in configs/backend.toml)."""

    bind: str = "tcp://127.0.0.1:5555"
    sessions: Path = Path("sessions")
    """Root of the session folders."""
    engine: str = "classic"
    """Default engine for requests that name none."""
    device: str = "cpu"
    cpu_jobs: int = 1
    """Jobs run at once on the CPU (a GPU always runs one at a time)."""
    heartbeat_s: float = 1.0
    peer_timeout_s: float = 10.0
    keys: Path | None = None
    jpeg_quality: int = 95
    chunk_points: int = 65536
    """Points per PointsDelta message."""
    frames_ahead: int = 2
    """Frames a job may queue beyond the client's credit before it waits."""
    save_clips: bool = True
    engine_options: dict = field(default_factory=dict)
    """Per-engine keyword options, e.g. {"classic": {"depth_model": None}}."""
    cluster: str | None = None
    """Ray address to run the engines on (``auto`` = a local instance); None = in-process."""
    cluster_options: dict = field(default_factory=dict)
    """backend.cluster.ClusterConfig keys (workers, frames_ahead, busy_deadline_s, ...)."""


@dataclass
class Job:
    job_id: str
    peer: bytes
    kind: str
    scene: Scene
    request: TransitionRequest | DynamicsRequest
    engine: Engine
    cancel: threading.Event = field(default_factory=threading.Event)
    accepted_at: float = field(default_factory=time.perf_counter)


class Backend:
    """Serves explorers over one ServerEndpoint until :meth:`stop`."""

    def __init__(self, config: BackendConfig = BackendConfig()):
        self.config = config
        self.sessions = SessionStore(config.sessions)
        self._engines: dict[str, Engine] = {}
        self._engine_lock = threading.Lock()
        keys = ServerKeys.from_folder(config.keys) if config.keys else None
        self.endpoint = ServerEndpoint(
            config.bind,
            engines=engine_names(),
            default_engine=config.engine,
            heartbeat_s=config.heartbeat_s,
            peer_timeout_s=config.peer_timeout_s,
            keys=keys,
        )
        self.address = self.endpoint.address
        self._scenes: dict[tuple[bytes, str], Scene] = {}
        self._jobs: dict[str, Job] = {}
        self._undo_stacks: dict[tuple[bytes, str], list] = {}
        self._lock = threading.Lock()
        workers = 1 if config.device.startswith("cuda") else max(1, config.cpu_jobs)
        self._cluster = None
        if config.cluster:  # engines run on Ray workers: one job slot per worker
            from backend.cluster import start_pool

            try:
                self._cluster = start_pool(config.cluster, config.cluster_options, config.device,
                                           config.engine, config.engine_options, config.cpu_jobs,
                                           backend=self)
            except Exception:
                self.endpoint.close()
                raise
            workers = self._cluster.size
        self._job_pool = ThreadPoolExecutor(workers, thread_name_prefix="dj-job")
        self._open_pool = ThreadPoolExecutor(1, thread_name_prefix="dj-open")
        self._queued = itertools.count()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle --

    def start(self) -> Backend:
        """Serve on a background thread; returns at once."""
        self._thread = threading.Thread(target=self.serve_forever, name="dj-backend", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        log.info("serving on %s (engines: %s)", self.address, ", ".join(engine_names()))
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
                log.exception("failed to handle %s", type(getattr(ev, "msg", ev)).__name__)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            for job in self._jobs.values():
                job.cancel.set()
        if self._thread is not None:
            self._thread.join()
        self._job_pool.shutdown(wait=True, cancel_futures=True)
        self._open_pool.shutdown(wait=True, cancel_futures=True)
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
        with self._engine_lock:
            if name not in self._engines:
                options = self.config.engine_options.get(name, {})
                self._engines[name] = (self._cluster.engine(name) if self._cluster else
                                       create_engine(name, device=self.config.device, **options))
            return self._engines[name]

    def _dispatch(self, ev: Incoming) -> None:
        msg, peer = ev.msg, ev.peer
        if isinstance(msg, OpenScene):
            self._open_pool.submit(self._open_scene, peer, msg, ev.blobs)
        elif isinstance(msg, (Transition, Dynamics)):
            self._submit(peer, msg, ev.blobs)
        elif isinstance(msg, Cancel):
            with self._lock:
                job = self._jobs.get(msg.job_id)
            if job is None or job.peer != peer:
                self._error(peer, "unknown_job", f"no running job {msg.job_id!r}", msg.job_id)
            else:
                job.cancel.set()
        elif isinstance(msg, Undo):
            self._undo(peer, msg)
        elif isinstance(msg, Status):
            from backend.cluster.status import status_reply

            self.endpoint.send(peer, status_reply(self, msg))
        else:
            self._error(peer, "bad_value", f"a backend does not accept {type(msg).__name__}")

    def _error(self, peer: bytes, code: str, message: str, request_id: str | None = None) -> None:
        self.endpoint.send(peer, Error(code=code, message=message, request_id=request_id))

    def _on_peer_gone(self, peer: bytes, reason: str) -> None:
        log.info("explorer %s gone (%s): cancelling its jobs", peer.hex(), reason)
        with self._lock:
            for job in self._jobs.values():
                if job.peer == peer:
                    job.cancel.set()
            for key in [k for k in self._scenes if k[0] == peer]:
                del self._scenes[key]

    # -- scenes --

    def _open_scene(self, peer: bytes, msg: OpenScene, blobs: list[memoryview]) -> None:
        try:
            scene, cloud, resumed = self._load_or_create(msg, blobs)
        except (ProtocolError, SessionError, EngineError, ValueError) as exc:
            code = getattr(exc, "code", "bad_value")
            self._error(peer, code, str(exc), msg.request_id)
            return
        except Exception as exc:
            log.exception("opening scene %s failed", msg.scene_id)
            self._error(peer, "internal", f"opening the scene failed: {exc}", msg.request_id)
            return
        with self._lock:
            self._scenes[(peer, scene.scene_id)] = scene
        w, h = scene.size
        self.endpoint.send(peer, SceneOpened(
            request_id=msg.request_id, scene_id=scene.scene_id, engine=scene.engine, width=w,
            height=h, K=codec.k_list(scene.K), pose=codec.pose_list(scene.pose),
            median_depth=scene.median_depth, num_points=len(cloud), resumed=resumed))
        self._send_points(peer, scene.scene_id, cloud, total=len(scene.cloud), job_id=None)

    def _load_or_create(self, msg: OpenScene, blobs) -> tuple[Scene, PointCloud, bool]:
        engine = self._engine_or_error(msg.engine)
        if msg.resume:
            return (*engine.resume_scene(msg.scene_id, self.sessions), True)
        if msg.image is None:
            raise SessionError("OpenScene needs an image unless resume is set")
        image = codec.decode_image(msg.image, blobs)
        depth = None
        if msg.depth is not None:
            depth = np.asarray(codec.read_array(msg.depth, blobs), dtype=np.float32)
            if depth.shape != image.shape[:2]:
                raise ValueError(f"depth is {depth.shape}, the image is {image.shape[:2]}")
        K = codec.k_array(msg.K) if msg.K is not None else None
        request = OpenRequest(msg.scene_id, image, K, depth, msg.text)
        scene, cloud = engine.open_scene(request)
        self.sessions.create(scene.scene_id, scene.image, scene.K, scene.text, engine.name,
                             scene.median_depth)
        self.sessions.save_cloud(scene.scene_id, scene.cloud)
        return scene, cloud, False

    def _engine_or_error(self, name: str | None) -> Engine:
        if name is not None and name not in engine_names():
            raise EngineError(f"unknown engine {name!r}; this backend offers {engine_names()}")
        return self.engine(name)

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

    def _submit(self, peer: bytes, msg: Transition | Dynamics, blobs) -> None:
        with self._lock:
            scene = self._scenes.get((peer, msg.scene_id))
            duplicate = msg.job_id in self._jobs
        if scene is None:
            self._error(peer, "unknown_scene", f"no open scene {msg.scene_id!r}: send OpenScene first",
                        msg.job_id)
            return
        if duplicate:
            self._error(peer, "bad_value", f"job id {msg.job_id!r} is already in use", msg.job_id)
            return
        try:
            engine = self._engine_or_error(msg.engine or scene.engine)
            request, kind = self._job_request(msg, blobs, scene)
        except (ProtocolError, EngineError, ValueError) as exc:
            self.endpoint.send(peer, JobFailed(job_id=msg.job_id, code="bad_request", message=str(exc)))
            return
        job = Job(msg.job_id, peer, kind, scene, request, engine)
        with self._lock:
            self._jobs[job.job_id] = job
            ahead = sum(1 for j in self._jobs.values() if j is not job)
        n = len(request.poses) if kind == "transition" else request.num_frames
        self.endpoint.send(peer, JobAccepted(job_id=job.job_id, kind=kind, num_frames=n,
                                             queue_position=ahead))
        self._job_pool.submit(self._run_job, job)

    @staticmethod
    def _job_request(msg, blobs, scene: Scene):
        if isinstance(msg, Transition):
            poses = np.asarray(codec.read_array(msg.poses, blobs), dtype=np.float64)
            for i, p in enumerate(poses):
                check_pose(p, f"pose {i}")
            return TransitionRequest(poses, msg.fps, msg.prompt, msg.seed, msg.preset), "transition"
        pose = check_pose(codec.pose_array(msg.pose))
        frozen = None
        if msg.frozen is not None:
            frozen = np.asarray(codec.read_array(msg.frozen, blobs)) != 0
            if frozen.shape != scene.image.shape[:2]:
                raise ValueError(f"frozen mask is {frozen.shape}, views are {scene.image.shape[:2]}")
        if msg.fps <= 0:
            raise ValueError(f"fps must be positive, got {msg.fps}")
        request = DynamicsRequest(pose, msg.num_frames, msg.fps, tuple(msg.arrows), frozen,
                                  msg.prompt, msg.seed)
        return request, "dynamics"

    def _run_job(self, job: Job) -> None:
        before = (job.job_id, len(job.scene.cloud), job.scene.pose.copy())
        try:
            outcome = self._stream(job)
            if job.kind == "transition" and isinstance(outcome, JobDone):
                self._undo_stack(job.peer, job.scene.scene_id).append(before)
        except EngineError as exc:
            code = getattr(exc, "code", "engine_error")  # the cluster's WorkerLost: worker_lost
            outcome = JobFailed(job_id=job.job_id, code=code, message=str(exc))
        except Exception as exc:
            log.exception("job %s failed", job.job_id)
            outcome = JobFailed(job_id=job.job_id, code="internal", message=f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._jobs.pop(job.job_id, None)
        if self.endpoint.is_connected(job.peer):
            self.endpoint.send(job.peer, outcome)

    def _cancelled(self, job: Job) -> JobFailed:
        self.endpoint.discard_frames(job.peer, job.job_id)
        why = "the explorer disconnected" if not self.endpoint.is_connected(job.peer) else "cancelled"
        return JobFailed(job_id=job.job_id, code="cancelled", message=f"job stopped: {why}")

    def _stream(self, job: Job) -> JobDone | JobFailed:
        """Run the engine and stream its events; the job's outcome message."""
        t0 = time.perf_counter()
        if job.cancel.is_set():
            return self._cancelled(job)
        run = (job.engine.transition if job.kind == "transition" else job.engine.dynamics)
        events = run(job.scene, job.request)
        frames, poses = [], []
        first_frame_s = None
        n = len(job.request.poses) if job.kind == "transition" else job.request.num_frames
        w, h = job.scene.size
        K = codec.k_list(job.scene.K)
        try:
            for ev in events:
                if job.cancel.is_set() or not self._wait_credit(job):
                    return self._cancelled(job)
                if isinstance(ev, FrameOut):
                    ref, data = codec.encode_image(ev.image, "jpeg", quality=self.config.jpeg_quality)
                    self.endpoint.send(job.peer, Frame(
                        job_id=job.job_id, index=ev.index, num_frames=n, pose=codec.pose_list(ev.pose),
                        K=K, image=ref, fps=job.request.fps, loop=job.kind == "dynamics"), [data])
                    first_frame_s = first_frame_s or time.perf_counter() - t0
                    frames.append(ev.image)
                    poses.append(ev.pose)
                elif isinstance(ev, Progress):
                    self.endpoint.send(job.peer, ProgressMsg(
                        job_id=job.job_id, stage=ev.stage, step=ev.step, total=ev.total, message=ev.message))
                elif isinstance(ev, PointsOut):
                    self._send_points(job.peer, job.scene.scene_id, ev.cloud,
                                      total=len(job.scene.cloud), job_id=job.job_id)
        finally:
            events.close()
        generated_s = time.perf_counter() - t0
        timings = {"first_frame": first_frame_s or 0.0, "generate": generated_s}
        clip = None
        if self.config.save_clips and frames:
            t1 = time.perf_counter()
            clip = self.sessions.add_clip(
                job.scene.scene_id, job.kind, frames, np.stack(poses), job.scene.K, job.request.fps,
                job.scene.pose, store=job.scene.cloud if job.kind == "transition" else None,
                timings=timings)
            timings["save"] = time.perf_counter() - t1
        timings["total"] = time.perf_counter() - t0
        return JobDone(job_id=job.job_id, num_frames=len(frames), timings=timings,
                       clip=str(clip) if clip else None)

    def _wait_credit(self, job: Job) -> bool:
        """Wait until the client can take another frame; False if cancelled or gone."""
        while not job.cancel.is_set():
            if self.endpoint.wait_writable(job.peer, self.config.frames_ahead, timeout=0.05):
                return True
            if not self.endpoint.is_connected(job.peer):
                return False
        return False

    # -- undo --

    def _undo_stack(self, peer: bytes, scene_id: str) -> list[tuple[str, int, np.ndarray]]:
        """(job id, points before it, pose before it) of each finished transition."""
        with self._lock:
            return self._undo_stacks.setdefault((peer, scene_id), [])

    def _undo(self, peer: bytes, msg: Undo) -> None:
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
        stack = self._undo_stack(peer, msg.scene_id)
        job_id = None
        if stack:
            job_id, count, pose = stack.pop()
            scene.cloud.truncate(count)
            scene.pose = pose
            try:
                self.sessions.record_undo(scene.scene_id, job_id, scene.cloud, pose)
            except SessionError as exc:
                log.warning("undo of %s not saved: %s", job_id, exc)
        self.endpoint.send(peer, Undone(request_id=msg.request_id, scene_id=msg.scene_id,
                                        job_id=job_id, total_points=len(scene.cloud)))
