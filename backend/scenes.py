"""The scene registry: which client owns which open scene, which are held in memory, and
each scene's undo stack.

A client's scene ids are its own: ``(client, scene_id)`` names one open (or opening) scene,
held by one connection. An open scene is *resident* (its :class:`Scene`, with its point
store, in memory) or *unloaded* (saved in its session, loaded again by the next job that
needs it). Residents are bounded per client and in total (``quotas.resident_scenes_*``):
when a scene is loaded past a bound, the least recently used resident scene without a job
is unloaded (its cloud saved first if a job changed it without saving). Scenes of a client
that left are dropped, and the memory they held is handed back to the OS.

:class:`SceneTable` is the table and its bounds; :class:`SceneRegistry` adds what the
server asks of it: claiming a scene for a client (ownership and the cap per client),
loading an unloaded scene again, and taking back its last transition (undo).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from backend import region_motion
from backend.engines.base import Engine, MotionOut, Scene
from backend.session import SessionError, SessionExists, SessionStore
from protocol.errors import Busy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UndoPoint:
    """What a scene was before one of its transitions."""

    job_id: str
    points: int
    """Points in the cloud before it."""
    pose: np.ndarray
    """The scene's pose before it."""
    merges: int
    """The cloud's merge count then (a merge since makes the undo impossible)."""
    kept: MotionOut | None = None
    """For a dynamics result kept in the world: the motion it set (and what its points had
    before); None for a transition."""


@dataclass
class OpenEntry:
    """One open scene of one client."""

    peer: bytes
    client: str
    scene_id: str
    engine: str
    size: tuple[int, int] = (0, 0)
    """(width, height) of its views, known once opened."""
    median_depth: float = 1.0
    """The first view's median depth, known once opened."""
    opening: bool = True
    """Being opened or resumed (work of its client in progress)."""
    scene: Scene | None = None
    """The scene in memory; None while opening or unloaded."""
    jobs: int = 0
    """Jobs using it now (it is not unloaded meanwhile)."""
    queued: int = 0
    """Jobs accepted for it and not ended (queued or running)."""
    last_used: float = field(default_factory=time.monotonic)
    dirty: bool = False
    """A job changed it and did not save it (``save_clips = false``)."""
    undo: list[UndoPoint] = field(default_factory=list)
    """One point per finished transition or dynamics result kept in the world, newest last."""


class ResidentLimit(Busy):
    """No scene can be unloaded to make room; the message names the limit."""


class UndoRefused(Exception):
    """The scene's last transition cannot be taken back; the message says why."""


