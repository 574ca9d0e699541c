"""What a transport hands to its application: a message that arrived, or a peer that left."""

from __future__ import annotations

from typing import NamedTuple

from protocol.messages import Message


class Incoming(NamedTuple):
    """A message that arrived. ``peer`` is the client's routing id on the server, None on a client."""

    msg: Message
    blobs: list[memoryview]
    peer: bytes | None = None


class PeerGone(NamedTuple):
    """The other side stopped answering (or, on the server, a client was dropped)."""

    peer: bytes | None
    reason: str
