"""WorkerPool: the EngineWorker actors, which of them is free, and their health.

Scheduling is the front door's: a job thread asks :meth:`WorkerPool.acquire` for a free
worker (the one already holding the job's scene version if it is free, else the one idle the
longest), runs its job there, and gives it back with :meth:`release`. A worker whose actor
died is probed until Ray has restarted it (``max_restarts``), then offered again. A monitor
thread reports (and abandons) jobs busy past the deadline and logs the pool's state.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time

from backend.cluster.config import ClusterConfig
from backend.cluster.engine import ClusterEngine
from backend.cluster.slot import Slot
from backend.engines.base import WorkerLost

log = logging.getLogger(__name__)

__all__ = ["WorkerLost", "WorkerPool", "connect"]


def connect(address: str):
    """Ray, initialised: ``auto`` starts a local instance on loopback, else joins ``address``."""
    if address == "auto":
        # Ray resolves "localhost" to the machine's outward address unless told this is a
        # single-machine instance; keep a local instance on loopback.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise RuntimeError("--cluster needs Ray: pip install 'dreamjourney[cluster]'") from None

    if not ray.is_initialized():
        if address == "auto":
            ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1")
        else:
            ray.init(address=address)
    return ray


class WorkerPool:
    """Starts ``workers`` EngineWorker actors and hands them out one job at a time."""

    def __init__(self, address: str, config: ClusterConfig, device: str = "cpu",
                 default_engine: str = "classic", engine_options: dict | None = None, cpu_jobs: int = 1,
                 report=None):
        self.ray = ray = connect(address)
        self.report = report or self.summary
        """The periodic log line (the backend's status when the backend gives one)."""
        self.address = address
        self.config = config
        from backend.cluster.worker import EngineWorker

        gpus = int(ray.cluster_resources().get("GPU", 0) // config.gpus_per_worker) if device != "cpu" else 0
        n = config.workers or gpus or max(1, cpu_jobs)
        resources = ({"num_gpus": config.gpus_per_worker, "num_cpus": 0} if gpus
                     else {"num_cpus": config.cpus_per_worker})
        actor_cls = ray.remote(concurrency_groups={"control": 2})(EngineWorker).options(
            max_restarts=config.max_restarts, max_task_retries=0, **resources)
        self.slots = [
            Slot(i, f"worker-{i}", actor_cls.remote(
                f"worker-{i}", device, engine_options or {}, dict(config.engine_classes),
                [default_engine], config.scenes_per_worker))
            for i in range(n)
        ]
        self._cond = threading.Condition()
        self._closed = threading.Event()
        try:
            infos = ray.get([s.actor.info.remote() for s in self.slots], timeout=config.ready_timeout_s)
        except Exception as exc:
            self.close()
            raise RuntimeError(f"the cluster's workers did not start: {exc}") from None
        for slot, info in zip(self.slots, infos, strict=True):
            slot.info = info
        log.info("cluster %s: %d workers ready (%s)", address, n,
                 ", ".join(f"{s.name} on {s.info['node']} {s.info['device']}" for s in self.slots))
        self._monitor = threading.Thread(target=self._watch, name="dj-cluster-monitor", daemon=True)
        self._monitor.start()

    @property
    def size(self) -> int:
        return len(self.slots)

    def snapshot(self) -> list[tuple[Slot, dict | None]]:
        """Each worker with a copy of the job it runs (None when idle), read consistently."""
        with self._cond:
            return [(s, dict(s.job) if s.job else None) for s in self.slots]

    def engine(self, name: str) -> ClusterEngine:
        """A ClusterEngine running ``name`` on this pool's workers."""
        return ClusterEngine(name, self)

    # -- scheduling --

    def acquire(self, scene_id: str | None = None, token: str | None = None, kind: str = "open",
                scene: object = None) -> Slot:
        """A free worker, preferring one that holds ``token`` for ``scene_id``; waits for one."""
        with self._cond:
            while True:
                if self._closed.is_set():
                    raise WorkerLost("the cluster is shutting down")
                idle = [s for s in self.slots if s.state == "idle"]
                if idle:
                    break
                if all(s.state == "lost" for s in self.slots):
                    raise WorkerLost("every cluster worker is lost; restart the backend")
                self._cond.wait(0.5)
            holding = [s for s in idle if token is not None and scene_id is not None
                       and s.holds.get(scene_id) == token]
            slot = holding[0] if holding else min(idle, key=lambda s: s.idle_since)
            slot.state = "busy"
            slot.overdue = False
            slot.job = {"kind": kind, "scene_id": scene_id, "scene": scene, "started": time.monotonic()}
            return slot

    def release(self, slot: Slot, scene_id: str | None = None, token: str | None = None,
                lost: bool = False, done: bool = False) -> None:
        """Give ``slot`` back; ``token`` is the scene version it now holds (None: it holds none)."""
        with self._cond:
            slot.job = None
            slot.idle_since = time.monotonic()
            slot.jobs_done += done
            if lost:
                slot.state = "restarting"
                slot.restarts += 1
                slot.holds.clear()
                threading.Thread(target=self._await_restart, args=(slot,), daemon=True).start()
            else:
                slot.state = "idle"
                if scene_id is not None:
                    slot.holds.pop(scene_id, None)
                    if token is not None:
                        slot.holds[scene_id] = token
                        while len(slot.holds) > self.config.scenes_per_worker:
                            slot.holds.pop(next(iter(slot.holds)))
            self._cond.notify_all()

    def _await_restart(self, slot: Slot) -> None:
        """Probe a dead worker until Ray has restarted it (or given up on it)."""
        ray = self.ray
        deadline = time.monotonic() + self.config.ready_timeout_s
        while not self._closed.is_set():
            try:
                info = ray.get(slot.actor.info.remote(), timeout=5.0)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as exc:
                # a dying actor can answer "died" before Ray marks it restarting
                out_of_restarts = (isinstance(exc, ray.exceptions.ActorDiedError)
                                   and slot.restarts > self.config.max_restarts)
                if out_of_restarts or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
                continue
            with self._cond:
                slot.info, slot.state = info, "idle"
                self._cond.notify_all()
            log.info("%s is back (restart %d)", slot.name, slot.restarts)
            return
        with self._cond:
            slot.state = "lost"
            self._cond.notify_all()
        log.error("%s is lost: Ray could not restart it", slot.name)

    # -- health --

    def _watch(self) -> None:
        last_log = time.monotonic()
        while not self._closed.wait(0.5):
            now = time.monotonic()
            with self._cond:
                late = [s for s in self.slots if s.state == "busy" and not s.overdue and s.job
                        and now - s.job["started"] > self.config.busy_deadline_s]
                for slot in late:
                    slot.overdue = True
            for slot in late:
                log.warning("%s busy for more than %.0f s on %s of scene %s: abandoning the job and "
                            "restarting the worker", slot.name, self.config.busy_deadline_s,
                            slot.job and slot.job["kind"], slot.job and slot.job["scene_id"])
                self.ray.kill(slot.actor, no_restart=False)
            if self.config.status_log_s and now - last_log >= self.config.status_log_s:
                last_log = now
                try:
                    log.info("status: %s", self.report())
                except Exception:  # a log line must not stop the monitor
                    log.exception("status line failed")

    def summary(self) -> str:
        """One line: each worker's state and job."""
        parts = []
        with self._cond:
            for s in self.slots:
                job = s.job
                what = (f" {job['kind']} {job['scene_id']} {time.monotonic() - job['started']:.1f}s"
                        if job else "")
                parts.append(f"{s.name}={s.state}{what}")
        return ", ".join(parts)

    def close(self) -> None:
        self._closed.set()
        with self._cond:
            self._cond.notify_all()
        for slot in self.slots:
            with contextlib.suppress(Exception):  # already gone
                self.ray.kill(slot.actor, no_restart=True)