class SceneTable:
    """Open scenes by (client, scene id); ``unload`` saves a scene that must leave memory."""

    def __init__(self, per_client: int, total: int, unload: Callable[[OpenEntry], None]):
        self.per_client = per_client
        self.total = total
        self._unload = unload
        self.lock = threading.RLock()
        self._entries: dict[tuple[str, str], OpenEntry] = {}

    def get(self, client: str, scene_id: str) -> OpenEntry | None:
        with self.lock:
            return self._entries.get((client, scene_id))

    def on_peer(self, peer: bytes, client: str, scene_id: str) -> OpenEntry | None:
        """``client``'s scene ``scene_id`` if it is open on connection ``peer``."""
        with self.lock:
            entry = self._entries.get((client, scene_id))
            return entry if entry is not None and entry.peer == peer else None

    def reserve(self, peer: bytes, client: str, scene_id: str, engine: str) -> OpenEntry:
        with self.lock:
            entry = self._entries[(client, scene_id)] = OpenEntry(peer, client, scene_id, engine)
            return entry

    def release(self, entry: OpenEntry) -> None:
        with self.lock:
            if self._entries.get((entry.client, entry.scene_id)) is entry:
                del self._entries[(entry.client, entry.scene_id)]

    def use(self, entry: OpenEntry) -> None:
        """A job starts on ``entry``: it is not unloaded until :meth:`done_with`."""
        with self.lock:
            entry.jobs += 1

    def done_with(self, entry: OpenEntry) -> None:
        with self.lock:
            entry.jobs -= 1
            entry.last_used = time.monotonic()

    def count(self, client: str) -> int:
        with self.lock:
            return sum(1 for c, _ in self._entries if c == client)

    def opening(self, peer: bytes) -> bool:
        """Whether connection ``peer`` has a scene being opened."""
        return peer in self.opening_peers()

    def opening_peers(self) -> set[bytes]:
        """Connections with a scene being opened."""
        with self.lock:
            return {e.peer for e in self._entries.values() if e.opening}

    def owners(self) -> set[str]:
        with self.lock:
            return {e.client for e in self._entries.values()}

    def drop_peer(self, peer: bytes) -> list[OpenEntry]:
        """Forget the scenes of a connection that left; returns them."""
        with self.lock:
            gone = [e for e in self._entries.values() if e.peer == peer]
            for e in gone:
                del self._entries[(e.client, e.scene_id)]
        if any(e.scene is not None for e in gone):
            give_memory_back()
        return gone

    def resident(self) -> int:
        with self.lock:
            return sum(1 for e in self._entries.values() if e.scene is not None)

    def make_room(self, client: str) -> None:
        """Unload scenes until one more of ``client``'s fits both bounds; ResidentLimit
        naming the bound when every resident scene in the way has a job."""
        for bound, key, mine in ((self.per_client, "quotas.resident_scenes_per_client", True),
                                 (self.total, "quotas.resident_scenes_total", False)):
            while True:
                with self.lock:
                    held = [e for e in self._entries.values() if e.scene is not None
                            and (not mine or e.client == client)]
                    if len(held) < bound:
                        break
                    idle = sorted((e for e in held if e.jobs == 0), key=lambda e: e.last_used)
                    if not idle:
                        raise ResidentLimit(f"{len(held)} scenes are held in memory, the limit "
                                            f"({key}), and all have jobs: retry when one ends")
                    victim = idle[0]
                    victim.jobs += 1  # nobody starts on it while it is saved
                try:
                    self._unload(victim)
                    with self.lock:
                        victim.scene = None
                except Exception:
                    log.exception("scene %s could not be unloaded", victim.scene_id)
                    raise ResidentLimit(f"the scene limit ({key}) is reached and a scene could "
                                        "not be saved to make room") from None
                finally:
                    with self.lock:
                        victim.jobs -= 1
                give_memory_back()


