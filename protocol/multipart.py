"""Multipart sends and receives on the I/O threads' hot path, without pyzmq's per-part extras.

pyzmq's ``send_multipart`` type-checks every part and ORs ``zmq.SNDMORE`` (an enum, so a
Python-level ``Flag.__or__``) into the flags of each one; ``recv_multipart`` asks the socket
for ``RCVMORE`` (a ``getsockopt``) after each part. Per streamed frame that is a few
microseconds of Python on a thread that holds the GIL the others wait for. These helpers do
the same sends and receives with plain int flags and ``Frame.more``.

What they leave out has moved, not gone: every blob is checked to be a buffer when the
message is encoded (:func:`protocol.codec.encode`, on the application's thread), so a part
that is not a buffer never reaches a socket half-way through a message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import zmq

SNDMORE = int(zmq.SNDMORE)
NOBLOCK = int(zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)

_send = zmq.backend.Socket.send
"""The backend's send: pyzmq's Python-level ``Socket.send`` only adds the DRAFT
``routing_id``/``group`` arguments around it (about 0.5 us against 1.1 us a part)."""


def send_parts(sock: zmq.Socket, parts: Sequence[Any], flags: int = 0, copy: bool = False) -> None:
    """Send ``parts`` as one multipart message (``SNDMORE`` on all but the last). The parts
    are buffers (bytes, memoryview, zmq.Frame, numpy arrays), as ``codec.encode`` checks.

    With ``NOBLOCK`` only the first part can meet ``zmq.Again``: ZeroMQ takes a message
    whole or not at all, so a refused message leaves nothing half-sent."""
    more = flags | SNDMORE
    for part in parts[:-1]:
        _send(sock, part, more, copy=copy)
    _send(sock, parts[-1], flags, copy=copy)


def recv_parts(sock: zmq.Socket, flags: int = 0) -> list[zmq.Frame]:
    """One multipart message as zmq.Frame objects (no copy); ``zmq.Again`` with ``NOBLOCK``
    when none is waiting."""
    frame = sock.recv(flags, copy=False)
    parts = [frame]
    while frame.more:
        frame = sock.recv(copy=False)
        parts.append(frame)
    return parts


def more_waiting(sock: zmq.Socket) -> bool:
    """Whether another message can be received now: ends a batch of receives without the
    ``zmq.Again`` a last NOBLOCK receive would raise (an exception costs twice this look)."""
    return bool(cast(int, sock.get(_EVENTS)) & _POLLIN)
