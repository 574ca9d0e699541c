"""One welcomed client connection and everything the endpoint keeps for it.

A :class:`Peer` is owned by the endpoint's I/O thread (Majordomo's broker keeps one such
object per worker): its credit, the messages held back for credit, the jobs it cancelled,
and when it was last heard from. Application threads never touch it; what they need to
know (who is connected, frames waiting) is in :class:`~protocol.ledger.PeerLedger`.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from protocol.endpoint_caps import EndpointCaps, Occupancy

MAX_CANCELLED = 4096
"""Cancelled job ids remembered per peer (forgotten all at once past it)."""


@dataclass(eq=False)
class Peer:
    """A client that said Hello and was welcomed on routing id ``rid``."""

    rid: bytes
    identity: str
    """``curve:<public key>`` or ``token:<digest>`` (protocol.identity)."""
    credits: int
    """Frames it allows now (Hello's credits, plus every Credit, minus Frames sent)."""
    last_seen: float
    """When it last sent anything (heartbeats included): its liveness."""
    conn: Any = None
    """Its TCP connection (protocol.connections.Conn), None when unknown or closed."""
    last_active: float = 0.0
    """When it last sent anything but a heartbeat (its idleness, for eviction)."""
    held: collections.deque[tuple[str | None, list]] = field(default_factory=collections.deque)
    """(job id of a Frame or None, encoded frames) waiting to go out, in order."""
    frames_sent: int = 0
    cancelled: set[str] = field(default_factory=set)
    """Jobs the peer cancelled: their frames are dropped, even ones produced after the Cancel."""

    def hold(self, frame_of: str | None, frames: list) -> bool:
        """Queue a message behind those held; False (dropped) for a Frame of a cancelled job."""
        if frame_of is not None and frame_of in self.cancelled:
            return False
        self.held.append((frame_of, frames))
        return True

    def cancel(self, job_id: str) -> int:
        """The peer cancelled ``job_id``: its held frames go, and later ones will. Returns how
        many were dropped."""
        if len(self.cancelled) > MAX_CANCELLED:
            self.cancelled.clear()
        self.cancelled.add(job_id)
        return self.discard(job_id)

    def discard(self, job_id: str | None) -> int:
        """Drop the held Frames of ``job_id``; how many."""
        kept = collections.deque(item for item in self.held if item[0] != job_id)
        dropped = len(self.held) - len(kept)
        if dropped:
            self.held = kept
        return dropped

    def sendable(self) -> tuple[list[list], int]:
        """Take the held messages that may go now, in order, up to the first Frame without
        credit: (their frames, how many were Frames)."""
        out: list[list] = []
        frames = 0
        held = self.held
        while held:
            frame_of, parts = held[0]
            if frame_of is not None:
                if self.credits <= 0:
                    break
                self.credits -= 1
                frames += 1
            held.popleft()
            out.append(parts)
        self.frames_sent += frames
        return out, frames


@dataclass(frozen=True)
class Room:
    """What welcoming one more peer takes: nothing, evicting ``evict`` (``why``), or it is
    refused (``refusal`` names the limit)."""

    evict: Peer | None = None
    why: str = ""
    refusal: str | None = None


def make_room(peers: Iterable[Peer], identity: str, caps: EndpointCaps,
              occupancy: Occupancy) -> Room:
    """Room for a peer of ``identity`` among ``peers``: when the client slots, or this
    identity's connections, are full, the longest-idle connection without work goes (a
    client that owns something may evict anyone idle, a newcomer only idle clients that own
    nothing); when none may go, the refusal naming the limit."""
    peers = list(peers)
    mine = [p for p in peers if p.identity == identity]
    if len(mine) >= caps.max_connections_per_client:
        victim = _longest_idle(mine, occupancy)
        if victim is not None:
            return Room(victim, "another connection of this client needs its place")
        return Room(refusal=f"at most {caps.max_connections_per_client} connections per client "
                    "(connections.max_connections_per_client), all busy: close one first")
    if len(peers) < caps.max_peers:
        return Room()
    owner = occupancy.owns(identity)
    victim = _longest_idle([p for p in peers if owner or not occupancy.owns(p.identity)],
                           occupancy)
    if victim is not None:
        return Room(victim, "the backend is full and this connection was the longest idle")
    return Room(refusal=f"the backend serves at most {caps.max_peers} clients at once "
                "(connections.max_peers) and none of them is idle: retry later")


def _longest_idle(candidates: list[Peer], occupancy: Occupancy) -> Peer | None:
    idle = [p for p in candidates if not occupancy.working(p.rid)]
    return min(idle, key=lambda p: (p.last_active, p.rid)) if idle else None
