"""Fair, bounded job scheduling: round-robin across clients over a fixed number of slots,
fair in time as well as in jobs.

Each client has its own FIFO queue. A free slot takes the next job from the next client in
turn (round-robin), and never has two jobs of one client in progress at once, so a client
with 300 queued jobs delays another client by at most the one job already in progress.
Each client may have at most ``max_per_client`` jobs queued or in progress; beyond that
:meth:`FairScheduler.submit` raises :class:`protocol.errors.Busy` with the limit.

A job need not hold its slot to its end: its body may return a :class:`Resume` to hand the
slot back and continue later (a generator-driven job keeps its place between events). It
then waits, holding no thread, until ``Resume.ready()`` says it can go on (e.g. its client
granted frame credit) and queues again as its client's next job, behind the clients already
waiting. Job bodies do so after a time slice when others wait (:meth:`others_waiting`), and
at once when they would wait for a slow reader, so neither a long job nor a slow client
holds a slot that others need.

Short jobs first, in time as well as in slots: a job is *fresh* for its first ``slice_s``
on a slot (its service time). A job past its first slice gives way to another client's
fresh job that is running or due to start (:meth:`gives_way`): its body hands the slot back
at its next event and waits, its generator not advanced, until no such job runs or waits
(:meth:`fresh_rival`). So a short job runs alone on the CPU (the slots share one machine)
rather than beside a long job's threads. A long job held back for a whole slice runs a
whole slice before it gives way again: fresh jobs can slow it to half its pace, never stop
it.

A job is any callable; the backend's job bodies only talk to the :class:`Engine` interface,
so an engine whose generators run elsewhere (remote workers) plugs in with ``slots`` set to
the number of workers.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from protocol.errors import Busy

log = logging.getLogger(__name__)

PARKED_POLL_S = 0.02
"""How often parked jobs are asked whether they can go on."""


class JobKind(StrEnum):
    """What a scheduled job does."""

    OPEN = "open"
    TRANSITION = "transition"
    DYNAMICS = "dynamics"


@dataclass(frozen=True)
class Resume:
    """A job body's answer when it hands its slot back before its end."""

    ready: Callable[[], bool] | None = None
    """Whether the job can go on (called under the scheduler's lock, which is re-entrant: it
    may ask the scheduler, and must answer at once); None: at once, behind the clients
    already waiting."""


@dataclass
class Ticket:
    client: str
    """Who the job is for (the client identity)."""
    key: str
    """Id of the job (unique per client) for cancelling it while queued."""
    run: Callable[[], Resume | None]
    """The job body; it returns None when the job is over, a Resume to continue later."""
    on_dropped: Callable[[], None] | None = None
    """Called instead of ``run`` when the job is removed before it starts."""
    done: threading.Event = field(default_factory=threading.Event)
    resume: Resume | None = None
    """Set while the job waits between two runs of its body."""
    served_s: float = 0.0
    """Seconds its body has run on a slot, over its runs before the current one."""
    running_since: float | None = None
    """When its current run began (None while it is not on a slot)."""

    def service_s(self, now: float) -> float:
        """Seconds it has run on a slot so far, the current run included."""
        return self.served_s + (now - self.running_since if self.running_since is not None else 0.0)


