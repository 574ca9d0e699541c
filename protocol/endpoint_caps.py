"""The server endpoint's bounds, counters and what it asks the application (one small module,
as the ZeroMQ guide keeps Majordomo's constants apart from the broker)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from protocol.admission import AdmissionCaps

PEER_TIMEOUT_S = 10.0
"""Seconds of silence after which a peer is gone (the endpoint's and the backend config's
default)."""


@dataclass(frozen=True)
class EndpointCaps:
    """Bounds on connections and queued requests, so one client cannot take everything."""

    hello_timeout_s: float = 5.0
    """A connection that has not said Hello by then is shut."""
    max_peers: int = 64
    """Handshaken clients at once, all identities together."""
    max_connections_per_client: int = 4
    """Handshaken connections of one identity at once."""
    max_queued_per_peer: int = 64
    """A peer's requests waiting for the application; more are answered ``busy``."""
    max_pending_connections: int = 512
    """Connections not yet said Hello; beyond it the oldest are shut at once."""
    max_messages_per_s: float = 2000.0
    """Messages one connection may send per second (a burst of as many is allowed); a
    connection over it gets one ``busy`` Error and is shut, and what it had queued is dropped
    unread. An explorer sends a few dozen per second."""
    first_burst: float = 32.0
    """Messages a connection may send at once before its Hello is welcomed; once welcomed
    (admission bounds how often that happens) it may send ``max_messages_per_s`` at once."""
    max_refusals_per_s: float = 5.0
    """Messages of one connection answered with an Error (undecodable, refused) per second;
    past that (and a burst of ``refusal_burst``) it is shut like a flooder. A working
    explorer is almost never refused."""
    refusal_burst: float = 20.0
    """Refused messages one connection may have at once before ``max_refusals_per_s``
    applies."""
    admission: AdmissionCaps = AdmissionCaps()
    """How fast new clients and reconnections are welcomed (a flooder shut out above comes
    back no faster than this)."""


@dataclass
class EndpointStats:
    """Counters, for tests and logs."""

    errors_sent: int = 0
    frames_sent: int = 0
    messages_received: int = 0
    peers_gone: int = 0
    connections_shut: int = 0
    """Connections shut by the endpoint (no Hello in time, dropped peers, over the caps)."""
    rate_limited: int = 0
    """Connections shut for sending faster than ``max_messages_per_s``."""
    refusal_limited: int = 0
    """Connections shut for more refused messages than ``max_refusals_per_s``."""
    evicted: int = 0
    """Idle connections shut to make room for a Hello (see :class:`Occupancy`)."""
    tokens_replaced: int = 0
    """Hellos with a token this backend did not issue (given a new identity)."""
    io_faults: int = 0
    """Exceptions caught in the I/O loop (each logged with the peer's id); 0 in a healthy run."""
    hellos_waited: int = 0
    """Hellos that waited for the admission rate (see protocol.admission)."""
    hellos_refused: int = 0
    """Hellos refused because the admission waiting room was full."""


class Occupancy(Protocol):
    """What the application tells the endpoint about its clients (called on the I/O
    thread: answer at once, without blocking)."""

    def owns(self, identity: str) -> bool:
        """Whether ``identity`` owns scenes (saved or open)."""
        ...

    def working(self, peer: bytes) -> bool:
        """Whether the connection ``peer`` has work (a job or a scene opening)."""
        ...


class NoOccupancy:
    """No identity owns anything and no connection has work (a bare endpoint)."""

    def owns(self, identity: str) -> bool:
        return False

    def working(self, peer: bytes) -> bool:
        return False


DEFAULT_CAPS = EndpointCaps()
