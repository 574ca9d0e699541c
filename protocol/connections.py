"""The TCP connections under a ROUTER socket, as its monitor reports them.

ZeroMQ hides connections behind routing ids; the endpoint still has to shut the ones that
never say Hello, the oldest when too many wait, and those of peers it drops. The socket
monitor reports each accepted and closed connection by file descriptor, and every message
carries the descriptor it came in on (``zmq.SRCFD``), so :class:`Connections` maps one to
the other and shuts a connection by shutting its socket down (ZeroMQ notices and closes it).
A closed descriptor may be reused by a newer connection: :class:`Conn` objects are compared
by identity, never by descriptor.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message


@dataclass(eq=False)
class Conn:
    """One TCP connection, as the socket monitor reported it."""

    fd: int
    accepted_at: float
    greeted: bool = False
    """A Hello came in on it."""


class Connections:
    """Open connections of ``sock`` by descriptor; ``on_closed(conn)`` is called for each one
    the client closed."""

    def __init__(self, sock: zmq.Socket, on_closed: Callable[[Conn], None],
                 clock: Callable[[], float] = time.monotonic):
        self._monitor: zmq.Socket = sock.get_monitor_socket(
            zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        self._sock = sock
        self._on_closed = on_closed
        self._clock = clock
        self._conns: dict[int, Conn] = {}

    @property
    def monitor(self) -> zmq.Socket:
        """The monitor socket, for the I/O loop's poller."""
        return self._monitor

    def refresh(self) -> None:
        """Apply the monitor's accept and disconnect events, in order."""
        if self._monitor.closed:
            return
        while True:
            try:
                ev = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            fd = int(ev["value"])
            if ev["event"] == zmq.EVENT_ACCEPTED:
                self._conns[fd] = Conn(fd, self._clock())
                continue
            conn = self._conns.pop(fd, None)
            if conn is not None:
                self._on_closed(conn)

    def of_frame(self, frame: Any) -> Conn | None:
        """The connection a message frame came in on (None when unknown)."""
        self.refresh()  # so it is this message's connection, not a stale fd's
        return self._conns.get(_source_fd(frame))

    def is_open(self, conn: Conn | None) -> bool:
        return conn is not None and self._conns.get(conn.fd) is conn

    def shut(self, conn: Conn | None) -> bool:
        """Shut the TCP connection down (ZeroMQ notices and closes it); False when it was
        closed already."""
        self.refresh()  # a stale fd may already belong to a newer connection
        if conn is None or self._conns.get(conn.fd) is not conn:
            return False
        del self._conns[conn.fd]
        try:
            dup = socket.socket(fileno=os.dup(conn.fd))
        except OSError:
            return False
        with contextlib.suppress(OSError):
            dup.shutdown(socket.SHUT_RDWR)
        dup.close()
        return True

    def sweep(self, hello_timeout_s: float, max_waiting: int) -> int:
        """Shut connections that never said Hello in time, and the oldest when more than
        ``max_waiting`` wait; how many were shut."""
        self.refresh()
        now = self._clock()
        waiting = sorted((c for c in self._conns.values() if not c.greeted),
                         key=lambda c: c.accepted_at)
        excess = max(0, len(waiting) - max_waiting)
        return sum(self.shut(conn) for i, conn in enumerate(waiting)
                   if i < excess or now - conn.accepted_at > hello_timeout_s)

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._sock.disable_monitor()
        self._monitor.close(linger=0)


def _source_fd(frame: Any) -> int:
    """The TCP connection's file descriptor a message came in on (-1 when unknown)."""
    try:
        return int(frame.get(zmq.SRCFD))
    except (zmq.ZMQError, AttributeError, TypeError, ValueError):
        return -1