class FairScheduler:
    """``slots`` worker threads taking jobs round-robin across clients."""

    def __init__(self, slots: int, max_per_client: int, name: str = "dj-job", what: str = "jobs",
                 slice_s: float = 1.0):
        if slots < 1 or max_per_client < 1:
            raise ValueError("slots and max_per_client must be >= 1")
        if not slice_s > 0:
            raise ValueError("slice_s must be > 0")
        self.slots = slots
        self.max_per_client = max_per_client
        self.slice_s = slice_s
        """A job is fresh for its first ``slice_s`` seconds on a slot."""
        self.what = what
        self._queues: dict[str, collections.deque[Ticket]] = {}
        """Jobs not started yet, per client."""
        self._current: dict[str, Ticket] = {}
        """The job each client has in progress (running, or waiting to go on)."""
        self._turn: collections.deque[str] = collections.deque()
        """Clients with queued or waiting jobs, in the order they are served next."""
        self._running_keys: set[str] = set()
        self._cond = threading.Condition(threading.RLock())
        """Re-entrant: a waiting job's ``ready`` (called with it held) may ask the scheduler."""
        self._stopping = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(slots)]
        for t in self._threads:
            t.start()

    def submit(self, ticket: Ticket) -> int:
        """Queue ``ticket``; returns the number of jobs ahead of it (0 = starts now).

        Raises Busy when the client already has ``max_per_client`` jobs queued or in progress.
        """
        with self._cond:
            if self._stopping:
                raise Busy("the backend is shutting down")
            queue = self._queues.setdefault(ticket.client, collections.deque())
            mine = len(queue) + (ticket.client in self._current)
            if mine >= self.max_per_client:
                raise Busy(f"you already have {mine} {self.what} queued or running; the limit "
                           f"per client is {self.max_per_client}", ticket.key)
            ahead = sum(len(q) for q in self._queues.values()) + len(self._current)
            queue.append(ticket)
            if ticket.client not in self._turn:
                self._turn.append(ticket.client)
            self._cond.notify()
            return max(0, ahead - self.slots + 1) if ahead >= self.slots else 0

    def remove(self, client: str, key: str) -> bool:
        """Take a queued (not yet started) job out; True if it was queued."""
        with self._cond:
            queue = self._queues.get(client)
            ticket = next((t for t in queue or () if t.key == key), None)
            if queue is None or ticket is None:
                return False
            queue.remove(ticket)
        if ticket.on_dropped is not None:
            ticket.on_dropped()
        ticket.done.set()
        return True

    def pending(self, client: str) -> int:
        """Jobs of ``client`` queued or in progress."""
        with self._cond:
            return len(self._queues.get(client, ())) + (client in self._current)

    def others_waiting(self, client: str) -> bool:
        """Whether another client has a job that could use a slot now."""
        with self._cond:
            return any(c != client and self._eligible(c) is not None for c in self._turn)

    def fresh_rival(self, client: str) -> bool:
        """Whether another client's fresh job (in its first ``slice_s`` on a slot) is running,
        or is due to start (the next of its client's queue, with nothing of that client in
        progress). Jobs waiting between two runs never count: a fresh one waits for its client,
        not for the CPU."""
        with self._cond:
            now = time.monotonic()
            for other, ticket in self._current.items():
                if (other != client and ticket.key in self._running_keys
                        and ticket.service_s(now) < self.slice_s):
                    return True
            return not self._stopping and any(
                other != client and queue and other not in self._current
                for other, queue in self._queues.items())

    def gives_way(self, key: str, client: str) -> bool:
        """Whether running job ``key`` of ``client``, past its first ``slice_s``, should
        hand its slot back now for another client's fresh job (:meth:`fresh_rival`)."""
        with self._cond:
            ticket = self._current.get(client)
            if ticket is None or ticket.key != key or key not in self._running_keys:
                return False
            return ticket.service_s(time.monotonic()) >= self.slice_s and self.fresh_rival(client)

    def running_keys(self) -> set[str]:
        """Keys of the jobs running now (on a slot, not queued or waiting)."""
        with self._cond:
            return set(self._running_keys)

    def queued(self) -> dict[str, int]:
        """Client -> jobs queued (not yet running)."""
        with self._cond:
            return {client: len(q) for client, q in self._queues.items() if q}

    def alive(self) -> bool:
        return all(t.is_alive() for t in self._threads)

    def shutdown(self) -> None:
        """Drop queued jobs, let jobs in progress reach their end (their bodies see the
        backend stopping), and wait for the slots."""
        with self._cond:
            self._stopping = True
            dropped = [t for q in self._queues.values() for t in q]
            self._queues.clear()
            self._cond.notify_all()
        for ticket in dropped:
            if ticket.on_dropped is not None:
                ticket.on_dropped()
            ticket.done.set()
        for t in self._threads:
            t.join()

    # -- workers --

    def _eligible(self, client: str) -> Ticket | None:
        """The job ``client`` could run now (call with the lock held)."""
        current = self._current.get(client)
        if current is not None:
            if current.key in self._running_keys:
                return None  # one job per client at a time
            ready = current.resume.ready if current.resume else None
            return current if self._stopping or ready is None or _safe(ready) else None
        queue = self._queues.get(client)
        return queue[0] if queue and not self._stopping else None

    def _next(self) -> Ticket | None:
        """The next job in turn; clients with nothing to run now keep their place."""
        for _ in range(len(self._turn)):
            client = self._turn.popleft()
            ticket = self._eligible(client)
            if ticket is None:
                if client in self._current or self._queues.get(client):
                    self._turn.append(client)
                else:
                    self._queues.pop(client, None)
                continue
            if self._current.get(client) is not ticket:
                self._queues[client].popleft()
                self._current[client] = ticket
            ticket.resume = None
            ticket.running_since = time.monotonic()
            self._running_keys.add(ticket.key)
            if self._queues.get(client):
                self._turn.append(client)
            return ticket
        return None

    def _idle(self) -> bool:
        return self._stopping and not self._current

    def _work(self) -> None:
        while True:
            with self._cond:
                ticket = None
                while not self._idle() and (ticket := self._next()) is None:
                    waiting = any(t.resume is not None for t in self._current.values())
                    self._cond.wait(PARKED_POLL_S if waiting or self._stopping else 0.5)
                if ticket is None:
                    return
            resume = None
            try:
                resume = ticket.run()
            except Exception:  # a job body must report its own failure; a bug must not kill a slot
                log.exception("job %s of %s raised", ticket.key, ticket.client)
            with self._cond:
                self._running_keys.discard(ticket.key)
                ticket.served_s = ticket.service_s(time.monotonic())
                ticket.running_since = None
                if resume is None:
                    del self._current[ticket.client]
                else:
                    ticket.resume = resume
                if ticket.client not in self._turn and (resume is not None
                                                        or self._queues.get(ticket.client)):
                    self._turn.append(ticket.client)
                self._cond.notify_all()
            if resume is None:
                ticket.done.set()


def _safe(ready: Callable[[], bool]) -> bool:
    """``ready()``; a bug in it runs the job (whose body then reports it), never kills a slot."""
    try:
        return bool(ready())
    except Exception:
        log.exception("a waiting job's readiness check raised")
        return True
