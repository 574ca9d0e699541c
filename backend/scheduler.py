"""Fair, bounded job scheduling: round-robin across clients over a fixed number of slots.

Each client has its own FIFO queue. A free slot takes the next job from the next client in
turn (round-robin), and never runs two jobs of one client at once, so a client with 300
queued jobs delays another client by at most the one job already running per slot. Each
client may have at most ``max_per_client`` jobs queued or running; beyond that
:meth:`FairScheduler.submit` raises :class:`protocol.errors.Busy` with the limit.

A job is any callable; the backend's job bodies only talk to the :class:`Engine` interface,
so an engine whose generators run elsewhere (remote workers) plugs in with ``slots`` set to
the number of workers.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from protocol.errors import Busy

log = logging.getLogger(__name__)


class JobKind(StrEnum):
    """What a scheduled job does."""

    OPEN = "open"
    TRANSITION = "transition"
    DYNAMICS = "dynamics"


@dataclass
class Ticket:
    client: str
    """Who the job is for (the client identity)."""
    key: str
    """Id of the job (unique per client) for cancelling it while queued."""
    run: Callable[[], None]
    on_dropped: Callable[[], None] | None = None
    """Called instead of ``run`` when the job is removed before it starts."""
    done: threading.Event = field(default_factory=threading.Event)


class FairScheduler:
    """``slots`` worker threads taking jobs round-robin across clients."""

    def __init__(self, slots: int, max_per_client: int, name: str = "dj-job", what: str = "jobs"):
        if slots < 1 or max_per_client < 1:
            raise ValueError("slots and max_per_client must be >= 1")
        self.slots = slots
        self.max_per_client = max_per_client
        self.what = what
        self._queues: dict[str, collections.deque[Ticket]] = {}
        self._turn: collections.deque[str] = collections.deque()
        """Clients with queued jobs, in the order they are served next."""
        self._running: collections.Counter = collections.Counter()
        self._running_keys: set[str] = set()
        self._cond = threading.Condition()
        self._stopping = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(slots)]
        for t in self._threads:
            t.start()

    def submit(self, ticket: Ticket) -> int:
        """Queue ``ticket``; returns the number of jobs ahead of it (0 = starts now).

        Raises Busy when the client already has ``max_per_client`` jobs queued or running.
        """
        with self._cond:
            if self._stopping:
                raise Busy("the backend is shutting down")
            queue = self._queues.setdefault(ticket.client, collections.deque())
            mine = len(queue) + self._running[ticket.client]
            if mine >= self.max_per_client:
                raise Busy(f"you already have {mine} {self.what} queued or running; the limit "
                           f"per client is {self.max_per_client}", ticket.key)
            ahead = sum(len(q) for q in self._queues.values()) + sum(self._running.values())
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
            if ticket is None:
                return False
            queue.remove(ticket)
        if ticket.on_dropped is not None:
            ticket.on_dropped()
        ticket.done.set()
        return True

    def pending(self, client: str) -> int:
        """Jobs of ``client`` queued or running."""
        with self._cond:
            return len(self._queues.get(client, ())) + self._running[client]

    def running_keys(self) -> set[str]:
        """Keys of the jobs running now (on a slot, not queued)."""
        with self._cond:
            return set(self._running_keys)

    def queued(self) -> dict[str, int]:
        """Client -> jobs queued (not yet running)."""
        with self._cond:
            return {client: len(q) for client, q in self._queues.items() if q}

    def alive(self) -> bool:
        return all(t.is_alive() for t in self._threads)

    def shutdown(self) -> None:
        """Drop queued jobs and wait for the running ones to return."""
        with self._cond:
            self._stopping = True
            dropped = [t for q in self._queues.values() for t in q]
            self._queues.clear()
            self._turn.clear()
            self._cond.notify_all()
        for ticket in dropped:
            if ticket.on_dropped is not None:
                ticket.on_dropped()
        for t in self._threads:
            t.join()

    # -- workers --

    def _next(self) -> Ticket | None:
        """The next job in turn, skipping clients that already have one running."""
        for _ in range(len(self._turn)):
            client = self._turn.popleft()
            queue = self._queues.get(client)
            if not queue:
                self._queues.pop(client, None)
                continue
            if self._running[client]:
                self._turn.append(client)  # one job per client at a time; keep its place
                continue
            ticket = queue.popleft()
            if queue:
                self._turn.append(client)
            else:
                self._queues.pop(client, None)
            return ticket
        return None

    def _work(self) -> None:
        while True:
            with self._cond:
                ticket = None
                while not self._stopping and (ticket := self._next()) is None:
                    self._cond.wait(0.5)
                if ticket is None:
                    return
                self._running[ticket.client] += 1
                self._running_keys.add(ticket.key)
            try:
                ticket.run()
            except Exception:  # a job body must report its own failure; a bug must not kill a slot
                log.exception("job %s of %s raised", ticket.key, ticket.client)
            finally:
                ticket.done.set()
                with self._cond:
                    self._running[ticket.client] -= 1
                    self._running_keys.discard(ticket.key)
                    if not self._running[ticket.client]:
                        del self._running[ticket.client]
                    self._cond.notify_all()
