"""The backend server: many explorers, their scenes, and fair job scheduling.

One :class:`Backend` owns the protocol's ServerEndpoint and a claimed sessions root
(``backend.session``; recovered at start, anything that does not load quarantined). Its main
loop only dispatches: cheap checks (caps, quotas, engine on offer), then the work goes to a
:class:`~backend.scheduler.FairScheduler` — scene opening (image decoding, depth, lifting) on
``scheduler.open_slots`` slots, jobs (transitions, dynamics, undo) on ``scheduler.job_slots``
— taken round-robin across clients and handed over in time (``backend.jobs``). So no request
of one client holds the threads that serve others.

Scenes belong to the client identity that created them (its CURVE key, or its loopback
token), and scene ids are per identity (``backend.scenes``): whatever a client names, it
only ever reaches its own scenes, and one it does not have is ``unknown_scene`` whether or
not another client has one of that name. Open scenes beyond ``quotas.resident_scenes_*`` are
unloaded when idle and loaded again on demand; disk use is bounded by ``backend.quotas``.

(Over 400 lines: dispatch, scene opening and undo still share this class; issue 23 splits
the server and the endpoint.)
"""

from __future__ import annotations

import logging
import threading
import time
from functools import partial

import numpy as np

from backend import region_motion
from backend.config import BackendConfig, check_config
from backend.engines import create_engine
from backend.engines.base import Engine, EngineError, OpenRequest, Scene
from backend.geometry.cloud import PointCloud
from backend.geometry.store import PointStore
from backend.jobs import Job, JobRun
from backend.quotas import QuotaExceeded, Quotas, cloud_bytes
from backend.region_reply import region_reply
from backend.scenes import OpenEntry, ResidentLimit, SceneTable
from backend.scheduler import FairScheduler, JobKind, Ticket
from backend.session import SessionError, SessionExists, SessionStore, check_scene_id
from protocol import codec
from protocol.endpoint_process import EndpointProcess
from protocol.errors import BadArray, BadValue, Busy, ErrorCode, JobFailCode, ProtocolError
from protocol.messages import (
    Cancel,
    Dynamics,
    Error,
    JobAccepted,
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


class Backend:
    """Serves explorers over one ServerEndpoint until :meth:`stop`."""

    def __init__(self, config: BackendConfig | None = None):
        self.config = config = config or BackendConfig()
        check_config(config)
        self.limits = config.protocol_limits()
        self.sessions = SessionStore(config.sessions)
        report = self.sessions.recover()
        for removed in report.removed:
            log.info("session recovery removed %s", removed)
        if report.quarantined:
            log.warning("sessions: %d kept, %d quarantined (see %s)", len(report.sessions),
                        len(report.quarantined), self.sessions.root / ".quarantine")
        self.quotas = Quotas(config.quotas, self.sessions)
        self.scenes = SceneTable(config.quotas.resident_scenes_per_client,
                                 config.quotas.resident_scenes_total, self._unload)
        self._engines: dict[str, Engine] = {}
        self._engine_lock = threading.Lock()
        keys = ServerKeys.from_folder(config.keys) if config.keys else None
        endpoint = EndpointProcess if config.io_process else ServerEndpoint
        self.endpoint = endpoint(
            config.bind,
            engines=config.offered(),
            default_engine=config.engine,
            heartbeat_s=config.heartbeat_s,
            peer_timeout_s=config.peer_timeout_s,
            keys=keys,
            limits=self.limits,
            caps=config.endpoint_caps(),
            token_key=self.sessions.token_key,
            occupancy=self,
        )
        self.address = self.endpoint.address
        self._jobs: dict[tuple[bytes, str], Job] = {}
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
        self.scenes.drop_peer(peer)
        for job in jobs:
            job.cancel.set()
            self._job_slots.remove(job.client, _key(peer, job.job_id))

    # -- occupancy (asked by the endpoint's I/O thread) --

    def owns(self, identity: str) -> bool:
        """Whether ``identity`` has open scenes or saved sessions."""
        return identity in self.scenes.owners() or self.sessions.usage(identity)[0] > 0

    def working(self, peer: bytes) -> bool:
        """Whether connection ``peer`` has a job, or a scene opening."""
        with self._lock:
            if any(j.peer == peer for j in self._jobs.values()):
                return True
        return self.scenes.opening(peer)

    def snapshot(self) -> tuple[set[str], set[bytes]]:
        """(identities that own scenes, connections with work), for an endpoint that runs in
        a process of its own."""
        with self._lock:
            working = {j.peer for j in self._jobs.values()}
        return self.scenes.owners() | self.sessions.owners(), working | self.scenes.opening_peers()

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
            if msg.resume:
                self.sessions.owned_by(client).folder(msg.scene_id)  # SessionMissing at once
            else:
                self.quotas.check_new_scene(client)
            entry = self._reserve(peer, client, msg, engine)
        except (SessionError, Busy) as exc:
            self._error(peer, exc.code, str(exc), msg.request_id)
            return
        ticket = Ticket(client, _key(peer, msg.request_id),
                        partial(self._open_scene, entry, msg, blobs),
                        on_dropped=partial(self.scenes.release, entry))
        try:
            self._open_slots.submit(ticket)
        except Busy as exc:
            self.scenes.release(entry)
            self._error(peer, "busy", str(exc), msg.request_id)

    def _reserve(self, peer: bytes, client: str, msg: OpenScene, engine: str) -> OpenEntry:
        """The client's place for scene ``msg.scene_id``; SessionError or Busy saying why not.
        The owner may resume a scene it has open and idle (e.g. from a new connection before
        the old one timed out): that takes it over."""
        cap = self.config.scheduler.max_scenes_per_client
        with self.scenes.lock:
            held = self.scenes.get(client, msg.scene_id)
            if held is not None and msg.resume and not held.opening and not self._has_jobs(held):
                self.scenes.release(held)
                held = None
            if not msg.resume and self.sessions.owned_by(client).exists(msg.scene_id):
                raise SessionExists(f"a saved session {msg.scene_id!r} exists: resume it or "
                                    "pick another id")
            if held is not None:
                raise Busy(f"scene {msg.scene_id!r} is already open", msg.request_id)
            mine = self.scenes.count(client)
            if mine >= cap:
                raise Busy(f"you have {mine} scenes open; the limit per client is {cap} "
                           "(scheduler.max_scenes_per_client)", msg.request_id)
            return self.scenes.reserve(peer, client, msg.scene_id, engine)

    def _has_jobs(self, entry: OpenEntry) -> bool:
        with self._lock:
            return entry.jobs > 0 or any(j.entry is entry for j in self._jobs.values())

    def _open_scene(self, entry: OpenEntry, msg: OpenScene, blobs) -> None:
        """Open-slot body: make room in memory, decode, lift (or resume), save, then answer."""
        peer = entry.peer
        try:
            self.scenes.make_room(entry.client)
            scene, cloud, resumed = self._load_or_create(entry, msg, blobs)
        except (ProtocolError, SessionError) as exc:
            return self._open_failed(entry, msg, exc.code, str(exc))
        except EngineError as exc:
            return self._open_failed(entry, msg, "bad_value", str(exc))
        except (OSError, ValueError) as exc:  # a saved session that does not load
            log.warning("scene %s of %s does not load: %s", msg.scene_id, peer.hex(), exc)
            return self._open_failed(entry, msg, "bad_value",
                                     f"the saved session {msg.scene_id!r} cannot be loaded")
        except Exception as exc:
            log.exception("opening scene %s for %s failed", msg.scene_id, peer.hex())
            return self._open_failed(entry, msg, "internal", "opening the scene failed: "
                                     f"{type(exc).__name__} (the backend's log has the details)")
        with self.scenes.lock:
            if not self.endpoint.is_connected(peer):
                self.scenes.release(entry)
                return
            entry.scene, entry.size, entry.opening = scene, scene.size, False
        w, h = scene.size
        self.endpoint.send(peer, SceneOpened(
            request_id=msg.request_id, scene_id=scene.scene_id, engine=scene.engine, width=w,
            height=h, K=codec.k_list(scene.K), pose=codec.pose_list(scene.pose),
            median_depth=scene.median_depth, num_points=len(cloud), resumed=resumed,
            depth_source=scene.depth_source, depth_note=scene.depth_note,
            points_budget=scene.points_budget,
            session=self.sessions.find(entry.client, scene.scene_id) or ""))
        self.send_points(peer, scene.scene_id, cloud, total=len(scene.cloud), job_id=None)
        index, motion = region_motion.moving(scene.cloud.cloud())
        if len(index):  # a resumed world goes on moving
            for reply, blobs in region_motion.motion_messages(scene, index, motion, None,
                                                              self.config.chunk_points):
                self.endpoint.send(peer, reply, blobs)

    def _open_failed(self, entry: OpenEntry, msg: OpenScene, code: ErrorCode, text: str) -> None:
        self.scenes.release(entry)
        self._error(entry.peer, code, text, msg.request_id)

    def _load_or_create(self, entry: OpenEntry, msg: OpenScene, blobs
                        ) -> tuple[Scene, PointCloud, bool]:
        client, owned = entry.client, self.sessions.owned_by(entry.client)
        if msg.resume:
            owned.folder(msg.scene_id)  # SessionMissing, before any engine work
            engine = self.engine(entry.engine)
            return (*engine.resume_scene(msg.scene_id, owned), True)
        if msg.image is None:
            raise BadValue("OpenScene needs an image unless resume is set")
        image = codec.decode_image(msg.image, blobs, self.limits)
        depth = None
        if msg.depth is not None:
            depth = np.asarray(codec.read_array(msg.depth, blobs), dtype=np.float32)
            if depth.shape != image.shape[:2]:
                raise BadArray(f"depth is {depth.shape}, the image is {image.shape[:2]}")
        K = check_intrinsics(codec.k_array(msg.K), image.shape) if msg.K is not None else None
        engine = self.engine(entry.engine)

        def progress(p) -> None:  # e.g. the depth model's first download, under the request id
            self.endpoint.send(entry.peer, ProgressMsg(job_id=msg.request_id, stage=p.stage,
                                                       step=p.step, total=p.total, message=p.message))

        request = OpenRequest(msg.scene_id, image, K, depth, msg.text, progress=progress)
        scene, cloud = engine.open_scene(request)
        try:
            self.quotas.check_new_scene(client, scene.image.nbytes + cloud_bytes(len(scene.cloud)))
        except QuotaExceeded as exc:
            raise SessionError(str(exc)) from None
        owned.create(scene.scene_id, scene.image, scene.K, scene.text, engine.name,
                     scene.median_depth, store=scene.cloud,
                     depth=(scene.depth_source, scene.depth_note))
        return scene, cloud, False

    def send_points(self, peer: bytes, scene_id: str, cloud: PointCloud, total: int,
                    job_id: str | None) -> None:
        """``cloud`` as PointsDelta chunks; ``total`` is the scene's count once they apply."""
        parts = list(PointStore.chunks(cloud, self.config.chunk_points))
        sent = total - len(cloud)  # points the explorer already has before this delta
        for chunk, part in enumerate(parts):
            sent += len(part)
            refs = [codec.array_blob(a, i) for i, a in enumerate((part.xyz, part.rgb, part.radius))]
            self.endpoint.send(peer, PointsDelta(
                scene_id=scene_id, chunk=chunk, last=chunk == len(parts) - 1, xyz=refs[0][0],
                rgb=refs[1][0], radius=refs[2][0], total_points=sent, job_id=job_id),
                [r[1] for r in refs])

    # -- residency --

    def load_scene(self, entry: OpenEntry) -> Scene:
        """The entry's scene in memory, loaded from its session when it was unloaded."""
        if entry.scene is not None:
            return entry.scene
        self.scenes.make_room(entry.client)
        engine = self.engine(entry.engine)
        scene, _ = engine.resume_scene(entry.scene_id, self.sessions.owned_by(entry.client))
        with self.scenes.lock:
            entry.scene = scene
        log.info("scene %s loaded again", entry.scene_id)
        return scene

    def _unload(self, entry: OpenEntry) -> None:
        """Save what only memory has of ``entry``'s scene before it leaves memory."""
        if entry.dirty:
            self.sessions.owned_by(entry.client).save_cloud(entry.scene_id, entry.scene.cloud,
                                                            entry.scene.pose)
            entry.dirty = False
        log.info("scene %s unloaded (idle; it is loaded again on its next request)",
                 entry.scene_id)

    # -- jobs --

    def _submit_job(self, peer: bytes, client: str, msg: Transition | Dynamics, blobs) -> None:
        kind = JobKind.TRANSITION if isinstance(msg, Transition) else JobKind.DYNAMICS
        entry = self.scenes.on_peer(peer, client, msg.scene_id)
        with self._lock:
            duplicate = (peer, msg.job_id) in self._jobs
        if entry is None or entry.opening:
            self._error(peer, "unknown_scene", f"no open scene {msg.scene_id!r}: send OpenScene first",
                        msg.job_id)
            return
        if duplicate:
            self._error(peer, "bad_value", f"job id {msg.job_id!r} is already in use", msg.job_id)
            return
        engine_name = self._offered(msg.engine or entry.engine)
        if engine_name is None:
            self._error(peer, "unknown_engine", f"engine {msg.engine!r} is not offered; this "
                        f"backend offers {self.config.offered()}", msg.job_id)
            return
        n = msg.poses.shape[0] if kind is JobKind.TRANSITION else msg.num_frames
        refusal = self._job_refusal(client, entry, n)
        if refusal is not None:
            self._fail(peer, msg.job_id, *refusal)
            return
        job = Job(msg.job_id, peer, client, kind, entry, msg, blobs, engine_name, n)
        run = JobRun(self, job, self._job_slots, preemptible=self._cluster is None)
        ahead = self._queue_job(job, run)
        if ahead is not None:
            self.endpoint.send(peer, JobAccepted(job_id=job.job_id, kind=kind.value, num_frames=n,
                                                 queue_position=ahead))

    def _job_refusal(self, client: str, entry: OpenEntry, n: int) -> tuple[JobFailCode, str] | None:
        """Why a job of ``n`` frames on ``entry`` is refused before it is queued, if it is."""
        limits = self.config.limits
        if n > limits.max_frames:
            return "bad_request", (f"{n} frames asked, at most {limits.max_frames} per clip "
                                   "(limits.max_frames)")
        w, h = entry.size
        if w * h * n > limits.max_job_pixel_frames:
            return "too_large", (f"{w} x {h} x {n} frames is {w * h * n:,} pixel-frames; the "
                                 f"limit per job is {limits.max_job_pixel_frames:,} "
                                 "(limits.max_job_pixel_frames)")
        if self.config.save_clips:
            try:
                self.quotas.check_bytes(client)
            except QuotaExceeded as exc:
                return "quota", str(exc)
        return None

    def _queue_job(self, job: Job, run) -> int | None:
        """Queue ``run`` for ``job``; the jobs ahead of it, or None when refused (answered)."""
        with self._lock:
            self._jobs[(job.peer, job.job_id)] = job
        ticket = Ticket(job.client, _key(job.peer, job.job_id), run,
                        on_dropped=partial(self._dropped, job))
        try:
            return self._job_slots.submit(ticket)
        except Busy as exc:
            self.job_ended(job)
            self._fail(job.peer, job.job_id, "busy", str(exc) + " (scheduler.max_jobs_per_client)")
            return None

    def job_ended(self, job: Job) -> None:
        with self._lock:
            self._jobs.pop((job.peer, job.job_id), None)

    def _fail(self, peer: bytes, job_id: str, code: JobFailCode, message: str) -> None:
        self.endpoint.send(peer, JobFailed(job_id=job_id, code=code, message=message))

    def _dropped(self, job: Job) -> None:
        """A queued job removed before it started (Cancel, disconnect, shutdown)."""
        self.job_ended(job)
        if self.endpoint.is_connected(job.peer):
            self._fail(job.peer, job.job_id, "cancelled", "job stopped before it started: cancelled")

    # -- region outlines --

    def _submit_region(self, peer: bytes, client: str, msg: SelectRegion, blobs) -> None:
        """Outline the region the arrows would animate, on an open slot (it renders the view)."""
        entry = self.scenes.on_peer(peer, client, msg.scene_id)
        if entry is None or entry.opening:
            self._error(peer, "unknown_scene", f"no open scene {msg.scene_id!r}", msg.request_id)
            return
        ticket = Ticket(client, _key(peer, "region:" + msg.request_id),
                        partial(self._select_region, entry, msg, blobs))
        try:
            self._open_slots.submit(ticket)
        except Busy as exc:
            self._error(peer, "busy", str(exc), msg.request_id)

    def _select_region(self, entry: OpenEntry, msg: SelectRegion, blobs) -> None:
        peer = entry.peer
        self.scenes.use(entry)
        try:
            scene = self.load_scene(entry)
            reply, reply_blobs = region_reply(self.engine(scene.engine), scene, msg, blobs)
        except ResidentLimit as exc:
            self._error(peer, "busy", str(exc), msg.request_id)
            return
        except (ProtocolError, ValueError) as exc:  # check_pose raises ValueError on bad poses
            self._error(peer, getattr(exc, "code", "bad_value"), str(exc), msg.request_id)
            return
        except (EngineError, SessionError) as exc:
            self._error(peer, "bad_value", str(exc), msg.request_id)
            return
        except Exception as exc:
            log.exception("outlining a region of %s failed", msg.scene_id)
            self._error(peer, "internal", f"outlining the region failed: {type(exc).__name__}: {exc}",
                        msg.request_id)
            return
        finally:
            self.scenes.done_with(entry)
        self.endpoint.send(peer, reply, reply_blobs)

    # -- undo --

    def _undo(self, peer: bytes, client: str, msg: Undo) -> None:
        """Take back the scene's last transition: its points, its pose, its clip entry. It
        runs as a job of the client (after its running job, on a job slot)."""
        entry = self.scenes.on_peer(peer, client, msg.scene_id)
        if entry is None or entry.opening:
            self._error(peer, "unknown_scene", f"no open scene {msg.scene_id!r}", msg.request_id)
            return
        if self._has_jobs(entry):  # its points are still being appended
            self._error(peer, "busy", "undo waits until the scene's jobs are done: cancel or "
                        "wait for them", msg.request_id)
            return
        ticket = Ticket(client, _key(peer, "undo:" + msg.request_id),
                        partial(self._run_undo, entry, msg))
        try:
            self._job_slots.submit(ticket)
        except Busy as exc:
            self._error(peer, "busy", str(exc), msg.request_id)

    def _run_undo(self, entry: OpenEntry, msg: Undo) -> None:
        self.scenes.use(entry)
        try:
            reply = self._take_back(entry, msg)
        except (ResidentLimit, SessionError, OSError, ValueError) as exc:
            busy = isinstance(exc, ResidentLimit)
            reply = Error(code="busy" if busy else "bad_value", request_id=msg.request_id,
                          message=str(exc) if busy else "the scene's saved session cannot be loaded")
        finally:
            self.scenes.done_with(entry)  # before the answer: the next request may follow it
        self.endpoint.send(entry.peer, reply)

    def _take_back(self, entry: OpenEntry, msg: Undo) -> Undone | Error:
        scene = self.load_scene(entry)
        stack = entry.undo
        if stack and stack[-1][3] != scene.cloud.merges:
            stack.clear()  # truncating a cloud the budget has rewritten would cut the wrong points
            return Error(code="bad_value", request_id=msg.request_id, message="the point "
                         "budget merged far points since that transition, so it can no longer "
                         "be undone")
        job_id = None
        if stack:
            job_id, count, pose, _, kept = stack.pop()
            scene.cloud.truncate(count)
            scene.pose = pose
            if kept is not None:  # a dynamics result: its points move as they did before
                region_motion.take_back(scene, kept)
                for reply, blobs in region_motion.motion_messages(
                        scene, kept.index, kept.before, None, self.config.chunk_points):
                    self.endpoint.send(entry.peer, reply, blobs)
            try:
                self.sessions.owned_by(entry.client).record_undo(
                    scene.scene_id, job_id, scene.cloud, pose,
                    "dynamics" if kept is not None else "transition")
            except (SessionError, OSError) as exc:
                log.warning("undo of %s not saved: %s", job_id, exc)
                entry.dirty = True
        return Undone(request_id=msg.request_id, scene_id=msg.scene_id, job_id=job_id,
                      total_points=len(scene.cloud))

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
                          "scene_id": j.entry.scene_id, "engine": j.engine,
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

