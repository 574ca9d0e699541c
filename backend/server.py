"""The backend server: its lifecycle, and the dispatch of each request to its owner.

One :class:`Backend` owns the protocol's endpoint and a claimed sessions root
(``backend.session``; recovered at start, anything that does not load quarantined). Its main
loop only dispatches, by message type (:attr:`Backend.handlers`), after cheap checks (the
scene is the client's and open, the engine is on offer); the work is done elsewhere:

- ``backend.openings``: OpenScene (decode, depth, lift, or resume) on the open slots;
- ``backend.job_table`` and ``backend.jobs``: Transition and Dynamics on the job slots,
  each job behind an :class:`~backend.outbox.Outbox`; ``backend.wire`` turns messages into
  checked engine requests and engine events into messages;
- ``backend.scenes``: which client owns which scene, which are in memory, undo;
- ``backend.status``: the Status answer.

Both kinds of slot are :class:`~backend.scheduler.FairScheduler`\\ s, taken round-robin
across clients and handed over in time, so no request of one client holds the threads that
serve others. Scenes belong to the client identity that created them (its CURVE key, or its
loopback token); whatever a client names, it only ever reaches its own scenes, and one it
does not have is ``unknown_scene`` whether or not another client has one of that name.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from backend import region_motion
from backend import status as status_mod
from backend.config import BackendConfig, check_config
from backend.engines import create_engine
from backend.engines.base import Engine, EngineError
from backend.job_table import JobTable
from backend.jobs import ticket_key
from backend.openings import SceneOpener
from backend.outbox import Endpoint
from backend.quotas import Quotas
from backend.region_reply import region_reply
from backend.scenes import OpenEntry, ResidentLimit, SceneRegistry, UndoRefused
from backend.scheduler import FairScheduler, Ticket
from backend.session import SessionError, SessionStore
from protocol.codec import Blob
from protocol.endpoint_process import EndpointProcess
from protocol.errors import Busy, ErrorCode, ProtocolError
from protocol.messages import (
    Cancel,
    Dynamics,
    Error,
    Message,
    OpenScene,
    SelectRegion,
    Status,
    StatusReply,
    Transition,
    Undo,
    Undone,
)
from protocol.transport import Incoming, PeerGone, ServerEndpoint, ServerKeys

log = logging.getLogger(__name__)

__all__ = ["Backend", "BackendConfig"]

Handler = Callable[[bytes, str, Any, list[Blob]], None]
"""(connection, client identity, message, blobs) -> None; answers on its own."""


class Backend:
    """Serves explorers over one endpoint until :meth:`stop`."""

    def __init__(self, config: BackendConfig | None = None):
        self.config = config = config or BackendConfig()
        check_config(config)
        self._built = False
        """Set once every part exists: the endpoint asks about occupancy from its own thread
        as soon as it starts, before the job table does (the Ray pool takes seconds)."""
        self.limits = config.protocol_limits()
        self.sessions = SessionStore(config.sessions)
        report = self.sessions.recover()
        for removed in report.removed:
            log.info("session recovery removed %s", removed)
        if report.quarantined:
            log.warning("sessions: %d kept, %d quarantined (see %s)", len(report.sessions),
                        len(report.quarantined), self.sessions.root / ".quarantine")
        self.quotas = Quotas(config.quotas, self.sessions)
        sched = config.scheduler
        self.scenes = SceneRegistry(self.sessions, self.engine, sched.max_scenes_per_client,
                                    config.quotas.resident_scenes_per_client,
                                    config.quotas.resident_scenes_total)
        self._engines: dict[str, Engine] = {}
        self._engine_lock = threading.Lock()
        keys = ServerKeys.from_folder(config.keys) if config.keys else None
        endpoint = EndpointProcess if config.io_process else ServerEndpoint
        self.endpoint: Endpoint = endpoint(
            config.bind, engines=config.offered(), default_engine=config.engine,
            presets=config.offered_presets(),
            heartbeat_s=config.heartbeat_s, peer_timeout_s=config.peer_timeout_s, keys=keys,
            limits=self.limits, caps=config.endpoint_caps(), token_key=self.sessions.token_key,
            occupancy=self)
        self.address = self.endpoint.address
        slots = config.job_slots()
        self._cluster: Any = None
        if config.cluster:  # engines run on Ray workers: one job slot per worker
            from backend.cluster import start_pool

            try:
                self._cluster = start_pool(config.cluster, config.cluster_options, config.device,
                                           config.engine, config.engine_options, slots)
            except BaseException:
                self.endpoint.close()
                raise
            slots = self._cluster.size
        self._job_slots = FairScheduler(slots, sched.max_jobs_per_client, "dj-job", "jobs",
                                        slice_s=sched.slice_s)
        self._open_slots = FairScheduler(sched.open_slots, sched.max_scenes_per_client,
                                         "dj-open", "scene openings")
        self.jobs = JobTable(config, self.sessions, self.quotas, self.scenes, self.engine,
                             self.endpoint, self._job_slots, preemptible=self._cluster is None)
        self.openings = SceneOpener(self.scenes, self.sessions, self.quotas, self.engine,
                                    self.endpoint, self._open_slots, self.limits,
                                    config.chunk_points)
        if self._cluster is not None:  # its periodic log line: the backend's whole status
            self._cluster.report = self.status_line
        self.handlers: dict[type[Message], Handler] = {
            OpenScene: self._open_scene,
            Transition: self._submit_job,
            Dynamics: self._submit_job,
            Cancel: self._cancel,
            Undo: self._undo,
            SelectRegion: self._select_region,
            Status: self._status,
        }
        """Message type -> its handler (a new request type adds its entry)."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._built = True

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
            try:
                if isinstance(ev, PeerGone) and ev.peer is not None:
                    self._on_peer_gone(ev.peer, ev.reason)
                elif isinstance(ev, Incoming) and ev.peer is not None:
                    self._dispatch(ev.peer, ev.msg, ev.blobs)
            except Exception:  # one bad request must not stop the server
                peer = getattr(ev, "peer", None)
                log.exception("failed to handle %s from %s", type(getattr(ev, "msg", ev)).__name__,
                              peer.hex() if peer else "?")

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
        self.jobs.cancel_all()
        if self._thread is not None:
            self._thread.join()
        self._job_slots.shutdown()
        self._open_slots.shutdown()
        if self._cluster is not None:
            self._cluster.close()
        self.endpoint.close()

    def __enter__(self) -> Backend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def engine(self, name: str | None = None) -> Engine:
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

    # -- dispatch --

    def _dispatch(self, peer: bytes, msg: Message, blobs: list[Blob]) -> None:
        client = self.endpoint.identity(peer)
        if client is None:
            return  # left while its message waited
        handler = self.handlers.get(type(msg))
        if handler is None:
            self._error(peer, "bad_value", f"a backend does not accept {type(msg).__name__}")
        else:
            handler(peer, client, msg, blobs)

    def _error(self, peer: bytes, code: ErrorCode, message: str, request_id: str | None = None) -> None:
        self.endpoint.error(peer, code, message, request_id)

    def _offered(self, name: str | None, peer: bytes, request_id: str) -> str | None:
        """``name`` if on offer (None = the default); None (answered) when not."""
        name = name or self.config.engine
        if name in self.config.offered():
            return name
        self._error(peer, "unknown_engine", f"engine {name!r} is not offered; this backend "
                    f"offers {self.config.offered()}", request_id)
        return None

    def _open_entry(self, peer: bytes, client: str, scene_id: str, request_id: str,
                    hint: str = "") -> OpenEntry | None:
        """The client's open scene ``scene_id`` on this connection; None (answered) when not."""
        entry = self.scenes.find(peer, client, scene_id)
        if entry is None:
            self._error(peer, "unknown_scene", f"no open scene {scene_id!r}{hint}", request_id)
        return entry

    def _on_peer_gone(self, peer: bytes, reason: str) -> None:
        log.info("explorer %s gone (%s): cancelling its jobs", peer.hex(), reason)
        self.scenes.drop_peer(peer)
        self.jobs.peer_gone(peer)

    # -- handlers --

    def _open_scene(self, peer: bytes, client: str, msg: OpenScene, blobs: list[Blob]) -> None:
        engine = self._offered(msg.engine, peer, msg.request_id)
        if engine is not None:
            self.openings.submit(peer, client, engine, msg, blobs)

    def _submit_job(self, peer: bytes, client: str, msg: Transition | Dynamics,
                    blobs: list[Blob]) -> None:
        entry = self._open_entry(peer, client, msg.scene_id, msg.job_id, ": send OpenScene first")
        if entry is None:
            return
        engine = self._offered(msg.engine or entry.engine, peer, msg.job_id)
        if engine is not None:
            self.jobs.submit(peer, client, entry, engine, msg, blobs)

    def _cancel(self, peer: bytes, client: str, msg: Cancel, blobs: list[Blob]) -> None:
        if not self.jobs.cancel(peer, client, msg.job_id):
            self._error(peer, "unknown_job", f"you have no job {msg.job_id!r}", msg.job_id)

    def _status(self, peer: bytes, client: str, msg: Status, blobs: list[Blob]) -> None:
        asker = None if self.config.status_shows == "all" else client
        self.endpoint.send(peer, self.status_reply(msg, asker))

    def _select_region(self, peer: bytes, client: str, msg: SelectRegion, blobs: list[Blob]) -> None:
        """Outline the region the arrows would animate, on an open slot (it renders the view)."""
        entry = self._open_entry(peer, client, msg.scene_id, msg.request_id)
        if entry is not None:
            self._on_slot(self._open_slots, entry, "region:" + msg.request_id, msg.request_id,
                          partial(self._region, entry, msg, blobs))

    def _region(self, entry: OpenEntry, msg: SelectRegion, blobs: list[Blob]) -> None:
        self.scenes.use(entry)
        try:
            scene = self.scenes.load(entry)
            reply, reply_blobs = region_reply(self.engine(scene.engine), scene, msg, blobs)
        except ResidentLimit as exc:
            return self._error(entry.peer, "busy", str(exc), msg.request_id)
        except ProtocolError as exc:
            return self._error(entry.peer, exc.code, str(exc), msg.request_id)
        except (EngineError, SessionError, ValueError) as exc:
            return self._error(entry.peer, "bad_value", str(exc), msg.request_id)
        except Exception as exc:
            log.exception("outlining a region of %s failed", msg.scene_id)
            return self._error(entry.peer, "internal", "outlining the region failed: "
                               f"{type(exc).__name__}: {exc}", msg.request_id)
        finally:
            self.scenes.done_with(entry)
        self.endpoint.send(entry.peer, reply, reply_blobs)

    def _undo(self, peer: bytes, client: str, msg: Undo, blobs: list[Blob]) -> None:
        """Take back the scene's last transition; it runs as a job of the client (after its
        running job, on a job slot), refused while a job of the scene runs or waits."""
        entry = self._open_entry(peer, client, msg.scene_id, msg.request_id)
        if entry is None:
            return
        if self.scenes.busy(entry):  # its points are still being appended
            self._error(peer, "busy", "undo waits until the scene's jobs are done: cancel or "
                        "wait for them", msg.request_id)
            return
        self._on_slot(self._job_slots, entry, "undo:" + msg.request_id, msg.request_id,
                      partial(self._run_undo, entry, msg))

    def _run_undo(self, entry: OpenEntry, msg: Undo) -> None:
        self.scenes.use(entry)
        reply: Undone | Error
        try:
            job_id, total, kept = self.scenes.undo(entry)
            if kept is not None and entry.scene is not None:  # its points move as before
                for motion, blobs in region_motion.motion_messages(
                        entry.scene, kept.index, kept.before, None, self.config.chunk_points):
                    self.endpoint.send(entry.peer, motion, blobs)
            reply = Undone(request_id=msg.request_id, scene_id=msg.scene_id, job_id=job_id,
                           total_points=total)
        except UndoRefused as exc:
            reply = Error(code="bad_value", request_id=msg.request_id, message=str(exc))
        except ResidentLimit as exc:
            reply = Error(code="busy", request_id=msg.request_id, message=str(exc))
        except (SessionError, OSError, ValueError):
            reply = Error(code="bad_value", request_id=msg.request_id,
                          message="the scene's saved session cannot be loaded")
        finally:
            self.scenes.done_with(entry)  # before the answer: the next request may follow it
        self.endpoint.send(entry.peer, reply)

    def _on_slot(self, slots: FairScheduler, entry: OpenEntry, key: str, request_id: str,
                 body: Callable[[], None]) -> None:
        """Run ``body`` for the entry's client on ``slots``; ``busy`` when its queue is full."""
        try:
            slots.submit(Ticket(entry.client, ticket_key(entry.peer, key), body))
        except Busy as exc:
            self._error(entry.peer, "busy", str(exc), request_id)

    # -- occupancy (asked by the endpoint) and status --

    def owns(self, identity: str) -> bool:
        """Whether ``identity`` has open scenes or saved sessions."""
        return identity in self.scenes.owners() or self.sessions.usage(identity)[0] > 0

    def working(self, peer: bytes) -> bool:
        """Whether connection ``peer`` has a job, or a scene opening."""
        return self._built and (peer in self.jobs.working_peers()
                                or peer in self.scenes.opening_peers())

    def snapshot(self) -> tuple[set[str], set[bytes]]:
        """(identities that own scenes, connections with work), for an endpoint that runs in
        a process of its own."""
        working = self.jobs.working_peers() if self._built else set()
        return self.scenes.owners() | self.sessions.owners(), working | self.scenes.opening_peers()

    def status_reply(self, msg: Status, asker: str | None = None) -> StatusReply:
        """What the backend is doing now; for a client ``asker`` others are anonymised."""
        jobs = self.jobs.states()
        if self._cluster is None:
            workers = status_mod.local_workers(self._job_slots.slots, self.config.device,
                                               sorted(self._engines), jobs)
        else:
            workers = status_mod.cluster_workers(self._cluster.snapshot())
        cluster = self._cluster.address if self._cluster is not None else ""
        return status_mod.status_reply(msg, jobs, workers, cluster, asker)

    def status_line(self) -> str:
        """The backend's status on one line, for its periodic log."""
        return status_mod.status_line(self.status_reply(Status(request_id="log")))
