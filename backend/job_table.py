"""The jobs the backend has accepted: admitted, queued fairly, cancelled, reported.

:meth:`JobTable.submit` turns a job message into a :class:`~backend.jobs.Job` (its request
checked by ``backend.wire``), refuses it when it is over a cap (frames per clip,
pixel-frames per job, the disk quota, jobs per client), and queues its
:class:`~backend.jobs.JobRun` on the job slots. A Cancel, or the client leaving, stops it
(at once while queued, at its next event while it runs).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from backend import wire
from backend.config import BackendConfig
from backend.engines.base import Engine
from backend.jobs import WIRE_KINDS, Job, JobContext, JobRun, ticket_key
from backend.outbox import Endpoint, PeerOutbox
from backend.quotas import QuotaExceeded, Quotas
from backend.scenes import OpenEntry, SceneRegistry
from backend.scheduler import FairScheduler, Ticket
from backend.session import SessionStore
from protocol.codec import Blob
from protocol.errors import Busy, JobFailCode, ProtocolError
from protocol.messages import Dynamics, JobAccepted, JobFailed, Transition


@dataclass(frozen=True)
class JobState:
    """One job, for Status."""

    client: str
    job_id: str
    kind: str
    scene_id: str
    engine: str
    running: bool
    age_s: float
    """Seconds since it was accepted."""


class JobTable:
    """Jobs by (connection, job id), run on ``slots``."""

    def __init__(self, config: BackendConfig, sessions: SessionStore, quotas: Quotas,
                 scenes: SceneRegistry, engine: Callable[[str], Engine], endpoint: Endpoint,
                 slots: FairScheduler, preemptible: bool):
        self.ctx = JobContext(config, sessions, quotas, scenes, engine, ended=self.ended)
        self.endpoint = endpoint
        self.slots = slots
        self.preemptible = preemptible
        self._jobs: dict[tuple[bytes, str], Job] = {}
        self._lock = threading.Lock()

    def submit(self, peer: bytes, client: str, entry: OpenEntry, engine: str,
               msg: Transition | Dynamics, blobs: list[Blob]) -> None:
        """Check, admit and queue a job message on open scene ``entry``; answered with
        JobAccepted, or JobFailed saying why not."""
        with self._lock:
            duplicate = (peer, msg.job_id) in self._jobs
        if duplicate:
            self.endpoint.error(peer, "bad_value", f"job id {msg.job_id!r} is already in use",
                                msg.job_id)
            return
        try:
            request = wire.job_request(msg, blobs, wire.View(*entry.size, entry.median_depth))
        except ProtocolError as exc:
            self._fail(peer, msg.job_id, "bad_request", str(exc))
            return
        job = Job(msg.job_id, peer, client, entry, request, PeerOutbox(self.endpoint, peer),
                  engine, msg.frame_codec)
        refusal = self._refusal(job)
        if refusal is not None:
            self._fail(peer, msg.job_id, *refusal)
            return
        ahead = self._queue(job)
        if ahead is not None:
            self.endpoint.send(peer, JobAccepted(job_id=job.job_id, kind=WIRE_KINDS[job.kind],
                                                 num_frames=job.num_frames, queue_position=ahead))

    def _refusal(self, job: Job) -> tuple[JobFailCode, str] | None:
        """Why ``job`` is refused before it is queued, if it is."""
        limits, n = self.ctx.config.limits, job.num_frames
        if n > limits.max_frames:
            return "bad_request", (f"{n} frames asked, at most {limits.max_frames} per clip "
                                   "(limits.max_frames)")
        w, h = job.entry.size
        if w * h * n > limits.max_job_pixel_frames:
            return "too_large", (f"{w} x {h} x {n} frames is {w * h * n:,} pixel-frames; the "
                                 f"limit per job is {limits.max_job_pixel_frames:,} "
                                 "(limits.max_job_pixel_frames)")
        if self.ctx.config.save_clips:
            try:
                self.ctx.quotas.check_bytes(job.client)
            except QuotaExceeded as exc:
                return "quota", str(exc)
        return None

    def _queue(self, job: Job) -> int | None:
        """Queue ``job``; the jobs ahead of it, or None when refused (answered)."""
        with self._lock:
            self._jobs[(job.peer, job.job_id)] = job
        with self.ctx.scenes.table.lock:
            job.entry.queued += 1
        run = JobRun(self.ctx, job, self.slots, self.preemptible)
        ticket = Ticket(job.client, ticket_key(job.peer, job.job_id), run,
                        on_dropped=partial(self._dropped, job))
        try:
            return self.slots.submit(ticket)
        except Busy as exc:
            self.ended(job)
            self._fail(job.peer, job.job_id, "busy", str(exc) + " (scheduler.max_jobs_per_client)")
            return None

    def ended(self, job: Job) -> None:
        """Forget ``job`` (its outcome is about to be sent)."""
        with self._lock:
            known = self._jobs.pop((job.peer, job.job_id), None) is job
        if known:
            with self.ctx.scenes.table.lock:
                job.entry.queued -= 1

    def _fail(self, peer: bytes, job_id: str, code: JobFailCode, message: str) -> None:
        self.endpoint.send(peer, JobFailed(job_id=job_id, code=code, message=message))

    def _dropped(self, job: Job) -> None:
        """A queued job removed before it started (Cancel, disconnect, shutdown)."""
        self.ended(job)
        if self.endpoint.is_connected(job.peer):
            self._fail(job.peer, job.job_id, "cancelled", "job stopped before it started: cancelled")

    def cancel(self, peer: bytes, client: str, job_id: str) -> bool:
        """Stop connection ``peer``'s job ``job_id``; False when it has none such."""
        with self._lock:
            job = self._jobs.get((peer, job_id))
        if job is None:
            return False
        job.cancel.set()
        self.slots.remove(client, ticket_key(peer, job_id))  # queued: JobFailed at once
        return True

    def peer_gone(self, peer: bytes) -> None:
        """Stop every job of a connection that left."""
        with self._lock:
            jobs = [j for j in self._jobs.values() if j.peer == peer]
        for job in jobs:
            job.cancel.set()
            self.slots.remove(job.client, ticket_key(peer, job.job_id))

    def cancel_all(self) -> None:
        with self._lock:
            for job in self._jobs.values():
                job.cancel.set()

    def has(self, peer: bytes, job_id: str) -> bool:
        with self._lock:
            return (peer, job_id) in self._jobs

    def job_ids(self) -> set[str]:
        """The ids of every job queued or running, of every connection."""
        with self._lock:
            return {job_id for _, job_id in self._jobs}

    def working_peers(self) -> set[bytes]:
        """Connections with a job queued or running."""
        with self._lock:
            return {j.peer for j in self._jobs.values()}

    def states(self) -> list[JobState]:
        """Every job, oldest first."""
        now = time.perf_counter()
        with self._lock:
            jobs = sorted(self._jobs.values(), key=lambda j: j.accepted_at)
        running = self.slots.running_keys()
        return [JobState(j.client, j.job_id, j.kind.value, j.entry.scene_id, j.engine,
                         ticket_key(j.peer, j.job_id) in running, now - j.accepted_at)
                for j in jobs]
