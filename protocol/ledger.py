"""What application threads may ask about an endpoint's peers, under one lock.

The endpoint's I/O thread owns each :class:`~protocol.peer.Peer`; application threads (a
job streaming frames, the dispatcher) only need to know who is connected and as whom, how
many of their Frames wait for a peer's credit, and how many of a peer's requests wait for
them. :class:`PeerLedger` keeps exactly that, for :class:`~protocol.endpoint.ServerEndpoint`
and for :class:`~protocol.endpoint_process.EndpointProcess`, which mirrors a child's.
"""

from __future__ import annotations

import collections
import threading
import time


class PeerLedger:
    """Connected peers (routing id -> identity), Frames pending per peer, requests queued."""

    def __init__(self, max_queued: int):
        self.max_queued = max_queued
        self.cond = threading.Condition()
        self._waiters = 0
        """Threads in :meth:`wait_room` (under ``cond``): a release wakes nobody when there
        are none, which is the common case while a job keeps ahead of its peer's credit."""
        self._identity: dict[bytes, str] = {}
        self._pending: collections.Counter[bytes] = collections.Counter()
        """Frames handed to the endpoint and not yet sent or dropped."""
        self._queued: collections.Counter[bytes] = collections.Counter()
        """Requests handed to the application's queue and not yet taken."""

    # -- connections --

    def welcomed(self, peer: bytes, identity: str) -> None:
        with self.cond:
            self._identity[peer] = identity

    def gone(self, peer: bytes) -> None:
        """Forget ``peer``; threads waiting for its room wake up (and see it gone)."""
        with self.cond:
            self._identity.pop(peer, None)
            self._pending.pop(peer, None)
            self._queued.pop(peer, None)
            self.cond.notify_all()

    def identity(self, peer: bytes) -> str | None:
        with self.cond:
            return self._identity.get(peer)

    def is_connected(self, peer: bytes) -> bool:
        with self.cond:
            return peer in self._identity

    # -- frames waiting for credit --

    def frame_queued(self, peer: bytes) -> None:
        with self.cond:
            self._pending[peer] += 1

    def released(self, peer: bytes, frames: int) -> None:
        """``frames`` of ``peer``'s Frames left the wait for credit (sent or dropped)."""
        with self.cond:
            if peer in self._pending:
                self._pending[peer] -= frames
            if self._waiters:
                self.cond.notify_all()

    def drop_pending(self, peer: bytes) -> None:
        """Frames queued for a peer that is not (or no longer) connected were dropped."""
        with self.cond:
            self._pending.pop(peer, None)
            self.cond.notify_all()

    def wait_room(self, peer: bytes, max_pending: int, timeout: float | None) -> bool:
        """Wait while ``max_pending`` or more of ``peer``'s Frames are pending: True once there
        is room, False on timeout or when ``peer`` is gone."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while self._pending[peer] >= max_pending:
                if peer not in self._identity:
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._waiters += 1
                try:
                    self.cond.wait(left if left is not None else 0.5)
                finally:
                    self._waiters -= 1
            return peer in self._identity

    # -- requests waiting for the application --

    def try_queue(self, peer: bytes) -> bool:
        """Count one more request of ``peer`` waiting for the application; False (not
        counted) when ``max_queued`` already wait."""
        with self.cond:
            if self._queued[peer] >= self.max_queued:
                return False
            self._queued[peer] += 1
            return True

    def taken(self, peer: bytes) -> None:
        """The application took one of ``peer``'s requests."""
        with self.cond:
            if self._queued[peer] > 0:
                self._queued[peer] -= 1
