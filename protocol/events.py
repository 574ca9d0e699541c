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


class Welcomed(NamedTuple):
    """A server endpoint welcomed ``peer`` as ``identity`` (reported only when asked, for an
    endpoint that mirrors another's state)."""

    peer: bytes
    identity: str


class Released(NamedTuple):
    """``frames`` Frames to ``peer`` left the endpoint's wait for credit (sent or dropped)."""

    peer: bytes
    frames: int
