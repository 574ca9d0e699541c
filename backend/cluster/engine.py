"""ClusterEngine: the ``Engine`` interface, with every run on a remote EngineWorker.

The backend uses it like any engine. A run is a generator that takes a free worker, starts
the worker's streaming generator and yields its events one by one; closing the run (cancel,
explorer gone) cancels the remote job. The front door's scene stays the source of truth: the
points a transition adds are appended to it here, as an in-process engine would.

Errors: an engine's own EngineError comes back as EngineError; a worker that dies mid-job
becomes :class:`WorkerLost` (``worker_lost``); a worker that dies before the job's first
event costs nothing visible: the job is re-queued on the next free worker.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

from backend.cluster.slot import Slot, SlotSource
from backend.engines.base import (
    DynamicsRequest,
    Engine,
    EngineError,
    Event,
    OpenRequest,
    PointsOut,
    Scene,
    TransitionRequest,
    WorkerLost,
)

log = logging.getLogger(__name__)


@dataclass
class _Version:
    scene: weakref.ref
    key: tuple
    token: str | None
    """The version's name; None: adopted from a run that named none (no worker holds it)."""
    ref: object = None


class SceneVersions:
    """A token per version of each front-door scene, and its object-store copy (put once)."""

    def __init__(self, ray):
        self.ray = ray
        self._lock = threading.Lock()
        self._entries: dict[int, _Version] = {}
        self._count = itertools.count(1)
        self.puts = 0
        """Scene copies put in the object store so far."""

    @staticmethod
    def _key(scene: Scene) -> tuple:
        store = scene.cloud
        return (getattr(store, "version", None), len(store), scene.pose.tobytes())

    def _entry(self, scene: Scene) -> _Version:
        entry = self._entries.get(id(scene))
        if entry is None or entry.scene() is not scene:
            entry = _Version(weakref.ref(scene), (), "")
            self._entries[id(scene)] = entry
            weakref.finalize(scene, self._entries.pop, id(scene), None)
        key = self._key(scene)
        if entry.key != key:
            entry.key, entry.token, entry.ref = key, f"{scene.scene_id}#{next(self._count)}", None
        return entry

    def token(self, scene: Scene) -> str | None:
        with self._lock:
            return self._entry(scene).token

    def ref(self, scene: Scene):
        """The object-store copy of the scene's current version."""
        with self._lock:
            entry = self._entry(scene)
            if entry.ref is None:
                if hasattr(scene.cloud, "cloud"):
                    scene.cloud.cloud()  # one array per field, not a list of parts
                entry.ref = self.ray.put(scene)
                self.puts += 1
            return entry.ref

    def adopt(self, scene: Scene, token: str | None) -> None:
        """The scene's current version is the one a worker already holds as ``token``."""
        with self._lock:
            entry = self._entry(scene)
            entry.token, entry.ref = token, None

    def new_token(self, scene: Scene) -> str:
        return f"{scene.scene_id}#{next(self._count)}"


class ClusterEngine(Engine):
    """Runs engine ``name`` on the pool's workers."""

    def __init__(self, name: str, pool: SlotSource):
        self.name = name
        self.pool = pool
        self.ray = pool.ray
        self.versions = SceneVersions(pool.ray)

    # -- scenes (one call on a free worker) --

    def open_scene(self, request: OpenRequest):
        # The progress callback belongs to the front door (it holds its sockets and locks) and
        # cannot travel; a worker's first model download is reported in its own log instead.
        return self._call("open_scene", request.scene_id, dataclasses.replace(request, progress=None))

    def resume_scene(self, scene_id: str, sessions):
        """Resume on a worker; the session folder must be visible there (shared disk)."""
        return self._call("resume_scene", scene_id, scene_id, sessions)

    def _call(self, method: str, scene_id: str, *args):
        ray = self.ray
        for attempt in itertools.count():
            slot = self.pool.acquire(scene_id, kind=method)
            try:
                result = ray.get(getattr(slot.actor, method).remote(self.name, *args))
            except ray.exceptions.RayActorError as exc:
                self.pool.release(slot, lost=True)
                if attempt >= self.pool.config.requeue_tries:
                    raise WorkerLost(f"{slot.name} was lost: {exc}") from None
                continue
            except ray.exceptions.RayTaskError as exc:
                self.pool.release(slot)
                raise _unwrap(exc) from None
            self.pool.release(slot)
            return result

    # -- jobs (a streaming generator on a free worker) --

    def transition(self, scene: Scene, request: TransitionRequest) -> Iterator[Event]:
        return self._run("transition", scene, request)

    def dynamics(self, scene: Scene, request: DynamicsRequest) -> Iterator[Event]:
        return self._run("dynamics", scene, request)

    def _run(self, kind: str, scene: Scene, request) -> Iterator[Event]:
        ray = self.ray
        for attempt in itertools.count():
            # 1. a free worker, preferring the one that holds this version of the scene
            token = self.versions.token(scene)
            slot = self.pool.acquire(scene.scene_id, token, kind, scene)
            box = [None] if slot.holds.get(scene.scene_id) == token else [self.versions.ref(scene)]
            token_out = self.versions.new_token(scene) if kind == "transition" else None
            remote = slot.actor.run.options(
                _generator_backpressure_num_objects=self.pool.config.frames_ahead,
            ).remote(self.name, kind, scene.scene_id, token, box, request, token_out)
            # 2. relay its events; the front door's scene follows the worker's
            started, held, lost, done = False, None, False, False
            try:
                for ref in remote:
                    event = ray.get(ref)
                    started = True
                    if isinstance(event, PointsOut):
                        held = self._apply_points(scene, request, event, token_out)
                    yield event
                done = True
                held = held if kind == "transition" else token
            except ray.exceptions.RayActorError as exc:
                lost = True
                if started or slot.overdue or attempt >= self.pool.config.requeue_tries:
                    why = (f"busy past the {self.pool.config.busy_deadline_s:.0f} s deadline"
                           if slot.overdue else "lost")
                    raise WorkerLost(f"{slot.name} was {why} mid-job; resubmit to retry") from None
                log.warning("%s lost before %s of %s started: re-queued (%s)", slot.name, kind,
                            scene.scene_id, type(exc).__name__)
            except ray.exceptions.RayTaskError as exc:
                raise _unwrap(exc) from None
            finally:
                if not done and not lost:
                    ray.cancel(remote)  # closed by the server: cancel, or the explorer left
                self.pool.release(slot, scene.scene_id, held if done else None, lost=lost, done=done)
            if not lost:
                return

    def _apply_points(self, scene: Scene, request, event: PointsOut, token_out: str | None) -> str | None:
        """Grow the front door's scene like the worker's; the token the worker now holds."""
        added = scene.cloud.append(event.cloud)
        scene.pose = request.poses[-1].astype(float)
        if len(added) != len(event.cloud):  # the front door's store disagreed (capacity)
            log.warning("scene %s: kept %d of %d points the worker added", scene.scene_id,
                        len(added), len(event.cloud))
            return None
        self.versions.adopt(scene, token_out)
        return token_out


def _unwrap(exc) -> Exception:
    """The worker's exception: an EngineError as itself, anything else as a RuntimeError."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, EngineError):
        return EngineError(str(cause))
    if isinstance(cause, Exception):
        return RuntimeError(f"{type(cause).__name__}: {cause}")
    return RuntimeError(str(exc))


__all__ = ["ClusterEngine", "SceneVersions", "Slot", "WorkerLost"]
