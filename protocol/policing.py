"""Who may send, and who is shut out: the endpoint's policing, driven by a clock.

Everything here is keyed by routing id (one per connection; a connection is policed from
its first message, before it says Hello) and reads time only from the clock it is given, so
it is tested on its own with a fake clock:

- rate: each connection spends one token per message (``max_messages_per_s``; a new one
  starts with ``first_burst`` tokens, a welcomed one may burst the whole rate);
- refusals: each message answered with an Error spends from a second budget
  (``max_refusals_per_s``, a burst of ``refusal_burst``); past it the connection is marked
  and shut out once the message is handled;
- bans: a connection shut out is told once and its later messages are dropped unread; its
  connection is shut ``grace_s`` later, so that its one Error gets out first;
- admission: Hellos spend from :class:`~protocol.admission.HelloGate`'s budgets.

Budgets of quiet connections are forgotten after ``forget_s``, bans after ``ban_s``; the
budgets of connections the caller still keeps (its welcomed peers) are kept however long
they are silent (see :meth:`Police.forget_idle`).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Container
from typing import Any, Literal

from protocol.admission import HelloGate, TokenBucket
from protocol.endpoint_caps import EndpointCaps

Verdict = Literal["ok", "over_rate", "banned"]


class Police:
    """Rate limits, refusal budgets, bans and Hello admission, per routing id."""

    def __init__(self, caps: EndpointCaps, clock: Callable[[], float] = time.monotonic,
                 grace_s: float = 0.2, forget_s: float = 10.0, ban_s: float = 60.0):
        self.caps = caps
        self.clock = clock
        self.grace_s = grace_s
        self.forget_s = forget_s
        self.ban_s = ban_s
        self.gate = HelloGate(caps.admission)
        self._rates: dict[bytes, TokenBucket] = {}
        """Routing id -> its message budget."""
        self._refusals: dict[bytes, TokenBucket] = {}
        """Routing id -> its budget of refused messages."""
        self._over_refusals: set[bytes] = set()
        self._banned: dict[bytes, float] = {}
        self._due: collections.deque[tuple[float, bytes, Any]] = collections.deque()
        """(when, routing id, what to shut) in time order."""

    # -- messages --

    def admit(self, rid: bytes) -> Verdict:
        """One message of ``rid``: ``"ok"``, ``"over_rate"`` (the first one over its rate:
        shut it out) or ``"banned"`` (already shut out: drop it unread)."""
        if rid in self._banned:
            return "banned"
        now = self.clock()
        bucket = self._rates.get(rid)
        if bucket is None:  # a new connection starts with a small burst: reconnecting buys little
            rate = self.caps.max_messages_per_s
            bucket = self._rates[rid] = TokenBucket(rate, rate, min(rate, self.caps.first_burst), now)
        return "ok" if bucket.take(now) else "over_rate"

    def refused(self, rid: bytes) -> None:
        """One message of ``rid`` was answered with an Error; past the refusal budget it is
        marked (see :meth:`take_over_refusals`)."""
        now = self.clock()
        bucket = self._refusals.get(rid)
        if bucket is None:
            bucket = self._refusals[rid] = TokenBucket(self.caps.max_refusals_per_s,
                                                       self.caps.refusal_burst, last=now)
        if not bucket.take(now):
            self._over_refusals.add(rid)

    def take_over_refusals(self, rid: bytes) -> bool:
        """Whether ``rid`` went past its refusal budget since last asked (the mark is cleared)."""
        if rid not in self._over_refusals:
            return False
        self._over_refusals.discard(rid)
        return True

    def welcomed(self, rid: bytes) -> None:
        """``rid`` said Hello and was welcomed: it may burst its whole rate from now on."""
        bucket = self._rates.get(rid)
        if bucket is not None:
            bucket.burst = bucket.tokens = self.caps.max_messages_per_s

    # -- bans and delayed shutdowns --

    def ban(self, rid: bytes, what: Any) -> bool:
        """Shut ``rid`` out: its messages are dropped from now on and ``what`` comes back from
        :meth:`due` after the grace period. False when it was banned already."""
        if rid in self._banned:
            return False
        self._banned[rid] = self.clock()
        self.shut_later(rid, what)
        return True

    def is_banned(self, rid: bytes) -> bool:
        return rid in self._banned

    def shut_later(self, rid: bytes, what: Any) -> None:
        """Have ``(rid, what)`` come back from :meth:`due` once the grace period is over."""
        self._due.append((self.clock() + self.grace_s, rid, what))

    def due(self) -> list[tuple[bytes, Any]]:
        """What is to be shut now, in the order it was asked."""
        if not self._due:  # the I/O loop asks every turn; almost always nothing is due
            return []
        now, out = self.clock(), []
        while self._due and self._due[0][0] <= now:
            _, rid, what = self._due.popleft()
            out.append((rid, what))
        return out

    def forget_idle(self, keep: Container[bytes] = frozenset()) -> None:
        """Drop budgets of quiet connections, except those in ``keep``, and old bans
        (routing ids are per connection).

        ``keep`` is the caller's welcomed peers: one silent for a while (its process
        starved, or its GIL held) sends its backlog at once when it runs again; forgetting
        its budget would meet that backlog with a newcomer's small burst and cut a polite
        peer."""
        now = self.clock()
        for budgets in (self._rates, self._refusals):
            quiet = [r for r, b in budgets.items() if now - b.last > self.forget_s]
            for rid in [r for r in quiet if r not in keep]:
                del budgets[rid]
        for rid in [r for r, t in self._banned.items() if now - t > self.ban_s]:
            del self._banned[rid]

    # -- admission --

    def offer_hello(self, identity: str, arrival: Any, known: bool) -> str:
        """``"welcome"``, ``"wait"`` (``arrival`` comes back from :meth:`hellos_ready`) or
        ``"refuse"`` (the waiting room is full); see :class:`~protocol.admission.HelloGate`."""
        return self.gate.offer(identity, arrival, self.clock(), known=known)

    def hellos_ready(self) -> list[Any]:
        """Hellos that waited and may be welcomed now, in arrival order."""
        return self.gate.ready(self.clock()) if len(self.gate) else []

    def hello_welcomed(self, identity: str) -> None:
        self.gate.welcomed(identity)
