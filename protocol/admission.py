"""How fast Hellos are let in: new clients and reconnections each have a budget.

A connection shut for flooding can reconnect at once and start again with a fresh
connection's allowance, so a per-connection rate alone does not bound what one attacker
costs. Here every Hello spends a token: a Hello from an identity this server has welcomed
before (or that the server knows owns something) spends from that identity's own bucket
(``per_client_per_s``), any other Hello from one server-wide bucket for newcomers
(``new_per_s``). A Hello with no token left waits, in
arrival order, in a bounded waiting room and is welcomed when its bucket refills; a client
that reconnects in a loop is slowed to that rate and costs nothing while it waits. When the
room is full a Hello is refused (the caller answers ``busy``).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up (starts full)."""

    rate: float
    burst: float
    tokens: float = field(default=-1.0)
    last: float = 0.0

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.burst

    def refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.last) * self.rate)
        self.last = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one."""
        self.refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(frozen=True)
class AdmissionCaps:
    new_per_s: float = 10.0
    """Hellos per second from identities not seen before, all together."""
    new_burst: float = 20.0
    """Newcomers let in at once before ``new_per_s`` applies."""
    per_client_per_s: float = 1.0
    """Hellos per second from one known identity (reconnections)."""
    per_client_burst: float = 4.0
    """Reconnections of one identity let in at once before ``per_client_per_s`` applies."""
    max_waiting: int = 64
    """Hellos waiting for a token; beyond it they are refused."""
    max_known: int = 4096
    """Identities remembered as known (least recently welcomed forgotten first)."""


class HelloGate:
    """Decides, per Hello, to welcome now, to make it wait, or to refuse it (room full)."""

    def __init__(self, caps: AdmissionCaps = AdmissionCaps()):
        self.caps = caps
        self._newcomers = TokenBucket(caps.new_per_s, caps.new_burst)
        self._clients: collections.OrderedDict[str, TokenBucket] = collections.OrderedDict()
        self._waiting: collections.deque[tuple[str, Any]] = collections.deque()

    def __len__(self) -> int:
        return len(self._waiting)

    def offer(self, identity: str, item: Any, now: float, known: bool = False) -> str:
        """``"welcome"``, ``"wait"`` (``item`` comes back from :meth:`ready`) or ``"refuse"``.
        ``known`` says the caller knows ``identity`` (e.g. it owns scenes) even if this gate
        has not welcomed it yet: it spends from a bucket of its own."""
        if known and identity not in self._clients:
            self.welcomed(identity)
        bucket = self._bucket(identity)
        queued = any(self._bucket(i) is bucket for i, _ in self._waiting)  # no overtaking
        if not queued and bucket.take(now):
            return "welcome"
        if len(self._waiting) >= self.caps.max_waiting:
            return "refuse"
        self._waiting.append((identity, item))
        return "wait"

    def ready(self, now: float) -> list[Any]:
        """Waiting items whose bucket has a token again, in arrival order."""
        out: list[Any] = []
        keep: collections.deque[tuple[str, Any]] = collections.deque()
        for identity, item in self._waiting:
            if self._bucket(identity).take(now):
                out.append(item)
            else:
                keep.append((identity, item))
        self._waiting = keep
        return out

    def welcomed(self, identity: str) -> None:
        """Remember ``identity`` as known: its later Hellos spend from its own bucket."""
        bucket = self._clients.pop(identity, None)
        self._clients[identity] = bucket or TokenBucket(self.caps.per_client_per_s,
                                                        self.caps.per_client_burst)
        while len(self._clients) > self.caps.max_known:
            self._clients.popitem(last=False)

    def _bucket(self, identity: str) -> TokenBucket:
        return self._clients.get(identity) or self._newcomers
