"""Opening and resuming scenes on the open slots: ``OpenScene`` to ``SceneOpened``.

Cheap checks answer at once on the dispatcher (the scene id, a saved session to resume, the
quota for a new one, the client's cap of open scenes); the work (decoding the photo, depth,
lifting, or loading a session) runs on a slot of ``scheduler.open_slots``, taken
round-robin across clients. The explorer gets ``SceneOpened`` and the cloud as
``PointsDelta`` chunks, or an Error saying why not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import cast

from backend import region_motion, wire
from backend.engines.base import Engine, EngineError, ProgressOut, Scene
from backend.geometry.cloud import PointCloud
from backend.jobs import ticket_key
from backend.outbox import Endpoint
from backend.quotas import QuotaExceeded, Quotas, cloud_bytes
from backend.scenes import OpenEntry, SceneRegistry
from backend.scheduler import FairScheduler, Ticket
from backend.session import SessionError, SessionStore, check_scene_id
from protocol.codec import Blob
from protocol.errors import Busy, ErrorCode, ProtocolError
from protocol.limits import Limits
from protocol.messages import OpenScene

log = logging.getLogger(__name__)


class SceneOpener:
    """Opens and resumes scenes for clients on ``slots``."""

    def __init__(self, scenes: SceneRegistry, sessions: SessionStore, quotas: Quotas,
                 engine: Callable[[str], Engine], endpoint: Endpoint, slots: FairScheduler,
                 limits: Limits, chunk_points: int):
        self.scenes = scenes
        self.sessions = sessions
        self.quotas = quotas
        self.engine = engine
        self.endpoint = endpoint
        self.slots = slots
        self.limits = limits
        self.chunk_points = chunk_points

    def submit(self, peer: bytes, client: str, engine: str, msg: OpenScene, blobs: list[Blob]) -> None:
        """Claim the scene for ``client`` and queue its opening; an Error when refused."""
        try:
            check_scene_id(msg.scene_id)
            if msg.resume:
                self.sessions.owned_by(client).folder(msg.scene_id)  # SessionMissing at once
            else:
                self.quotas.check_new_scene(client)
            entry = self.scenes.claim(peer, client, msg.scene_id, engine, msg.resume,
                                      msg.request_id)
        except (SessionError, Busy) as exc:
            self.endpoint.error(peer, _code(exc), str(exc), msg.request_id)
            return
        ticket = Ticket(client, ticket_key(peer, msg.request_id),
                        partial(self._open, entry, msg, blobs),
                        on_dropped=partial(self.scenes.release, entry))
        try:
            self.slots.submit(ticket)
        except Busy as exc:
            self.scenes.release(entry)
            self.endpoint.error(peer, "busy", str(exc), msg.request_id)

    def _open(self, entry: OpenEntry, msg: OpenScene, blobs: list[Blob]) -> None:
        """Open-slot body: make room in memory, decode, lift (or resume), save, then answer."""
        peer = entry.peer
        try:
            self.scenes.make_room(entry.client)
            scene, cloud, resumed = self._load_or_create(entry, msg, blobs)
        except (ProtocolError, SessionError) as exc:
            return self._failed(entry, msg, _code(exc), str(exc))
        except EngineError as exc:
            return self._failed(entry, msg, "bad_value", str(exc))
        except (OSError, ValueError) as exc:  # a saved session that does not load
            log.warning("scene %s of %s does not load: %s", msg.scene_id, peer.hex(), exc)
            return self._failed(entry, msg, "bad_value",
                                f"the saved session {msg.scene_id!r} cannot be loaded")
        except Exception as exc:
            log.exception("opening scene %s for %s failed", msg.scene_id, peer.hex())
            return self._failed(entry, msg, "internal", "opening the scene failed: "
                                f"{type(exc).__name__} (the backend's log has the details)")
        if not self.scenes.opened(entry, scene, lambda: self.endpoint.is_connected(peer)):
            return
        session = self.sessions.find(entry.client, scene.scene_id) or ""
        self.endpoint.send(peer, wire.scene_opened(msg.request_id, scene, len(cloud), resumed,
                                                   session))
        for delta, delta_blobs in wire.points_messages(scene.scene_id, cloud, len(scene.cloud),
                                                       None, self.chunk_points):
            self.endpoint.send(peer, delta, delta_blobs)
        index, motion = region_motion.moving(scene.cloud.cloud())
        if len(index):  # a resumed world goes on moving
            for moving, moving_blobs in region_motion.motion_messages(scene, index, motion, None,
                                                                      self.chunk_points):
                self.endpoint.send(peer, moving, moving_blobs)

    def _failed(self, entry: OpenEntry, msg: OpenScene, code: ErrorCode, text: str) -> None:
        self.scenes.release(entry)
        self.endpoint.error(entry.peer, code, text, msg.request_id)

    def _load_or_create(self, entry: OpenEntry, msg: OpenScene, blobs: list[Blob]
                        ) -> tuple[Scene, PointCloud, bool]:
        client, owned = entry.client, self.sessions.owned_by(entry.client)
        if msg.resume:
            owned.folder(msg.scene_id)  # SessionMissing, before any engine work
            scene, cloud = self.engine(entry.engine).resume_scene(msg.scene_id, owned)
            return scene, cloud, True

        def progress(p: ProgressOut) -> None:  # e.g. the depth model's first download
            self.endpoint.send(entry.peer, wire.progress_message(msg.request_id, p))

        request = wire.open_request(msg, blobs, self.limits, progress)
        engine = self.engine(entry.engine)
        scene, cloud = engine.open_scene(request)
        try:
            self.quotas.check_new_scene(client, scene.image.nbytes + cloud_bytes(len(scene.cloud)))
        except QuotaExceeded as exc:
            raise SessionError(str(exc)) from None
        owned.create(scene.scene_id, scene.image, scene.K, scene.text, engine.name,
                     scene.median_depth, store=scene.cloud,
                     depth=(scene.depth_source, scene.depth_note))
        return scene, cloud, False


def _code(exc: ProtocolError | SessionError) -> ErrorCode:
    """The Error code an exception carries (SessionError's are ErrorCodes too)."""
    return cast(ErrorCode, exc.code)
