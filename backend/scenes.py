"""The scenes clients have open, and which of them are held in memory.

A client's scene ids are its own: ``(client, scene_id)`` names one open (or opening) scene,
held by one connection. An open scene is *resident* (its :class:`Scene`, with its point
store, in memory) or *unloaded* (saved in its session, loaded again by the next job that
needs it). Residents are bounded per client and in total (``quotas.resident_scenes_*``):
when a scene is loaded past a bound, the least recently used resident scene without a job
is unloaded (its cloud saved first if a job changed it without saving). Scenes of a client
that left are dropped, and the memory they held is handed back to the OS.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from backend.engines.base import Scene
from protocol.errors import Busy

log = logging.getLogger(__name__)


@dataclass
class OpenEntry:
    """One open scene of one client."""

    peer: bytes
    client: str
    scene_id: str
    engine: str
    size: tuple[int, int] = (0, 0)
    """(width, height) of its views, known once opened."""
    opening: bool = True
    """Being opened or resumed (work of its client in progress)."""
    scene: Scene | None = None
    """The scene in memory; None while opening or unloaded."""
    jobs: int = 0
    """Jobs using it now (it is not unloaded meanwhile)."""
    last_used: float = field(default_factory=time.monotonic)
    dirty: bool = False
    """A job changed it and did not save it (``save_clips = false``)."""
    undo: list = field(default_factory=list)
    """(job id, points before, pose before, merges, kept motion or None) per transition or
    dynamics result kept in the world, newest last."""


class ResidentLimit(Busy):
    """No scene can be unloaded to make room; the message names the limit."""


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
