"""The Status answer: workers, queues per explorer, jobs running (in-process or on Ray).

The backend hands in what it knows (its jobs, its workers); nothing here reads the
backend's insides or imports Ray.
"""

from __future__ import annotations

import collections
import dataclasses
import socket
import time
from collections.abc import Iterable
from typing import Any

import msgspec

from backend.job_table import JobState
from protocol.messages import ClientQueue, Status, StatusReply, WorkerState


def status_reply(msg: Status, jobs: list[JobState], workers: list[WorkerState],
                 cluster: str = "", asker: str | None = None) -> StatusReply:
    """A StatusReply to ``msg``. For a client ``asker``, other clients are ``other-N`` and
    their scene ids are left out, also on the workers (None: everything, for the backend's
    own log)."""
    if asker is not None:
        own = {j.scene_id for j in jobs if j.client == asker}
        workers = [w if w.scene_id in own else msgspec.structs.replace(w, scene_id=None)
                   for w in workers]
        jobs = _anonymised(jobs, asker)
    running = [j for j in jobs if j.running]
    clients: dict[str, collections.Counter[str]] = {}
    for job in jobs:
        counts = clients.setdefault(job.client, collections.Counter())
        counts["running" if job.running else "queued"] += 1
    return StatusReply(
        request_id=msg.request_id, cluster=cluster, workers=workers,
        clients=[ClientQueue(client=c, running=n["running"], queued=n["queued"])
                 for c, n in clients.items()],
        jobs_running=len(running), jobs_queued=len(jobs) - len(running))


def _anonymised(jobs: list[JobState], asker: str) -> list[JobState]:
    """``jobs`` with other clients' identities replaced by ``other-N`` and their scenes hidden."""
    names: dict[str, str] = {}
    out = []
    for job in jobs:
        if job.client != asker:
            label = names.setdefault(job.client, f"other-{len(names) + 1}")
            job = dataclasses.replace(job, client=label, scene_id="")
        out.append(job)
    return out


def local_workers(slots: int, device: str, engines: list[str],
                  jobs: list[JobState]) -> list[WorkerState]:
    """The in-process job slots, the running jobs on the first ones."""
    running = [j for j in jobs if j.running]
    workers = []
    for i in range(slots):
        job = running[i] if i < len(running) else None
        workers.append(WorkerState(
            name=f"local-{i}", node=socket.gethostname(), device=device, engines=engines,
            state="busy" if job else "idle", job_kind=job.kind if job else None,
            scene_id=job.scene_id if job else None, busy_s=job.age_s if job else 0.0))
    return workers


def cluster_workers(snapshot: Iterable[tuple[Any, dict | None]]) -> list[WorkerState]:
    """The Ray workers from a ``WorkerPool.snapshot()`` (each worker with its job or None)."""
    now = time.monotonic()
    return [WorkerState(
        name=slot.name, node=str(slot.info.get("node", "?")), device=str(slot.info.get("device", "?")),
        engines=list(slot.info.get("engines", [])), state=slot.state,
        job_kind=job["kind"] if job else None, scene_id=job["scene_id"] if job else None,
        busy_s=now - job["started"] if job else 0.0, overdue=slot.overdue,
        jobs_done=slot.jobs_done, restarts=slot.restarts) for slot, job in snapshot]


def status_line(reply: StatusReply) -> str:
    """A status on one line, for the backend's periodic log."""
    states = [w.state for w in reply.workers]
    counts = ", ".join(f"{states.count(s)} {s}" for s in ("busy", "idle", "restarting", "lost")
                       if states.count(s))
    late = [w.name for w in reply.workers if w.overdue]
    queues = "; ".join(f"{c.client}: {c.running} running {c.queued} queued" for c in reply.clients)
    return (f"{len(reply.workers)} workers ({counts}){' overdue: ' + ', '.join(late) if late else ''}, "
            f"{reply.jobs_running} jobs running, {reply.jobs_queued} queued"
            f"{'; explorers ' + queues if queues else ''}")


def format_status(reply: StatusReply) -> str:
    """A few lines for a terminal."""
    where = f"Ray cluster {reply.cluster}" if reply.cluster else "in-process"
    lines = [f"backend ({where}): {reply.jobs_running} jobs running, {reply.jobs_queued} queued"]
    for w in reply.workers:
        job = f"  {w.job_kind} {w.scene_id} for {w.busy_s:.1f} s" if w.job_kind else ""
        late = "  OVERDUE" if w.overdue else ""
        lines.append(f"  {w.name:<10} {w.state:<10} {w.node} {w.device} [{', '.join(w.engines)}] "
                     f"done {w.jobs_done} restarts {w.restarts}{job}{late}")
    for c in reply.clients:
        lines.append(f"  explorer {c.client}: {c.running} running, {c.queued} queued")
    return "\n".join(lines)
