"""ZeroMQ transport, one import away: the pieces live in modules with one job each.

- :mod:`protocol.client`: the explorer's :class:`Client` (DEALER, one I/O thread).
- :mod:`protocol.endpoint`: the backend's :class:`ServerEndpoint` (ROUTER, one I/O thread):
  the loop and the handshake; per-peer state in :mod:`protocol.peer`, rate limits, refusal
  budgets, bans and admission in :mod:`protocol.policing`, TCP connections in
  :mod:`protocol.connections`, what application threads may ask in :mod:`protocol.ledger`,
  caps and counters in :mod:`protocol.endpoint_caps`; :mod:`protocol.endpoint_process` runs
  it in a process of its own.
- :mod:`protocol.channel`: the thread-safe hand-off from application threads to an I/O thread
  (a deque plus a wake-up socketpair).
- :mod:`protocol.keys`: CurveZMQ key files (secrets mode 0600).
- :mod:`protocol.loopback`: which addresses are loopback; off loopback keys are required.
- :mod:`protocol.events`: :class:`Incoming` and :class:`PeerGone`.
"""

from protocol.client import Client, HandshakeError
from protocol.endpoint import ServerEndpoint
from protocol.endpoint_caps import EndpointCaps, EndpointStats
from protocol.events import Incoming, PeerGone
from protocol.keys import ClientKeys, ServerKeys, make_keys
from protocol.loopback import InsecureBindError, is_loopback

__all__ = [
    "Client",
    "ClientKeys",
    "EndpointCaps",
    "EndpointStats",
    "HandshakeError",
    "Incoming",
    "InsecureBindError",
    "PeerGone",
    "ServerEndpoint",
    "ServerKeys",
    "is_loopback",
    "make_keys",
]