def give_memory_back() -> None:
    """Ask glibc to return freed heap pages to the OS (no-op elsewhere)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


_LIBC: list = []


def _libc():
    if not _LIBC:
        name = ctypes.util.find_library("c")
        try:
            lib = ctypes.CDLL(name) if name else None
            _LIBC.append(lib if lib is not None and hasattr(lib, "malloc_trim") else None)
        except OSError:
            _LIBC.append(None)
    return _LIBC[0]


class SceneRegistry:
    """Open scenes of every client: who owns them, which are in memory, their undo stacks.

    ``engine(name)`` gives the engine that loads a scene again; ``sessions`` is where scenes
    are saved; ``max_per_client`` bounds the scenes one client has open.
    """

    def __init__(self, sessions: SessionStore, engine: Callable[[str], Engine],
                 max_per_client: int, resident_per_client: int, resident_total: int):
        self.sessions = sessions
        self.engine = engine
        self.max_per_client = max_per_client
        self.table = SceneTable(resident_per_client, resident_total, self._unload)

    # -- ownership --

    def claim(self, peer: bytes, client: str, scene_id: str, engine: str, resume: bool,
              request_id: str | None = None) -> OpenEntry:
        """``client``'s place for scene ``scene_id`` on connection ``peer``; SessionError or
        Busy saying why not. The owner may resume a scene it has open and idle (e.g. from a
        new connection before the old one timed out): that takes it over."""
        table = self.table
        with table.lock:
            held = table.get(client, scene_id)
            if held is not None and resume and not held.opening and not self.busy(held):
                table.release(held)
                held = None
            if not resume and self.sessions.owned_by(client).exists(scene_id):
                raise SessionExists(f"a saved session {scene_id!r} exists: resume it or pick "
                                    "another id")
            if held is not None:
                raise Busy(f"scene {scene_id!r} is already open", request_id)
            mine = table.count(client)
            if mine >= self.max_per_client:
                raise Busy(f"you have {mine} scenes open; the limit per client is "
                           f"{self.max_per_client} (scheduler.max_scenes_per_client)", request_id)
            return table.reserve(peer, client, scene_id, engine)

    def get(self, client: str, scene_id: str) -> OpenEntry | None:
        """``client``'s scene ``scene_id`` (open or opening, on any connection)."""
        return self.table.get(client, scene_id)

    def find(self, peer: bytes, client: str, scene_id: str) -> OpenEntry | None:
        """``client``'s open scene ``scene_id`` if it is open (not opening) on ``peer``."""
        entry = self.table.on_peer(peer, client, scene_id)
        return entry if entry is not None and not entry.opening else None

    def opened(self, entry: OpenEntry, scene: Scene, still_there: Callable[[], bool]) -> bool:
        """``entry``'s scene is open and in memory; False (and released) when its client left
        meanwhile (``still_there`` is asked under the table's lock)."""
        with self.table.lock:
            if not still_there():
                self.table.release(entry)
                return False
            entry.scene, entry.size, entry.opening = scene, scene.size, False
            entry.median_depth = scene.median_depth
            return True

    def busy(self, entry: OpenEntry) -> bool:
        """Whether jobs run on ``entry`` or wait for it."""
        with self.table.lock:
            return entry.jobs > 0 or entry.queued > 0

    def release(self, entry: OpenEntry) -> None:
        self.table.release(entry)

    def drop_peer(self, peer: bytes) -> list[OpenEntry]:
        return self.table.drop_peer(peer)

    def owners(self) -> set[str]:
        return self.table.owners()

    def opening_peers(self) -> set[bytes]:
        return self.table.opening_peers()

    # -- residency --

    def use(self, entry: OpenEntry) -> None:
        self.table.use(entry)

    def done_with(self, entry: OpenEntry) -> None:
        self.table.done_with(entry)

    def make_room(self, client: str) -> None:
        self.table.make_room(client)

    def load(self, entry: OpenEntry) -> Scene:
        """The entry's scene in memory, loaded from its session when it was unloaded."""
        if entry.scene is not None:
            return entry.scene
        self.table.make_room(entry.client)
        scene, _ = self.engine(entry.engine).resume_scene(entry.scene_id,
                                                          self.sessions.owned_by(entry.client))
        with self.table.lock:
            entry.scene = scene
        log.info("scene %s loaded again", entry.scene_id)
        return scene

    def _unload(self, entry: OpenEntry) -> None:
        """Save what only memory has of ``entry``'s scene before it leaves memory."""
        if entry.dirty and entry.scene is not None:
            self.sessions.owned_by(entry.client).save_cloud(entry.scene_id, entry.scene.cloud,
                                                            entry.scene.pose)
            entry.dirty = False
        log.info("scene %s unloaded (idle; it is loaded again on its next request)",
                 entry.scene_id)

    # -- undo --

    def remember(self, entry: OpenEntry, point: UndoPoint) -> None:
        """A transition finished on ``entry``; ``point`` is what the scene was before it."""
        with self.table.lock:
            entry.undo.append(point)

    def undo(self, entry: OpenEntry) -> tuple[str | None, int, MotionOut | None]:
        """Take back the scene's last transition or kept dynamics result: its points, its pose,
        the motion it set, its clip entry (the scene is loaded first). Returns (the job taken
        back or None, points left, the motion taken back or None); UndoRefused when a merge
        since makes it impossible."""
        scene = self.load(entry)
        stack = entry.undo
        if stack and stack[-1].merges != scene.cloud.merges:
            stack.clear()  # truncating a cloud the budget has rewritten would cut the wrong points
            raise UndoRefused("the point budget merged far points since that transition, so it "
                              "can no longer be undone")
        if not stack:
            return None, len(scene.cloud), None
        point = stack.pop()
        scene.cloud.truncate(point.points)
        scene.pose = point.pose
        if point.kept is not None:  # a dynamics result: its points move as they did before
            region_motion.take_back(scene, point.kept)
        try:
            self.sessions.owned_by(entry.client).record_undo(
                scene.scene_id, point.job_id, scene.cloud, point.pose,
                "dynamics" if point.kept is not None else "transition")
        except (SessionError, OSError) as exc:
            log.warning("undo of %s not saved: %s", point.job_id, exc)
            entry.dirty = True
        return point.job_id, len(scene.cloud), point.kept
